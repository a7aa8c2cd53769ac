//! The consuming side of a queue: the sender takes the front batch (joined
//! with the ones after it when they fit one request), acknowledges it by
//! sequence number, and splits a refused joined request back into parts.

use super::*;

impl Queue {
    /// When the sender should look again without being notified: the open
    /// batch becomes due, or a batch that could not be read is tried again.
    pub(crate) fn open_due_at(&self) -> Option<Instant> {
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
    pub(crate) fn front(&self) -> Option<Batch> {
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
                        self.drop_samples(DropReason::MaxAge, b.samples, 1);
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
                                if too_old {
                                    DropReason::MaxAge
                                } else {
                                    DropReason::Corrupt
                                },
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
    pub(crate) fn join_size(&self, max_samples: usize) -> Option<(usize, bool, i64)> {
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
    pub(crate) fn front_joined(&self, max_samples: usize) -> Option<(Batch, bool)> {
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

    pub(super) fn alone_until(&self) -> u64 {
        self.alone_until.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The receiver refused a joined request ending at `seq`: send its parts
    /// again one by one (see `alone_until`).
    pub(crate) fn split_until(&self, seq: u64) {
        self.alone_until
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the front batch is to be sent alone (see `alone_until`).
    pub(super) fn front_is_recovered(&self, inner: &Inner) -> bool {
        let until = self.alone_until();
        match &inner.storage {
            Storage::Disk { log, .. } => log.records().next().is_some_and(|m| m.seq <= until),
            Storage::Memory { batches, .. } => batches.front().is_some_and(|b| b.seq <= until),
        }
    }

    /// Removes batch `seq` once the receiver has it (or it was given up on).
    pub(crate) fn ack(&self, seq: u64) {
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
    pub(crate) fn pending_samples(&self) -> usize {
        let inner = self.lock();
        let sealed = match &inner.storage {
            Storage::Memory { samples, .. } => *samples,
            Storage::Disk { log, .. } => log.samples() as usize,
        };
        sealed + inner.open_samples
    }

    /// Waits until something was appended or sealed.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }

    /// End of the shutdown grace period: the open batch is sealed; a disk
    /// queue is synced and keeps everything for the next start, a memory
    /// queue drops (and counts) what is left. Returns the samples dropped.
    pub(crate) fn shutdown(&self) -> usize {
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
                    self.drop_samples(DropReason::Shutdown, n, b);
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
pub(crate) fn join_snappy(blocks: &[Bytes]) -> Option<(Bytes, Vec<Bytes>)> {
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
    crate::remote_write::proto::put_varint(&mut head, total);
    Some((Bytes::from(head), bodies))
}
