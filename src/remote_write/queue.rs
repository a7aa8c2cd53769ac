//! The per-destination batcher and bounded in-memory queue.
//!
//! Scrape tasks [`Queue::append`] their encoded samples; the open batch (an
//! uncompressed `WriteRequest` body under construction) is sealed, snappy
//! block-compressed once, when it reaches `max_samples_per_send` or when it is
//! older than `batch_send_deadline`. Sealed batches wait in FIFO order for the
//! sender, which [`Queue::front`]s one, sends it (retrying as long as it
//! takes) and [`Queue::ack`]s it by sequence number. Samples of one series
//! are appended in scrape order by one task, and the single sender sends in
//! queue order, so every series arrives in timestamp order.
//!
//! The queue holds at most `capacity * max_shards` samples (Prometheus's
//! total buffering for the same `queue_config`). Past that the **oldest**
//! sealed batch is dropped and counted (`reason="queue_full"`): memory stays
//! bounded through any receiver outage.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::series::EncodedSamples;
use crate::telemetry::{Metrics, RemoteLabels, RemoteReasonLabels};

/// A sealed, compressed write request.
#[derive(Clone, Debug)]
pub struct Batch {
    pub seq: u64,
    pub data: Bytes,
    pub samples: usize,
    pub sealed_at: Instant,
}

struct Inner {
    open: Vec<u8>,
    open_samples: usize,
    open_since: Option<Instant>,
    batches: VecDeque<Batch>,
    queued_samples: usize,
    next_seq: u64,
    encoder: snap::raw::Encoder,
}

/// See the module docs.
pub struct Queue {
    inner: Mutex<Inner>,
    notify: Notify,
    max_samples_per_send: usize,
    max_queued_samples: usize,
    batch_send_deadline: Duration,
    metrics: Metrics,
    labels: RemoteLabels,
}

impl Queue {
    pub fn new(
        max_samples_per_send: usize,
        max_queued_samples: usize,
        batch_send_deadline: Duration,
        metrics: Metrics,
        labels: RemoteLabels,
    ) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                open: Vec::new(),
                open_samples: 0,
                open_since: None,
                batches: VecDeque::new(),
                queued_samples: 0,
                next_seq: 0,
                encoder: snap::raw::Encoder::new(),
            }),
            notify: Notify::new(),
            max_samples_per_send: max_samples_per_send.max(1),
            max_queued_samples: max_queued_samples.max(max_samples_per_send),
            batch_send_deadline,
            metrics,
            labels,
        }
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

    /// Adds a scrape's samples, sealing batches as they fill.
    pub fn append(&self, enc: &EncodedSamples) {
        if enc.is_empty() {
            return;
        }
        let mut inner = self.lock();
        let was_empty = inner.open_samples == 0;
        let mut i = 0;
        let mut sealed = false;
        while i < enc.len() {
            if inner.open_samples == 0 {
                inner.open_since = Some(Instant::now());
            }
            let take = (self.max_samples_per_send - inner.open_samples).min(enc.len() - i);
            inner.open.extend_from_slice(enc.slice(i, i + take));
            inner.open_samples += take;
            i += take;
            if inner.open_samples >= self.max_samples_per_send {
                self.seal(&mut inner);
                sealed = true;
            }
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
        let Inner { open, encoder, .. } = inner;
        let data = match encoder.compress_vec(open) {
            Ok(d) => Bytes::from(d),
            Err(e) => {
                // Only possible for inputs over ~4 GiB; a batch is far smaller.
                tracing::error!(error = %e, "snappy compression failed; batch dropped");
                self.drop_samples("compression", inner.open_samples, 1);
                inner.open.clear();
                inner.open_samples = 0;
                inner.open_since = None;
                return;
            }
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let samples = inner.open_samples;
        inner.batches.push_back(Batch {
            seq,
            data,
            samples,
            sealed_at: Instant::now(),
        });
        inner.queued_samples += samples;
        inner.open.clear();
        inner.open_samples = 0;
        inner.open_since = None;
        while inner.queued_samples > self.max_queued_samples && inner.batches.len() > 1 {
            if let Some(old) = inner.batches.pop_front() {
                inner.queued_samples -= old.samples;
                self.drop_samples("queue_full", old.samples, 1);
                tracing::warn!(
                    remote_name = %self.labels.remote_name,
                    samples = old.samples,
                    "remote-write queue full; dropped the oldest batch"
                );
            }
        }
        self.update_gauges(inner);
    }

    fn update_gauges(&self, inner: &Inner) {
        self.metrics
            .queue_batches
            .get_or_create(&self.labels)
            .set(inner.batches.len() as i64);
        self.metrics
            .queue_samples
            .get_or_create(&self.labels)
            .set((inner.queued_samples + inner.open_samples) as i64);
    }

    /// Counts samples given up on.
    pub fn drop_samples(&self, reason: &str, samples: usize, batches: u64) {
        let l = RemoteReasonLabels {
            remote_name: self.labels.remote_name.clone(),
            url: self.labels.url.clone(),
            reason: reason.into(),
        };
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

    /// When the open batch becomes due, if there is one.
    pub fn open_due_at(&self) -> Option<Instant> {
        self.lock().open_since.map(|t| t + self.batch_send_deadline)
    }

    /// The oldest sealed batch, left in the queue until acknowledged.
    pub fn front(&self) -> Option<Batch> {
        self.lock().batches.front().cloned()
    }

    /// Removes batch `seq` once the receiver has it (or it was given up on).
    pub fn ack(&self, seq: u64) {
        let mut inner = self.lock();
        if inner.batches.front().is_some_and(|b| b.seq == seq) {
            if let Some(b) = inner.batches.pop_front() {
                inner.queued_samples -= b.samples;
            }
        }
        self.update_gauges(&inner);
    }

    /// Samples waiting (sealed and open).
    pub fn pending_samples(&self) -> usize {
        let inner = self.lock();
        inner.queued_samples + inner.open_samples
    }

    /// Waits until something was appended or sealed.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Drops everything still queued (end of the shutdown grace period);
    /// returns the samples dropped.
    pub fn drain_all(&self, reason: &str) -> usize {
        let mut inner = self.lock();
        self.seal(&mut inner);
        let n = inner.queued_samples;
        let b = inner.batches.len() as u64;
        inner.batches.clear();
        inner.queued_samples = 0;
        if n > 0 {
            self.drop_samples(reason, n, b);
        }
        self.update_gauges(&inner);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::WriteRequest;
    use crate::series::encode_labels;
    use prost::Message;

    fn q(max_per_send: usize, max_queued: usize) -> Queue {
        Queue::new(
            max_per_send,
            max_queued,
            Duration::from_secs(5),
            Metrics::new(),
            RemoteLabels {
                remote_name: "t".into(),
                url: "u".into(),
            },
        )
    }

    fn samples(n: usize, base: i64) -> EncodedSamples {
        let mut e = EncodedSamples::default();
        let l = encode_labels(&[("__name__".into(), "m".into())]);
        for i in 0..n {
            e.push(&l, i as f64, base + i as i64);
        }
        e
    }

    fn decode(b: &Batch) -> WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(&b.data).unwrap();
        WriteRequest::decode(raw.as_slice()).unwrap()
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
