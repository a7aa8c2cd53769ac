//! The producing side of a queue: scrape tasks append their encoded samples;
//! batches are sealed (compressed once, by the storage codec) and stored, in
//! memory or in the segment log, within the queue's budgets.

use super::*;

impl Queue {
    /// Adds a scrape's samples, sealing batches as they fill. `metadata`
    /// (1.0 `metadata` entries, usually empty) goes into the scrape's first
    /// batch.
    pub(crate) fn append(&self, enc: &EncodedSamples, metadata: &[u8]) {
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
                if i == 0 && !metadata.is_empty() {
                    // The first batch and the metadata, in the open buffer
                    // (unused on this path).
                    let mut open = std::mem::take(&mut inner.open);
                    open.clear();
                    open.extend_from_slice(enc.slice(0, take));
                    open.extend_from_slice(metadata);
                    self.store(&mut inner, &open, take, enc.scraped_at_ms, enc.stream);
                    open.clear();
                    inner.open = open;
                } else {
                    self.store(
                        &mut inner,
                        enc.slice(i, i + take),
                        take,
                        enc.scraped_at_ms,
                        enc.stream,
                    );
                }
                i += take;
            }
            drop(inner);
            self.notify.notify_one();
            return;
        }
        let mut sealed = false;
        // A batch holds one stream: it is sent whole, in parallel with other
        // streams' batches.
        if inner.open_samples > 0 && inner.open_stream != enc.stream {
            self.seal(&mut inner);
            sealed = true;
        }
        inner.open_stream = enc.stream;
        if !metadata.is_empty() {
            if inner.open_samples == 0 {
                inner.open_since = Some(Instant::now());
            }
            inner.open.extend_from_slice(metadata);
        }
        let mut i = 0;
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
        // The open batch counts in `queue_samples` as soon as it grows.
        self.update_gauges(&inner);
        drop(inner);
        if sealed || was_empty {
            self.notify.notify_one();
        }
    }

    pub(super) fn seal(&self, inner: &mut Inner) {
        if inner.open_samples == 0 {
            return;
        }
        let samples = inner.open_samples;
        let oldest_ms = inner.open_oldest_ms;
        let open = std::mem::take(&mut inner.open);
        let stream = inner.open_stream;
        self.store(inner, &open, samples, oldest_ms, stream);
        inner.open = open;
        inner.open.clear();
        inner.open_samples = 0;
        inner.open_since = None;
        inner.open_oldest_ms = i64::MAX;
    }

    /// Compresses one batch (`WriteRequest` bytes) and queues it.
    pub(super) fn store(
        &self,
        inner: &mut Inner,
        request: &[u8],
        samples: usize,
        oldest_ms: i64,
        stream: u64,
    ) {
        // A new scrape may be a stream's newest now.
        inner.behind = None;
        let Inner {
            compressor,
            compressed,
            codec,
            ..
        } = inner;
        let codec = *codec;
        compressed.clear();
        // Into a growing buffer: no worst-case output buffer (see
        // crate::remote_write::codec).
        let data = match compressor.compress(codec, request, compressed) {
            // Exactly the compressed bytes; the buffers stay for the next
            // batch.
            Ok(()) => {
                if compressed.len() >= 1 << 20 {
                    // A large batch: its buffer becomes the batch (no second
                    // copy), and the next batch starts afresh.
                    let mut v = std::mem::take(compressed);
                    v.shrink_to_fit();
                    Bytes::from(v)
                } else {
                    Bytes::copy_from_slice(compressed)
                }
            }
            Err(e) => {
                // Only possible for inputs over ~4 GiB; a batch is far smaller.
                tracing::error!(error = %e, codec = codec.as_str(), "compression failed; batch dropped");
                self.drop_samples(DropReason::Compression, samples, 1);
                return;
            }
        };
        if compressed.capacity() > 1 << 20 {
            *compressed = Vec::new();
        }
        self.metrics
            .bytes_stored
            .get_or_create(&self.labels)
            .inc_by(data.len() as u64);
        match &mut inner.storage {
            Storage::Memory {
                batches,
                samples: queued,
                max_samples,
                next_seq,
            } => {
                batches.push_back(Batch {
                    seq: *next_seq,
                    parts: vec![Stored { codec, data }],
                    samples,
                    oldest_ms,
                    born: crate::clock::mono_born(oldest_ms),
                    stream,
                });
                *next_seq += 1;
                *queued += samples;
                while *queued > *max_samples && batches.len() > 1 {
                    if let Some(old) = batches.pop_front() {
                        *queued -= old.samples;
                        self.drop_samples(DropReason::QueueFull, old.samples, 1);
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
                match log.append(&data, codec, samples as u32, oldest_ms, stream) {
                    Ok(seq) => {
                        if *hot_bytes + data.len() <= HOT_BYTES {
                            *hot_bytes += data.len();
                            hot.push_back((seq, Stored { codec, data }));
                        }
                    }
                    Err(e) => {
                        self.drop_samples(DropReason::DiskError, samples, 1);
                        // Once a minute at most: a full disk fails every batch.
                        if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            *last_error_log = Some(Instant::now());
                            tracing::error!(remote_name = %self.labels.remote_name, error = %e, "cannot append to the disk queue; batches are dropped and counted until it works again");
                        }
                    }
                }
                let drops = log.take_drops();
                for (reason, (batches, samples)) in [
                    (DropReason::MaxSize, drops.max_size),
                    (DropReason::DiskFull, drops.disk_full),
                ] {
                    if batches > 0 {
                        self.drop_samples(reason, samples as usize, batches);
                        tracing::warn!(remote_name = %self.labels.remote_name, batches, samples, max_size = *max_size, reason = reason.as_str(), "disk queue: gave up the oldest segment to make room");
                    }
                }
            }
        }
        self.update_gauges(inner);
    }

    /// Seals the open batch if it is at least `batch_send_deadline` old (or
    /// unconditionally with `force`).
    pub(crate) fn flush(&self, force: bool) {
        let mut inner = self.lock();
        let due = inner
            .open_since
            .is_some_and(|t| force || t.elapsed() >= self.batch_send_deadline);
        if due {
            self.seal(&mut inner);
        }
    }
}
