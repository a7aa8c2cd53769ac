//! Leasing requests to the sender's workers: [`Queue::take`] plans a request
//! over the unleased batches, leases it (its batches stay queued, its streams
//! busy) until the worker completes it (out of order: only the completed
//! prefix leaves the queue, see [`Queue::ack`]) or releases it.
//!
//! Ordering: a request is planned by scanning the unleased batches in queue
//! order. A batch joins it when its stream has nothing in flight and no
//! earlier batch of its stream was passed over; the scan stops at the first
//! batch that does not fit. So each stream's batches go out in queue order,
//! one request per stream at a time, while other streams' requests are in
//! flight beside it. A batch with stream 0 (unknown: found on disk at
//! start-up) or up to `alone_until` is exclusive: sent alone, with nothing
//! else in flight.

use std::sync::Arc;

use super::*;

impl Queue {
    /// What [`Queue::take`] would take now, from the index alone (no data
    /// read): (samples, whether it is as full as it gets, the oldest scrape
    /// time in it).
    pub(crate) fn peek(&self, max_samples: usize) -> Option<(usize, bool, i64)> {
        let mut inner = self.lock();
        self.plan(&mut inner, max_samples)
            .map(|p| (p.samples, p.full, p.oldest_ms))
    }

    /// The next request to send (see the module docs), leased until it is
    /// completed or released (or the lease dropped). The flag says whether it
    /// is as full as it gets. Batches over `max_age` at the front, or damaged,
    /// are dropped and counted first.
    pub(crate) fn take(self: &Arc<Self>, max_samples: usize) -> Option<(Lease, bool)> {
        self.drop_aged_front();
        let mut inner = self.lock();
        let plan = self.plan(&mut inner, max_samples)?;
        let mut parts = Vec::with_capacity(plan.entries.len());
        let mut taken: Vec<Entry> = Vec::with_capacity(plan.entries.len());
        for e in plan.entries {
            match self.read_entry(&mut inner, &e) {
                Ok(data) => {
                    parts.push(data);
                    taken.push(e);
                }
                Err(ReadFailure::Damaged) => {
                    // Given up on and counted: done, as if sent.
                    self.drop_samples(DropReason::Corrupt, e.samples, 1);
                    inner.flight.done.insert(e.seq);
                }
                // Not damage: retried shortly; the request ends before it.
                Err(ReadFailure::Retry) => break,
            }
        }
        if taken.is_empty() {
            drop(inner);
            self.advance();
            return None;
        }
        let mut streams: Vec<u64> = Vec::new();
        for e in &taken {
            inner.flight.leased.insert(e.seq);
            if !streams.contains(&e.stream) {
                streams.push(e.stream);
            }
        }
        if plan.exclusive {
            inner.flight.exclusive = true;
        }
        for st in &streams {
            if plan.fresh {
                inner.flight.fresh.insert(*st);
            } else {
                *inner.flight.streams.entry(*st).or_default() += 1;
            }
        }
        if self.fresh_first() {
            self.record_backlog(&mut inner);
        }
        let more_waiting = self.plan(&mut inner, max_samples).is_some();
        drop(inner);
        if more_waiting {
            // Another worker can take a request beside this one.
            self.notify.notify_one();
        }
        let last = &taken[taken.len() - 1];
        let samples = taken.iter().map(|e| e.samples).sum();
        let oldest_ms = taken.iter().map(|e| e.oldest_ms).min().unwrap_or(i64::MAX);
        let born = taken.iter().map(|e| e.born).min().unwrap_or(i64::MAX);
        let batch = Batch {
            seq: last.seq,
            parts,
            samples,
            oldest_ms,
            born,
            stream: if streams.len() == 1 { streams[0] } else { 0 },
        };
        Some((
            Lease {
                queue: self.clone(),
                seqs: taken.iter().map(|e| e.seq).collect(),
                streams,
                exclusive: plan.exclusive,
                fresh: plan.fresh,
                batch: Some(batch),
            },
            plan.full,
        ))
    }

