//! The consuming side of a queue: acknowledgement of the completed prefix,
//! what is pending, the open batch's deadline, shutdown, and the snappy join
//! of batches into one request; a refused joined request is split back into
//! parts. Leasing requests to the sender's workers is `lease`.

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
    /// (Tests; the sender uses [`Queue::take`].)
    #[cfg(test)]
    pub(crate) fn front(&self) -> Option<Batch> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut changed = false;
        let out = loop {
            match &mut inner.storage {
                Storage::Memory {
                    batches, samples, ..
                } => {
                    let b = batches.front()?.clone();
                    if too_old(b.born, self.max_age) {
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
                            *hot_bytes -= b.data.len();
                        }
                    }
                    let too_old = too_old(m.born, self.max_age);
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
                                parts: vec![data],
                                samples: m.samples as usize,
                                oldest_ms: m.oldest_ms,
                                born: m.born,
                                stream: m.stream,
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

    pub(super) fn alone_until(&self) -> u64 {
        self.alone_until.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The receiver refused a joined request ending at `seq`: send its parts
    /// again one by one (see `alone_until`).
    pub(crate) fn split_until(&self, seq: u64) {
        self.alone_until
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
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
                        *hot_bytes -= b.data.len();
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
