//! Internal events (as Vector's): each thing worth knowing is one value that,
//! when emitted, both counts itself and logs itself, in one place, so a
//! metric and the log line that explains it cannot drift apart. Call sites
//! build the event and call `emit`; they do not touch counters or write log
//! lines for these themselves.

use std::time::{Duration, Instant};

use crate::failure::Failure;
use crate::telemetry::{
    FailureLabels, Metrics, RemoteLabels, RemoteReasonLabels, TargetLabels, TlsLabels,
    TlsResultLabels,
};

pub(crate) use crate::metric_labels::DropReason;
use crate::metric_labels::{RemoteReason, ScrapeReason, TlsResult};

fn with_reason(l: &RemoteLabels, reason: RemoteReason) -> RemoteReasonLabels {
    RemoteReasonLabels {
        remote_name: l.remote_name.clone(),
        url: l.url.clone(),
        reason,
    }
}

/// Samples of a destination given up on. Counted always; logged at debug
/// (the call sites that know more, such as a rejection with the receiver's
/// message or a disk queue giving up a segment, log that at their level).
pub(crate) struct SamplesDropped<'a> {
    pub(crate) remote: &'a RemoteLabels,
    pub(crate) reason: DropReason,
    pub(crate) samples: usize,
    pub(crate) batches: u64,
}

impl SamplesDropped<'_> {
    pub(crate) fn emit(self, m: &Metrics) {
        let l = with_reason(self.remote, RemoteReason::Drop(self.reason));
        m.samples_dropped
            .get_or_create(&l)
            .inc_by(self.samples as u64);
        m.batches_dropped.get_or_create(&l).inc_by(self.batches);
        tracing::debug!(
            remote_name = %self.remote.remote_name,
            reason = self.reason.as_str(),
            samples = self.samples,
            batches = self.batches,
            "samples dropped"
        );
    }
}

/// How long a run of failures goes between reminders in the log.
pub(crate) const REMIND_EVERY: Duration = Duration::from_secs(300);

/// A run of failures of one thing (a destination, a target), for the log: its
/// first failure is logged, then a new kind of failure or a reminder at most
/// every [`REMIND_EVERY`], and its end once, with how long it lasted and how
/// many failures it took; the counters count every one regardless.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    since: Option<Instant>,
    failures: u64,
    last_logged: Option<Instant>,
    last_kind: Option<String>,
}

/// What the log says about one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The first of a run, or a different kind of failure than the last.
    Started,
    /// Still failing: `failures` so far over `lasted`.
    Reminder { failures: u64, lasted: Duration },
    /// Counted only.
    Quiet,
}

impl Outage {
    /// One more failure of `kind` (a reason, or the error in words).
    pub(crate) fn failed(&mut self, kind: &str) -> Notice {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        self.failures += 1;
        let new_kind = self.last_kind.as_deref() != Some(kind);
        let notice = if self.failures == 1 || new_kind {
            Notice::Started
        } else if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= REMIND_EVERY)
        {
            Notice::Reminder {
                failures: self.failures,
                lasted: now.duration_since(since),
            }
        } else {
            Notice::Quiet
        };
        if notice != Notice::Quiet {
            self.last_logged = Some(now);
        }
        if new_kind {
            self.last_kind = Some(kind.to_string());
        }
        notice
    }

    /// A success: the run that ended, as (how long, failures), if any.
    pub(crate) fn recovered(&mut self) -> Option<(Duration, u64)> {
        let since = self.since.take()?;
        let failures = std::mem::take(&mut self.failures);
        self.last_logged = None;
        self.last_kind = None;
        Some((since.elapsed(), failures))
    }
}

/// One failed send attempt of a request: `retry_in` when it will be retried
/// (counted as retried, Prometheus's `samples_retried`), else given up on
/// (counted as failed, Prometheus's `samples_failed`). Logged as `notice`
/// says.
pub(crate) struct SendFailed<'a> {
    pub(crate) remote: &'a RemoteLabels,
    pub(crate) failure: Failure,
    pub(crate) message: &'a str,
    pub(crate) samples: usize,
    pub(crate) retry_in: Option<Duration>,
    pub(crate) notice: Notice,
}