    /// Batches in queue order as (seq, samples, oldest_ms, stream).
    pub(super) fn entries<'a>(inner: &'a Inner) -> Box<dyn Iterator<Item = Entry> + 'a> {
        match &inner.storage {
            Storage::Memory { batches, .. } => Box::new(batches.iter().map(|b| Entry {
                seq: b.seq,
                samples: b.samples,
                oldest_ms: b.oldest_ms,
                born: b.born,
                stream: b.stream,
            })),
            Storage::Disk { log, .. } => Box::new(log.records().map(|m| Entry {
                seq: m.seq,
                samples: m.samples as usize,
                oldest_ms: m.oldest_ms,
                born: m.born,
                stream: m.stream,
            })),
        }
    }

    /// The request [`Queue::take`] would lease (see the module docs).
    fn plan(&self, inner: &mut Inner, max_samples: usize) -> Option<Plan> {
        if self.fresh_first() {
            self.behind(inner);
        }
        let inner = &*inner;
        let behind = inner
            .behind
            .as_ref()
            .map(|(_, b)| b)
            .filter(|_| self.fresh_first());
        if let Some(b) = behind
            && let Some(p) = self.plan_fresh(inner, max_samples, b)
        {
            return Some(p);
        }
        let f = &inner.flight;
        if f.exclusive {
            return None;
        }
        let alone = self.alone_until();
        let mut p = Plan::new();
        let mut passed: Vec<u64> = Vec::new();
        for e in Self::entries(inner) {
            if f.leased.contains(&e.seq) || f.done.contains(&e.seq) {
                continue;
            }
            // A behind stream's newest scrape waits for the fresh lane.
            if behind.is_some_and(|b| Self::is_fresh(b, &e)) {
                continue;
            }
            if e.stream == 0 || e.seq <= alone {
                if p.entries.is_empty() && f.streams.is_empty() {
                    p.samples = e.samples;
                    p.oldest_ms = e.oldest_ms;
                    p.entries.push(e);
                    p.full = true;
                    p.exclusive = true;
                    return Some(p);
                }
                // It may hold any series: nothing after it goes first.
                p.full = true;
                break;
            }
            if f.streams.contains_key(&e.stream) || passed.contains(&e.stream) {
                if !passed.contains(&e.stream) {
                    passed.push(e.stream);
                }
                continue;
            }
            if !p.add(e, max_samples) {
                break;
            }
        }
        (!p.entries.is_empty()).then_some(p)
    }

    /// A batch's data, from memory or disk.
    fn read_entry(&self, inner: &mut Inner, e: &Entry) -> Result<Stored, ReadFailure> {
        let result = match &inner.storage {
            Storage::Memory { batches, .. } => {
                return batches
                    .iter()
                    .find(|b| b.seq == e.seq)
                    .and_then(|b| b.parts.first().cloned())
                    .ok_or(ReadFailure::Retry);
            }
            Storage::Disk { log, hot, .. } => {
                if let Some((_, b)) = hot.iter().find(|(s, _)| *s == e.seq) {
                    return Ok(b.clone());
                }
                let Some(m) = log.get(e.seq) else {
                    return Err(ReadFailure::Retry);
                };
                log.read(&m)
            }
        };
        match result {
            Ok(d) => {
                inner.read_failed_at = None;
                Ok(d)
            }
            Err(err @ DiskError::Corrupt { .. }) => {
                tracing::error!(remote_name = %self.labels.remote_name, error = %err, "queue: damaged batch dropped");
                Err(ReadFailure::Damaged)
            }
            Err(err) => {
                if inner.read_failed_at.is_none() {
                    tracing::warn!(remote_name = %self.labels.remote_name, error = %err, "queue: cannot read the next batch; retrying every second");
                }
                inner.read_failed_at = Some(Instant::now());
                Err(ReadFailure::Retry)
            }
        }
    }

    /// Drops (and counts) batches over `max_age` at the front of the queue,
    /// unless being sent; from the index alone.
    fn drop_aged_front(&self) {
        if self.max_age.is_none() {
            return;
        }
        loop {
            let inner = self.lock();
            let Some(e) = Self::entries(&inner).next() else {
                return;
            };
            let busy = inner.flight.leased.contains(&e.seq) || inner.flight.done.contains(&e.seq);
            drop(inner);
            if busy || !too_old(e.born, self.max_age) {
                return;
            }
            self.drop_samples(DropReason::MaxAge, e.samples, 1);
            self.ack(e.seq);
        }
    }

    /// The lease's batches reached the receiver (or were given up on and
    /// counted): they leave the queue once every batch before them has.
    fn complete(&self, lease: &Lease) {
        let mut inner = self.lock();
        for s in &lease.seqs {
            inner.flight.done.insert(*s);
        }
        Self::unlease(&mut inner, lease);
        drop(inner);
        self.advance();
        self.notify.notify_one();
        if self.pending_samples() == 0 {
            // Every worker waiting, not one: at shutdown each is waiting for
            // the queue to empty, and none may sleep out the grace period
            // once it has.
            self.notify.notify_waiters();
        }
    }

    /// The lease's batches are to be taken again.
    fn release(&self, lease: &Lease) {
        let mut inner = self.lock();
        Self::unlease(&mut inner, lease);
        drop(inner);
        self.notify.notify_one();
    }

    fn unlease(inner: &mut Inner, lease: &Lease) {
        for s in &lease.seqs {
            inner.flight.leased.remove(s);
        }
        for st in &lease.streams {
            if lease.fresh {
                inner.flight.fresh.remove(st);
                continue;
            }
            if let Some(n) = inner.flight.streams.get_mut(st) {
                *n -= 1;
                if *n == 0 {
                    inner.flight.streams.remove(st);
                }
            }
        }
        if lease.exclusive {
            inner.flight.exclusive = false;
        }
    }

    /// Removes the completed prefix of the queue.
    fn advance(&self) {
        let mut inner = self.lock();
        let mut upto = None;
        let mut forget = Vec::new();
        for e in Self::entries(&inner) {
            if inner.flight.done.contains(&e.seq) {
                upto = Some(e.seq);
                forget.push(e.seq);
            } else {
                break;
            }
        }
        // Done batches the queue no longer holds (dropped meanwhile).
        let front = Self::entries(&inner).next().map(|e| e.seq);
        inner
            .flight
            .done
            .retain(|s| front.is_some_and(|f| *s >= f) && !forget.contains(s));
        drop(inner);
        if let Some(seq) = upto {
            self.ack(seq);
        }
    }
}

