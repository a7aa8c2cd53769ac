//! The remote-write sender: per destination, `max_shards` workers that send
//! in parallel, each target's series in order.
//!
//! POSTs each request in the destination's wire format (its body and
//! headers from [`crate::remote_write::wire`], negotiated on the first
//! requests: a receiver that does not take a format gets the same batch in
//! the next one) with our `User-Agent`, plus the
//! configured headers and credentials (files are re-read on every request, so
//! a rotated Secret is picked up). The retry policy follows the remote-write
//! spec: 2xx acknowledges; 5xx, 429 (with `retry_on_http_429`, honouring
//! `Retry-After`), timeouts and connection errors retry the same batch with
//! jittered exponential backoff from `min_backoff` to `max_backoff`, forever;
//! any other status drops the batch, counts it and logs the receiver's
//! message, since sending it again can never succeed.
//!
//! Layout: this file holds the workers, the send loop of a lease and its
//! accounting; `attempt` one request (the transport).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Uri;
use tokio_util::sync::CancellationToken;

mod attempt;

pub(crate) use attempt::{HttpTransport, Transport};

use super::queue::{Batch, Lease, Queue};
use super::retry::{Backoff, Outcome, Rejection};
use super::wire::{Encoder, Negotiation, WireFormat};
use crate::config::RemoteWriteConfig;
use crate::events::{DropReason, SendFailed};
use crate::failure::Failure;
use crate::http::{Chunks, HttpClient};
use crate::telemetry::{Metrics, RemoteLabels};

/// What keeps a request to a destination from being made.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("{url:?} is not a URL: {reason}")]
    NotUrl { url: String, reason: String },
    #[error("{0:?}: the scheme must be http or https")]
    Scheme(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("reading {0}")]
    CredentialsFile(#[source] crate::fsread::ReadError),
    #[error("credentials contain characters not allowed in a header")]
    CredentialsCharacters,
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
}

/// A destination URL as the sender uses it (`http` or `https`, a host).
pub(crate) fn parse_url(url: &str) -> Result<Uri, SenderError> {
    let u: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| SenderError::NotUrl {
            url: url.into(),
            reason: e.to_string(),
        })?;
    match u.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(SenderError::Scheme(url.into())),
    }
    if u.host().is_none_or(str::is_empty) {
        return Err(SenderError::NoHost(url.into()));
    }
    Ok(u)
}

/// Sends one destination's queue; see the module docs.
pub(crate) struct Sender {
    pub name: String,
    /// What carries a request: HTTP in production ([`HttpTransport`]).
    transport: Box<dyn Transport>,
    cfg: RemoteWriteConfig,
    queue: Arc<Queue>,
    metrics: Metrics,
    labels: RemoteLabels,
    /// The current run of failures, shared by the workers (for the log).
    outage: std::sync::Mutex<crate::events::Outage>,
    /// The wire format in use.
    negotiation: Negotiation,
    /// Metric metadata by family, for 2.0 requests.
    metadata: super::v2::MetaCache,
    /// Encoders not in use (at most [`ENCODERS_KEPT`]): the workers share
    /// a few rather than each keeping one (`max_shards` of them, each with
    /// compression contexts and request-sized buffers).
    encoders: std::sync::Mutex<Vec<Encoder>>,
}

/// Idle encoders a sender keeps.
const ENCODERS_KEPT: usize = 2;

/// A request body in one format, kept across retries of a lease.
pub(crate) type Encoded = Option<(WireFormat, Chunks)>;

impl Sender {
    pub(crate) fn new(
        name: String,
        cfg: RemoteWriteConfig,
        client: tokio::sync::watch::Receiver<HttpClient>,
        queue: Arc<Queue>,
        metrics: Metrics,
    ) -> Result<Self, SenderError> {
        let transport = HttpTransport {
            client,
            url: parse_url(&cfg.url)?,
            cfg: cfg.clone(),
        };
        Ok(Self::with_transport(
            name,
            cfg,
            Box::new(transport),
            queue,
            metrics,
        ))
    }

    /// A sender over any [`Transport`] (the tests' in-process receivers).
    pub(crate) fn with_transport(
        name: String,
        cfg: RemoteWriteConfig,
        transport: Box<dyn Transport>,
        queue: Arc<Queue>,
        metrics: Metrics,
    ) -> Self {
        let labels = RemoteLabels {
            remote_name: name.clone(),
            url: cfg.url.clone(),
        };
        Sender {
            name,
            transport,
            queue,
            metrics,
            labels,
            outage: Default::default(),
            negotiation: Negotiation::new(cfg.protobuf_message),
            metadata: Default::default(),
            encoders: Default::default(),
            cfg,
        }
        .with_format_applied()
    }

