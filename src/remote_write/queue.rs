//! The per-destination batcher and queue, in memory or on disk.
//!
//! Scrape tasks [`Queue::append`] their encoded samples; the open batch (an
//! uncompressed `WriteRequest` body under construction) is sealed, snappy
//! block-compressed once, when it reaches `max_samples_per_send` or when it is
//! older than `batch_send_deadline`. Sealed batches wait in FIFO order for the
//! sender, which [`Queue::front`]s one, sends it (retrying as long as it
//! takes) and [`Queue::ack`]s it by sequence number. Samples of one series
//! are appended in scrape order by one task, and the single sender sends in
//! queue order, so every series arrives in timestamp order, across restarts
//! too when the queue is on disk.
//!
//! Storage:
//! - **disk** (with `--data-dir` or `queue.path`): a [`SegmentLog`]; every
//!   scrape's samples are sealed and appended at once (batches of at most
//!   `max_samples_per_send`, never held open in memory), before anything sends
//!   them, and deleted only once acknowledged, so a receiver outage, a restart
//!   or a crash (`kill -9`) loses nothing.
//!   Budgets `queue.max_size` (bytes) and `queue.max_age` drop the **oldest**
//!   batches, counted with `reason="max_size"` / `"max_age"`. A failed append
//!   (disk full) is counted (`reason="disk_error"`) and the agent keeps going;
//!   appends work again once space returns.
//! - **memory** (no data dir): at most `capacity * max_shards` samples
//!   (Prometheus's total buffering for the same `queue_config`); past that the
//!   oldest batch is dropped (`reason="queue_full"`). `max_age` applies too.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;

use super::disk::{DiskError, Recovery, SegmentLog};
use super::proto::read_varint;
use super::samples::{EncodedSamples, POOL_KEEP_MAX};
use crate::http::Chunks;
use crate::telemetry::{Metrics, RemoteLabels, RemoteReasonLabels};

/// A sealed, compressed write request.
#[derive(Clone, Debug)]
pub struct Batch {
    pub seq: u64,
    /// The request body, or its first part when `more` has the rest.
    pub data: Bytes,
    /// Further parts of a joined request (see [`join_snappy`]).
    pub more: Vec<Bytes>,
    pub samples: usize,
    /// Start (ms) of the oldest scrape in the batch.
    pub oldest_ms: i64,
}

impl Batch {
    /// Size of the request body.
    pub fn len(&self) -> usize {
        self.data.len() + self.more.iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The request body, its parts in order (nothing copied).
    pub fn body(&self) -> Chunks {
        let mut c = Chunks::from(self.data.clone());
        for b in &self.more {
            c.push(b.clone());
        }
        c
    }
}

/// Where sealed batches wait.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    Memory {
        max_samples: usize,
    },
    Disk {
        dir: PathBuf,
        max_size: u64,
        segment_size: u64,
    },
}

enum Storage {
    Memory {
        batches: VecDeque<Batch>,
        samples: usize,
        max_samples: usize,
        next_seq: u64,
    },
    Disk {
        log: Box<SegmentLog>,
        max_size: u64,
        last_error_log: Option<Instant>,
        /// The newest unsent batches also kept in memory (at most
        /// [`HOT_BYTES`]), so a sender that keeps up never reads the disk.
        hot: VecDeque<(u64, Bytes)>,
        hot_bytes: usize,
    },
}

/// How soon a batch that could not be read (not damaged) is tried again.
const READ_RETRY: Duration = Duration::from_secs(1);

/// Compressed bytes of unsent batches a disk queue keeps in memory too.
const HOT_BYTES: usize = 1 << 20;

struct Inner {
    open: Vec<u8>,
    open_samples: usize,
    open_since: Option<Instant>,
    open_oldest_ms: i64,
    storage: Storage,
    encoder: snap::raw::Encoder,
    /// Compression output, reused.
    scratch: Vec<u8>,
    /// When reading the front batch last failed for a reason other than
    /// damage (it is retried).
    read_failed_at: Option<Instant>,
}

