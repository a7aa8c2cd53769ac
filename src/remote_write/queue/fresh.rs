//! `queue.fresh_first`: after an outage, each target's newest scrape goes
//! ahead of its backlog.
//!
//! A stream (a target) is *behind* when [`BEHIND_SCRAPES`] or more of its
//! scrapes wait in the queue (the receiver was away or slow). A behind
//! stream has two lanes: the *fresh* lane sends its newest scrape (one
//! request in flight at a time; a newer scrape is the next one), and the
//! backlog lane sends everything older, oldest to newest, as the queue
//! always does (one request at a time per stream). The lanes never wait for
//! each other, so a dashboard shows current data within a request of the
//! receiver's return while the backlog fills in behind it. The receiver must
//! accept samples older than a series' newest (Prometheus with
//! `out_of_order_time_window`, VictoriaMetrics, Mimir with out-of-order
//! ingestion): the backlog arrives after the fresh data. A stream that is
//! not behind is sent exactly as without the option. A fresh request that
//! is retried while a newer scrape of its stream arrives is given back (it
//! becomes backlog) and the newer one is taken: after an outage, the
//! first request that reaches the receiver holds each stream's latest
//! scrape, not the one that was newest when the outage began.

use std::collections::HashMap;

use super::lease::{Entry, Plan};
use super::*;

/// Scrapes a stream must have waiting to be behind.
pub(super) const BEHIND_SCRAPES: usize = 3;

/// How long a computed [`Behind`] is used (a stored batch renews it sooner).
const REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// One stream's waiting scrapes, as a plan sees them.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamState {
    /// Its newest scrape's time (ms).
    newest: i64,
    /// Distinct scrapes waiting.
    scrapes: usize,
    last: i64,
    /// Samples waiting, and of them in the newest scrape.
    samples: usize,
    newest_samples: usize,
    oldest: i64,
}

impl StreamState {
    pub(super) fn behind(&self) -> bool {
        self.scrapes >= BEHIND_SCRAPES
    }
}

pub(super) type Behind = HashMap<u64, StreamState>;