    fn with_format_applied(self) -> Self {
        self.apply_format();
        self
    }

    /// 1 for the format in use, 0 for the others of the chain; and the
    /// queue's codec for new batches (`queue.codec`).
    fn apply_format(&self) {
        let now = self.negotiation.current();
        self.queue.set_codec(match self.cfg.queue.codec {
            crate::config::QueueCodec::Auto => now.storage_codec(),
            crate::config::QueueCodec::Snappy => super::codec::Codec::Snappy,
            crate::config::QueueCodec::Zstd => super::codec::Codec::Zstd,
        });
        for f in self.negotiation.all() {
            self.metrics
                .remote_format
                .get_or_create(&crate::telemetry::RemoteFormatLabels {
                    remote_name: self.labels.remote_name.clone(),
                    url: self.labels.url.clone(),
                    protobuf_message: f.message(),
                    compression: f.compression(),
                })
                .set(i64::from(*f == now));
        }
    }

    /// The destination URL (credentials never appear in it: the config
    /// moves URL userinfo into `basic_auth`).
    pub(crate) fn url(&self) -> &str {
        &self.cfg.url
    }

    fn cause_labels(&self, cause: Rejection) -> crate::telemetry::RemoteCauseLabels {
        crate::telemetry::RemoteCauseLabels {
            remote_name: self.labels.remote_name.clone(),
            url: self.labels.url.clone(),
            cause,
        }
    }