impl SendFailed<'_> {
    pub(crate) fn emit(self, m: &Metrics) {
        let kind = with_reason(self.remote, RemoteReason::Failure(self.failure.kind()));
        let Some(delay) = self.retry_in else {
            m.samples_failed
                .get_or_create(self.remote)
                .inc_by(self.samples as u64);
            m.batches_failed.get_or_create(&kind).inc();
            return;
        };
        m.samples_retried
            .get_or_create(self.remote)
            .inc_by(self.samples as u64);
        m.batches_retried.get_or_create(&kind).inc();
        m.backoff_seconds
            .get_or_create(self.remote)
            .set(delay.as_secs_f64());
        let (remote, kind) = (&self.remote.remote_name, self.failure.kind().as_str());
        match self.notice {
            Notice::Started => tracing::warn!(
                remote_name = %remote,
                samples = self.samples,
                kind,
                reason = %self.message,
                retry_in_ms = delay.as_millis() as u64,
                "remote write failing; retrying with backoff (further failures are counted, not logged, until it recovers; a reminder every 5 minutes)"
            ),
            Notice::Reminder { failures, lasted } => tracing::warn!(
                remote_name = %remote,
                kind,
                reason = %self.message,
                failures,
                failing_for = %crate::units::format_duration(lasted),
                "remote write still failing; retrying"
            ),
            Notice::Quiet => tracing::debug!(
                remote_name = %remote,
                kind,
                reason = %self.message,
                retry_in_ms = delay.as_millis() as u64,
                "remote write failed; will retry"
            ),
        }
    }
}

/// A destination delivering again after a run of failures.
pub(crate) struct SendRecovered<'a> {
    pub(crate) remote: &'a RemoteLabels,
    pub(crate) lasted: Duration,
    pub(crate) retries: u64,
}

impl SendRecovered<'_> {
    pub(crate) fn emit(self) {
        tracing::info!(
            remote_name = %self.remote.remote_name,
            failing_for = %crate::units::format_duration(self.lasted),
            retries = self.retries,
            "remote write recovered"
        );
    }
}

/// A scrape that failed: its `reason` label and the error in words; logged
/// as `notice` says (a run of failures is one line, reminders aside).
pub(crate) struct ScrapeFailed<'a> {
    pub(crate) target: &'a TargetLabels,
    pub(crate) reason: ScrapeReason,
    pub(crate) error: &'a dyn std::fmt::Display,
    pub(crate) notice: Notice,
}

impl ScrapeFailed<'_> {
    pub(crate) fn emit(self, m: &Metrics) {
        m.scrape_failures
            .get_or_create(&FailureLabels {
                job: self.target.job.clone(),
                instance: self.target.instance.clone(),
                reason: self.reason,
            })
            .inc();
        let (job, instance) = (&self.target.job, &self.target.instance);
        let reason = self.reason.as_str();
        match self.notice {
            Notice::Started => {
                tracing::warn!(%job, %instance, reason, error = %self.error, "scrape failed (further failures like this are counted, not logged, until the target is up again; a reminder every 5 minutes)")
            }
            Notice::Reminder { failures, lasted } => {
                tracing::warn!(%job, %instance, reason, error = %self.error, failures, failing_for = %crate::units::format_duration(lasted), "target still down")
            }
            Notice::Quiet => {
                tracing::debug!(%job, %instance, reason, error = %self.error, "scrape failed")
            }
        }
    }
}

/// A target scraped again after a run of failed scrapes.
pub(crate) struct ScrapeRecovered<'a> {
    pub(crate) target: &'a TargetLabels,
    pub(crate) lasted: Duration,
    pub(crate) failures: u64,
}

impl ScrapeRecovered<'_> {
    pub(crate) fn emit(self) {
        tracing::info!(job = %self.target.job, instance = %self.target.instance, down_for = %crate::units::format_duration(self.lasted), failed_scrapes = self.failures, "target is up again");
    }
}

/// TLS material (client or admin server) that changed on disk: taken into
/// use, or rejected with the previous material kept. A rejection is logged
/// when its message is new (`log_failure`), counted every time.
pub(crate) enum TlsReloaded<'a> {
    Success {
        labels: &'a TlsLabels,
    },
    Failure {
        labels: &'a TlsLabels,
        error: &'a str,
        log_failure: bool,
    },
}

impl TlsReloaded<'_> {
    pub(crate) fn emit(self, m: &Metrics) {
        match self {
            TlsReloaded::Success { labels } => {
                m.tls_reloads
                    .get_or_create(&TlsResultLabels::new(labels, TlsResult::Success))
                    .inc();
                tracing::info!(scope = %labels.scope, name = %labels.name, "TLS material changed; new connections use it");
            }
            TlsReloaded::Failure {
                labels,
                error,
                log_failure,
            } => {
                m.tls_reloads
                    .get_or_create(&TlsResultLabels::new(labels, TlsResult::Failure))
                    .inc();
                if log_failure {
                    tracing::error!(scope = %labels.scope, name = %labels.name, error, "new TLS material rejected; still using the previous certificates");
                }
            }
        }
    }
}

