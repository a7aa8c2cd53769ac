//! Targets, the scrape loop and its synthetic series.
//!
//! One task per target ticks on the target's `scrape_interval`, offset by a
//! stable hash of the target so that many agents (and many targets) do not
//! scrape in lockstep. Each scrape GETs the target with
//! `Accept: text/plain;version=0.0.4`, gzip, the `scrape_timeout` and the
//! body size limit (applied to the decompressed body), parses the body with
//! [`crate::exposition`], runs every sample through the target's
//! [`SeriesCache`] and hands the encoded result to every remote-write queue.
//!
//! As in Prometheus, a scrape is all or nothing: a transport error, a non-200
//! status, an oversized body, a line that does not parse, a repeated label or
//! a series exposed twice fails the whole scrape. A failed scrape sends
//! `up 0` and staleness markers for the series of the last good scrape.
//! Every scrape, good or bad, also sends `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling` and
//! `scrape_series_added` with the target's labels, at the scrape's start time.
//!
//! Layout: this file holds the loop (one task per target), its errors and
//! the target status `/targets` shows; `target` resolves targets from the
//! config, `fetch` GETs a target, `pool` shares scrape buffers.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::failure::Failure;
use crate::http::{BodyError, HttpClient};
use crate::metric_labels::{FailureKind, ScrapeFault, ScrapeReason};
use crate::remote_write::queue::Queue;
use crate::remote_write::samples::EncodedSamples;
use crate::remote_write::write_relabel::WriteRelabelCache;
use crate::series::{IngestError, SeriesCache, SeriesError};
use crate::telemetry::{Metrics, TargetLabels};

mod budget;
mod fetch;
mod pool;
mod status;
pub(crate) mod target;

pub(crate) use fetch::{Fetched, fetch, fetch_wire, inflate_body};
use pool::{BYTES, SAMPLES};
pub(crate) use status::SharedStatus;
pub(crate) use status::{Health, TargetStatus};
#[cfg(test)]
pub(crate) use target::targets;
pub(crate) use target::{Resolved, Target, TargetIdentity, resolve};

/// Why a scrape failed. [`ScrapeError::reason`] is the metric label.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScrapeError {
    /// Connecting, the TLS handshake or the request failed.
    #[error("{message}")]
    Transport { kind: Failure, message: String },
    #[error("scrape timed out after {0}")]
    Timeout(String),
    #[error("server returned HTTP status {0}")]
    Status(http::StatusCode),
    /// A bug on our side (a task that panicked); never the target's fault.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    Body(#[from] BodyError),
    #[error("decompressing gzip body: {0}")]
    Gzip(String),
    #[error("parse error: {0}")]
    Parse(crate::exposition::ParseError),
    #[error("{0}")]
    Series(SeriesError),
    #[error("sample_limit exceeded: the target exposed more than {0} samples")]
    SampleLimit(u64),
}

impl From<IngestError> for ScrapeError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Parse(e) => ScrapeError::Parse(e),
            IngestError::Series(e) => ScrapeError::Series(e),
            IngestError::SampleLimit(n) => ScrapeError::SampleLimit(n),
        }
    }
}

impl ScrapeError {
    /// The `reason` label.
    pub(crate) fn reason(&self) -> ScrapeReason {
        use ScrapeFault as F;
        let fault = match self {
            ScrapeError::Transport { kind, .. } => return ScrapeReason::Failure(kind.kind()),
            ScrapeError::Timeout(_) => return ScrapeReason::Failure(FailureKind::Timeout),
            ScrapeError::Status(s) => {
                return ScrapeReason::Failure(Failure::Status(s.as_u16()).kind());
            }
            ScrapeError::Internal(_) => F::Internal,
            ScrapeError::Body(BodyError::TooLarge { .. }) => F::BodySizeLimit,
            ScrapeError::Body(_) => F::ReadBody,
            ScrapeError::Gzip(_) => F::Gzip,
            ScrapeError::Parse(_) => F::Parse,
            ScrapeError::Series(SeriesError::DuplicateLabel { .. }) => F::DuplicateLabel,
            ScrapeError::Series(SeriesError::InvalidLabel(_)) => F::InvalidLabel,
            ScrapeError::Series(SeriesError::LabelLimit(_)) => F::LabelLimit,
            ScrapeError::SampleLimit(_) => F::SampleLimit,
        };
        ScrapeReason::Fault(fault)
    }
}