/// See the module docs.
pub struct Queue {
    inner: Mutex<Inner>,
    notify: Notify,
    max_samples_per_send: usize,
    batch_send_deadline: Duration,
    max_age: Option<Duration>,
    metrics: Metrics,
    labels: RemoteLabels,
    /// Batches up to this sequence number are sent one by one, never joined:
    /// those found on disk at start-up (some may have reached the receiver
    /// before a crash, as the ack file lags by up to five seconds), and those
    /// of a joined request the receiver refused (4xx). A receiver that
    /// refuses a request for one bad sample (400: out of order, out of
    /// bounds) refuses all of it, so a join could take good samples down
    /// with the bad; sent alone, only the refused part is dropped.
    alone_until: std::sync::atomic::AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Queue {
    /// A queue; a disk queue is opened (and repaired) here.
    pub fn new(
        max_samples_per_send: usize,
        batch_send_deadline: Duration,
        max_age: Option<Duration>,
        storage: StorageConfig,
        metrics: Metrics,
        labels: RemoteLabels,
    ) -> Result<(Self, Option<Recovery>), DiskError> {
        let mut recovered_until = 0;
        let (storage, recovery) = match storage {
            StorageConfig::Memory { max_samples } => (
                Storage::Memory {
                    batches: VecDeque::new(),
                    samples: 0,
                    max_samples: max_samples.max(max_samples_per_send),
                    next_seq: 1,
                },
                None,
            ),
            StorageConfig::Disk {
                dir,
                max_size,
                segment_size,
            } => {
                let (log, rec) = SegmentLog::open(&dir, segment_size, max_size)?;
                recovered_until = log.records().last().map_or(0, |m| m.seq);
                (
                    Storage::Disk {
                        log: Box::new(log),
                        max_size,
                        last_error_log: None,
                        hot: VecDeque::new(),
                        hot_bytes: 0,
                    },
                    Some(rec),
                )
            }
        };
        let q = Queue {
            inner: Mutex::new(Inner {
                open: Vec::new(),
                open_samples: 0,
                open_since: None,
                open_oldest_ms: i64::MAX,
                storage,
                encoder: snap::raw::Encoder::new(),
                scratch: Vec::new(),
                read_failed_at: None,
            }),
            notify: Notify::new(),
            max_samples_per_send: max_samples_per_send.max(1),
            batch_send_deadline,
            max_age,
            metrics,
            labels,
            alone_until: recovered_until.into(),
        };
        if let Some(r) = &recovery {
            let l = q.reason_labels("torn_tail");
            q.metrics
                .queue_corruptions
                .get_or_create(&l)
                .inc_by(r.torn as u64);
            let l = q.reason_labels("corrupt_record");
            q.metrics
                .queue_corruptions
                .get_or_create(&l)
                .inc_by(r.corrupt as u64);
            if r.lost_records > 0 {
                q.drop_samples("corrupt_record", r.lost_samples as usize, r.lost_records);
            }
        }
        q.update_gauges(&q.lock());
        Ok((q, recovery))
    }

    /// An in-memory queue (tests and tools).
    pub fn memory(
        max_samples_per_send: usize,
        max_samples: usize,
        batch_send_deadline: Duration,
        metrics: Metrics,
        labels: RemoteLabels,
    ) -> Self {
        let (q, _) = Self::new(
            max_samples_per_send,
            batch_send_deadline,
            None,
            StorageConfig::Memory { max_samples },
            metrics,
            labels,
        )
        .unwrap_or_else(|_| unreachable!("a memory queue does no I/O"));
        q
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Inner inconsistent in a
        // way that matters more than stopping; recover the data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The destination's `remote_name`.
    pub fn name(&self) -> &str {
        &self.labels.remote_name
    }

    /// Whether batches survive a restart.
    pub fn is_durable(&self) -> bool {
        matches!(self.lock().storage, Storage::Disk { .. })
    }

    /// Adds a scrape's samples, sealing batches as they fill.
    pub fn append(&self, enc: &EncodedSamples) {
        if enc.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let was_empty = inner.open_samples == 0;
        // A disk queue writes every scrape through at once: a sample the
        // agent accepted must survive `kill -9`, which an open batch in memory
        // would not. (Batching across scrapes is the memory queue's.) Its
        // batches are compressed straight from the scrape's buffer.
        if matches!(inner.storage, Storage::Disk { .. }) && inner.open_samples == 0 {
            let mut i = 0;
            while i < enc.len() {
                let take = self.max_samples_per_send.min(enc.len() - i);
                self.store(&mut inner, enc.slice(i, i + take), take, enc.scraped_at_ms);
                i += take;
            }
            drop(inner);
            self.notify.notify_one();
            return;
        }
        let mut i = 0;
        let mut sealed = false;
        while i < enc.len() {
            if inner.open_samples == 0 {
                inner.open_since = Some(Instant::now());
            }
            inner.open_oldest_ms = inner.open_oldest_ms.min(enc.scraped_at_ms);
            let take = (self.max_samples_per_send - inner.open_samples).min(enc.len() - i);
            inner.open.extend_from_slice(enc.slice(i, i + take));
            inner.open_samples += take;
            i += take;
            if inner.open_samples >= self.max_samples_per_send {
                self.seal(&mut inner);
                sealed = true;
            }
        }
        if matches!(inner.storage, Storage::Disk { .. }) && inner.open_samples > 0 {
            self.seal(&mut inner);
            sealed = true;
        }
        drop(inner);
        if sealed || was_empty {
            self.notify.notify_one();
        }
    }

    fn seal(&self, inner: &mut Inner) {
        if inner.open_samples == 0 {
            return;
        }
        let samples = inner.open_samples;
        let oldest_ms = inner.open_oldest_ms;
        let open = std::mem::take(&mut inner.open);
        self.store(inner, &open, samples, oldest_ms);
        inner.open = open;
        inner.open.clear();
        inner.open_samples = 0;
        inner.open_since = None;
        inner.open_oldest_ms = i64::MAX;
    }

    /// Compresses one batch (`WriteRequest` bytes) and queues it.
    fn store(&self, inner: &mut Inner, request: &[u8], samples: usize, oldest_ms: i64) {
        let Inner {
            encoder, scratch, ..
        } = inner;
        scratch.resize(snap::raw::max_compress_len(request.len()), 0);
        let data = match encoder.compress(request, scratch) {
            // Exactly the compressed bytes: the scratch buffer (sized for the
            // worst case) stays for the next batch.
            Ok(n) => {
                let data = Bytes::copy_from_slice(&scratch[..n]);
                // Give back what one huge batch needed.
                if scratch.capacity() > POOL_KEEP_MAX {
                    *scratch = Vec::new();
                }
                data
            }
            Err(e) => {
                // Only possible for inputs over ~4 GiB; a batch is far smaller.
                tracing::error!(error = %e, "snappy compression failed; batch dropped");
                self.drop_samples("compression", samples, 1);
                return;
            }
        };
        match &mut inner.storage {
            Storage::Memory {
                batches,
                samples: queued,
                max_samples,
                next_seq,
            } => {
                batches.push_back(Batch {
                    seq: *next_seq,
                    data,
                    more: Vec::new(),
                    samples,
                    oldest_ms,
                });
                *next_seq += 1;
                *queued += samples;
                while *queued > *max_samples && batches.len() > 1 {
                    if let Some(old) = batches.pop_front() {
                        *queued -= old.samples;
                        self.drop_samples("queue_full", old.samples, 1);
                        tracing::warn!(remote_name = %self.labels.remote_name, samples = old.samples, "remote-write queue full; dropped the oldest batch");
                    }
                }
            }
            Storage::Disk {
                log,
                max_size,
                last_error_log,
                hot,
                hot_bytes,
            } => {
                match log.append(&data, samples as u32, oldest_ms) {
                    Ok(seq) => {
                        if *hot_bytes + data.len() <= HOT_BYTES {
                            *hot_bytes += data.len();
                            hot.push_back((seq, data));
                        }
                    }
                    Err(e) => {
                        self.drop_samples("disk_error", samples, 1);
                        // Once a minute at most: a full disk fails every batch.
                        if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            *last_error_log = Some(Instant::now());
                            tracing::error!(remote_name = %self.labels.remote_name, error = %e, "cannot append to the disk queue; batches are dropped and counted until it works again");
                        }
                    }
                }
                let drops = log.take_drops();
                for (reason, (batches, samples)) in
                    [("max_size", drops.max_size), ("disk_full", drops.disk_full)]
                {
                    if batches > 0 {
                        self.drop_samples(reason, samples as usize, batches);
                        tracing::warn!(remote_name = %self.labels.remote_name, batches, samples, max_size = *max_size, reason, "disk queue: gave up the oldest segment to make room");
                    }
                }
            }
        }
        self.update_gauges(inner);
    }

    fn update_gauges(&self, inner: &Inner) {
        let m = &self.metrics;
        let (batches, samples, bytes, segments, oldest) = match &inner.storage {
            Storage::Memory {
                batches, samples, ..
            } => (
                batches.len(),
                *samples,
                batches.iter().map(|b| b.data.len() as u64).sum(),
                0,
                batches.front().map(|b| b.oldest_ms),
            ),
            Storage::Disk { log, .. } => (
                log.len(),
                log.samples() as usize,
                log.pending_bytes(),
                log.segments(),
                log.front().map(|m| m.oldest_ms),
            ),
        };
        m.queue_batches
            .get_or_create(&self.labels)
            .set(batches as i64);
        m.queue_samples
            .get_or_create(&self.labels)
            .set((samples + inner.open_samples) as i64);
        m.queue_bytes.get_or_create(&self.labels).set(bytes as i64);
        m.queue_segments
            .get_or_create(&self.labels)
            .set(segments as i64);
        m.queue_oldest_timestamp
            .get_or_create(&self.labels)
            .set(oldest.map_or(0.0, |ms| ms as f64 / 1000.0));
    }

    fn reason_labels(&self, reason: &str) -> RemoteReasonLabels {
        RemoteReasonLabels {
            remote_name: self.labels.remote_name.clone(),
            url: self.labels.url.clone(),
            reason: reason.into(),
        }
    }

    /// Counts samples given up on.
    pub fn drop_samples(&self, reason: &str, samples: usize, batches: u64) {
        let l = self.reason_labels(reason);
        self.metrics
            .samples_dropped
            .get_or_create(&l)
            .inc_by(samples as u64);
        self.metrics
            .batches_dropped
            .get_or_create(&l)
            .inc_by(batches);
    }

    /// Seals the open batch if it is at least `batch_send_deadline` old (or
    /// unconditionally with `force`).
    pub fn flush(&self, force: bool) {
        let mut inner = self.lock();
        let due = inner
            .open_since
            .is_some_and(|t| force || t.elapsed() >= self.batch_send_deadline);
        if due {
            self.seal(&mut inner);
        }
    }

    /// When the sender should look again without being notified: the open
    /// batch becomes due, or a batch that could not be read is tried again.
    pub fn open_due_at(&self) -> Option<Instant> {
        let inner = self.lock();
        let open = inner.open_since.map(|t| t + self.batch_send_deadline);
        let retry = inner.read_failed_at.map(|t| t + READ_RETRY);
        match (open, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The oldest sealed batch, left in the queue until acknowledged. Batches
    /// over `max_age`, or unreadable on disk, are dropped and counted first.
    pub fn front(&self) -> Option<Batch> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let cutoff = self.max_age.map(|a| now_ms() - a.as_millis() as i64);
        let mut changed = false;
        let out = loop {
            match &mut inner.storage {
                Storage::Memory {
                    batches, samples, ..
                } => {
                    let b = batches.front()?.clone();
                    if cutoff.is_some_and(|c| b.oldest_ms < c) {
                        batches.pop_front();
                        *samples -= b.samples;
                        self.drop_samples("max_age", b.samples, 1);
                        changed = true;
                        continue;
                    }
                    break Some(b);
                }
                Storage::Disk {
                    log,
                    hot,
                    hot_bytes,
                    ..
                } => {
                    let m = log.front()?;
                    // Batches dropped (budget, age) or sent leave the memory copy.
                    while hot.front().is_some_and(|(seq, _)| *seq < m.seq) {
                        if let Some((_, b)) = hot.pop_front() {
                            *hot_bytes -= b.len();
                        }
                    }
                    let too_old = cutoff.is_some_and(|c| m.oldest_ms < c);
                    let in_memory = hot
                        .front()
                        .filter(|(seq, _)| *seq == m.seq)
                        .map(|(_, b)| b.clone());
                    let data = if too_old {
                        None
                    } else if in_memory.is_some() {
                        in_memory
                    } else {
                        match log.read(&m) {
                            Ok(d) => Some(d),
                            Err(e @ DiskError::Corrupt { .. }) => {
                                tracing::error!(remote_name = %self.labels.remote_name, error = %e, "queue: damaged batch dropped");
                                None
                            }
                            Err(e) => {
                                // Not damage (too many open files, EIO): the
                                // batch stays and is read again shortly.
                                if inner.read_failed_at.is_none() {
                                    tracing::warn!(remote_name = %self.labels.remote_name, error = %e, "queue: cannot read the next batch; retrying every second");
                                }
                                inner.read_failed_at = Some(Instant::now());
                                break None;
                            }
                        }
                    };
                    match data {
                        Some(data) => {
                            inner.read_failed_at = None;
                            break Some(Batch {
                                seq: m.seq,
                                data,
                                more: Vec::new(),
                                samples: m.samples as usize,
                                oldest_ms: m.oldest_ms,
                            });
                        }
                        None => {
                            let _ = log.ack(m.seq);
                            self.drop_samples(
                                if too_old { "max_age" } else { "corrupt" },
                                m.samples as usize,
                                1,
                            );
                            changed = true;
                        }
                    }
                }
            }
        };
        if changed {
            self.update_gauges(inner);
        }
        out
    }

    /// What [`Queue::front_joined`] would send, from the index alone (no
    /// data read or copied): (samples, whether a queued batch would be left
    /// out for lack of room, the oldest scrape time in it).
    pub fn join_size(&self, max_samples: usize) -> Option<(usize, bool, i64)> {
        let inner = self.lock();
        let alone = self.front_is_recovered(&inner);
        match &inner.storage {
            Storage::Memory { batches, .. } => join_size(
                batches.iter().map(|b| (b.samples, b.oldest_ms)),
                alone,
                max_samples,
            ),
            Storage::Disk { log, .. } => join_size(
                log.records().map(|m| (m.samples as usize, m.oldest_ms)),
                alone,
                max_samples,
            ),
        }
    }

    /// [`Queue::front`], joined with the batches queued after it into one
    /// request of at most `max_samples` samples. Acknowledging the result's
    /// `seq` acknowledges every batch in it. The flag says whether a queued
    /// batch was left out for lack of room (the request is as full as it gets).
    pub fn front_joined(&self, max_samples: usize) -> Option<(Batch, bool)> {
        let first = self.front()?;
        if first.seq <= self.alone_until() {
            return Some((first, true));
        }
        let inner = self.lock();
        let mut parts = vec![first.data.clone()];
        let (mut seq, mut samples, mut oldest_ms) = (first.seq, first.samples, first.oldest_ms);
        // (seq, samples, oldest_ms, data) of the batches after the first.
        let mut more: Vec<(u64, usize, i64, Bytes)> = Vec::new();
        let mut full = false;
        let room = |more: &Vec<(u64, usize, i64, Bytes)>, n: usize| {
            samples + more.iter().map(|m| m.1).sum::<usize>() + n <= max_samples
        };
        match &inner.storage {
            Storage::Memory { batches, .. } => {
                for b in batches.iter().skip_while(|b| b.seq <= first.seq) {
                    if !room(&more, b.samples) {
                        full = true;
                        break;
                    }
                    more.push((b.seq, b.samples, b.oldest_ms, b.data.clone()));
                }
            }
            Storage::Disk { log, hot, .. } => {
                for m in log.records().skip_while(|m| m.seq <= first.seq) {
                    if !room(&more, m.samples as usize) {
                        full = true;
                        break;
                    }
                    let data = hot
                        .iter()
                        .find(|(s, _)| *s == m.seq)
                        .map(|(_, b)| b.clone())
                        .or_else(|| log.read(m).ok());
                    // An unreadable record ends the join; `front` deals with it.
                    let Some(data) = data else { break };
                    more.push((m.seq, m.samples as usize, m.oldest_ms, data));
                }
            }
        }
        for (s, n, o, d) in more {
            parts.push(d);
            seq = s;
            samples += n;
            oldest_ms = oldest_ms.min(o);
        }
        drop(inner);
        if parts.len() == 1 {
            return Some((first, full));
        }
        match join_snappy(&parts) {
            Some((data, more)) => Some((
                Batch {
                    seq,
                    data,
                    more,
                    samples,
                    oldest_ms,
                },
                full,
            )),
            None => Some((first, false)),
        }
    }

    fn alone_until(&self) -> u64 {
        self.alone_until.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The receiver refused a joined request ending at `seq`: send its parts
    /// again one by one (see `alone_until`).
    pub fn split_until(&self, seq: u64) {
        self.alone_until
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the front batch is to be sent alone (see `alone_until`).
    fn front_is_recovered(&self, inner: &Inner) -> bool {
        let until = self.alone_until();
        match &inner.storage {
            Storage::Disk { log, .. } => log.records().next().is_some_and(|m| m.seq <= until),
            Storage::Memory { batches, .. } => batches.front().is_some_and(|b| b.seq <= until),
        }
    }

    /// Removes batch `seq` once the receiver has it (or it was given up on).
    pub fn ack(&self, seq: u64) {
        let mut inner = self.lock();
        match &mut inner.storage {
            Storage::Memory {
                batches, samples, ..
            } => {
                while batches.front().is_some_and(|b| b.seq <= seq) {
                    if let Some(b) = batches.pop_front() {
                        *samples -= b.samples;
                    }
                }
            }
            Storage::Disk {
                log,
                hot,
                hot_bytes,
                ..
            } => {
                while hot.front().is_some_and(|(s, _)| *s <= seq) {
                    if let Some((_, b)) = hot.pop_front() {
                        *hot_bytes -= b.len();
                    }
                }
                if let Err(e) = log.ack(seq) {
                    tracing::error!(remote_name = %self.labels.remote_name, error = %e, "cannot persist the queue acknowledgement; the batch may be sent again after a restart");
                }
            }
        }
        self.update_gauges(&inner);
    }

    /// Samples waiting (sealed and open).
    pub fn pending_samples(&self) -> usize {
        let inner = self.lock();
        let sealed = match &inner.storage {
            Storage::Memory { samples, .. } => *samples,
            Storage::Disk { log, .. } => log.samples() as usize,
        };
        sealed + inner.open_samples
    }

    /// Waits until something was appended or sealed.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// End of the shutdown grace period: the open batch is sealed; a disk
    /// queue is synced and keeps everything for the next start, a memory
    /// queue drops (and counts) what is left. Returns the samples dropped.
    pub fn shutdown(&self) -> usize {
        let mut inner = self.lock();
        self.seal(&mut inner);
        let dropped = match &mut inner.storage {
            Storage::Memory {
                batches, samples, ..
            } => {
                let n = *samples;
                let b = batches.len() as u64;
                batches.clear();
                *samples = 0;
                if n > 0 {
                    self.drop_samples("shutdown", n, b);
                }
                n
            }
            Storage::Disk { log, .. } => {
                if let Err(e) = log.sync() {
                    tracing::error!(error = %e, "queue: final sync failed");
                }
                0
            }
        };
        self.update_gauges(&inner);
        dropped
    }
}

/// [`Queue::join_size`] over the queue's (samples, oldest_ms) in order;
/// `alone`: the first is sent by itself.
fn join_size(
    mut metas: impl Iterator<Item = (usize, i64)>,
    alone: bool,
    max_samples: usize,
) -> Option<(usize, bool, i64)> {
    let (mut samples, mut oldest_ms) = metas.next()?;
    if alone {
        return Some((samples, true, oldest_ms));
    }
    for (n, o) in metas {
        if samples + n > max_samples {
            return Some((samples, true, oldest_ms));
        }
        samples += n;
        oldest_ms = oldest_ms.min(o);
    }
    Some((samples, false, oldest_ms))
}

/// Joins snappy block-format messages into one whose decompressed bytes are
/// theirs, in order: a block is its uncompressed length (varint) and then
/// literal and copy elements whose offsets point back into its own output, so
/// the element streams can follow each other under the summed length. Joined
/// `WriteRequest`s are one `WriteRequest` (its only field repeats). Returned
/// as parts, nothing copied: the new length header, then each block's
/// elements. `None` if a header does not parse or the total passes snappy's
/// 4 GiB limit.
pub fn join_snappy(blocks: &[Bytes]) -> Option<(Bytes, Vec<Bytes>)> {
    let mut total: u64 = 0;
    let mut bodies = Vec::with_capacity(blocks.len());
    for b in blocks {
        let (len, header) = read_varint(b)?;
        total += len;
        bodies.push(b.slice(header..));
    }
    if total > u64::from(u32::MAX) {
        return None;
    }
    let mut head = Vec::with_capacity(10);
    super::proto::put_varint(&mut head, total);
    Some((Bytes::from(head), bodies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::WriteRequest;
    use crate::remote_write::samples::encode_labels;
    use prost::Message;

    fn labels() -> RemoteLabels {
        RemoteLabels {
            remote_name: "t".into(),
            url: "u".into(),
        }
    }

    fn q(max_per_send: usize, max_queued: usize) -> Queue {
        Queue::memory(
            max_per_send,
            max_queued,
            Duration::from_secs(5),
            Metrics::new(),
            labels(),
        )
    }

    fn disk(
        dir: &std::path::Path,
        max_per_send: usize,
        max_size: u64,
        max_age: Option<Duration>,
    ) -> Queue {
        Queue::new(
            max_per_send,
            Duration::from_secs(5),
            max_age,
            StorageConfig::Disk {
                dir: dir.to_path_buf(),
                max_size,
                segment_size: 4096,
            },
            Metrics::new(),
            labels(),
        )
        .unwrap()
        .0
    }

    fn samples(n: usize, base: i64) -> EncodedSamples {
        let mut e = EncodedSamples::default();
        let l = encode_labels(&[("__name__".into(), "m".into())]);
        for i in 0..n {
            e.push(&l, i as f64, base + i as i64);
        }
        e.scraped_at_ms = base;
        e
    }

    fn decode(b: &Batch) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&b.body().to_vec())
            .unwrap();
        WriteRequest::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn snappy_blocks_join_into_one_request() {
        let mut enc = snap::raw::Encoder::new();
        let a = samples(700, 0);
        let b = samples(300, 1_000);
        let ca = Bytes::from(enc.compress_vec(&a.buf).unwrap());
        let cb = Bytes::from(enc.compress_vec(&b.buf).unwrap());
        let (head, parts) = join_snappy(&[ca.clone(), cb.clone(), ca.clone()]).unwrap();
        let mut joined = head.to_vec();
        for p in &parts {
            joined.extend_from_slice(p);
        }
        let plain = snap::raw::Decoder::new().decompress_vec(&joined).unwrap();
        assert_eq!(plain, [&a.buf[..], &b.buf[..], &a.buf[..]].concat());
        let wr = WriteRequest::decode(plain.as_slice()).unwrap();
        assert_eq!(wr.timeseries.len(), 1_700);
        assert!(join_snappy(&[Bytes::from_static(&[0xff; 11])]).is_none());
    }

    #[test]
    fn joined_batches_stop_at_the_limit_and_ack_together() {
        for durable in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let q = if durable {
                disk(d.path(), 1_000, u64::MAX, None)
            } else {
                q(1_000, 1_000_000)
            };
            for i in 0..5 {
                q.append(&samples(1_000, i * 10_000));
                q.flush(true);
            }
            assert_eq!(
                q.join_size(3_500).map(|(n, f, _)| (n, f)),
                Some((3_000, true))
            );
            let (first, full) = q.front_joined(3_500).unwrap();
            assert!(full);
            assert_eq!(
                first.samples, 3_000,
                "three whole batches fit, the fourth does not"
            );
            assert_eq!(decode(&first).timeseries.len(), 3_000);
            q.ack(first.seq);
            let (rest, full) = q.front_joined(10_000).unwrap();
            assert!(!full);
            assert_eq!(rest.samples, 2_000);
            let wr = decode(&rest);
            assert_eq!(wr.timeseries[0].samples[0].timestamp, 30_000, "in order");
            q.ack(rest.seq);
            assert!(q.front_joined(10_000).is_none());
            assert_eq!(q.pending_samples(), 0);
        }
    }

    #[test]
    fn batches_found_at_start_up_are_sent_one_by_one() {
        let d = tempfile::tempdir().unwrap();
        {
            let q = disk(d.path(), 1_000, u64::MAX, None);
            for i in 0..3 {
                q.append(&samples(100, i * 1_000));
            }
            // Killed: no shutdown, no ack written.
        }
        let q = disk(d.path(), 1_000, u64::MAX, None);
        q.append(&samples(100, 3_000));
        q.append(&samples(100, 4_000));
        let mut sizes = Vec::new();
        while let Some((b, _)) = q.front_joined(10_000) {
            assert_eq!(q.join_size(10_000).map(|(n, ..)| n), Some(b.samples));
            sizes.push(b.samples);
            q.ack(b.seq);
        }
        // Three recovered batches alone (some may have been delivered
        // before the crash), then the two new ones joined.
        assert_eq!(sizes, vec![100, 100, 100, 200]);
    }

    #[test]
    fn batches_cut_at_max_samples_and_keep_order() {
        let q = q(3, 100);
        q.append(&samples(7, 0));
        let mut seen = Vec::new();
        while let Some(b) = q.front() {
            assert!(b.samples <= 3);
            seen.extend(decode(&b).timeseries.iter().map(|t| t.samples[0].timestamp));
            q.ack(b.seq);
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(q.pending_samples(), 1, "one sample still in the open batch");
        q.flush(true);
        let b = q.front().unwrap();
        assert_eq!(decode(&b).timeseries[0].samples[0].timestamp, 6);
    }

    #[test]
    fn deadline_flush_waits_for_age() {
        let q = q(100, 1000);
        q.append(&samples(2, 0));
        q.flush(false);
        assert!(q.front().is_none(), "not yet due");
        assert!(q.open_due_at().is_some());
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let q = q(2, 4);
        q.append(&samples(8, 0));
        let first = q.front().unwrap();
        assert_eq!(
            decode(&first).timeseries[0].samples[0].timestamp,
            4,
            "oldest two batches dropped"
        );
        let text = q.metrics.encode();
        assert!(text.contains("metrics_relay_remote_write_samples_dropped_total{remote_name=\"t\",url=\"u\",reason=\"queue_full\"} 4"), "{text}");
    }

    #[test]
    fn disk_queue_survives_a_restart_in_order() {
        let d = tempfile::tempdir().unwrap();
        {
            let q = disk(d.path(), 3, 1 << 30, None);
            q.append(&samples(7, 0));
            let b = q.front().unwrap();
            q.ack(b.seq);
            q.shutdown(); // seals the open sample to disk
        }
        let q = disk(d.path(), 3, 1 << 30, None);
        let mut seen = Vec::new();
        while let Some(b) = q.front() {
            seen.extend(decode(&b).timeseries.iter().map(|t| t.samples[0].timestamp));
            q.ack(b.seq);
        }
        assert_eq!(seen, vec![3, 4, 5, 6]);
    }

    #[test]
    fn disk_queue_seals_every_append() {
        let d = tempfile::tempdir().unwrap();
        let q = disk(d.path(), 100, 1 << 30, None);
        q.append(&samples(3, 0));
        let b = q.front().expect("on disk at once, not held open");
        assert_eq!(b.samples, 3);
    }

    #[test]
    fn a_read_error_that_is_not_damage_keeps_the_batch() {
        let d = tempfile::tempdir().unwrap();
        {
            let q = disk(d.path(), 10, 1 << 30, None);
            q.append(&samples(3, 0));
        }
        // Reopened: nothing in memory, the batch must be read from disk.
        let q = disk(d.path(), 10, 1 << 30, None);
        let seg = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        // The file is briefly unreachable (as with EMFILE or EIO): an I/O
        // error, not damage.
        std::fs::rename(&seg, d.path().join("away")).unwrap();
        assert!(q.front().is_none());
        assert!(q.open_due_at().is_some(), "a retry is scheduled");
        std::fs::rename(d.path().join("away"), &seg).unwrap();
        let b = q.front().expect("the batch is still there");
        assert_eq!(b.samples, 3);
        let text = q.metrics.encode();
        assert!(!text.contains("reason=\"corrupt\""), "{text}");
    }

    #[test]
    fn disk_budget_drops_the_oldest_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let q = disk(d.path(), 10, 64 << 10, None);
        for i in 0..1000 {
            q.append(&samples(10, i * 10));
        }
        let first = q.front().unwrap();
        assert!(
            decode(&first).timeseries[0].samples[0].timestamp > 0,
            "oldest dropped"
        );
        let text = q.metrics.encode();
        assert!(text.contains("reason=\"max_size\""), "{text}");
        let dropped: usize = text
            .lines()
            .find(|l| {
                l.starts_with("metrics_relay_remote_write_samples_dropped_total{")
                    && l.contains("max_size")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap();
        assert_eq!(
            dropped + q.pending_samples(),
            10_000,
            "every sample queued or counted"
        );
        let on_disk: u64 = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 64 << 10, "{on_disk}");
    }

    #[test]
    fn max_age_drops_old_batches_at_the_front() {
        let d = tempfile::tempdir().unwrap();
        let q = disk(d.path(), 2, 1 << 30, Some(Duration::from_secs(3600)));
        q.append(&samples(2, 1_000)); // 1970: far too old
        let fresh = now_ms();
        q.append(&samples(2, fresh));
        let b = q.front().unwrap();
        assert_eq!(decode(&b).timeseries[0].samples[0].timestamp, fresh);
        assert!(q.metrics.encode().contains("reason=\"max_age\""));
    }

    #[test]
    fn ack_of_a_dropped_batch_is_harmless() {
        let q = q(1, 1);
        q.append(&samples(1, 0));
        let b0 = q.front().unwrap();
        q.append(&samples(1, 1)); // pushes out b0
        q.ack(b0.seq);
        assert_eq!(
            decode(&q.front().unwrap()).timeseries[0].samples[0].timestamp,
            1
        );
    }
}
