//! Internal events (as Vector's): each thing worth knowing is one value that,
//! when emitted, both counts itself and logs itself, in one place, so a
//! metric and the log line that explains it cannot drift apart. Call sites
//! build the event and call `emit`; they do not touch counters or write log
//! lines for these themselves.

use std::time::Duration;

use crate::failure::Failure;
use crate::telemetry::{
    FailureLabels, Metrics, RemoteLabels, RemoteReasonLabels, TargetLabels, TlsLabels,
    TlsResultLabels,
};

/// Why samples were given up on (the `reason` label of the drop counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The receiver refused them for good (a 4xx).
    Rejected,
    /// Older than `queue.max_age`.
    MaxAge,
    /// To keep the disk queue within `queue.max_size`.
    MaxSize,
    /// To make room on a full disk.
    DiskFull,
    /// The disk queue could not be written.
    DiskError,
    /// A record read back damaged.
    Corrupt,
    /// Damaged records skipped when the disk queue was opened.
    CorruptRecord,
    /// The memory queue was full (`capacity * max_shards`).
    QueueFull,
    /// Compressing a batch failed.
    Compression,
    /// Still queued in memory when the shutdown grace period ended.
    Shutdown,
}

impl DropReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::Rejected => "rejected",
            DropReason::MaxAge => "max_age",
            DropReason::MaxSize => "max_size",
            DropReason::DiskFull => "disk_full",
            DropReason::DiskError => "disk_error",
            DropReason::Corrupt => "corrupt",
            DropReason::CorruptRecord => "corrupt_record",
            DropReason::QueueFull => "queue_full",
            DropReason::Compression => "compression",
            DropReason::Shutdown => "shutdown",
        }
    }
}

fn with_reason(l: &RemoteLabels, reason: &str) -> RemoteReasonLabels {
    RemoteReasonLabels {
        remote_name: l.remote_name.clone(),
        url: l.url.clone(),
        reason: reason.into(),
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
        let l = with_reason(self.remote, self.reason.as_str());
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

/// One failed send attempt of a batch; `retry_in` when it will be retried.
pub(crate) struct SendFailed<'a> {
    pub(crate) remote: &'a RemoteLabels,
    pub(crate) failure: Failure,
    pub(crate) message: &'a str,
    pub(crate) samples: usize,
    pub(crate) retry_in: Option<Duration>,
}

impl SendFailed<'_> {
    pub(crate) fn emit(self, m: &Metrics) {
        m.samples_failed
            .get_or_create(self.remote)
            .inc_by(self.samples as u64);
        m.batches_failed
            .get_or_create(&with_reason(self.remote, self.failure.reason()))
            .inc();
        if let Some(delay) = self.retry_in {
            m.backoff_seconds
                .get_or_create(self.remote)
                .set(delay.as_secs_f64());
            tracing::warn!(
                remote_name = %self.remote.remote_name,
                samples = self.samples,
                kind = self.failure.reason(),
                reason = %self.message,
                retry_in_ms = delay.as_millis() as u64,
                "remote write failed; will retry"
            );
        }
    }
}

/// A scrape that failed: its `reason` label and the error in words.
pub(crate) struct ScrapeFailed<'a> {
    pub(crate) target: &'a TargetLabels,
    pub(crate) reason: &'static str,
    pub(crate) error: &'a dyn std::fmt::Display,
}

impl ScrapeFailed<'_> {
    pub(crate) fn emit(self, m: &Metrics) {
        let reason = self.reason;
        m.scrape_failures
            .get_or_create(&FailureLabels {
                job: self.target.job.clone(),
                instance: self.target.instance.clone(),
                reason: reason.into(),
            })
            .inc();
        tracing::warn!(job = %self.target.job, instance = %self.target.instance, reason, error = %self.error, "scrape failed");
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
                    .get_or_create(&TlsResultLabels::new(labels, "success"))
                    .inc();
                tracing::info!(scope = %labels.scope, name = %labels.name, "TLS material changed; new connections use it");
            }
            TlsReloaded::Failure {
                labels,
                error,
                log_failure,
            } => {
                m.tls_reloads
                    .get_or_create(&TlsResultLabels::new(labels, "failure"))
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
    pub mechanism: &'a str,
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
                mechanism: self.mechanism.into(),
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
        }
        .emit(&m);
        let tls = TlsLabels {
            scope: "scrape".into(),
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
            "metrics_relay_remote_write_samples_failed_total{remote_name=\"r\",url=\"u\"} 5",
            "metrics_relay_remote_write_batches_failed_total{remote_name=\"r\",url=\"u\",reason=\"http_5xx\"} 1",
            "metrics_relay_remote_write_backoff_seconds{remote_name=\"r\",url=\"u\"} 0.25",
            "metrics_relay_tls_reloads_total{scope=\"scrape\",name=\"j\",result=\"success\"} 1",
            "metrics_relay_tls_reloads_total{scope=\"scrape\",name=\"j\",result=\"failure\"} 1",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }
}
