//! The per-destination batcher and queue, in memory or on disk.
//!
//! Scrape tasks [`Queue::append`] their encoded samples; the open batch (an
//! uncompressed `WriteRequest` body under construction) is sealed, snappy
//! compressed once, when it reaches `max_samples_per_send` or when it is
//! older than `batch_send_deadline`, compressed by the queue's storage codec
//! (memory: snappy, posted as is to a 1.0 destination; disk: zstd, about a
//! third of the bytes; see [`crate::remote_write::codec`]). Sealed batches wait in FIFO order for the
//! sender's workers, each of which [`Queue::take`]s a request (a lease on
//! one or more batches), sends it (retrying as long as it takes) and
//! completes it. Samples of one series are appended in scrape order by one
//! task, under one stream (its target); a request is only taken for streams
//! with nothing in flight, and a stream's batches are taken in queue order,
//! so every series arrives in timestamp order while different targets are
//! sent in parallel. Batches whose stream is unknown (found on disk at
//! start-up) are sent alone, one at a time, so order holds across restarts
//! too.
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
//!
//! Layout: this file holds the types, construction, budgets and gauges;
//! `produce` appending and sealing, `lease` the requests the sender's workers
//! take, `consume` acknowledgement, shutdown and joining.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::codec::{Codec, Compressor};
use super::disk::{DiskError, Recovery, SegmentLog};
use super::samples::EncodedSamples;
use super::wire::Stored;
use crate::events::{DropReason, SamplesDropped};
use crate::metric_labels::{Corruption, RemoteReason};
use crate::telemetry::{Metrics, RemoteLabels, RemoteReasonLabels};

mod consume;
mod fresh;
mod lease;
mod produce;

pub(crate) use lease::Lease;

/// One or more sealed batches, as stored, to be sent as one request (the
/// sender encodes them in its wire format: [`crate::remote_write::wire`]).
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    /// The sequence number of its last part.
    pub seq: u64,
    /// The queued batches it joins, in order.
    pub parts: Vec<Stored>,
    pub samples: usize,
    /// Start (ms) of the oldest scrape in the batch.
    pub oldest_ms: i64,
    /// Its oldest scrape on the monotonic clock ([`crate::clock::mono_born`]).
    pub born: i64,
    /// Its stream ([`EncodedSamples::stream`]); 0: unknown.
    pub stream: u64,
}

impl Batch {
    /// Stored bytes.
    pub(crate) fn stored_len(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }

    /// How many queued batches (scrape records) the request holds.
    pub(crate) fn parts(&self) -> usize {
        self.parts.len().max(1)
    }
}

/// Where sealed batches wait.
#[derive(Debug, Clone)]
pub(crate) enum StorageConfig {
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
        hot: VecDeque<(u64, Stored)>,
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
    /// The storage codec of new batches ([`Queue::set_codec`]).
    codec: Codec,
    compressor: Compressor,
    /// A batch's compressed bytes, reused.
    compressed: Vec<u8>,
    /// When reading the front batch last failed for a reason other than
    /// damage (it is retried).
    read_failed_at: Option<Instant>,
    /// The stream of the open batch.
    open_stream: u64,
    /// Per stream that is behind (`queue.fresh_first`): its backlog's
    /// samples and oldest scrape (ms), as the last request plan saw them.
    backlog: std::collections::HashMap<u64, (usize, i64)>,
    /// Every stream's waiting scrapes (`queue.fresh_first`), worked out
    /// from the whole queue at most once a second and when a batch is
    /// stored (a new newest scrape), not at every request.
    behind: Option<(Instant, fresh::Behind)>,
    /// What is being sent (see `consume`).
    flight: Flight,
}

/// Batches being sent, and sent out of order.
#[derive(Default)]
struct Flight {
    /// Sequence numbers in a request being sent.
    leased: std::collections::HashSet<u64>,
    /// Requests in flight per stream.
    streams: std::collections::HashMap<u64, usize>,
    /// Streams whose newest scrape is in flight ahead of their backlog
    /// (`queue.fresh_first`).
    fresh: std::collections::HashSet<u64>,
    /// A request that may hold any series is in flight: nothing else may be.
    exclusive: bool,
    /// Acknowledged, but a batch before them is not yet: removed from the
    /// queue when everything before them is.
    done: std::collections::BTreeSet<u64>,
}

