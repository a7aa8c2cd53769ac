//! The agent's own metrics, served on `/metrics` (prometheus-client crate).
//!
//! Every name starts with `metrics_relay_`. Per target: scrapes, failures by
//! reason, samples, `up`, last duration. Per remote-write queue (labels
//! `remote_name`, `url`): samples/batches/bytes sent, failed attempts,
//! retries, drops by reason, queue length, current backoff and the time of the
//! last successful send. And `process_*` (CPU, memory, file descriptors,
//! start time) as every Prometheus client library exports them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metric_labels::{
    Rejection, RemoteReason, ScrapeReason, SdMechanism, TlsResult, TlsScope,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TargetLabels {
    pub job: String,
    pub instance: String,
}

/// A target's metric family (per-family budgets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FamilyLabels {
    pub job: String,
    pub instance: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub job: String,
    pub instance: String,
    pub reason: ScrapeReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RemoteLabels {
    pub remote_name: String,
    pub url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RemoteReasonLabels {
    pub remote_name: String,
    pub url: String,
    pub reason: RemoteReason,
}

/// A destination's wire format (see `remote_write::wire`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RemoteFormatLabels {
    pub remote_name: String,
    pub url: String,
    pub protobuf_message: &'static str,
    pub compression: &'static str,
}

/// A receiver's refusal, by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RemoteCauseLabels {
    pub remote_name: String,
    pub url: String,
    pub cause: Rejection,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TlsLabels {
    pub scope: TlsScope,
    /// The job name or the remote-write name.
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TlsResultLabels {
    pub scope: TlsScope,
    pub name: String,
    pub result: TlsResult,
}

impl TlsResultLabels {
    pub(crate) fn new(l: &TlsLabels, result: TlsResult) -> Self {
        TlsResultLabels {
            scope: l.scope,
            name: l.name.clone(),
            result,
        }
    }
}

/// A scrape config's discovery (`mechanism`: `file` or `kubeconfig`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SdLabels {
    pub job: String,
    pub mechanism: SdMechanism,
}

/// This agent's place among its replicas.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ShardLabels {
    pub shard_index: String,
    pub shard_count: String,
    pub replication_factor: String,
}