    /// Sends until cancelled; then keeps sending what is queued for at most
    /// `grace`. What is left stays on disk (durable queue) or is counted as
    /// dropped (`reason="shutdown"`, in-memory queue).
    ///
    /// `queue_config.max_shards` workers send at once, each one request at a
    /// time; the queue hands out requests so that a stream (a target) has at
    /// most one in flight and its batches go in order (see
    /// [`Queue::take`]): one target's series arrive in order, many targets'
    /// requests travel in parallel.
    pub(crate) async fn run(self, cancel: CancellationToken, grace: Duration) {
        let workers = self.cfg.queue_config.max_shards.max(1);
        let me = Arc::new(self);
        let seen = Arc::new(std::sync::Mutex::new(SeenReasons::default()));
        // Dropped (a hand-over), the set aborts the workers; their leases go
        // back to the queue.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            set.spawn(me.clone().worker(cancel.clone(), grace, seen.clone()));
        }
        while set.join_next().await.is_some() {}
        let q = &me.queue;
        let left = q.shutdown();
        if left > 0 {
            tracing::warn!(remote_name = %me.name, samples = left, "shutdown grace period over; unsent samples of the in-memory queue dropped");
        } else if q.pending_samples() > 0 {
            tracing::info!(remote_name = %me.name, samples = q.pending_samples(), "unsent samples stay in the disk queue for the next start");
        }
    }

    /// One of the senders of [`Sender::run`].
    async fn worker(
        self: Arc<Self>,
        cancel: CancellationToken,
        grace: Duration,
        seen_reasons: Arc<std::sync::Mutex<SeenReasons>>,
    ) {
        let q = &self.queue;
        let qc = &self.cfg.queue_config;
        let mut backoff = Backoff::new(qc.min_backoff.0, qc.max_backoff.0);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && cancel.is_cancelled() {
                deadline = Some(tokio::time::Instant::now() + grace);
                q.flush(true);
            }
            let max = qc.max_samples_per_send;
            let Some((mut samples, mut full, mut oldest_ms)) = q.peek(max) else {
                if deadline.is_some() && q.pending_samples() == 0 {
                    break;
                }
                // Nothing to take now (empty, or every stream busy): look
                // again when notified, when the open batch is due, or soon.
                let wait = q
                    .open_due_at()
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(IDLE_LOOK)
                    .min(IDLE_LOOK);
                let sleep = tokio::time::sleep(wait);
                match deadline {
                    Some(d) => {
                        if tokio::time::timeout_at(d, q.notified()).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        tokio::select! {
                            _ = q.notified() => {}
                            _ = sleep => q.flush(false),
                            _ = cancel.cancelled() => {}
                        }
                    }
                }
                continue;
            };
            // A disk queue holds each scrape as its own batches: let the
            // batches of the next scrapes join this request (fewer, larger
            // requests cost less here and at the receiver), waiting at most
            // JOIN_WAIT (or batch_send_deadline, if shorter) after the oldest
            // scrape in it. Not on the way out. Only the queue's index is
            // looked at while waiting.
            let window = JOIN_WAIT.min(qc.batch_send_deadline.0).as_millis() as i64;
            while deadline.is_none() && q.is_durable() && !full && samples < max {
                let until = oldest_ms.saturating_add(window);
                let left = until.saturating_sub(crate::clock::unix_ms());
                // (A batch with no scrape time never waits.)
                if left <= 0 || left > window {
                    break;
                }
                tokio::select! {
                    _ = q.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(left as u64)) => {}
                    _ = cancel.cancelled() => {}
                }
                match q.peek(max) {
                    Some((n, f, o)) => (samples, full, oldest_ms) = (n, f, o),
                    None => break,
                }
                if cancel.is_cancelled()
                    || crate::clock::unix_ms() >= oldest_ms.saturating_add(window)
                {
                    break;
                }
            }
            // Another worker may have taken it meanwhile.
            let Some((lease, _)) = q.take(max) else {
                continue;
            };
            let ended = self
                .send_lease(
                    lease,
                    &mut backoff,
                    &mut deadline,
                    &cancel,
                    grace,
                    &seen_reasons,
                )
                .await;
            if ended || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
        }
    }

    /// Sends one request until the receiver has it, refuses it for good, or
    /// the grace period ends (then the lease goes back: true).
    async fn send_lease(
        &self,
        lease: Lease,
        backoff: &mut Backoff,
        deadline: &mut Option<tokio::time::Instant>,
        cancel: &CancellationToken,
        grace: Duration,
        seen_reasons: &std::sync::Mutex<SeenReasons>,
    ) -> bool {
        let mut encoded: Encoded = None;
        loop {
            let batch = lease.batch();
            let attempt = self.attempt(batch, &mut encoded);
            let result = match *deadline {
                Some(d) => match tokio::time::timeout_at(d, attempt).await {
                    Ok(o) => o,
                    Err(_) => {
                        lease.release();
                        return true;
                    }
                },
                None => attempt.await,
            };
            let outcome = match result {
                Ok(o) => o,
                Err(e) => {
                    // Damage the record CRC did not catch: nothing to send.
                    tracing::error!(remote_name = %self.name, samples = batch.samples, error = %e, "queue: a batch cannot be encoded for sending; dropped");
                    self.queue.drop_samples(
                        DropReason::Corrupt,
                        batch.samples,
                        batch.parts() as u64,
                    );
                    lease.complete();
                    return false;
                }
            };
            match outcome {
                Outcome::Sent => {
                    backoff.reset();
                    let bytes = encoded.as_ref().map_or(0, |(_, b)| b.len());
                    self.delivered(batch, bytes);
                    lease.complete();
                    return false;
                }
                Outcome::Reject {
                    message, rejection, ..
                } if batch.parts.len() > 1
                    && (rejection == Rejection::TooLarge || self.cfg.split_refused_requests) =>
                {
                    // A joined request (several scrapes). 413 refused its
                    // size, not its data: its scrapes go again one by one.
                    // Any other 4xx is never sent again (remote write 1.0:
                    // a sender MUST NOT retry on 4xx other than 429), unless
                    // the user opted into `split_refused_requests`.
                    tracing::info!(
                        remote_name = %self.name,
                        samples = batch.samples,
                        reason = %message,
                        "remote write refused a joined request; sending its parts one by one"
                    );
                    self.queue.split_until(batch.seq);
                    lease.release();
                    return false;
                }
                Outcome::Reject {
                    failure,
                    message,
                    rejection,
                } => {
                    self.refused(batch, failure, &message, rejection, seen_reasons);
                    lease.complete();
                    return false;
                }
                Outcome::Retry {
                    failure,
                    message,
                    after,
                } => {
                    let delay = after.unwrap_or_else(|| backoff.next_delay());
                    self.failed(batch, failure, &message, delay);
                    if !self.wait_to_retry(delay, deadline, cancel, grace).await {
                        lease.release();
                        return true;
                    }
                    // `queue.fresh_first`: a newer scrape came while this
                    // one waited; it goes instead, this one joins the backlog.
                    if self.queue.superseded(&lease) {
                        lease.release();
                        return false;
                    }
                }
            }
        }
    }

    /// The receiver has the request: counters, and the end of an outage.
    fn delivered(&self, batch: &Batch, bytes: usize) {
        let m = &self.metrics;
        m.backoff_seconds.get_or_create(&self.labels).set(0.0);
        m.samples_sent
            .get_or_create(&self.labels)
            .inc_by(batch.samples as u64);
        m.batches_sent.get_or_create(&self.labels).inc();
        m.bytes_sent
            .get_or_create(&self.labels)
            .inc_by(bytes as u64);
        m.last_send_timestamp
            .get_or_create(&self.labels)
            .set(crate::clock::unix_ms() as f64 / 1000.0);
        let recovered = self
            .outage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recovered();
        if let Some((lasted, retries)) = recovered {
            crate::events::SendRecovered {
                remote: &self.labels,
                lasted,
                retries,
            }
            .emit();
        }
    }

    /// The receiver refused the request for good (a 4xx other than 429):
    /// its samples are dropped and counted, each kind of reason logged once.
    fn refused(
        &self,
        batch: &Batch,
        failure: Failure,
        reason: &str,
        cause: Rejection,
        seen_reasons: &std::sync::Mutex<SeenReasons>,
    ) {
        self.metrics
            .rejections
            .get_or_create(&self.cause_labels(cause))
            .inc();
        let first = seen_reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_time(reason);
        if first {
            let hint = cause.hint_for(self.cfg.queue.fresh_first);
            tracing::error!(
                remote_name = %self.name,
                samples = batch.samples,
                kind = failure.kind().as_str(),
                %reason,
                "remote write refused a request (4xx); dropping its samples (remote write never retries a 4xx other than 429; further refusals like this are counted, not logged){hint}"
            );
        } else {
            tracing::debug!(remote_name = %self.name, samples = batch.samples, %reason, "remote write refused a request");
        }
        SendFailed {
            remote: &self.labels,
            failure,
            message: reason,
            samples: batch.samples,
            retry_in: None,
            notice: crate::events::Notice::Quiet,
        }
        .emit(&self.metrics);
        self.queue
            .drop_samples(DropReason::Rejected, batch.samples, batch.parts() as u64);
    }

    /// An attempt that will be retried after `delay`: counted, and said
    /// once per outage.
    fn failed(&self, batch: &Batch, failure: Failure, reason: &str, delay: Duration) {
        let notice = self
            .outage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed(failure.kind().as_str());
        SendFailed {
            remote: &self.labels,
            failure,
            message: reason,
            samples: batch.samples,
            retry_in: Some(delay),
            notice,
        }
        .emit(&self.metrics);
    }

    /// Waits `delay` before the next attempt; false when the grace period
    /// ends first. A shutdown starting during the wait starts the grace
    /// period and flushes the queue.
    async fn wait_to_retry(
        &self,
        delay: Duration,
        deadline: &mut Option<tokio::time::Instant>,
        cancel: &CancellationToken,
        grace: Duration,
    ) -> bool {
        let sleep = tokio::time::sleep(delay);
        match *deadline {
            Some(d) => tokio::time::timeout_at(d, sleep).await.is_ok(),
            None => {
                tokio::select! {
                    _ = sleep => {}
                    _ = cancel.cancelled() => {
                        *deadline = Some(tokio::time::Instant::now() + grace);
                        self.queue.flush(true);
                    }
                }
                true
            }
        }
    }
}