/// One batch as a request plan sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) samples: usize,
    pub(super) oldest_ms: i64,
    pub(super) born: i64,
    pub(super) stream: u64,
}

/// A request [`Queue::take`] would lease.
pub(super) struct Plan {
    pub(super) entries: Vec<Entry>,
    pub(super) samples: usize,
    pub(super) oldest_ms: i64,
    pub(super) full: bool,
    exclusive: bool,
    /// The fresh lane's (see `fresh`).
    fresh: bool,
}

impl Plan {
    fn new() -> Plan {
        Plan {
            entries: Vec::new(),
            samples: 0,
            oldest_ms: i64::MAX,
            full: false,
            exclusive: false,
            fresh: false,
        }
    }

    /// Joins `e` unless it would take the request past `max_samples` (a
    /// first entry always joins); false (and full) when it does not fit.
    pub(super) fn add(&mut self, e: Entry, max_samples: usize) -> bool {
        if !self.entries.is_empty() && self.samples + e.samples > max_samples {
            self.full = true;
            return false;
        }
        self.samples += e.samples;
        self.oldest_ms = self.oldest_ms.min(e.oldest_ms);
        self.entries.push(e);
        true
    }

    pub(super) fn fresh() -> Plan {
        Plan {
            fresh: true,
            ..Plan::new()
        }
    }
}

enum ReadFailure {
    /// Damaged for good: dropped and counted.
    Damaged,
    /// Not readable now (or gone): tried again later.
    Retry,
}

/// A request being sent: its batches stay queued, and their streams busy,
/// until [`Lease::complete`] or [`Lease::release`] (dropping it releases).
pub(crate) struct Lease {
    queue: Arc<Queue>,
    seqs: Vec<u64>,
    pub(super) streams: Vec<u64>,
    exclusive: bool,
    /// It holds the newest scrape of behind streams (see `fresh`).
    pub(super) fresh: bool,
    batch: Option<Batch>,
}

impl Lease {
    /// The request body and its summary.
    pub(crate) fn batch(&self) -> &Batch {
        self.batch
            .as_ref()
            .unwrap_or_else(|| unreachable!("a lease always has its batch until it ends"))
    }

    /// The receiver has it (or it was given up on and counted).
    pub(crate) fn complete(mut self) {
        self.queue.complete(&self);
        self.batch = None;
    }

    /// Not sent: to be taken again (by this or another worker).
    pub(crate) fn release(mut self) {
        self.queue.release(&self);
        self.batch = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.batch.is_some() {
            self.queue.release(self);
        }
    }
}