/// See the module docs.
pub(crate) struct Queue {
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
    /// `queue.fresh_first`: a stream that is behind sends its newest scrape
    /// ahead of its backlog (see `lease`).
    fresh_first: std::sync::atomic::AtomicBool,
}

/// Whether data born at `born` (monotonic ms) is past `max_age`.
fn too_old(born: i64, max_age: Option<Duration>) -> bool {
    max_age.is_some_and(|a| crate::clock::mono_ms().saturating_sub(born) > a.as_millis() as i64)
}

impl Queue {
    /// A queue; a disk queue is opened (and repaired) here.
    pub(crate) fn new(
        max_samples_per_send: usize,
        batch_send_deadline: Duration,
        max_age: Option<Duration>,
        storage: StorageConfig,
        metrics: Metrics,
        labels: RemoteLabels,
    ) -> Result<(Self, Option<Recovery>), DiskError> {
        let mut recovered_until = 0;
        let codec = Codec::Snappy;
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
                codec,
                compressor: Compressor::default(),
                compressed: Vec::new(),
                read_failed_at: None,
                open_stream: 0,
                backlog: Default::default(),
                behind: None,
                flight: Flight::default(),
            }),
            notify: Notify::new(),
            max_samples_per_send: max_samples_per_send.max(1),
            batch_send_deadline,
            max_age,
            metrics,
            labels,
            alone_until: recovered_until.into(),
            fresh_first: false.into(),
        };
        if let Some(r) = &recovery {
            let l = q.reason_labels(RemoteReason::Corruption(Corruption::TornTail));
            q.metrics
                .queue_corruptions
                .get_or_create(&l)
                .inc_by(r.torn as u64);
            let l = q.reason_labels(RemoteReason::Corruption(Corruption::CorruptRecord));
            q.metrics
                .queue_corruptions
                .get_or_create(&l)
                .inc_by(r.corrupt as u64);
            if r.lost_records > 0 {
                q.drop_samples(
                    DropReason::CorruptRecord,
                    r.lost_samples as usize,
                    r.lost_records,
                );
            }
        }
        q.update_gauges(&q.lock());
        Ok((q, recovery))
    }

    /// An in-memory queue (tests and tools).
    pub(crate) fn memory(
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

    /// How batches sealed from now on are compressed (older ones keep
    /// theirs: each stored batch carries its codec).
    pub(crate) fn set_codec(&self, codec: Codec) {
        self.lock().codec = codec;
    }

    /// `queue.fresh_first` (off by default: every stream strictly in order).
    pub(crate) fn set_fresh_first(&self, on: bool) {
        self.fresh_first
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self.notify.notify_one();
    }

    fn fresh_first(&self) -> bool {
        self.fresh_first.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether batches survive a restart.
    pub(crate) fn is_durable(&self) -> bool {
        matches!(self.lock().storage, Storage::Disk { .. })
    }

    fn update_gauges(&self, inner: &Inner) {
        let m = &self.metrics;
        let (batches, samples, bytes, segments, oldest) = match &inner.storage {
            Storage::Memory {
                batches, samples, ..
            } => (
                batches.len(),
                *samples,
                batches.iter().map(|b| b.stored_len() as u64).sum(),
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

    fn reason_labels(&self, reason: RemoteReason) -> RemoteReasonLabels {
        RemoteReasonLabels {
            remote_name: self.labels.remote_name.clone(),
            url: self.labels.url.clone(),
            reason,
        }
    }

    /// Counts samples given up on.
    pub(crate) fn drop_samples(&self, reason: DropReason, samples: usize, batches: u64) {
        SamplesDropped {
            remote: &self.labels,
            reason,
            samples,
            batches,
        }
        .emit(&self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::WriteRequest;
    use crate::remote_write::samples::encode_labels;
    use prost::Message;
    use std::sync::Arc;

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
        e.stream = 7;
        e
    }

    fn of_stream(mut e: EncodedSamples, stream: u64) -> EncodedSamples {
        e.stream = stream;
        e
    }

    fn decode(b: &Batch) -> WriteRequest {
        let mut plain = Vec::new();
        let mut d = crate::remote_write::codec::Decompressor::default();
        for p in &b.parts {
            d.decompress(p.codec, &p.data, &mut plain).unwrap();
        }
        WriteRequest::decode(plain.as_slice()).unwrap()
    }

    #[test]
    fn each_batch_keeps_the_codec_it_was_sealed_with() {
        let d = tempfile::tempdir().unwrap();
        for queue in [q(1_000, 10_000), disk(d.path(), 1_000, u64::MAX, None)] {
            queue.append(&samples(500, 0), &[]);
            queue.flush(true);
            queue.set_codec(Codec::Zstd);
            queue.append(&samples(500, 1_000), &[]);
            queue.flush(true);
            let mut codecs = Vec::new();
            while let Some(b) = queue.front() {
                assert_eq!(decode(&b).timeseries.len(), 500);
                codecs.extend(b.parts.iter().map(|p| p.codec));
                queue.ack(b.seq);
            }
            assert_eq!(codecs, [Codec::Snappy, Codec::Zstd]);
        }
    }

    #[test]
    fn metadata_goes_into_the_first_batch_of_its_scrape_only() {
        let meta = WriteRequest {
            timeseries: vec![],
            metadata: vec![crate::remote_write::proto::MetricMetadata {
                r#type: 2,
                metric_family_name: "m".into(),
                help: "A gauge.".into(),
                unit: String::new(),
            }],
        }
        .encode_to_vec();
        let d = tempfile::tempdir().unwrap();
        for queue in [q(100, 10_000), disk(d.path(), 100, u64::MAX, None)] {
            queue.append(&samples(250, 0), &meta);
            queue.append(&samples(10, 1_000), &[]);
            queue.flush(true);
            let mut seen = Vec::new();
            while let Some(b) = queue.front() {
                let wr = decode(&b);
                seen.push((wr.timeseries.len(), wr.metadata.len()));
                queue.ack(b.seq);
            }
            assert_eq!(seen[0], (100, 1), "{seen:?}");
            assert!(seen[1..].iter().all(|&(_, m)| m == 0), "{seen:?}");
            let total: usize = seen.iter().map(|s| s.0).sum();
            assert_eq!(total, 260);
            assert_eq!(decode_meta(&meta).help, "A gauge.");
        }
    }

    fn decode_meta(b: &[u8]) -> crate::remote_write::proto::MetricMetadata {
        WriteRequest::decode(b).unwrap().metadata.remove(0)
    }

    #[test]
    fn joined_batches_stop_at_the_limit_and_ack_together() {
        for durable in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let q = Arc::new(if durable {
                disk(d.path(), 1_000, u64::MAX, None)
            } else {
                q(1_000, 1_000_000)
            });
            for i in 0..5 {
                q.append(&samples(1_000, i * 10_000), &[]);
                q.flush(true);
            }
            assert_eq!(q.peek(3_500).map(|(n, f, _)| (n, f)), Some((3_000, true)));
            let (first, full) = q.take(3_500).unwrap();
            assert!(full);
            assert_eq!(
                first.batch().samples,
                3_000,
                "three whole batches fit, the fourth does not"
            );
            assert_eq!(decode(first.batch()).timeseries.len(), 3_000);
            // The stream is busy: nothing else to take.
            assert!(q.take(10_000).is_none());
            first.complete();
            let (rest, full) = q.take(10_000).unwrap();
            assert!(!full);
            assert_eq!(rest.batch().samples, 2_000);
            let wr = decode(rest.batch());
            assert_eq!(wr.timeseries[0].samples[0].timestamp, 30_000, "in order");
            rest.complete();
            assert!(q.take(10_000).is_none());
            assert_eq!(q.pending_samples(), 0);
        }
    }

    #[test]
    fn streams_go_in_parallel_each_in_order_and_complete_out_of_order() {
        for durable in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let q = Arc::new(if durable {
                disk(d.path(), 100, u64::MAX, None)
            } else {
                q(100, 1_000_000)
            });
            // Scrapes of targets A (1) and B (2), interleaved: A1 B1 A2 B2.
            for (stream, base) in [(1, 0), (2, 1_000), (1, 2_000), (2, 3_000)] {
                q.append(&of_stream(samples(100, base), stream), &[]);
                q.flush(true);
            }
            let ts = |l: &Lease| decode(l.batch()).timeseries[0].samples[0].timestamp;
            let a1 = q.take(100).unwrap().0;
            let b1 = q.take(100).unwrap().0;
            assert_eq!((ts(&a1), ts(&b1)), (0, 1_000), "one request per stream");
            assert!(
                q.take(100).is_none(),
                "A2 and B2 wait for their stream's request in flight"
            );
            b1.complete();
            let b2 = q.take(100).unwrap().0;
            assert_eq!(ts(&b2), 3_000, "B goes on while A is still in flight");
            b2.complete();
            assert_eq!(q.pending_samples(), 400, "nothing leaves before A1");
            // A1 fails and goes back: it is taken again before A2.
            a1.release();
            let again = q.take(100).unwrap().0;
            assert_eq!(ts(&again), 0);
            again.complete();
            assert_eq!(
                q.pending_samples(),
                200,
                "A1 and B1 left; B2 stays queued (sent) until A2, before it, is done"
            );
            let a2 = q.take(100).unwrap().0;
            assert_eq!(ts(&a2), 2_000);
            drop(a2); // a dropped lease goes back to the queue
            let a2 = q.take(100).unwrap().0;
            a2.complete();
            assert_eq!(q.pending_samples(), 0);
            assert!(q.take(100).is_none());
        }
    }

    #[test]
    fn a_batch_of_unknown_stream_is_sent_alone() {
        let q = Arc::new(q(100, 1_000_000));
        q.append(&of_stream(samples(10, 0), 1), &[]);
        q.flush(true);
        q.append(&of_stream(samples(10, 100), 0), &[]);
        q.flush(true);
        q.append(&of_stream(samples(10, 200), 2), &[]);
        q.flush(true);
        let first = q.take(1_000).unwrap().0;
        assert_eq!(first.batch().samples, 10, "stops before the unknown batch");
        assert!(
            q.take(1_000).is_none(),
            "the unknown one waits for stream 1"
        );
        first.complete();
        let alone = q.take(1_000).unwrap().0;
        assert_eq!(alone.batch().samples, 10);
        assert!(q.take(1_000).is_none(), "nothing beside it");
        alone.complete();
        assert_eq!(q.take(1_000).unwrap().0.batch().samples, 10);
    }

    #[test]
    fn batches_found_at_start_up_are_sent_one_by_one() {
        let d = tempfile::tempdir().unwrap();
        {
            let q = disk(d.path(), 1_000, u64::MAX, None);
            for i in 0..3 {
                q.append(&samples(100, i * 1_000), &[]);
            }
            // Killed: no shutdown, no ack written.
        }
        let q = Arc::new(disk(d.path(), 1_000, u64::MAX, None));
        q.append(&samples(100, 3_000), &[]);
        q.append(&samples(100, 4_000), &[]);
        let mut sizes = Vec::new();
        while let Some((l, _)) = q.take(10_000) {
            sizes.push(l.batch().samples);
            l.complete();
        }
        // Three recovered batches alone (some may have been delivered
        // before the crash), then the two new ones joined.
        assert_eq!(sizes, vec![100, 100, 100, 200]);
    }

    #[test]
    fn batches_cut_at_max_samples_and_keep_order() {
        let q = q(3, 100);
        q.append(&samples(7, 0), &[]);
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
        q.append(&samples(2, 0), &[]);
        q.flush(false);
        assert!(q.front().is_none(), "not yet due");
        assert!(q.open_due_at().is_some());
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let q = q(2, 4);
        q.append(&samples(8, 0), &[]);
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
            q.append(&samples(7, 0), &[]);
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
        q.append(&samples(3, 0), &[]);
        let b = q.front().expect("on disk at once, not held open");
        assert_eq!(b.samples, 3);
    }

    #[test]
    fn a_read_error_that_is_not_damage_keeps_the_batch() {
        let d = tempfile::tempdir().unwrap();
        {
            let q = disk(d.path(), 10, 1 << 30, None);
            q.append(&samples(3, 0), &[]);
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
            q.append(&samples(10, i * 10), &[]);
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
        q.append(&samples(2, 1_000), &[]); // 1970: far too old
        let fresh = crate::clock::unix_ms();
        q.append(&samples(2, fresh), &[]);
        let b = q.front().unwrap();
        assert_eq!(decode(&b).timeseries[0].samples[0].timestamp, fresh);
        assert!(q.metrics.encode().contains("reason=\"max_age\""));
    }

    #[test]
    fn ack_of_a_dropped_batch_is_harmless() {
        let q = q(1, 1);
        q.append(&samples(1, 0), &[]);
        let b0 = q.front().unwrap();
        q.append(&samples(1, 1), &[]); // pushes out b0
        q.ack(b0.seq);
        assert_eq!(
            decode(&q.front().unwrap()).timeseries[0].samples[0].timestamp,
            1
        );
    }
}