/// A discovery file's content could not be used.
pub(crate) struct DiscoveryFailed<'a> {
    pub job: &'a str,
    pub mechanism: crate::metric_labels::SdMechanism,
    pub file: &'a std::path::Path,
    pub error: &'a str,
    /// Targets kept from its last good content.
    pub kept: usize,
}

impl DiscoveryFailed<'_> {
    pub(crate) fn emit(self, m: &Metrics) {
        m.sd_file_errors
            .get_or_create(&crate::telemetry::SdLabels {
                job: self.job.into(),
                mechanism: self.mechanism,
            })
            .inc();
        tracing::warn!(job = %self.job, mechanism = %self.mechanism, file = %self.file.display(), error = %self.error, kept_targets = self.kept, "discovery file not used; its last good targets stay");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> RemoteLabels {
        RemoteLabels {
            remote_name: "r".into(),
            url: "u".into(),
        }
    }

    #[test]
    fn events_count_what_they_say() {
        let m = Metrics::new();
        let r = remote();
        SamplesDropped {
            remote: &r,
            reason: DropReason::MaxAge,
            samples: 7,
            batches: 2,
        }
        .emit(&m);
        SendFailed {
            remote: &r,
            failure: Failure::Status(503),
            message: "server returned HTTP status 503",
            samples: 5,
            retry_in: Some(Duration::from_millis(250)),
            notice: Notice::Started,
        }
        .emit(&m);
        SendFailed {
            remote: &r,
            failure: Failure::Status(400),
            message: "server returned HTTP status 400",
            samples: 3,
            retry_in: None,
            notice: Notice::Quiet,
        }
        .emit(&m);
        let tls = TlsLabels {
            scope: crate::metric_labels::TlsScope::Scrape,
            name: "j".into(),
        };
        TlsReloaded::Success { labels: &tls }.emit(&m);
        TlsReloaded::Failure {
            labels: &tls,
            error: "bad",
            log_failure: false,
        }
        .emit(&m);
        let text = m.encode();
        for line in [
            "metrics_relay_remote_write_samples_dropped_total{remote_name=\"r\",url=\"u\",reason=\"max_age\"} 7",
            "metrics_relay_remote_write_batches_dropped_total{remote_name=\"r\",url=\"u\",reason=\"max_age\"} 2",
            "metrics_relay_remote_write_samples_retried_total{remote_name=\"r\",url=\"u\"} 5",
            "metrics_relay_remote_write_batches_retried_total{remote_name=\"r\",url=\"u\",reason=\"http_5xx\"} 1",
            "metrics_relay_remote_write_samples_failed_total{remote_name=\"r\",url=\"u\"} 3",
            "metrics_relay_remote_write_batches_failed_total{remote_name=\"r\",url=\"u\",reason=\"http_4xx\"} 1",
            "metrics_relay_remote_write_backoff_seconds{remote_name=\"r\",url=\"u\"} 0.25",
            "metrics_relay_tls_reloads_total{scope=\"scrape\",name=\"j\",result=\"success\"} 1",
            "metrics_relay_tls_reloads_total{scope=\"scrape\",name=\"j\",result=\"failure\"} 1",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn a_run_of_failures_is_one_line_reminders_aside_and_its_end_another() {
        let mut o = Outage::default();
        assert_eq!(o.recovered(), None, "no run, no recovery line");
        assert_eq!(o.failed("timeout"), Notice::Started);
        for _ in 0..100 {
            assert_eq!(o.failed("timeout"), Notice::Quiet);
        }
        assert_eq!(o.failed("http_5xx"), Notice::Started, "a new kind is said");
        assert_eq!(o.failed("http_5xx"), Notice::Quiet);
        // Five minutes on: a reminder with the count.
        o.last_logged = Some(Instant::now() - REMIND_EVERY);
        match o.failed("http_5xx") {
            Notice::Reminder { failures, .. } => assert_eq!(failures, 104),
            n => panic!("{n:?}"),
        }
        let (_, failures) = o.recovered().unwrap();
        assert_eq!(failures, 104);
        assert_eq!(o.recovered(), None);
        assert_eq!(o.failed("timeout"), Notice::Started, "a new run");
    }
}