/// Counts a scrape under way (decremented however it ends).
struct InProgress(prometheus_client::metrics::gauge::Gauge);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Metadata bytes a target keeps between scrapes.
const METADATA_KEEP: usize = 1 << 20;

/// Bodies at least this large are parsed off the runtime thread.
const OFF_THREAD_BODY: usize = 8 << 20;
/// Scrapes with at least this many samples are delivered (compressed,
/// written to the disk queue) off the runtime thread.
const OFF_THREAD_SAMPLES: usize = 100_000;

/// Appends `out` to every sink (through its write relabeling), with the
/// target's `metadata` for the sinks it is due to.
fn deliver_to(
    sinks: &mut [SinkState],
    out: &EncodedSamples,
    rewritten: &mut EncodedSamples,
    metadata: &[u8],
) {
    let now = Instant::now();
    for sink in sinks {
        let meta = if !metadata.is_empty() && sink.metadata_due(now) {
            sink.metadata_sent = Some(now);
            metadata
        } else {
            &[]
        };
        match &mut sink.relabel {
            None => sink.queue.append(out, meta),
            Some(w) => {
                w.apply(out, rewritten);
                sink.queue.append(rewritten, meta);
            }
        }
    }
}

/// A remote-write destination as a scrape loop sees it.
#[derive(Clone)]
pub(crate) struct Sink {
    pub queue: Arc<Queue>,
    pub write_relabel: Arc<[crate::relabel::RelabelConfig]>,
    /// `metadata_config.send_interval`, when `send` is on.
    pub metadata_every: Option<Duration>,
}

struct SinkState {
    queue: Arc<Queue>,
    rules: Arc<[crate::relabel::RelabelConfig]>,
    relabel: Option<WriteRelabelCache>,
    metadata_every: Option<Duration>,
    /// When this target's metadata last went to this destination.
    metadata_sent: Option<Instant>,
}

impl SinkState {
    fn new(s: &Sink) -> Self {
        SinkState {
            queue: s.queue.clone(),
            rules: s.write_relabel.clone(),
            relabel: (!s.write_relabel.is_empty())
                .then(|| WriteRelabelCache::new(s.write_relabel.clone())),
            metadata_every: s.metadata_every,
            metadata_sent: None,
        }
    }

    fn metadata_due(&self, now: Instant) -> bool {
        self.metadata_every.is_some_and(|every| {
            self.metadata_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= every)
        })
    }
}

/// Encoded labels of the synthetic series of one target.
struct Synthetic {
    up: Box<[u8]>,
    duration: Box<[u8]>,
    scraped: Box<[u8]>,
    post_relabel: Box<[u8]>,
    added: Box<[u8]>,
}

/// The scrape loop of one target.
pub(crate) struct ScrapeLoop {
    target: Arc<Target>,
    client: HttpClient,
    /// Follows certificate rotation ([`crate::http::watched_client`]).
    client_rx: tokio::sync::watch::Receiver<HttpClient>,
    cache: SeriesCache,
    out: EncodedSamples,
    body: Vec<u8>,
    inflated: Vec<u8>,
    synthetic: Synthetic,
    /// Whether the synthetic series were ever written.
    scraped_once: bool,
    sinks: Vec<SinkState>,
    sinks_rx: tokio::sync::watch::Receiver<Arc<Vec<Sink>>>,
    /// `server.relay_metrics`: only then is each scrape's result kept for
    /// `/relay/metrics`.
    keep_latest: Arc<std::sync::atomic::AtomicBool>,
    /// Scratch buffer for destinations with `write_relabel_configs`.
    rewritten: EncodedSamples,
    metrics: Metrics,
    labels: TargetLabels,
    status: SharedStatus,
    /// The current run of failed scrapes (for the log).
    outage: crate::events::Outage,
    /// Repeated series in its last scrape (logged when it changes).
    duplicates: u64,
    /// Families dropped for their budget (logged when the set changes).
    budget: budget::BudgetReport,
    /// The target's metric metadata when due to a destination (1.0
    /// `metadata` entries), else empty.
    metadata: Vec<u8>,
}

