//! Time, in one place.
//!
//! Two clocks, never mixed: the **wall clock** ([`unix_ms`]) is what samples
//! carry (a scrape's timestamp, a staleness marker's) and what a receiver
//! compares them with; the **monotonic clock** ([`mono_ms`], tokio's
//! `Instant`) measures everything that is a duration: a batch's age against
//! `queue.max_age`, the runtime's heartbeat behind `/healthz`, backoff,
//! deadlines. A step of the wall clock (NTP correcting it, a VM resumed)
//! then changes no age and fails no probe. The monotonic clock is tokio's,
//! so a test on a paused runtime drives it (`tokio::time::advance`).

use std::sync::OnceLock;
use std::time::SystemTime;

/// Now, in Unix milliseconds (wall clock): what samples are stamped with.
pub(crate) fn unix_ms() -> i64 {
    unix_ms_at(SystemTime::now())
}

/// A wall-clock time in Unix milliseconds (0 before 1970).
pub(crate) fn unix_ms_at(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Now, in Unix seconds (wall clock): for certificate dates.
pub(crate) fn unix_secs() -> i64 {
    unix_ms().div_euclid(1000)
}

/// Now, in Unix nanoseconds (wall clock): for aligning scrape ticks.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn origin() -> tokio::time::Instant {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(tokio::time::Instant::now)
}

/// Milliseconds on the monotonic clock since the first call in this
/// process (at least 1: callers use 0 for "never").
pub(crate) fn mono_ms() -> i64 {
    let o = origin();
    tokio::time::Instant::now()
        .saturating_duration_since(o)
        .as_millis() as i64
        + 1
}

/// The monotonic time at which data stamped `stamp_ms` (wall clock) came
/// to be, judged by the wall clock once, now: for a batch being queued, or
/// found on disk at start-up; from then on its age is monotonic
/// (`mono_ms() - born`). Before the clock's origin it is negative; a stamp
/// in the future is born now.
pub(crate) fn mono_born(stamp_ms: i64) -> i64 {
    let age = unix_ms().saturating_sub(stamp_ms).max(0);
    mono_ms().saturating_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_time_moves_forward_and_ages_from_the_past() {
        // The wall clock first: `mono_born` then judges the age against a
        // later wall time, so a pause between the two reads (a loaded
        // machine) can only make the result earlier, never later than `a`.
        let now = unix_ms();
        let a = mono_ms();
        let b = mono_ms();
        assert!(a >= 1 && b >= a);
        assert!(
            mono_born(now - 7_200_000) <= a - 7_200_000 + 5,
            "two hours old"
        );
        assert!(mono_born(now + 60_000) >= a, "a future stamp is born now");
        assert!(now > 1_600_000_000_000);
    }
}