/// How long an idle worker sleeps before looking at the queue again without
/// being notified (a safety net: every append, completion and release
/// notifies, and a worker that takes a request wakes the next when more waits).
const IDLE_LOOK: Duration = Duration::from_secs(5);

/// How long a queued scrape may wait for the next ones to share its request.
const JOIN_WAIT: Duration = Duration::from_secs(1);

/// Bytes of a receiver's answer read (as Prometheus, which reads 1 KiB of
/// an error body for its log line).
const REPLY_KEEP: usize = 1024;

/// Remembers which kinds of rejection were logged, so each distinct reason
/// is logged once (the receiver's message without its numbers, which differ
/// per batch). Bounded: forgets everything past 64 kinds.
#[derive(Default)]
struct SeenReasons(std::collections::HashSet<String>);

impl SeenReasons {
    fn first_time(&mut self, reason: &str) -> bool {
        let key: String = reason
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(80)
            .collect();
        if self.0.len() >= 64 {
            self.0.clear();
        }
        self.0.insert(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::WriteRequest;
    use crate::remote_write::retry::classify;
    use crate::remote_write::samples::{EncodedSamples, encode_labels};
    use http::StatusCode;
    use prost::Message;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    /// An in-process receiver: answers from a script (status, written
    /// header, Retry-After), then 204 with the written header for 2.0;
    /// records what it was sent and when (on the paused clock).
    #[derive(Default)]
    struct Scripted {
        script: Mutex<std::collections::VecDeque<(u16, bool, Option<&'static str>)>>,
        /// (format, when, samples in the request as 1.0 or 2.0 decodes it)
        got: Mutex<Vec<(WireFormat, tokio::time::Instant, usize)>>,
    }

    impl Transport for Arc<Scripted> {
        fn post(
            &self,
            format: WireFormat,
            body: Chunks,
        ) -> Pin<Box<dyn Future<Output = (Outcome, Option<String>)> + Send + '_>> {
            let this = self.clone();
            Box::pin(async move {
                let raw = body.to_vec();
                let codec = format.storage_codec();
                let mut plain = Vec::new();
                crate::remote_write::codec::Decompressor::default()
                    .decompress(codec, &raw, &mut plain)
                    .expect("a body in its format's compression");
                let samples = if format == WireFormat::V2 {
                    crate::remote_write::v2::Request::decode(plain.as_slice())
                        .unwrap()
                        .timeseries
                        .len()
                } else {
                    WriteRequest::decode(plain.as_slice())
                        .unwrap()
                        .timeseries
                        .len()
                };
                this.got
                    .lock()
                    .unwrap()
                    .push((format, tokio::time::Instant::now(), samples));
                let (status, written, retry_after) = this
                    .script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or((204, true, None));
                let ra = retry_after.map(http::HeaderValue::from_static);
                let outcome =
                    classify(StatusCode::from_u16(status).unwrap(), ra.as_ref(), true, "");
                let written = (written && format == WireFormat::V2).then(|| samples.to_string());
                (outcome, written)
            })
        }
    }

    fn sender(
        setting: &str,
        rx: &Arc<Scripted>,
        max_shards: usize,
    ) -> (Sender, Arc<Queue>, Metrics) {
        let yaml = format!(
            "remote_write:\n  - url: http://127.0.0.1:1/api/v1/write\n    protobuf_message: {setting}\n    queue_config: {{max_shards: {max_shards}, max_samples_per_send: 100, min_backoff: 1s, max_backoff: 8s}}\n"
        );
        let cfg = crate::config::Config::from_yaml(&yaml).unwrap();
        let rw = cfg.remote_write[0].clone();
        let metrics = Metrics::new();
        let labels = RemoteLabels {
            remote_name: "t".into(),
            url: rw.url.clone(),
        };
        let q = Arc::new(Queue::memory(
            100,
            1_000_000,
            Duration::from_secs(5),
            metrics.clone(),
            labels,
        ));
        let s = Sender::with_transport(
            "t".into(),
            rw,
            Box::new(rx.clone()),
            q.clone(),
            metrics.clone(),
        );
        (s, q, metrics)
    }

    fn scrape(q: &Queue, stream: u64, n: usize, ts: i64) {
        let mut e = EncodedSamples::default();
        let l = encode_labels(&[("__name__".into(), "m".into())]);
        for i in 0..n {
            e.push(&l, i as f64, ts + i as i64);
        }
        e.scraped_at_ms = ts;
        e.stream = stream;
        q.append(&e, &[]);
        q.flush(true);
    }

    /// Runs the sender until the queue is empty (or `limit` of paused time).
    async fn drain(s: Sender, q: &Arc<Queue>, limit: Duration) {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(s.run(cancel.clone(), Duration::from_secs(1)));
        let start = tokio::time::Instant::now();
        while q.pending_samples() > 0 && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_on_the_clock_and_deliver_once() {
        let rx = Arc::new(Scripted::default());
        rx.script.lock().unwrap().extend([
            (503, false, None),
            (503, false, None),
            (204, false, None),
        ]);
        let (s, q, metrics) = sender("prometheus.WriteRequest", &rx, 1);
        scrape(&q, 1, 50, 1_000);
        drain(s, &q, Duration::from_secs(60)).await;
        let got = rx.got.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "two failures, one success");
        // Backoff from min_backoff (1 s), doubling, with up to half jitter.
        let gap1 = got[1].1 - got[0].1;
        let gap2 = got[2].1 - got[1].1;
        assert!(
            gap1 >= Duration::from_millis(500) && gap1 <= Duration::from_secs(1),
            "{gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_secs(1) && gap2 <= Duration::from_secs(2),
            "{gap2:?}"
        );
        let m = metrics.encode();
        assert!(m.contains("metrics_relay_remote_write_samples_sent_total{remote_name=\"t\",url=\"http://127.0.0.1:1/api/v1/write\"} 50"), "{m}");
        assert!(m.contains("metrics_relay_remote_write_samples_retried_total{remote_name=\"t\",url=\"http://127.0.0.1:1/api/v1/write\"} 100"), "{m}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_waited_out_on_the_clock() {
        let rx = Arc::new(Scripted::default());
        rx.script
            .lock()
            .unwrap()
            .push_back((429, false, Some("30")));
        let (s, q, _) = sender("prometheus.WriteRequest", &rx, 1);
        scrape(&q, 1, 10, 1_000);
        drain(s, &q, Duration::from_secs(120)).await;
        let got = rx.got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1].1 - got[0].1,
            Duration::from_secs(30),
            "Retry-After: 30"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_format_refused_is_left_for_good_and_its_batch_sent_in_the_next() {
        // 2.0 answered 2xx without the written header (a 1.x receiver), then
        // zstd answered 415: the same batch goes in each, then 1.0 + snappy
        // for good, nothing waiting in between.
        let rx = Arc::new(Scripted::default());
        rx.script
            .lock()
            .unwrap()
            .extend([(204, false, None), (415, false, None)]);
        let (s, q, metrics) = sender("auto", &rx, 4);
        scrape(&q, 1, 30, 1_000);
        scrape(&q, 2, 20, 2_000);
        drain(s, &q, Duration::from_secs(60)).await;
        let got = rx.got.lock().unwrap().clone();
        let formats: Vec<WireFormat> = got.iter().map(|g| g.0).collect();
        assert_eq!(formats[0], WireFormat::V2);
        assert_eq!(formats[1], WireFormat::V1Zstd);
        assert!(
            formats[2..].iter().all(|f| *f == WireFormat::V1),
            "{formats:?}"
        );
        assert_eq!(got[0].1, got[2].1, "no backoff for a format change");
        let delivered: usize = got[2..].iter().map(|g| g.2).sum();
        assert_eq!(delivered, 50, "every sample once in the format that stuck");
        let m = metrics.encode();
        assert!(
            m.contains("protobuf_message=\"prometheus.WriteRequest\",compression=\"snappy\"} 1"),
            "{m}"
        );
        assert!(!m.contains("reason=\"rejected\""), "{m}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_400_after_the_first_request_is_a_refusal_not_a_format_change() {
        let rx = Arc::new(Scripted::default());
        rx.script
            .lock()
            .unwrap()
            .extend([(204, true, None), (400, false, None)]);
        let (s, q, metrics) = sender("io.prometheus.write.v2.Request", &rx, 1);
        // Requests of one scrape each (100 samples: a request's most).
        scrape(&q, 1, 100, 1_000);
        scrape(&q, 1, 100, 2_000);
        scrape(&q, 1, 100, 3_000);
        drain(s, &q, Duration::from_secs(60)).await;
        let got = rx.got.lock().unwrap().clone();
        assert!(got.iter().all(|g| g.0 == WireFormat::V2), "{got:?}");
        let m = metrics.encode();
        assert!(m.contains("metrics_relay_remote_write_samples_written_total{remote_name=\"t\",url=\"http://127.0.0.1:1/api/v1/write\"} "), "{m}");
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            m.contains("reason=\"rejected\"} 100"),
            "the refused request is dropped: {m}"
        );
    }

    #[test]
    fn each_rejection_kind_is_logged_once() {
        let mut s = SeenReasons::default();
        assert!(s.first_time("400: out of bounds: series a timestamp=1700000000000"));
        assert!(!s.first_time("400: out of bounds: series a timestamp=1700000005000"));
        assert!(s.first_time("400: duplicate sample"));
    }
}