impl ScrapeLoop {
    pub(crate) fn new(
        target: Arc<Target>,
        mut client_rx: tokio::sync::watch::Receiver<HttpClient>,
        mut sinks_rx: tokio::sync::watch::Receiver<Arc<Vec<Sink>>>,
        keep_latest: Arc<std::sync::atomic::AtomicBool>,
        metrics: Metrics,
        status: SharedStatus,
    ) -> Self {
        let ctx = &target.ctx;
        let synthetic = Synthetic {
            up: ctx.synthetic("up"),
            duration: ctx.synthetic("scrape_duration_seconds"),
            scraped: ctx.synthetic("scrape_samples_scraped"),
            post_relabel: ctx.synthetic("scrape_samples_post_metric_relabeling"),
            added: ctx.synthetic("scrape_series_added"),
        };
        let labels = TargetLabels {
            job: target.job.clone(),
            instance: target.instance.clone(),
        };
        let sinks = sinks_rx
            .borrow_and_update()
            .iter()
            .map(SinkState::new)
            .collect();
        let client = client_rx.borrow_and_update().clone();
        ScrapeLoop {
            target,
            client,
            client_rx,
            cache: SeriesCache::new(),
            out: EncodedSamples::default(),
            body: Vec::new(),
            inflated: Vec::new(),
            synthetic,
            scraped_once: false,
            sinks,
            sinks_rx,
            keep_latest,
            rewritten: EncodedSamples::default(),
            metrics,
            labels,
            status,
            outage: Default::default(),
            duplicates: 0,
            budget: Default::default(),
            metadata: Vec::new(),
        }
    }

    /// Delay before the first scrape: a stable offset within the interval.
    fn first_delay(&self) -> Duration {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.target.job.hash(&mut h);
        self.target.url.to_string().hash(&mut h);
        let iv = self.target.interval.as_nanos().max(1) as u64;
        let offset = h.finish() % iv;
        let now = crate::clock::unix_nanos();
        let base = iv - now % iv;
        Duration::from_nanos((base + offset) % iv)
    }