impl Queue {
    /// [`Queue::streams`], kept for a second (or until a batch is stored):
    /// a request plan would otherwise read the whole queue's index each
    /// time, thousands of times over a large backlog.
    pub(super) fn behind<'a>(&self, inner: &'a mut Inner) -> &'a Behind {
        let stale = inner
            .behind
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= REFRESH);
        if stale {
            let map = self.streams(inner);
            inner.behind = Some((Instant::now(), map));
        }
        match &inner.behind {
            Some((_, m)) => m,
            None => unreachable!("just filled"),
        }
    }

    /// Every stream's waiting scrapes (batches not yet acknowledged, in
    /// flight or not; none of unknown stream or to be sent alone).
    fn streams(&self, inner: &Inner) -> Behind {
        let alone = self.alone_until();
        let mut map: Behind = HashMap::new();
        for e in Self::entries(inner) {
            if e.stream == 0 || e.seq <= alone || inner.flight.done.contains(&e.seq) {
                continue;
            }
            let st = map.entry(e.stream).or_insert(StreamState {
                newest: e.oldest_ms,
                scrapes: 0,
                last: i64::MIN,
                samples: 0,
                newest_samples: 0,
                oldest: e.oldest_ms,
            });
            if e.oldest_ms != st.last {
                st.scrapes += 1;
                st.last = e.oldest_ms;
            }
            st.samples += e.samples;
            st.oldest = st.oldest.min(e.oldest_ms);
            if e.oldest_ms > st.newest {
                st.newest = e.oldest_ms;
                st.newest_samples = e.samples;
            } else if e.oldest_ms == st.newest {
                st.newest_samples += e.samples;
            }
        }
        map
    }

    /// Whether `e` belongs to the fresh lane: the newest scrape of a
    /// stream that is behind.
    pub(super) fn is_fresh(behind: &Behind, e: &Entry) -> bool {
        behind
            .get(&e.stream)
            .is_some_and(|s| s.behind() && e.oldest_ms == s.newest)
    }

    /// The fresh lane's next request: the newest scrapes of behind streams
    /// whose fresh lane is free, joined up to `max_samples`.
    pub(super) fn plan_fresh(
        &self,
        inner: &Inner,
        max_samples: usize,
        behind: &Behind,
    ) -> Option<Plan> {
        let f = &inner.flight;
        let mut p = Plan::fresh();
        for e in Self::entries(inner) {
            if f.leased.contains(&e.seq)
                || f.done.contains(&e.seq)
                || !Self::is_fresh(behind, &e)
                || f.fresh.contains(&e.stream)
            {
                continue;
            }
            if !p.add(e, max_samples) {
                break;
            }
        }
        (!p.entries.is_empty()).then_some(p)
    }

    /// The backlog of each behind stream (samples, oldest scrape), kept for
    /// [`Queue::backlog_of`], and their sum as a gauge.
    pub(super) fn record_backlog(&self, inner: &mut Inner) {
        self.behind(inner);
        let Inner {
            behind, backlog, ..
        } = inner;
        backlog.clear();
        let mut total = 0;
        for (stream, s) in behind.iter().flat_map(|(_, b)| b.iter()) {
            if s.behind() {
                let n = s.samples - s.newest_samples;
                total += n;
                backlog.insert(*stream, (n, s.oldest));
            }
        }
        self.metrics
            .queue_backlog_samples
            .get_or_create(&self.labels)
            .set(total as i64);
    }

    /// The destination's name.
    pub(crate) fn name(&self) -> &str {
        &self.labels.remote_name
    }

    /// A stream's backlog behind its newest scrape (samples, oldest scrape
    /// in ms), when it is behind (`queue.fresh_first` only).
    pub(crate) fn backlog_of(&self, stream: u64) -> Option<(usize, i64)> {
        self.lock().backlog.get(&stream).copied()
    }

    /// Whether a fresh request has a newer scrape of its stream waiting
    /// (then it is given back before a retry, and the newer one taken).
    pub(crate) fn superseded(&self, lease: &Lease) -> bool {
        if !lease.fresh {
            return false;
        }
        let oldest = lease.batch().oldest_ms;
        let mut inner = self.lock();
        let behind = self.behind(&mut inner);
        lease
            .streams
            .iter()
            .any(|st| behind.get(st).is_some_and(|s| s.newest > oldest))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::remote_write::proto::WriteRequest;
    use crate::remote_write::samples::{EncodedSamples, encode_labels};
    use crate::telemetry::{Metrics, RemoteLabels};
    use prost::Message;

    fn queue(fresh: bool) -> Arc<Queue> {
        let q = Queue::memory(
            100,
            1_000_000,
            Duration::from_secs(5),
            Metrics::new(),
            RemoteLabels {
                remote_name: "t".into(),
                url: "u".into(),
            },
        );
        q.set_fresh_first(fresh);
        Arc::new(q)
    }

    /// One scrape of `stream` at `ts`: 10 samples.
    fn scrape(q: &Queue, stream: u64, ts: i64) {
        let mut e = EncodedSamples::default();
        let l = encode_labels(&[("__name__".into(), format!("m{stream}"))]);
        for i in 0..10 {
            e.push(&l, i as f64, ts);
        }
        e.scraped_at_ms = ts;
        e.stream = stream;
        q.append(&e, &[]);
        q.flush(true);
    }

    /// The scrape times a lease holds, in order.
    fn times(l: &Lease) -> Vec<i64> {
        let mut plain = Vec::new();
        let mut d = crate::remote_write::codec::Decompressor::default();
        for p in &l.batch().parts {
            d.decompress(p.codec, &p.data, &mut plain).unwrap();
        }
        let mut t: Vec<i64> = WriteRequest::decode(plain.as_slice())
            .unwrap()
            .timeseries
            .iter()
            .map(|s| s.samples[0].timestamp)
            .collect();
        t.dedup();
        t
    }

    #[test]
    fn a_stream_behind_sends_its_newest_scrape_first_and_the_backlog_beside_it() {
        let q = queue(true);
        for ts in 1..=5 {
            scrape(&q, 7, ts * 1000);
        }
        let (fresh, _) = q.take(100).unwrap();
        assert!(fresh.fresh);
        assert_eq!(times(&fresh), [5000]);
        // The backlog goes beside it, oldest first, joined.
        let (backlog, _) = q.take(100).unwrap();
        assert!(!backlog.fresh);
        assert_eq!(times(&backlog), [1000, 2000, 3000, 4000]);
        assert_eq!(q.backlog_of(7), Some((40, 1000)));
        // Each lane has its one request: nothing more now.
        assert!(q.take(100).is_none());
        // A new scrape is the fresh lane's next, once the lane is free.
        scrape(&q, 7, 6000);
        assert!(q.take(100).is_none());
        fresh.complete();
        let (next, _) = q.take(100).unwrap();
        assert_eq!(times(&next), [6000]);
        next.complete();
        backlog.complete();
        assert_eq!(q.pending_samples(), 0);
    }

    #[test]
    fn a_stream_not_behind_or_the_option_off_goes_in_order() {
        for (fresh, scrapes) in [(true, 2), (false, 5)] {
            let q = queue(fresh);
            for ts in 1..=scrapes {
                scrape(&q, 7, ts * 1000);
            }
            let (l, _) = q.take(100).unwrap();
            assert!(!l.fresh);
            assert_eq!(times(&l)[0], 1000, "fresh_first {fresh}, {scrapes} scrapes");
            assert!(q.take(100).is_none(), "one request per stream");
            assert_eq!(q.backlog_of(7), None);
        }
    }

    #[test]
    fn a_fresh_request_retried_gives_way_to_a_newer_scrape() {
        let q = queue(true);
        for ts in 1..=4 {
            scrape(&q, 7, ts * 1000);
        }
        let (fresh, _) = q.take(100).unwrap();
        assert_eq!(times(&fresh), [4000]);
        assert!(!q.superseded(&fresh));
        scrape(&q, 7, 5000);
        assert!(q.superseded(&fresh));
        fresh.release();
        let (newer, _) = q.take(100).unwrap();
        assert!(newer.fresh);
        assert_eq!(times(&newer), [5000]);
        // The one given back is backlog now, in its place.
        let (backlog, _) = q.take(100).unwrap();
        assert_eq!(times(&backlog), [1000, 2000, 3000, 4000]);
    }

    #[test]
    fn streams_are_fresh_side_by_side_and_a_batch_sent_alone_blocks_only_the_backlog() {
        let q = queue(true);
        // A batch of unknown stream (found on disk at start-up): alone.
        scrape(&q, 0, 500);
        for ts in 1..=3 {
            scrape(&q, 7, ts * 1000);
            scrape(&q, 8, ts * 1000 + 1);
        }
        let (alone, _) = q.take(100).unwrap();
        assert_eq!(times(&alone), [3000, 3001], "both streams' newest, joined");
        let (exclusive, _) = q.take(100).unwrap();
        assert_eq!(times(&exclusive), [500]);
        // While it is in flight nothing of the backlog goes...
        assert!(q.take(100).is_none());
        exclusive.complete();
        // ...and then both streams' backlogs do.
        let (b, _) = q.take(100).unwrap();
        assert_eq!(times(&b), [1000, 1001, 2000, 2001]);
        alone.complete();
        b.complete();
        assert_eq!(q.pending_samples(), 0);
    }
}
