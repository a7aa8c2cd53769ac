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
    /// Never retry (remote write 1.0: a sender "MUST NOT retry write
    /// requests on HTTP 4xx responses other than 429"); drop and count.
    Reject {
        failure: Failure,
        message: String,
        rejection: Rejection,
    },
}

/// Classifies a response status as the remote-write spec asks; `body` is
/// (the start of) the receiver's answer.
pub(crate) fn classify(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    retry_on_429: bool,
    body: &str,
) -> Outcome {
    if status.is_success() {
        return Outcome::Sent;
    }
    let b = body.trim();
    let message = if b.is_empty() {
        format!("server returned HTTP status {status}")
    } else {
        format!("server returned HTTP status {status}: {b}")
    };
    let failure = Failure::Status(status.as_u16());
    if failure.retryable(retry_on_429) {
        Outcome::Retry {
            failure,
            message,
            after: retry_after.and_then(parse_retry_after),
        }
    } else {
        Outcome::Reject {
            failure,
            message,
            rejection: Rejection::from_response(status, b),
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110: IMF-fixdate,
/// and the obsolete RFC 850 and asctime forms), read by `httpdate`. A date
/// in the past is no delay; one too far ahead to represent is no answer.
pub(crate) fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    parse_retry_after_at(v, SystemTime::now())
}

pub(crate) fn parse_retry_after_at(v: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
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

pub(crate) use crate::metric_labels::Rejection;

/// The kind of a receiver's refusal, from its answer: the status where it
/// says enough (413, 401, 403), else the receiver's own words (remote write
/// has no codes for out-of-order or too-old samples; Prometheus, Mimir and
/// VictoriaMetrics word them alike). Never read from our own messages.
impl Rejection {
    /// The kind of refusal of a response with `status` and `body`.
    pub(crate) fn from_response(status: StatusCode, body: &str) -> Rejection {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => return Rejection::TooLarge,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Rejection::Unauthorized,
            _ => {}
        }
        let r = body.to_ascii_lowercase();
        if r.contains("out of bounds") {
            Rejection::OutOfBounds
        } else if r.contains("too old") {
            Rejection::TooOld
        } else if r.contains("out of order") {
            Rejection::OutOfOrder
        } else if r.contains("duplicate") {
            Rejection::Duplicate
        } else {
            Rejection::Other
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

    /// [`Rejection::hint`] for a destination with `queue.fresh_first`: an
    /// out-of-order refusal is then most likely the backlog it sends after
    /// the newest scrape.
    pub(crate) fn hint_for(self, fresh_first: bool) -> &'static str {
        match self {
            Rejection::OutOfOrder | Rejection::OutOfBounds if fresh_first => {
                "; queue.fresh_first is on for this destination: it sends a target's backlog after its newest scrape, and this receiver refuses samples older than a series' newest; turn on its out-of-order ingestion (Prometheus: storage.tsdb.out_of_order_time_window) or turn fresh_first off"
            }
            _ => self.hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_order_refusal_names_fresh_first_when_it_is_on() {
        for r in [Rejection::OutOfOrder, Rejection::OutOfBounds] {
            assert!(r.hint_for(true).contains("queue.fresh_first is on"));
            assert_eq!(r.hint_for(false), r.hint());
        }
        assert_eq!(
            Rejection::TooLarge.hint_for(true),
            Rejection::TooLarge.hint()
        );
    }

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
            Outcome::Reject {
                failure,
                message,
                rejection,
            } => {
                assert_eq!(failure, Failure::Status(400));
                assert_eq!(
                    message,
                    "server returned HTTP status 400 Bad Request: out of bounds"
                );
                assert_eq!(rejection, Rejection::OutOfBounds);
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
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_700);
        let at = |s: &'static str| parse_retry_after_at(&HeaderValue::from_static(s), now);
        assert_eq!(at("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            at("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_secs(77))
        );
        // RFC 850 and asctime, which RFC 9110 says a recipient must accept.
        assert_eq!(
            at("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(Duration::from_secs(77))
        );
        assert_eq!(
            at("Sun Nov  6 08:49:37 1994"),
            Some(Duration::from_secs(77))
        );
        assert_eq!(at("Sat, 05 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(at("soon"), None);
        // Far in the future: no overflow, no panic (the hand-written parser
        // this replaced overflowed here).
        for far in [
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Tue, 31 Dec 99999 23:59:59 GMT",
            "18446744073709551616",
        ] {
            let _ = at(far);
        }
        assert!(at("Fri, 31 Dec 9999 23:59:59 GMT").is_some_and(|d| d.as_secs() > 200_000_000_000));
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
    fn rejection_causes_come_from_the_receivers_answer() {
        for (status, body, cause) in [
            (400, "out of bounds", "out_of_bounds"),
            (400, "out of order sample", "out_of_order"),
            (400, "duplicate sample for timestamp", "duplicate"),
            (400, "too old sample", "too_old"),
            (413, "", "too_large"),
            (413, "body too big: out of order", "too_large"),
            (401, "", "unauthorized"),
            (403, "out of bounds", "unauthorized"),
            (404, "", "other"),
            // Our own wording never decides: a 400 whose body happens to
            // say "status 413" is not a 413.
            (400, "server returned HTTP status 413", "other"),
        ] {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                Rejection::from_response(s, body).as_str(),
                cause,
                "{status} {body}"
            );
        }
    }
}