    /// Runs until `stop` (shutdown: no staleness markers, as Prometheus) or
    /// `remove` (the target left the config: markers for its series, then exit).
    pub(crate) async fn run(mut self, stop: CancellationToken, remove: CancellationToken) {
        let start = tokio::time::Instant::now() + self.first_delay();
        let mut ticker = tokio::time::interval_at(start, self.target.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Biased: a shutdown (no markers) wins over a removal when both
            // happened (the runtime drops its handles after stopping).
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = remove.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // A removal waits for the scrape under way (whose series it marks
            // stale); a shutdown does not wait.
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = self.scrape_once() => {}
            }
            if stop.is_cancelled() {
                return;
            }
            if remove.is_cancelled() {
                break;
            }
        }
        let now = crate::clock::unix_ms();
        self.out.clear();
        self.out.scraped_at_ms = now;
        self.out.stream = self.target.stream;
        let n = self
            .cache
            .mark_all_stale(&self.target.ctx, now, &mut self.out);
        // As Prometheus at the end of a target: `up` and the other
        // synthetic series go stale too, once anything was written for them.
        if self.scraped_once {
            let stale = f64::from_bits(crate::labels::STALE_NAN);
            let syn = &self.synthetic;
            for s in [
                &syn.up,
                &syn.duration,
                &syn.scraped,
                &syn.post_relabel,
                &syn.added,
            ] {
                self.out.push(s, stale, now);
            }
        }
        self.deliver();
        self.metrics.remove_target(&self.labels);
        self.budget.remove(&self.metrics, &self.labels);
        tracing::info!(job = %self.target.job, url = %self.target.url, stale_series = n, "target removed");
    }

    /// [`ScrapeLoop::deliver`], on a blocking-pool thread for a large scrape
    /// (compressing and writing it to the disk queue would hold up the other
    /// targets and the sender).
    async fn deliver_scrape(&mut self) {
        if self.out.len() < OFF_THREAD_SAMPLES {
            self.deliver();
            return;
        }
        self.refresh_sinks();
        let mut sinks = std::mem::take(&mut self.sinks);
        let out = std::mem::take(&mut self.out);
        let mut rewritten = std::mem::take(&mut self.rewritten);
        let metadata = std::mem::take(&mut self.metadata);
        let done = tokio::task::spawn_blocking(move || {
            deliver_to(&mut sinks, &out, &mut rewritten, &metadata);
            (sinks, out, rewritten, metadata)
        })
        .await;
        match done {
            Ok((sinks, out, rewritten, metadata)) => {
                self.sinks = sinks;
                self.out = out;
                self.rewritten = rewritten;
                self.metadata = metadata;
            }
            Err(e) => {
                // Only a panic gets here; the sinks are rebuilt from the
                // current configuration.
                tracing::error!(job = %self.target.job, error = %e, "delivering a scrape failed");
                self.sinks = self.sinks_rx.borrow().iter().map(SinkState::new).collect();
            }
        }
    }

    /// Parses the body on a blocking-pool thread (a page of millions of
    /// series takes a good part of a second; the runtime thread serves the
    /// other targets and the sender meanwhile).
    async fn ingest_off_thread(
        &mut self,
        ts: i64,
        format: crate::exposition::Format,
    ) -> Result<crate::series::Ingested, ScrapeError> {
        let mut cache = std::mem::take(&mut self.cache);
        let body = std::mem::take(&mut self.body);
        let mut out = std::mem::take(&mut self.out);
        let target = self.target.clone();
        let done = tokio::task::spawn_blocking(move || {
            let r = cache.ingest_format(
                &target.ctx,
                &body,
                format,
                ts,
                &mut out,
                target.sample_limit,
            );
            (cache, body, out, r)
        })
        .await;
        match done {
            Ok((cache, body, out, r)) => {
                self.cache = cache;
                self.body = body;
                self.out = out;
                r.map_err(ScrapeError::from)
            }
            Err(e) => {
                tracing::error!(job = %self.target.job, error = %e, "parsing a scrape failed");
                Err(ScrapeError::Internal(format!("parsing: {e}")))
            }
        }
    }

    fn refresh_sinks(&mut self) {
        if self.sinks_rx.has_changed().unwrap_or(false) {
            let new: Arc<Vec<Sink>> = self.sinks_rx.borrow_and_update().clone();
            let mut old = std::mem::take(&mut self.sinks);
            self.sinks = new
                .iter()
                .map(|s| {
                    // Keep the write-relabel cache of a destination that stayed.
                    let kept = old
                        .iter()
                        .position(|o| {
                            Arc::ptr_eq(&o.queue, &s.queue)
                                && Arc::ptr_eq(&o.rules, &s.write_relabel)
                                && o.metadata_every == s.metadata_every
                        })
                        .map(|i| old.swap_remove(i));
                    kept.unwrap_or_else(|| SinkState::new(s))
                })
                .collect();
        }
    }

    /// Hands `self.out` to every destination (current as of the last reload).
    fn deliver(&mut self) {
        self.refresh_sinks();
        deliver_to(
            &mut self.sinks,
            &self.out,
            &mut self.rewritten,
            &self.metadata,
        );
    }

    /// Whether some destination is due this target's metadata.
    fn metadata_due(&mut self) -> bool {
        self.refresh_sinks();
        let now = Instant::now();
        self.sinks.iter().any(|s| s.metadata_due(now))
    }

    async fn fetch(&mut self) -> Result<Fetched, ScrapeError> {
        if self.client_rx.has_changed().unwrap_or(false) {
            self.client = self.client_rx.borrow_and_update().clone();
        }
        let f = fetch_wire(&self.client, &self.target, &mut self.body).await?;
        if f.gzip {
            // Taken only now: a scrape waiting on the network holds just
            // the (small, compressed) wire buffer.
            self.inflated = BYTES.take();
            inflate_body(&self.target, &mut self.body, &mut self.inflated)?;
        }
        Ok(f)
    }

    /// One scrape, start to finish; returns the error if it failed.
    pub(crate) async fn scrape_once(&mut self) -> Option<String> {
        self.metrics.scrapes_in_progress.inc();
        let _done = InProgress(self.metrics.scrapes_in_progress.clone());
        self.body = BYTES.take();
        let msg = self.scrape_with_buffers().await;
        BYTES.give(std::mem::take(&mut self.body));
        BYTES.give(std::mem::take(&mut self.inflated));
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        SAMPLES.give(out);
        msg
    }

    async fn scrape_with_buffers(&mut self) -> Option<String> {
        let started = SystemTime::now();
        let ts = crate::clock::unix_ms_at(started);
        let t0 = Instant::now();
        let timeout = self.target.timeout;
        let fetched = match tokio::time::timeout(timeout, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(ScrapeError::Timeout(crate::units::format_duration(timeout))),
        };
        self.out = SAMPLES.take();
        self.out.clear();
        self.out.scraped_at_ms = ts;
        self.out.stream = self.target.stream;
        let result = match fetched {
            Err(e) => Err(e),
            Ok(f) if self.body.len() >= OFF_THREAD_BODY => {
                self.ingest_off_thread(ts, f.format).await.map(|n| (n, f))
            }
            Ok(f) => self
                .cache
                .ingest_format(
                    &self.target.ctx,
                    &self.body,
                    f.format,
                    ts,
                    &mut self.out,
                    self.target.sample_limit,
                )
                .map(|n| (n, f))
                .map_err(ScrapeError::from),
        };
        let ctx = &self.target.ctx;
        let duration = t0.elapsed().as_secs_f64();
        let mut latest = None;
        let (up, scraped, kept, added, err) = match result {
            Ok((n, fetched)) => {
                // Only the exposed samples so far: no markers, no synthetic series.
                if self.keep_latest.load(std::sync::atomic::Ordering::Relaxed) {
                    latest = Some(Arc::new(self.out.clone()));
                }
                // The previous body, as received, tells the label sets of
                // the series that vanish next time.
                let received = if fetched.gzip {
                    &self.inflated
                } else {
                    &self.body
                };
                self.cache
                    .end(ctx, ts, &mut self.out, received, fetched.gzip);
                self.metadata.clear();
                if self.metadata_due() {
                    let received = if fetched.gzip {
                        &self.inflated
                    } else {
                        &self.body
                    };
                    crate::series::encode_metadata(received, fetched.format, &mut self.metadata);
                }
                // The body is done with: given back before the samples are
                // compressed and queued, so a huge page is not held twice.
                BYTES.give(std::mem::take(&mut self.body));
                BYTES.give(std::mem::take(&mut self.inflated));
                if n.duplicates != self.duplicates {
                    if n.duplicates > 0 {
                        tracing::warn!(job = %self.target.job, instance = %self.target.instance, samples = n.duplicates, "the target exposes series more than once; the first sample of each is kept, the repeats dropped (Prometheus: sample_duplicate_timestamp). Logged again when the number changes");
                    }
                    self.duplicates = n.duplicates;
                }
                if n.duplicates > 0 {
                    self.metrics
                        .samples_duplicate
                        .get_or_create(&self.labels)
                        .inc_by(n.duplicates);
                }
                if n.out_of_order > 0 {
                    self.metrics
                        .samples_out_of_order
                        .get_or_create(&self.labels)
                        .inc_by(n.out_of_order);
                    tracing::debug!(job = %self.target.job, instance = %self.target.instance, samples = n.out_of_order, "samples with explicit timestamps older than their series' last dropped");
                }
                if n.out_of_bounds > 0 {
                    self.metrics
                        .samples_out_of_bounds
                        .get_or_create(&self.labels)
                        .inc_by(n.out_of_bounds);
                    tracing::debug!(job = %self.target.job, instance = %self.target.instance, samples = n.out_of_bounds, "samples with explicit timestamps out of bounds dropped");
                }
                if self.target.ctx.family_budget.enabled() {
                    let (over, total) = self.cache.over_budget();
                    self.budget
                        .scraped(over, total, &self.metrics, &self.labels);
                }
                (1.0, n.scraped, n.kept, n.added, None)
            }
            Err(e) => {
                self.out.clear();
                self.metadata.clear();
                self.out.scraped_at_ms = ts;
                self.cache.mark_all_stale(ctx, ts, &mut self.out);
                (0.0, 0, 0, 0, Some(e))
            }
        };
        self.scraped_once = true;
        let syn = &self.synthetic;
        self.out.push(&syn.up, up, ts);
        self.out.push(&syn.duration, duration, ts);
        self.out.push(&syn.scraped, scraped as f64, ts);
        self.out.push(&syn.post_relabel, kept as f64, ts);
        self.out.push(&syn.added, added as f64, ts);
        self.deliver_scrape().await;
        if self.metadata.capacity() > METADATA_KEEP {
            // Given back after a page with unusually much metadata.
            self.metadata = Vec::new();
        }

        let m = &self.metrics;
        m.scrapes.get_or_create(&self.labels).inc();
        m.samples_scraped
            .get_or_create(&self.labels)
            .inc_by(scraped);
        m.target_up.get_or_create(&self.labels).set(up as i64);
        m.scrape_duration.get_or_create(&self.labels).set(duration);
        m.series
            .get_or_create(&self.labels)
            .set(self.cache.len() as i64);
        let msg = err.as_ref().map(|e| e.to_string());
        if let Some(e) = &err {
            // A new error (in words) is said; the same again is counted.
            let notice = self.outage.failed(msg.as_deref().unwrap_or_default());
            crate::events::ScrapeFailed {
                target: &self.labels,
                reason: e.reason(),
                error: e,
                notice,
            }
            .emit(m);
        } else {
            if let Some((lasted, failures)) = self.outage.recovered() {
                crate::events::ScrapeRecovered {
                    target: &self.labels,
                    lasted,
                    failures,
                }
                .emit();
            }
            tracing::debug!(job = %self.target.job, instance = %self.target.instance, samples = scraped, duration, "scrape ok");
        }
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.health = if up == 1.0 { Health::Up } else { Health::Down };
        st.last_scrape = Some(ts as f64 / 1000.0);
        st.last_scrape_duration_seconds = Some(duration);
        st.last_error = msg.clone();
        st.samples = scraped;
        st.series = self.cache.len();
        st.latest = latest;
        let (over, total) = self.cache.over_budget();
        st.over_budget.clear();
        st.over_budget
            .extend(over.iter().map(status::FamilyOver::from));
        st.over_budget_total = total;
        st.backlog = self
            .sinks
            .iter()
            .filter_map(|s| {
                let (samples, oldest) = s.queue.backlog_of(self.target.stream)?;
                Some(status::Backlog {
                    remote_name: s.queue.name().to_string(),
                    samples,
                    oldest_scrape: oldest as f64 / 1000.0,
                })
            })
            .collect();
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn url_carries_scheme_path_and_params() {
        let cfg = Config::from_yaml(
            "scrape_configs:\n  - job_name: cp\n    scheme: https\n    params: {hosting: ['true'], x: ['a b', 'c&d']}\n    static_configs: [{targets: ['10.0.0.1:6443']}]\n",
        )
        .unwrap();
        let t = targets(&cfg);
        assert_eq!(
            t[0].url.to_string(),
            "https://10.0.0.1:6443/metrics?hosting=true&x=a%20b&x=c%26d"
        );
    }

    #[test]
    fn relabel_configs_shape_targets() {
        let cfg = Config::from_yaml(
            r#"
scrape_configs:
  - job_name: cp
    params: {hosting: ['true']}
    relabel_configs:
      - {source_labels: [__address__], regex: '10\.0\.0\.9:.*', action: drop}
      - {source_labels: [__address__], regex: '(.*):6443', target_label: __address__, replacement: '${1}:443'}
      - {target_label: __scheme__, replacement: https}
      - {target_label: __param_hosting, replacement: 'false'}
      - {source_labels: [__address__], target_label: node}
    static_configs: [{targets: ['10.0.0.1:6443', '10.0.0.9:6443']}]
"#,
        )
        .unwrap();
        let t = targets(&cfg);
        assert_eq!(t.len(), 1, "one target dropped");
        assert_eq!(
            t[0].url.to_string(),
            "https://10.0.0.1:443/metrics?hosting=false"
        );
        assert_eq!(t[0].instance, "10.0.0.1:443");
        assert!(
            t[0].ctx
                .target_labels
                .contains(&("node".into(), "10.0.0.1:443".into()))
        );
        assert!(
            t[0].ctx
                .target_labels
                .iter()
                .all(|(k, _)| !k.starts_with("__"))
        );
    }

    #[test]
    fn target_labels_job_instance_and_static() {
        let cfg = Config::from_yaml(
            "global: {external_labels: {cluster: c}}\nscrape_configs:\n  - job_name: cp\n    static_configs:\n      - targets: ['h:1', 'h:2']\n        labels: {env: prod, empty: '', __meta: x}\n      - targets: ['h:3']\n        labels: {job: override, instance: named}\n",
        )
        .unwrap();
        let t = targets(&cfg);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0].ctx.target_labels,
            vec![
                ("env".into(), "prod".into()),
                ("instance".into(), "h:1".into()),
                ("job".into(), "cp".into())
            ]
        );
        assert_eq!(
            t[0].ctx.external_labels,
            vec![("cluster".into(), "c".into())]
        );
        assert_eq!(
            (t[2].job.as_str(), t[2].instance.as_str()),
            ("override", "named")
        );
    }
}