/// Targets this shard scrapes (`owned="true"`) and leaves to others.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OwnedLabels {
    pub owned: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BuildLabels {
    pub version: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// All self-metrics; cheap to clone (families are shared handles).
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: std::sync::Arc<Registry>,
    pub scrapes: Family<TargetLabels, Counter>,
    pub scrape_failures: Family<FailureLabels, Counter>,
    pub samples_scraped: Family<TargetLabels, Counter>,
    pub target_up: Family<TargetLabels, Gauge>,
    pub scrape_duration: Family<TargetLabels, FGauge>,
    pub series: Family<TargetLabels, Gauge>,
    pub samples_sent: Family<RemoteLabels, Counter>,
    pub batches_sent: Family<RemoteLabels, Counter>,
    pub bytes_sent: Family<RemoteLabels, Counter>,
    pub samples_failed: Family<RemoteLabels, Counter>,
    pub batches_failed: Family<RemoteReasonLabels, Counter>,
    pub samples_retried: Family<RemoteLabels, Counter>,
    pub batches_retried: Family<RemoteReasonLabels, Counter>,
    pub samples_dropped: Family<RemoteReasonLabels, Counter>,
    pub batches_dropped: Family<RemoteReasonLabels, Counter>,
    pub queue_batches: Family<RemoteLabels, Gauge>,
    pub queue_samples: Family<RemoteLabels, Gauge>,
    pub backoff_seconds: Family<RemoteLabels, FGauge>,
    pub last_send_timestamp: Family<RemoteLabels, FGauge>,
    pub reload_success: Gauge,
    pub scrapes_in_progress: Gauge,
    pub queue_bytes: Family<RemoteLabels, Gauge>,
    pub queue_backlog_samples: Family<RemoteLabels, Gauge>,
    pub queue_segments: Family<RemoteLabels, Gauge>,
    pub queue_oldest_timestamp: Family<RemoteLabels, FGauge>,
    pub queue_corruptions: Family<RemoteReasonLabels, Counter>,
    pub tls_cert_expiry: Family<TlsLabels, FGauge>,
    pub tls_reloads: Family<TlsResultLabels, Counter>,
    pub rejections: Family<RemoteCauseLabels, Counter>,
    pub remote_format: Family<RemoteFormatLabels, Gauge>,
    pub samples_written: Family<RemoteLabels, Counter>,
    pub bytes_stored: Family<RemoteLabels, Counter>,
    pub samples_out_of_bounds: Family<TargetLabels, Counter>,
    pub samples_duplicate: Family<TargetLabels, Counter>,
    pub samples_out_of_order: Family<TargetLabels, Counter>,
    pub family_budget_dropped: Family<FamilyLabels, Counter>,
    pub families_over_budget: Family<TargetLabels, Gauge>,
    pub sd_files: Family<SdLabels, Gauge>,
    pub sd_files_failing: Family<SdLabels, Gauge>,
    pub sd_file_errors: Family<SdLabels, Counter>,
    pub(crate) shard_info: Family<ShardLabels, Gauge>,
    pub(crate) shard_targets: Family<OwnedLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut r = Registry::with_prefix("metrics_relay");
        macro_rules! reg {
            ($name:literal, $help:literal, $m:expr) => {{
                let m = $m;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let build: Family<BuildLabels, Gauge> = reg!(
            "build_info",
            "Build information; always 1.",
            Family::default()
        );
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        Metrics {
            scrapes: reg!(
                "scrapes",
                "Scrapes attempted, per target.",
                Family::default()
            ),
            scrape_failures: reg!(
                "scrape_failures",
                "Failed scrapes, per target and reason.",
                Family::default()
            ),
            samples_scraped: reg!(
                "samples_scraped",
                "Samples read from targets (before staleness markers and synthetic series).",
                Family::default()
            ),
            target_up: reg!(
                "target_up",
                "1 if the target's last scrape succeeded, else 0.",
                Family::default()
            ),
            scrape_duration: reg!(
                "scrape_duration_seconds",
                "Duration of the target's last scrape.",
                Family::default()
            ),
            series: reg!(
                "target_series",
                "Series in the target's series cache.",
                Family::default()
            ),
            samples_sent: reg!(
                "remote_write_samples_sent",
                "Samples acknowledged (2xx) by the receiver.",
                Family::default()
            ),
            batches_sent: reg!(
                "remote_write_batches_sent",
                "Write requests acknowledged (2xx) by the receiver.",
                Family::default()
            ),
            bytes_sent: reg!(
                "remote_write_bytes_sent",
                "Compressed bytes acknowledged by the receiver.",
                Family::default()
            ),
            samples_failed: reg!(
                "remote_write_samples_failed",
                "Samples given up on after a send error that retrying cannot fix (a 4xx other than 429), as Prometheus's prometheus_remote_storage_samples_failed_total; also counted in samples_dropped_total{reason=\"rejected\"}.",
                Family::default()
            ),
            batches_failed: reg!(
                "remote_write_batches_failed",
                "Write requests given up on after a send error that retrying cannot fix, by kind of failure.",
                Family::default()
            ),
            samples_retried: reg!(
                "remote_write_samples_retried",
                "Samples in send attempts that failed with an error worth retrying (5xx, 429, timeouts, connection errors) and are retried, as Prometheus's prometheus_remote_storage_samples_retried_total; every failed attempt counts.",
                Family::default()
            ),
            batches_retried: reg!(
                "remote_write_batches_retried",
                "Send attempts that failed with an error worth retrying, by kind of failure (each is retried).",
                Family::default()
            ),
            samples_dropped: reg!(
                "remote_write_samples_dropped",
                "Samples given up on, by reason (rejected, max_size, max_age, disk_full, disk_error, corrupt, corrupt_record, queue_full, shutdown).",
                Family::default()
            ),
            batches_dropped: reg!(
                "remote_write_batches_dropped",
                "Write requests given up on, by reason.",
                Family::default()
            ),
            queue_batches: reg!(
                "remote_write_queue_batches",
                "Write requests waiting in the queue.",
                Family::default()
            ),
            queue_samples: reg!(
                "remote_write_queue_samples",
                "Samples waiting in the queue.",
                Family::default()
            ),
            backoff_seconds: reg!(
                "remote_write_backoff_seconds",
                "Current retry backoff; 0 when sending normally.",
                Family::default()
            ),
            last_send_timestamp: reg!(
                "remote_write_last_send_timestamp_seconds",
                "Unix time of the last acknowledged write request.",
                Family::default()
            ),
            reload_success: reg!(
                "config_last_reload_successful",
                "1 if the last config (re)load succeeded, else 0.",
                Gauge::default()
            ),
            scrapes_in_progress: reg!(
                "scrapes_in_progress",
                "Scrapes under way now (each holds its body and its encoded samples: see the README's memory formula).",
                Gauge::default()
            ),
            queue_bytes: reg!(
                "remote_write_queue_bytes",
                "Bytes of unacknowledged batches (on disk for a durable queue).",
                Family::default()
            ),
            queue_segments: reg!(
                "remote_write_queue_segments",
                "Segment files of the disk queue.",
                Family::default()
            ),
            queue_oldest_timestamp: reg!(
                "remote_write_queue_oldest_sample_timestamp_seconds",
                "Timestamp of the oldest queued sample (0 when empty).",
                Family::default()
            ),
            queue_corruptions: reg!(
                "remote_write_queue_corruptions",
                "Disk queue repairs at start-up: torn tails truncated (torn_tail), damaged records skipped (corrupt_record).",
                Family::default()
            ),
            tls_cert_expiry: reg!(
                "tls_client_cert_expiry_timestamp_seconds",
                "When the client certificate in use expires (Unix seconds).",
                Family::default()
            ),
            sd_files: reg!(
                "sd_files",
                "Discovery files found, per job and mechanism (file or kubeconfig).",
                Family::default()
            ),
            sd_files_failing: reg!(
                "sd_files_failing",
                "Discovery files whose latest content could not be used (their last good targets stay).",
                Family::default()
            ),
            sd_file_errors: reg!(
                "sd_file_errors",
                "Discovery file contents that could not be used (each new error counted once).",
                Family::default()
            ),
            shard_info: reg!(
                "shard_info",
                "This agent's shard index, the shard count and the replication factor; always 1.",
                Family::default()
            ),
            shard_targets: reg!(
                "shard_targets",
                "Targets this shard scrapes (owned=\"true\") and those other shards scrape (owned=\"false\").",
                Family::default()
            ),
            tls_reloads: reg!(
                "tls_reloads",
                "Changed TLS material seen, by result (success: in use; failure: rejected, the old one stays).",
                Family::default()
            ),
            rejections: reg!(
                "remote_write_rejections",
                "Write requests the receiver refused for good (4xx), by cause read from its message: out_of_bounds, too_old, out_of_order, duplicate, too_large, unauthorized, other.",
                Family::default()
            ),
            remote_format: reg!(
                "remote_write_format",
                "1 for the wire format the destination uses now (protobuf_message, compression), 0 for the ones it may use or has left: the result of the negotiation of remote_write[].protobuf_message.",
                Family::default()
            ),
            samples_written: reg!(
                "remote_write_samples_written",
                "Samples the receiver says it wrote (remote write 2.0's X-Prometheus-Remote-Write-Samples-Written header).",
                Family::default()
            ),
            bytes_stored: reg!(
                "remote_write_bytes_stored",
                "Bytes of batches put in the destination's queue, as stored (the queue's codec: snappy in memory, zstd on disk).",
                Family::default()
            ),
            samples_out_of_bounds: reg!(
                "scrape_samples_out_of_bounds",
                "Samples dropped at scrape time for an explicit timestamp outside explicit_timestamp_max_age / explicit_timestamp_max_ahead.",
                Family::default()
            ),
            samples_out_of_order: reg!(
                "scrape_samples_out_of_order",
                "Samples dropped at scrape time for an explicit timestamp before the one their series last had (or the same with another value), which a receiver would refuse, as Prometheus's prometheus_target_scrapes_sample_out_of_order_total.",
                Family::default()
            ),
            samples_duplicate: reg!(
                "scrape_samples_duplicate",
                "Samples dropped at scrape time as a repeat of a series already in the same scrape (the first is kept), as Prometheus's prometheus_target_scrapes_sample_duplicate_timestamp_total.",
                Family::default()
            ),
            queue_backlog_samples: reg!(
                "remote_write_queue_backlog_samples",
                "With queue.fresh_first: samples queued behind the newest scrape of targets that are behind (three or more scrapes waiting), sent oldest first while the newest go ahead.",
                Family::default()
            ),
            family_budget_dropped: reg!(
                "scrape_family_budget_dropped_samples",
                "Samples dropped at scrape time with their metric family, over the job's series_per_family_limit or buckets_per_histogram_limit (the rest of the scrape is kept).",
                Family::default()
            ),
            families_over_budget: reg!(
                "scrape_families_over_budget",
                "Metric families the target's last successful scrape dropped for their budget.",
                Family::default()
            ),
            // Last: every registration above has borrowed `r` already.
            registry: std::sync::Arc::new(r),
        }
    }

    /// Removes a target's children from every per-target family, so a target
    /// that goes away (a reload, a discovery change) leaves no series behind
    /// on `/metrics` (its failures under every reason there is).
    pub(crate) fn remove_target(&self, t: &TargetLabels) {
        self.scrapes.remove(t);
        self.samples_scraped.remove(t);
        self.target_up.remove(t);
        self.scrape_duration.remove(t);
        self.series.remove(t);
        self.samples_out_of_bounds.remove(t);
        self.samples_duplicate.remove(t);
        self.samples_out_of_order.remove(t);
        for reason in ScrapeReason::all() {
            self.scrape_failures.remove(&FailureLabels {
                job: t.job.clone(),
                instance: t.instance.clone(),
                reason,
            });
        }
    }

    /// The text exposition of every self-metric, and the process metrics
    /// every Prometheus client library exports (`process_*`).
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        let tail = out.split_off(eof);
        process_metrics(&mut out);
        out.push_str(&tail);
        out
    }
}

/// `process_*` as the Prometheus client libraries define them, read from
/// `/proc` (Linux); a value that cannot be read is left out.
fn process_metrics(out: &mut String) {
    use std::fmt::Write;
    let mut put = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {v}\n"
            );
        }
    };
    // Fields after the command name (which may hold spaces and parentheses).
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    // /proc reports times in USER_HZ, which is 100 on every Linux ABI.
    const TICKS: f64 = 100.0;
    let cpu = field(14).zip(field(15)).map(|(u, s)| (u + s) / TICKS);
    put(
        "process_cpu_seconds",
        "counter",
        "Total user and system CPU time spent in seconds.",
        cpu,
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|k| k * 1024.0)
    };
    put(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        kib("VmRSS:"),
    );
    put(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        field(23),
    );
    let fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    put(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        fds,
    );
    let max = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    put(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max.map(|m| m as f64),
    );
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    put(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        boot.zip(field(22)).map(|(b, t)| b + t / TICKS),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_counters_end_in_total() {
        let m = Metrics::new();
        m.scrapes
            .get_or_create(&TargetLabels {
                job: "j".into(),
                instance: "i".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains("metrics_relay_scrapes_total{job=\"j\",instance=\"i\"} 1"),
            "{text}"
        );
        assert!(text.contains("metrics_relay_build_info{version="), "{text}");
    }

    #[test]
    fn process_metrics_come_before_the_end_marker() {
        let text = Metrics::new().encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let start = value("process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86400.0,
            "{start} vs {now}"
        );
    }
}
