//! The retry policy of remote write, as the spec asks: what one attempt's
//! result means ([`Outcome`], from the status through
//! [`crate::failure::Failure`]), `Retry-After`, the exponential [`Backoff`],
//! and what kind of refusal a receiver's message describes ([`Rejection`]).

use std::time::{Duration, SystemTime};

use http::{HeaderValue, StatusCode};

use crate::failure::Failure;

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    /// Retry; `after` is the receiver's `Retry-After`, if it gave one.
    Retry {
        failure: Failure,
        message: String,
        after: Option<Duration>,
    },
    /// Never retry; drop and count.
    Reject {
        failure: Failure,
        message: String,
    },
}

/// Classifies a response status as the remote-write spec asks.
pub(crate) fn classify(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    retry_on_429: bool,
    body: &str,
) -> Outcome {
    let msg = |s: StatusCode| {
        let b = body.trim();
        if b.is_empty() {
            format!("server returned HTTP status {s}")
        } else {
            format!("server returned HTTP status {s}: {b}")
        }
    };
    if status.is_success() {
        return Outcome::Sent;
    }
    let failure = Failure::Status(status.as_u16());
    if failure.retryable(retry_on_429) {
        Outcome::Retry {
            failure,
            message: msg(status),
            after: retry_after.and_then(parse_retry_after),
        }
    } else {
        Outcome::Reject {
            failure,
            message: msg(status),
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (IMF-fixdate).
pub(crate) fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = parse_http_date(s)?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.split_once(", ")?.1;
    let mut it = rest.split(' ');
    let day: u64 = it.next()?.parse().ok()?;
    let mon = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT" {
        return None;
    }
    let days = crate::units::days_from_civil(year, mon, day as i64)?;
    let secs = days.checked_mul(86_400)? + (h * 3600 + m * 60 + sec) as i64;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Jittered exponential backoff.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }
    /// The next delay: the current step with up to 50 % jitter removed, then
    /// the step doubles (capped at `max`).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = 0.5 + fastrand::f64() * 0.5;
        base.mul_f64(jitter).max(Duration::from_millis(1))
    }
    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

/// The kind of a receiver's refusal, read from its message: remote write
/// has no codes for these, so the receiver's words are the one thing to go
/// by (Prometheus, Mimir and VictoriaMetrics word them alike). A bounded
/// set, for the `cause` label and the hint in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    OutOfBounds,
    TooOld,
    OutOfOrder,
    Duplicate,
    TooLarge,
    Unauthorized,
    Other,
}

impl Rejection {
    pub(crate) fn from_message(message: &str) -> Rejection {
        let r = message.to_ascii_lowercase();
        if r.contains("out of bounds") {
            Rejection::OutOfBounds
        } else if r.contains("too old") {
            Rejection::TooOld
        } else if r.contains("out of order") {
            Rejection::OutOfOrder
        } else if r.contains("duplicate") {
            Rejection::Duplicate
        } else if r.contains("status 413") {
            Rejection::TooLarge
        } else if r.contains("status 401") || r.contains("status 403") {
            Rejection::Unauthorized
        } else {
            Rejection::Other
        }
    }

    /// The `cause` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejection::OutOfBounds => "out_of_bounds",
            Rejection::TooOld => "too_old",
            Rejection::OutOfOrder => "out_of_order",
            Rejection::Duplicate => "duplicate",
            Rejection::TooLarge => "too_large",
            Rejection::Unauthorized => "unauthorized",
            Rejection::Other => "other",
        }
    }

    /// What the operator can do about it, for the log line.
    pub(crate) fn hint(self) -> &'static str {
        match self {
            Rejection::OutOfBounds | Rejection::TooOld => {
                "; the receiver refuses samples this old: a target exposing old explicit timestamps (see metrics_relay_scrape_samples_out_of_bounds_total and explicit_timestamp_max_age), or a queue older than the receiver accepts (lower remote_write[].queue.max_age)"
            }
            Rejection::OutOfOrder => {
                "; the receiver already has newer samples of these series (another writer, or a batch sent again after a crash)"
            }
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_spec() {
        assert_eq!(
            classify(StatusCode::NO_CONTENT, None, true, ""),
            Outcome::Sent
        );
        assert_eq!(classify(StatusCode::OK, None, true, ""), Outcome::Sent);
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, None, true, ""),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, false, ""),
            Outcome::Retry { .. }
        ));
        let ra = HeaderValue::from_static("2");
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some(&ra), true, ""),
            Outcome::Retry {
                failure: Failure::Status(429),
                message: "server returned HTTP status 429 Too Many Requests".into(),
                after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, None, false, ""),
            Outcome::Reject { .. }
        ));
        match classify(StatusCode::BAD_REQUEST, None, true, "out of bounds\n") {
            Outcome::Reject { failure, message } => {
                assert_eq!(failure, Failure::Status(400));
                assert_eq!(
                    message,
                    "server returned HTTP status 400 Bad Request: out of bounds"
                );
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, None, true, ""),
            Outcome::Reject { .. }
        ));
        // A redirect is not followed and not retried (as in Prometheus).
        assert!(matches!(
            classify(StatusCode::MOVED_PERMANENTLY, None, true, ""),
            Outcome::Reject { .. }
        ));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn backoff_grows_jittered_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        let steps = [100u64, 200, 400, 800, 800, 800];
        for (got, step) in d.iter().zip(steps) {
            assert!(
                *got <= Duration::from_millis(step) && *got >= Duration::from_millis(step / 2),
                "{got:?} vs {step}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn rejection_causes_come_from_the_receivers_message() {
        for (msg, cause) in [
            (
                "server returned HTTP status 400 Bad Request: out of bounds",
                "out_of_bounds",
            ),
            (
                "server returned HTTP status 400 Bad Request: out of order sample",
                "out_of_order",
            ),
            (
                "server returned HTTP status 400 Bad Request: duplicate sample for timestamp",
                "duplicate",
            ),
            (
                "server returned HTTP status 400 Bad Request: too old sample",
                "too_old",
            ),
            (
                "server returned HTTP status 413 Payload Too Large",
                "too_large",
            ),
            (
                "server returned HTTP status 401 Unauthorized",
                "unauthorized",
            ),
            ("server returned HTTP status 404 Not Found", "other"),
        ] {
            assert_eq!(Rejection::from_message(msg).as_str(), cause, "{msg}");
        }
    }
}
