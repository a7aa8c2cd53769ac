//! Label sets, the per-target series table, and staleness.
//!
//! This is the hot path. For every exposed sample the final label set is
//! encoded straight from the exposition text into the protobuf `repeated
//! Label` bytes of a remote-write `TimeSeries`, in place in the request. The
//! label layout (names in order, merged with the target labels, honoring
//! `honor_labels`, and the external labels) is worked out once per label-name
//! shape ([`plan`]); a sample then costs a few 16-byte compares and copies.
//! No allocation, no `String`s. Anything unusual (a repeated name, a name a
//! target label has too, invalid UTF-8, a label limit) takes the per-sample
//! encoder, and an `exported_` rename or an error the general path, which
//! builds the renamed set or the message; `metric_relabel_configs` results
//! are cached per exposed series (relabeling runs once per new series, as in
//! Prometheus).
//!
//! What is kept between scrapes is small on purpose, since a sidecar's memory
//! is multiplied by a fleet: per series only a 12-byte key (a seeded 64-bit
//! hash of the encoded labels and their length) instead of the label text,
//! in the order the target exposed them, plus the previous response body as
//! it arrived (gzip, typically a tenth of the text). The hash makes two
//! spellings of one series (`a{x="1"}`, `a{ x="1", }`) one series, and a
//! repeat within one scrape a `duplicate_series` error.
//!
//! A scrape is checked against the last one key by key: targets expose their
//! series in a stable order, so this needs no lookups. Only when the order
//! differs are sets built (for that scrape) to find repeats, new series and
//! vanished ones. A series of the previous scrape missing from this one gets
//! a staleness marker (the NaN `0x7ff0000000000002`) at the scrape's
//! timestamp, unless it carried an explicit timestamp (as in Prometheus); the
//! previous body is then inflated and parsed again to recover the label sets
//! of the missing (rare). A failed scrape marks every series of the last
//! successful one the same way.
//!
//! Layout: `target` (what every series of a target gets, and the general,
//! allocating label path), `track` (series keys and the series table),
//! `encode` (the per-sample encoder), `plan` (label layouts per name
//! shape), `metadata` (the page's HELP/TYPE/UNIT as remote-write metadata
//! entries); this file holds the cache itself (ingest, end of scrape,
//! staleness markers, the last body).

use crate::exposition::{Format, ParseError, Parser, SpanBufs};
use crate::remote_write::proto::{SampleTail, finish_series, finish_series_with, start_series};

use crate::labels::STALE_NAN;
use crate::remote_write::samples::{EncodedSamples, POOL_KEEP_MAX};

mod budget;
mod encode;
mod metadata;
mod plan;
mod target;
mod track;

pub use budget::FamilyBudget;
pub(crate) use budget::{BudgetKind, OverBudget};
use encode::{EncodeState, Parsed, resolve};
pub use metadata::encode_metadata;
pub use target::TargetContext;
pub(crate) use target::TimestampBounds;
use track::{Hashers, Key, KeyHasher, KeyMap, Track};

/// Why a series could not be accepted; fails the whole scrape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("label name {name:?} is not unique in series {series}")]
    DuplicateLabel { name: String, series: String },
    #[error("{0}")]
    InvalidLabel(String),
    #[error("{0}")]
    LabelLimit(String),
}

/// Why a body's samples could not be ingested; fails the whole scrape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Series(#[from] SeriesError),
    #[error("sample_limit exceeded: the target exposed more than {0} samples")]
    SampleLimit(u64),
}

/// Sample counts of one ingested body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Samples exposed.
    pub scraped: u64,
    /// Samples kept by metric relabeling (sent).
    pub kept: u64,
    /// Kept series not in the previous scrape.
    pub added: u64,
    /// Samples dropped for an explicit timestamp outside the bounds.
    pub out_of_bounds: u64,
    /// Samples dropped as a repeat of a series already in this scrape.
    pub duplicates: u64,
    /// Samples dropped for an explicit timestamp before (or at, with a
    /// different value) the one the series last had.
    pub out_of_order: u64,
    /// Samples dropped with their family, over its budget.
    pub over_budget: u64,
}

/// What metric relabeling made of one exposed series (cached: relabeling
/// runs once per new series, as in Prometheus).
struct Relabeled {
    /// Encoded labels; `None` when relabeling dropped the series.
    labels: Option<Box<[u8]>>,
    key: Key,
    generation: u8,
}

/// The body of the last successful scrape, as received (gzip-compressed when
/// the target sent it so, which is typically a tenth of the text).
#[derive(Default)]
struct LastBody {
    bytes: Vec<u8>,
    gzip: bool,
    /// Kept snappy-compressed (a large uncompressed body).
    snappy: bool,
    present: bool,
    format: Format,
    /// It exposed a series more than once (its replay then meets keys
    /// twice).
    repeats: bool,
}

/// Uncompressed bodies larger than this are kept snappy-compressed between
/// scrapes (a page of text is typically a quarter to a third of it; a
/// hostile page of one repeated character almost nothing). Smaller ones are
/// kept as they are: compressing costs a pass over the page every scrape.
pub(crate) const KEEP_PLAIN_MAX: usize = 1 << 20;

thread_local! {
    /// The snappy encoder and its one-piece scratch (about 1.2 MiB once a
    /// large plain body was kept), shared by the targets scraped on this
    /// thread: bounded by the runtime's threads, not by the targets, and
    /// reused, so keeping a large body compressed allocates nothing in the
    /// steady state.
    static KEEP_SNAPPY: std::cell::RefCell<(snap::raw::Encoder, Vec<u8>)> =
        std::cell::RefCell::new((snap::raw::Encoder::new(), Vec::new()));
}

impl LastBody {
    fn store(&mut self, body: &[u8], gzip: bool) {
        // Piece by piece, into the buffer the last body used: never a
        // worst-case buffer, never kept past twice what the result needs.
        if !gzip && body.len() > KEEP_PLAIN_MAX {
            self.bytes.clear();
            let kept = KEEP_SNAPPY.with(|k| {
                let (encoder, scratch) = &mut *k.borrow_mut();
                crate::remote_write::snappy::compress_into(encoder, scratch, body, &mut self.bytes)
                    .is_ok()
            });
            if kept {
                if self.bytes.capacity() > 2 * self.bytes.len() + 4096 {
                    self.bytes.shrink_to_fit();
                }
                self.gzip = false;
                self.snappy = true;
                self.present = true;
                return;
            }
        }
        self.snappy = false;
        // Reuse the buffer, unless the page shrank for good.
        if self.bytes.capacity() > 2 * body.len() + 4096 {
            self.bytes = Vec::with_capacity(body.len());
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(body);
        self.gzip = gzip;
        self.present = true;
    }
}

/// Buffers the encoder reuses from sample to sample.
#[derive(Default)]
struct Scratch {
    /// Encoded labels of a sample being replayed.
    labels: Vec<u8>,
    /// An unescaped label value.
    value: Vec<u8>,
    /// Label order: (name prefix, index into the spans or [`NAME`]).
    order: Vec<(u64, u32)>,
    spans: SpanBufs,
    /// The label layout of each shape this target exposes.
    plans: plan::Plans,
}

impl Scratch {
    /// Frees buffers that grew past [`POOL_KEEP_MAX`] for one
    /// huge sample (a hostile label value): given back after the scrape.
    fn trim(&mut self) {
        let max = POOL_KEEP_MAX;
        if self.labels.capacity() > max {
            self.labels = Vec::new();
        }
        if self.value.capacity() > max {
            self.value = Vec::new();
        }
    }
}

/// Scrapes a series with its own timestamps is remembered after it left the
/// page.
const EXPLICIT_KEEP: u8 = 64;

/// `__name__` in [`Scratch::order`].
const NAME: u32 = u32::MAX;

/// The per-target series cache; see the module docs.
pub struct SeriesCache {
    /// The series (final label sets, hashed) of the last scrape.
    track: Track,
    /// Exposed series text (hashed) → metric relabeling result; used only
    /// with `metric_relabel_configs`.
    relabeled: KeyMap<Relabeled>,
    hashers: Hashers,
    /// The scrape (mod 256) that last used each relabeling result.
    generation: u8,
    last: LastBody,
    scratch: Scratch,
    /// The format of the body being ingested.
    format: Format,
    /// The body being ingested repeats a series.
    repeats: bool,
    /// Series exposed with their own timestamps: the last (timestamp, value
    /// bits) sent, and the scrape (mod 256) that last saw each. Such series
    /// are few (federation, exporters of events), and this is all that is
    /// kept for them.
    explicit: KeyMap<(i64, u64, u8)>,
    /// This scrape's explicit samples, applied to `explicit` when it ends
    /// well (a failed scrape sends nothing).
    explicit_now: Vec<(Key, i64, u64)>,
    /// Per-family budgets: the page's families, the last scrape's drops.
    budgets: budget::Budgets,
}

impl Default for SeriesCache {
    fn default() -> Self {
        SeriesCache {
            track: Track::default(),
            relabeled: KeyMap::default(),
            hashers: Hashers {
                a: foldhash::quality::RandomState::default(),
            },
            generation: 0,
            last: LastBody::default(),
            scratch: Scratch::default(),
            format: Format::Text,
            repeats: false,
            explicit: KeyMap::default(),
            explicit_now: Vec::new(),
            budgets: budget::Budgets::default(),
        }
    }
}

impl SeriesCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of series of the last scrape (of the current one, during it);
    /// 0 after a failed one.
    pub fn len(&self) -> usize {
        if self.last.present {
            self.track.order.len()
        } else {
            0
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held between scrapes: the table, the relabeling results and
    /// the last body.
    pub fn retained_bytes(&self) -> usize {
        let relabeled: usize = self
            .relabeled
            .values()
            .map(|r| r.labels.as_ref().map_or(0, |l| l.len()))
            .sum();
        self.track.order.capacity() * std::mem::size_of::<Key>()
            + self.relabeled.capacity() * (std::mem::size_of::<(Key, Relabeled)>() + 1)
            + relabeled
            + self.last.bytes.capacity()
            + self.scratch.plans.retained_bytes()
    }

    /// Parses `body` (one scrape, a new generation) and appends its samples
    /// at `ts` (or their own timestamps, with `honor_timestamps`) to `out`.
    /// `sample_limit` 0 means none. After an error the scrape has failed:
    /// call [`SeriesCache::mark_all_stale`].
    pub fn ingest(
        &mut self,
        ctx: &TargetContext,
        body: &[u8],
        ts: i64,
        out: &mut EncodedSamples,
        sample_limit: u64,
    ) -> Result<Ingested, IngestError> {
        self.ingest_format(ctx, body, Format::Text, ts, out, sample_limit)
    }

    /// [`SeriesCache::ingest`] of a body in `format`.
    pub fn ingest_format(
        &mut self,
        ctx: &TargetContext,
        body: &[u8],
        format: Format,
        ts: i64,
        out: &mut EncodedSamples,
        sample_limit: u64,
    ) -> Result<Ingested, IngestError> {
        self.generation = self.generation.wrapping_add(1);
        self.track.start();
        self.repeats = false;
        self.explicit_now.clear();
        self.format = format;
        let mut parser = Parser::with_spans(body, std::mem::take(&mut self.scratch.spans))
            .with_format(format)
            .float_label_values(ctx.float_label_values);
        let r = self.ingest_all(ctx, &mut parser, body, ts, out, sample_limit);
        self.scratch.spans = parser.into_spans();
        r
    }

    fn ingest_all(
        &mut self,
        ctx: &TargetContext,
        parser: &mut Parser<'_>,
        body: &[u8],
        default_ts: i64,
        out: &mut EncodedSamples,
        limit: u64,
    ) -> Result<Ingested, IngestError> {
        let generation = self.generation;
        let mut n = Ingested::default();
        self.scratch.plans.prepare(ctx);
        let tail = SampleTail::new(default_ts);
        let bounds = ctx.timestamp_bounds.window(default_ts);
        let budget = ctx.family_budget;
        let budgeted = budget.enabled();
        let base = out.ends.len();
        self.budgets.start();
        while let Some(s) = parser.next() {
            let s = s?;
            n.scraped += 1;
            // (bucket, +Inf bucket) of a budgeted family's sample.
            let mut bucket = (false, false);
            if budgeted {
                let f = parser.family(&s);
                if !self.budgets.enter(body, &f, out.ends.len()) {
                    continue;
                }
                if f.bucket {
                    bucket = (true, budget::is_inf_bucket(parser.label_spans(), body));
                }
            }
            // The labels go straight into the request, after a placeholder
            // for the entry's length.
            let entry = start_series(&mut out.buf);
            let parsed = Parsed {
                s: &s,
                spans: parser.label_spans(),
                same_names: parser.same_label_names(),
                body,
            };
            let mut st = EncodeState {
                hashers: &self.hashers,
                scratch: &mut self.scratch,
                relabeled: &mut self.relabeled,
            };
            let Some(key) = resolve(ctx, &parsed, &mut st, Some(generation), &mut out.buf)? else {
                out.buf.truncate(entry);
                if budgeted {
                    self.budgets.not_kept(bucket.1);
                }
                continue;
            };
            match self.track.see(key) {
                Some(new) => n.added += u64::from(new),
                None => {
                    if budgeted {
                        self.budgets.not_kept(bucket.1);
                    }
                    // A second sample of one series in one scrape: the first
                    // is kept, this one dropped and counted, as Prometheus's
                    // scrape loop does (`sample_duplicate_timestamp`). Sent,
                    // it would make a Prometheus receiver refuse the whole
                    // request (400: duplicate sample for timestamp).
                    out.buf.truncate(entry);
                    n.duplicates += 1;
                    self.repeats = true;
                    continue;
                }
            }
            if let Some(t) = s.timestamp
                && ctx.honor_timestamps
            {
                if t < bounds.0 || t > bounds.1 {
                    out.buf.truncate(entry);
                    n.out_of_bounds += 1;
                    continue;
                }
                // A receiver refuses a sample older than its series' last
                // (out of order), or at the same time with another value
                // (duplicate), and the whole request with it: dropped and
                // counted here, as Prometheus's scrape loop counts them
                // (sample_out_of_order).
                let bits = s.value.to_bits();
                if let Some(&(last_t, last_v, _)) = self.explicit.get(&key)
                    && (t < last_t || (t == last_t && bits != last_v))
                {
                    out.buf.truncate(entry);
                    n.out_of_order += 1;
                    continue;
                }
                self.explicit_now.push((key, t, bits));
            }
            n.kept += 1;
            if budgeted {
                self.budgets.kept(&budget, bucket.0, bucket.1);
            }
            // As Prometheus, the limit counts samples after metric relabeling
            // (with budgets, after them too: exactly when the page is done,
            // and here as soon as what surely stays is over it, so a huge
            // page stops early either way).
            let counted = if budgeted {
                self.budgets.surely_kept(n.kept)
            } else {
                n.kept
            };
            if limit > 0 && counted > limit {
                return Err(IngestError::SampleLimit(limit));
            }
            match s.timestamp {
                Some(t) if ctx.honor_timestamps => finish_series(&mut out.buf, entry, s.value, t),
                _ => finish_series_with(&mut out.buf, entry, s.value, &tail),
            }
            out.ends.push(out.buf.len() as u32);
        }
        if budgeted {
            let cut = self
                .budgets
                .settle(body, &budget, out, base, &self.hashers, &mut self.track);
            n.kept -= cut.cut;
            n.added -= cut.new_cut;
            n.over_budget = cut.dropped;
            if !cut.gone.is_empty() {
                self.explicit_now.retain(|(k, _, _)| !cut.gone.contains(k));
            }
            if limit > 0 && n.kept > limit {
                return Err(IngestError::SampleLimit(limit));
            }
        }
        Ok(n)
    }

    /// The families the last ingested page dropped for their budget (at most
    /// `budget::NAMED_MAX` named), and how many it dropped in all.
    pub fn over_budget(&self) -> (&[OverBudget], usize) {
        (&self.budgets.over, self.budgets.over_total)
    }

    /// Ends a successful scrape: staleness markers at `ts` for every series
    /// of the previous scrape missing from this one (they leave the cache),
    /// then keeps `body` (as received; `gzip` says how) to know the label
    /// sets of the series that vanish next time. Returns the markers written.
    pub fn end(
        &mut self,
        ctx: &TargetContext,
        ts: i64,
        out: &mut EncodedSamples,
        body: &[u8],
        gzip: bool,
    ) -> u64 {
        let generation = self.generation;
        let mut stale = 0;
        if self.track.any_vanished() {
            // Rare (series come and go far less often than scrapes happen):
            // re-read the previous body for the label sets of the missing.
            if self.track.diverged.is_none() {
                self.track.diverge();
            }
            stale = self.markers(ctx, ts, out, false);
        }
        self.track.finish();
        if !self.relabeled.is_empty() {
            self.relabeled.retain(|_, r| r.generation == generation);
        }
        if !self.explicit_now.is_empty() || !self.explicit.is_empty() {
            for (key, t, bits) in self.explicit_now.drain(..) {
                self.explicit.insert(key, (t, bits, generation));
            }
            // A series gone from the page for 64 scrapes is forgotten (as
            // its staleness is not tracked either); back, it starts afresh.
            self.explicit
                .retain(|_, e| generation.wrapping_sub(e.2) < EXPLICIT_KEEP);
        }
        self.last.store(body, gzip);
        self.last.format = self.format;
        self.last.repeats = self.repeats;
        self.scratch.trim();
        stale
    }

    /// A failed scrape (or a removed target): markers at `ts` for every series
    /// of the last successful scrape. Series first seen by a scrape that
    /// failed half-way were never sent and get none. The last successful
    /// scrape's series stay known (not its body: no second round of markers
    /// after a second failure), so when the target comes back its series are
    /// not counted in `scrape_series_added` again, as Prometheus's scrape
    /// cache keeps them through failed scrapes.
    pub fn mark_all_stale(
        &mut self,
        ctx: &TargetContext,
        ts: i64,
        out: &mut EncodedSamples,
    ) -> u64 {
        let stale = self.markers(ctx, ts, out, true);
        self.budgets.over.clear();
        self.budgets.over_total = 0;
        // Back to the last successful scrape's keys (a half-read failed
        // scrape's keys are forgotten).
        self.track.start();
        self.relabeled.clear();
        self.scratch.trim();
        self.last = LastBody::default();
        stale
    }

    /// Staleness markers at `ts`, from the last successful body, for every
    /// series in it (`all`) or for those the current scrape did not see;
    /// never for series exposed with their own timestamp.
    fn markers(
        &mut self,
        ctx: &TargetContext,
        ts: i64,
        out: &mut EncodedSamples,
        all: bool,
    ) -> u64 {
        let mut stale = 0;
        // A series the last body repeats is met twice: one marker each.
        let mut marked = self.last.repeats.then(track::KeySet::default);
        let SeriesCache {
            track,
            relabeled,
            hashers,
            last,
            scratch,
            ..
        } = self;
        replay(
            ctx,
            last,
            hashers,
            scratch,
            relabeled,
            |key, labels, explicit| {
                if !explicit
                    && (all || track.vanished(&key))
                    && marked.as_mut().is_none_or(|m| m.insert(key))
                {
                    out.push(labels, f64::from_bits(STALE_NAN), ts);
                    stale += 1;
                }
            },
        );
        stale
    }
}

/// Calls `each(key, encoded labels, has explicit timestamp)` for every kept
/// sample of the last successful body.
fn replay(
    ctx: &TargetContext,
    last: &LastBody,
    hashers: &Hashers,
    scratch: &mut Scratch,
    relabeled: &mut KeyMap<Relabeled>,
    mut each: impl FnMut(Key, &[u8], bool),
) {
    if !last.present {
        return;
    }
    let inflated;
    let body: &[u8] = if last.snappy {
        match snap::raw::Decoder::new().decompress_vec(&last.bytes) {
            Ok(plain) => {
                inflated = plain;
                &inflated
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot re-read the previous scrape; its vanished series get no staleness markers");
                return;
            }
        }
    } else if last.gzip {
        let mut plain = Vec::new();
        if let Err(e) = crate::gzip::inflate(&last.bytes, &mut plain, u64::MAX) {
            // Cannot happen: these bytes inflated fine one scrape ago.
            tracing::error!(error = %e, "cannot re-read the previous scrape; its vanished series get no staleness markers");
            return;
        }
        inflated = plain;
        &inflated
    } else {
        &last.bytes
    };
    let mut parser = Parser::with_spans(body, std::mem::take(&mut scratch.spans))
        .with_format(last.format)
        .float_label_values(ctx.float_label_values);
    let mut labels = std::mem::take(&mut scratch.labels);
    scratch.plans.prepare(ctx);
    while let Some(Ok(s)) = parser.next() {
        let explicit = s.timestamp.is_some() && ctx.honor_timestamps;
        labels.clear();
        let parsed = Parsed {
            s: &s,
            spans: parser.label_spans(),
            same_names: parser.same_label_names(),
            body,
        };
        let mut st = EncodeState {
            hashers,
            scratch: &mut *scratch,
            relabeled: &mut *relabeled,
        };
        match resolve(ctx, &parsed, &mut st, None, &mut labels) {
            Ok(Some(key)) => each(key, &labels, explicit),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    scratch.labels = labels;
    scratch.spans = parser.into_spans();
}

#[cfg(test)]
mod tests {
    use super::encode::encode_fast;
    use super::*;
    use crate::labels::LabelLimits;
    use crate::remote_write::proto::WriteRequest;
    use crate::remote_write::samples::encode_labels;
    use prost::Message;

    fn ctx(honor_labels: bool) -> TargetContext {
        TargetContext {
            target_labels: vec![
                ("instance".into(), "h:1".into()),
                ("job".into(), "j".into()),
            ],
            external_labels: vec![
                ("cluster".into(), "c1".into()),
                ("job".into(), "ext".into()),
            ],
            honor_labels,
            honor_timestamps: true,
            metric_relabel: std::sync::Arc::from(Vec::new()),
            limits: LabelLimits::default(),
            timestamp_bounds: TimestampBounds::default(),
            float_label_values: false,
            family_budget: Default::default(),
        }
    }

    fn decode(out: &EncodedSamples) -> WriteRequest {
        WriteRequest::decode(out.buf.as_slice()).unwrap()
    }

    fn label_pairs(ts: &crate::remote_write::proto::TimeSeries) -> Vec<(String, String)> {
        ts.labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    }

    fn scrape(
        cache: &mut SeriesCache,
        c: &TargetContext,
        body: &str,
        ts: i64,
    ) -> Result<EncodedSamples, SeriesError> {
        let mut out = EncodedSamples::default();
        match cache.ingest(c, body.as_bytes(), ts, &mut out, 0) {
            Ok(_) => {}
            Err(IngestError::Series(e)) => return Err(e),
            Err(e) => panic!("{e}"),
        }
        cache.end(c, ts, &mut out, body.as_bytes(), false);
        Ok(out)
    }

    #[test]
    fn labels_are_merged_sorted_and_encoded() {
        let mut cache = SeriesCache::new();
        let out = scrape(
            &mut cache,
            &ctx(false),
            "m{z=\"1\",a=\"2\",empty=\"\"} 5\n",
            1000,
        )
        .unwrap();
        let wr = decode(&out);
        assert_eq!(wr.timeseries.len(), 1);
        assert_eq!(
            label_pairs(&wr.timeseries[0]),
            vec![
                ("__name__".to_string(), "m".to_string()),
                ("a".into(), "2".into()),
                ("cluster".into(), "c1".into()),
                ("instance".into(), "h:1".into()),
                ("job".into(), "j".into()),
                ("z".into(), "1".into()),
            ]
        );
        assert_eq!(wr.timeseries[0].samples[0].value, 5.0);
        assert_eq!(wr.timeseries[0].samples[0].timestamp, 1000);
    }

    #[test]
    fn honor_labels_false_renames_conflicts() {
        let mut cache = SeriesCache::new();
        let out = scrape(
            &mut cache,
            &ctx(false),
            "m{job=\"x\",instance=\"y\",exported_job=\"z\"} 1\n",
            1,
        )
        .unwrap();
        let l = label_pairs(&decode(&out).timeseries[0]);
        let get = |n: &str| l.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("job").as_deref(), Some("j"));
        assert_eq!(get("instance").as_deref(), Some("h:1"));
        assert_eq!(get("exported_instance").as_deref(), Some("y"));
        assert_eq!(get("exported_job").as_deref(), Some("z"));
        assert_eq!(get("exported_exported_job").as_deref(), Some("x"));
    }

    #[test]
    fn honor_labels_true_keeps_exposed() {
        let mut cache = SeriesCache::new();
        let out = scrape(&mut cache, &ctx(true), "m{job=\"x\"} 1\n", 1).unwrap();
        let l = label_pairs(&decode(&out).timeseries[0]);
        assert!(l.contains(&("job".into(), "x".into())));
        assert!(l.contains(&("instance".into(), "h:1".into())));
        assert!(!l.iter().any(|(n, _)| n.starts_with("exported_")));
    }

    #[test]
    fn external_labels_never_override() {
        let mut cache = SeriesCache::new();
        let out = scrape(&mut cache, &ctx(true), "m{cluster=\"own\"} 1\n", 1).unwrap();
        let l = label_pairs(&decode(&out).timeseries[0]);
        assert!(l.contains(&("cluster".into(), "own".into())));
    }

    #[test]
    fn metric_relabeling_runs_once_per_series_and_can_drop() {
        let rules: Vec<crate::relabel::RelabelConfig> = vec![
            crate::relabel::RelabelConfig {
                source_labels: vec!["__name__".into()],
                regex: crate::relabel::AnchoredRegex::new("go_.*").unwrap(),
                action: crate::relabel::Action::Drop,
                ..serde_yaml_default()
            },
            crate::relabel::RelabelConfig {
                source_labels: vec!["__name__".into()],
                regex: crate::relabel::AnchoredRegex::new("(etcd)_.*").unwrap(),
                target_label: "job".into(),
                replacement: "$1".into(),
                ..serde_yaml_default()
            },
        ];
        let c = TargetContext {
            metric_relabel: rules.into(),
            ..ctx(false)
        };
        let mut cache = SeriesCache::new();
        let out = scrape(&mut cache, &c, "go_goroutines 1\netcd_db 2\nother 3\n", 1).unwrap();
        let wr = decode(&out);
        assert_eq!(wr.timeseries.len(), 2);
        assert_eq!(wr.timeseries[0].label("job"), Some("etcd"));
        assert_eq!(wr.timeseries[1].label("job"), Some("j"));
        // The dropped series stays cached (no relabeling next time) and gets no marker.
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.relabeled.len(), 3);
        let out = scrape(&mut cache, &c, "etcd_db 2\n", 2).unwrap();
        let wr = decode(&out);
        assert_eq!(
            wr.timeseries.len(),
            2,
            "etcd_db plus one marker for `other`"
        );
    }

    fn serde_yaml_default() -> crate::relabel::RelabelConfig {
        crate::relabel::RelabelConfig {
            source_labels: vec![],
            separator: ";".into(),
            regex: crate::relabel::AnchoredRegex::default(),
            modulus: 0,
            target_label: String::new(),
            replacement: "$1".into(),
            action: crate::relabel::Action::Replace,
        }
    }

    #[test]
    fn label_limits_fail_the_scrape() {
        let with = |limits: LabelLimits| TargetContext {
            limits,
            ..ctx(false)
        };
        let body = "m{a=\"1\",long_label_name=\"vvvvvvvvvv\"} 1\n";
        // __name__, a, long_label_name + job, instance = 5 labels (external labels not counted).
        let ok = LabelLimits {
            labels: 5,
            name_length: 15,
            value_length: 10,
        };
        assert!(scrape(&mut SeriesCache::new(), &with(ok), body, 1).is_ok());
        for (limits, want) in [
            (
                LabelLimits { labels: 4, ..ok },
                "label_limit exceeded (metric: m, number of labels: 5, limit: 4)",
            ),
            (
                LabelLimits {
                    name_length: 14,
                    ..ok
                },
                "label_name_length_limit exceeded",
            ),
            (
                LabelLimits {
                    value_length: 9,
                    ..ok
                },
                "label_value_length_limit exceeded",
            ),
        ] {
            let e = scrape(&mut SeriesCache::new(), &with(limits), body, 1).unwrap_err();
            assert!(
                matches!(e, SeriesError::LabelLimit(_)) && e.to_string().contains(want),
                "{e}"
            );
        }
    }

    /// Labels and value of each sample sent.
    type Sent = Vec<(Vec<(String, String)>, f64)>;

    /// Scrapes `body` and returns the samples sent and the duplicates
    /// dropped.
    fn scrape_counting(
        cache: &mut SeriesCache,
        c: &TargetContext,
        body: &str,
        ts: i64,
    ) -> (Sent, u64) {
        let mut out = EncodedSamples::default();
        let n = cache.ingest(c, body.as_bytes(), ts, &mut out, 0).unwrap();
        cache.end(c, ts, &mut out, body.as_bytes(), false);
        let wr = decode(&out);
        let got = wr
            .timeseries
            .iter()
            .map(|t| (label_pairs(t), t.samples[0].value))
            .collect();
        (got, n.duplicates)
    }

    #[test]
    fn a_repeated_series_keeps_its_first_sample() {
        // Two spellings of one series, and an empty label that is no label:
        // each time the first sample is sent, the repeat dropped and counted
        // (Prometheus's sample_duplicate_timestamp), the scrape is not failed.
        for body in [
            "m{a=\"1\"} 1\nm{a=\"1\",} 2\n",
            "m 1\nm{a=\"\"} 2\n",
            "m 1\nm 2\n",
        ] {
            let mut cache = SeriesCache::new();
            let (got, dups) = scrape_counting(&mut cache, &ctx(true), body, 1);
            assert_eq!(dups, 1, "{body:?}");
            assert_eq!(got.len(), 1, "{body:?}");
            assert_eq!(got[0].1, 1.0, "{body:?}: the first is kept");
            assert_eq!(cache.len(), 1);
        }
        // Scrape after scrape, the repeat never reaches the request and the
        // series never goes stale.
        let mut cache = SeriesCache::new();
        for ts in 1..4 {
            let (got, dups) = scrape_counting(&mut cache, &ctx(true), "a 1\nb 1\na 2\nc 1\n", ts);
            assert_eq!(dups, 1);
            assert_eq!(
                got.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
                [1.0, 1.0, 1.0],
                "scrape {ts}"
            );
        }
        // The repeated series vanishing gets one marker, not two.
        let mut out = EncodedSamples::default();
        cache
            .ingest(&ctx(true), b"b 1\nc 1\n", 9, &mut out, 0)
            .unwrap();
        let stale = cache.end(&ctx(true), 9, &mut out, b"b 1\nc 1\n", false);
        assert_eq!(stale, 1);
    }

    /// Encodes every sample of `body` both ways: the fast encoder (when it
    /// takes the sample) must produce the bytes of the general path.
    /// So must a plan, whenever it takes the sample, the first time its shape
    /// is met and after; returns (fast, general, planned) counts.
    fn fast_matches_general(c: &TargetContext, body: &[u8]) -> (usize, usize, usize) {
        let (mut fast, mut general, mut planned) = (0, 0, 0);
        let mut sc = Scratch::default();
        sc.plans.prepare(c);
        for round in 0..2 {
            let mut parser = Parser::new(body).float_label_values(c.float_label_values);
            while let Some(s) = parser.next() {
                let s = s.unwrap();
                let spans = parser.label_spans();
                let expected = c.series_labels(&s).map(|l| l.map(|l| encode_labels(&l)));
                let show = String::from_utf8_lossy(s.series).into_owned();
                sc.labels.clear();
                let same = parser.same_label_names();
                if sc
                    .plans
                    .encode(&s, spans, same, body, &mut sc.labels, &mut sc.value)
                {
                    planned += 1;
                    assert_eq!(
                        sc.labels[..],
                        expected.clone().unwrap().unwrap()[..],
                        "{show}"
                    );
                    sc.labels.clear();
                    assert!(
                        encode_fast(
                            c,
                            &s,
                            spans,
                            body,
                            &mut sc.labels,
                            &mut sc.value,
                            &mut sc.order
                        ),
                        "{show}"
                    );
                }
                if round == 1 {
                    continue;
                }
                sc.labels.clear();
                if encode_fast(
                    c,
                    &s,
                    spans,
                    body,
                    &mut sc.labels,
                    &mut sc.value,
                    &mut sc.order,
                ) {
                    fast += 1;
                    let expected = expected.unwrap().unwrap();
                    assert_eq!(sc.labels[..], expected[..], "{show}");
                } else {
                    general += 1;
                }
            }
        }
        (fast, general, planned)
    }

    #[test]
    fn fast_encoder_matches_the_general_path() {
        let body = "m 1\n\
m{b=\"2\",a=\"1\"} 1\n\
m{Z=\"up\",a=\"x\"} 1\n\
m{a=\"q\\\"uote\\\\back\\nnl\\tkeep\"} 1\n\
m{a=\"größe ✓ 東京\",empty=\"\"} 1\n\
m{job=\"\",instance=\"\"} 1\n\
m{cluster=\"mine\",zz=\"1\"} 1\n\
m{b=\"1\",} 1\n\
m{ b = \"1\" , c=\"2\" } 1\n\
m{aa=\"1\",a=\"2\",a_=\"3\",A=\"4\",_x=\"5\"} 1\n\
m{job=\"exposed\"} 1\n\
m{instance=\"exposed\",exported_instance=\"x\"} 1\n\
m{a=\"1\",a=\"2\"} 1\n\
m{__name__=\"x\"} 1\n\
m{b=\"2\",a=\"1\"} 2\n\
m{b=\"\",a=\"1\"} 2\n\
m{a_label_name_longer_than_sixteen=\"v\",b=\"0123456789abcdef\"} 1\n\
m{a_label_name_longer_than_sixteeN=\"v\",b=\"0123456789abcdefg\"} 1\n\
m{a=\"a value that is longer than one hundred and twenty-four bytes, so that its length takes two bytes: xxxxxxxxxxxxxxxxxxxxxx\"} 1\n\
a_metric_name_so_long_that_the_label_holding_it_needs_a_two_byte_length_varint_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{a=\"1\"} 1\n\
m{instance=\"x\",le=\"+Inf\"} 3\n\
m{z=\"1\",y=\"2\"} 1\n";
        for honor in [false, true] {
            let c = ctx(honor);
            let (fast, general, planned) = fast_matches_general(&c, body.as_bytes());
            assert!(fast >= 10, "fast {fast}, general {general}");
            // Conflicts only go the general way without honor_labels.
            assert_eq!(general, if honor { 2 } else { 5 });
            // Twice each sample the fast encoder takes, but those with a
            // name a target or external label also has.
            assert_eq!(
                planned,
                2 * (fast - if honor { 5 } else { 2 }),
                "fast {fast}, general {general}"
            );
            let no_external = TargetContext {
                external_labels: Vec::new(),
                ..ctx(honor)
            };
            fast_matches_general(&no_external, body.as_bytes());
        }
        let limited = TargetContext {
            limits: LabelLimits {
                labels: 4,
                name_length: 0,
                value_length: 3,
            },
            ..ctx(false)
        };
        let (_, general, planned) = fast_matches_general(&limited, body.as_bytes());
        assert!(general > 4, "limit violations go the general way");
        assert_eq!(planned, 0, "label limits take the per-sample encoder");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/prometheus-server.237mfs.prom.txt"
        );
        let fixture = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (fast, general, planned) = fast_matches_general(&ctx(false), &fixture);
        assert!(fast > 1000 && general == 0, "{fast} {general}");
        assert_eq!(planned, 2 * fast);
    }

    #[test]
    fn le_and_quantile_values_are_stored_as_the_named_prometheus_stores_them() {
        let body = "# TYPE h histogram\n\
h_bucket{le=\"1\"} 1\n\
h_bucket{le=\"2.50\"} 2\n\
h_bucket{le=\"1e3\",quantile=\"1\"} 3\n\
h_bucket{le=\"+Inf\"} 4\n\
h_bucket{le=\"x\"} 4\n\
h_bucket{le=\"1\",instance=\"exposed\"} 4\n\
# TYPE s summary\n\
s{quantile=\"0\",le=\"1\"} 1\n\
s{quantile=\"0.50\"} 1\n\
# TYPE g gauge\n\
h_bucket{le=\"1\"} 5\n\
g{quantile=\"1\"} 1\n";
        let stored = |c: &TargetContext| -> Vec<String> {
            let mut cache = SeriesCache::new();
            let mut out = EncodedSamples::default();
            cache.ingest(c, body.as_bytes(), 10, &mut out, 0).unwrap();
            decode(&out)
                .timeseries
                .iter()
                .map(|t| {
                    let l = |n| t.label(n).unwrap_or("-").to_string();
                    format!("{} le={} q={}", l("__name__"), l("le"), l("quantile"))
                })
                .collect()
        };
        let v3 = TargetContext {
            float_label_values: true,
            ..ctx(false)
        };
        // The same text under a histogram TYPE and under a gauge TYPE is
        // two series (Prometheus 3 stores them so), not a duplicate.
        assert_eq!(
            stored(&v3),
            [
                "h_bucket le=1.0 q=-",
                "h_bucket le=2.5 q=-",
                "h_bucket le=1000.0 q=1",
                "h_bucket le=+Inf q=-",
                "h_bucket le=x q=-",
                "h_bucket le=1.0 q=-",
                "s le=1 q=0.0",
                "s le=- q=0.5",
                "h_bucket le=1 q=-",
                "g le=- q=1",
            ]
        );
        let v2 = stored(&ctx(false));
        assert_eq!(v2[0], "h_bucket le=1 q=-");
        assert_eq!(v2[2], "h_bucket le=1e3 q=1");
        assert_eq!(v2[7], "s le=- q=0.50");
        // Every encoder writes the same bytes, relabeling sees the stored
        // form (it runs after the parser, as in Prometheus 3).
        for honor in [false, true] {
            let c = TargetContext {
                honor_labels: honor,
                ..v3.clone()
            };
            let (fast, _, planned) = fast_matches_general(&c, body.as_bytes());
            assert!(fast >= 8 && planned > 0, "{fast} {planned}");
        }
        let relabeled = TargetContext {
            metric_relabel: std::sync::Arc::from(vec![
                serde_json::from_str::<crate::relabel::RelabelConfig>(
                    r#"{"source_labels": ["le"], "regex": "1\\.0", "action": "drop"}"#,
                )
                .unwrap(),
            ]),
            ..v3.clone()
        };
        let kept = stored(&relabeled);
        assert!(kept.iter().all(|k| !k.contains("le=1.0")), "{kept:?}");
        assert!(kept.contains(&"h_bucket le=1 q=-".to_string()), "{kept:?}");
        // A real page: the same bytes every way, both settings.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/prometheus-server.237mfs.prom.txt"
        );
        let fixture = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (fast, general, planned) = fast_matches_general(&v3, &fixture);
        assert!(fast > 1000 && general == 0, "{fast} {general}");
        assert_eq!(planned, 2 * fast);
    }

    #[test]
    fn vanished_series_are_found_in_the_gzipped_previous_body() {
        use std::io::Write;
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        let gzip = |text: &str| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        let first = "a{x=\"1\"} 1\nb{x=\"2\"} 2\nc 3\n";
        let mut out = EncodedSamples::default();
        cache.ingest(&c, first.as_bytes(), 10, &mut out, 0).unwrap();
        cache.end(&c, 10, &mut out, &gzip(first), true);
        assert!(cache.retained_bytes() > 0);
        let second = "a{x=\"1\"} 4\n";
        let mut out = EncodedSamples::default();
        cache
            .ingest(&c, second.as_bytes(), 20, &mut out, 0)
            .unwrap();
        assert_eq!(cache.end(&c, 20, &mut out, &gzip(second), true), 2);
        let wr = decode(&out);
        let names: Vec<_> = wr
            .timeseries
            .iter()
            .map(|t| t.label("__name__").unwrap().to_string())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(
            wr.timeseries[1..]
                .iter()
                .all(|t| t.samples[0].value.to_bits() == STALE_NAN)
        );
        assert_eq!(cache.len(), 1);
        // A failure now marks what the second scrape had.
        let mut out = EncodedSamples::default();
        assert_eq!(cache.mark_all_stale(&c, 30, &mut out), 1);
        assert_eq!(decode(&out).timeseries[0].label("__name__"), Some("a"));
        // Nothing is left to mark after that.
        assert_eq!(cache.mark_all_stale(&c, 40, &mut out), 0);
    }

    #[test]
    fn keys_are_twelve_bytes_and_generations_wrap() {
        assert_eq!(std::mem::size_of::<Key>(), 12);
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        let mut out = EncodedSamples::default();
        // 600 scrapes: the 8-bit generation wraps twice; b comes and goes.
        for round in 0..600 {
            let body = if round % 3 == 2 {
                "a 1\n"
            } else {
                "a 1\nb 2\n"
            };
            out.clear();
            let n = cache
                .ingest(&c, body.as_bytes(), round, &mut out, 0)
                .unwrap();
            let stale = cache.end(&c, round, &mut out, body.as_bytes(), false);
            let (added, markers) = match round % 3 {
                _ if round == 0 => (2, 0),
                0 => (1, 0),
                1 => (0, 0),
                _ => (0, 1),
            };
            assert_eq!((n.added, stale), (added, markers), "round {round}");
        }
    }

    #[test]
    fn series_compared_in_order_then_as_sets_once_the_order_differs() {
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        let mut out = EncodedSamples::default();
        // (body, added, markers)
        for (body, added, markers) in [
            ("a 1\nb 1\nc 1\n", 3, 0),
            ("a 1\nb 1\nc 1\n", 0, 0),
            // Reordered: nothing new, nothing gone.
            ("c 1\na 1\nb 1\n", 0, 0),
            // One gone in the middle, one new at the end.
            ("c 1\nb 1\nd 1\n", 1, 1),
            // The tail gone, in order otherwise.
            ("c 1\n", 0, 2),
            ("c 1\n", 0, 0),
        ] {
            out.clear();
            let n = cache.ingest(&c, body.as_bytes(), 1, &mut out, 0).unwrap();
            let stale = cache.end(&c, 1, &mut out, body.as_bytes(), false);
            assert_eq!((n.added, stale), (added, markers), "{body:?}");
            assert_eq!(cache.len(), body.lines().count(), "{body:?}");
        }
        // A repeat after a prefix that matched the last scrape.
        out.clear();
        let n = cache.ingest(&c, b"c 1\nc 2\n", 1, &mut out, 0).unwrap();
        assert_eq!((n.kept, n.duplicates), (1, 1));
    }

    #[test]
    fn a_series_back_after_vanishing_is_added_again() {
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        let mut out = EncodedSamples::default();
        for (body, added) in [
            ("a 1\nb 1\n", 2),
            ("a 1\n", 0),
            ("a 1\nb 1\n", 1),
            ("a 1\nb 1\n", 0),
        ] {
            out.clear();
            let n = cache.ingest(&c, body.as_bytes(), 1, &mut out, 0).unwrap();
            cache.end(&c, 1, &mut out, body.as_bytes(), false);
            assert_eq!(n.added, added, "{body:?}");
        }
    }

    #[test]
    fn a_respelled_series_continues_without_a_marker() {
        let mut cache = SeriesCache::new();
        scrape(&mut cache, &ctx(false), "m{a=\"1\"} 1\n", 1).unwrap();
        let out = scrape(&mut cache, &ctx(false), "m{ a = \"1\" } 2\n", 2).unwrap();
        let wr = decode(&out);
        assert_eq!(
            wr.timeseries.len(),
            1,
            "no staleness marker for the old spelling"
        );
        assert_eq!(wr.timeseries[0].samples[0].value, 2.0);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn repeated_label_fails() {
        let mut cache = SeriesCache::new();
        let e = scrape(&mut cache, &ctx(false), "m{a=\"1\",a=\"2\"} 1\n", 1).unwrap_err();
        assert!(matches!(e, SeriesError::DuplicateLabel { .. }), "{e}");
    }

    #[test]
    fn cache_hit_reuses_and_vanished_series_go_stale() {
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        scrape(&mut cache, &c, "a 1\nb 2\nt 3 1000\n", 10).unwrap();
        assert_eq!(cache.len(), 3);
        let out = scrape(&mut cache, &c, "a 4\n", 20).unwrap();
        let wr = decode(&out);
        // a's value, then b's stale marker; t had an explicit timestamp: no marker.
        assert_eq!(wr.timeseries.len(), 2);
        assert_eq!(wr.timeseries[0].samples[0].value, 4.0);
        let marker = &wr.timeseries[1];
        assert_eq!(marker.labels[0].value, "b");
        assert_eq!(marker.samples[0].value.to_bits(), STALE_NAN);
        assert_eq!(marker.samples[0].timestamp, 20);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn target_nan_is_never_a_marker() {
        let mut cache = SeriesCache::new();
        let out = scrape(&mut cache, &ctx(false), "a NaN\n", 1).unwrap();
        let v = decode(&out).timeseries[0].samples[0].value;
        assert!(v.is_nan());
        assert_ne!(v.to_bits(), STALE_NAN);
    }

    #[test]
    fn failed_scrape_marks_everything_stale() {
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        scrape(&mut cache, &c, "a 1\nb 2\n", 10).unwrap();
        let mut out = EncodedSamples::default();
        assert_eq!(cache.mark_all_stale(&c, 20, &mut out), 2);
        assert!(cache.is_empty());
        assert!(
            decode(&out)
                .timeseries
                .iter()
                .all(|t| t.samples[0].value.to_bits() == STALE_NAN)
        );
    }

    #[test]
    fn explicit_timestamps_out_of_bounds_are_dropped_and_counted() {
        let c = TargetContext {
            timestamp_bounds: TimestampBounds {
                max_age_ms: 3_600_000,
                max_ahead_ms: 600_000,
            },
            ..ctx(false)
        };
        let now = 1_800_000_000_000i64;
        let body = format!(
            "ok 1 {}\nold 2 1000\nfuture 3 {}\nedge 4 {}\nplain 5\n",
            now - 5000,
            now + 700_000,
            now - 3_600_000
        );
        let mut cache = SeriesCache::new();
        let mut out = EncodedSamples::default();
        let n = cache.ingest(&c, body.as_bytes(), now, &mut out, 0).unwrap();
        assert_eq!((n.scraped, n.kept, n.out_of_bounds), (5, 3, 2));
        let names: Vec<String> = decode(&out)
            .timeseries
            .iter()
            .map(|t| t.labels[0].value.clone())
            .collect();
        assert_eq!(names, ["ok", "edge", "plain"]);
        // Without honor_timestamps the scrape time is used: nothing dropped.
        let c = TargetContext {
            honor_timestamps: false,
            ..c
        };
        let mut out = EncodedSamples::default();
        let n = SeriesCache::new()
            .ingest(&c, body.as_bytes(), now, &mut out, 0)
            .unwrap();
        assert_eq!((n.kept, n.out_of_bounds), (5, 0));
    }

    #[test]
    fn explicit_timestamps_going_back_are_dropped_as_a_receiver_would_refuse_them() {
        let c = ctx(false);
        let now = 1_800_000_000_000i64;
        let mut cache = SeriesCache::new();
        let mut sent = |body: String, ts: i64| {
            let mut out = EncodedSamples::default();
            let n = cache.ingest(&c, body.as_bytes(), ts, &mut out, 0).unwrap();
            cache.end(&c, ts, &mut out, body.as_bytes(), false);
            let got: Vec<(String, i64, f64)> = decode(&out)
                .timeseries
                .iter()
                .map(|t| {
                    (
                        t.labels[0].value.clone(),
                        t.samples[0].timestamp,
                        t.samples[0].value,
                    )
                })
                .collect();
            (got, n.out_of_order)
        };
        let (got, ooo) = sent(format!("e 1 {}\nplain 1\n", now - 10_000), now);
        assert_eq!((got.len(), ooo), (2, 0));
        // The same sample again: harmless (a receiver takes it), sent.
        let (got, ooo) = sent(format!("e 1 {}\nplain 1\n", now - 10_000), now + 1000);
        assert_eq!((got.len(), ooo), (2, 0));
        // Same time, another value; then an older time: both refused by a
        // receiver (duplicate, out of order), so dropped and counted.
        let (got, ooo) = sent(format!("e 2 {}\nplain 1\n", now - 10_000), now + 2000);
        assert_eq!(ooo, 1);
        assert_eq!(got.iter().filter(|(n, _, _)| n == "e").count(), 0);
        let (_, ooo) = sent(format!("e 3 {}\nplain 1\n", now - 20_000), now + 3000);
        assert_eq!(ooo, 1);
        // Forward again: sent.
        let (got, ooo) = sent(format!("e 4 {}\nplain 1\n", now), now + 4000);
        assert_eq!(ooo, 0);
        assert!(got.contains(&("e".into(), now, 4.0)));
    }

    #[test]
    fn series_back_after_a_failed_scrape_are_not_added_again() {
        // Prometheus keeps its scrape cache through failed scrapes:
        // scrape_series_added is 0 when the same series come back.
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        let mut out = EncodedSamples::default();
        let added = |cache: &mut SeriesCache, body: &str, ts: i64| {
            let mut out = EncodedSamples::default();
            let n = cache.ingest(&c, body.as_bytes(), ts, &mut out, 0).unwrap();
            cache.end(&c, ts, &mut out, body.as_bytes(), false);
            n.added
        };
        assert_eq!(added(&mut cache, "a 1\nb 2\n", 10), 2);
        assert_eq!(cache.mark_all_stale(&c, 20, &mut out), 2);
        out.clear();
        // A second failure: no second round of markers.
        assert_eq!(cache.mark_all_stale(&c, 30, &mut out), 0);
        assert_eq!(added(&mut cache, "a 1\nb 2\nc 3\n", 40), 1, "only c is new");
        assert_eq!(cache.len(), 3);
        // b vanishes later: it gets its marker as usual.
        let mut out = EncodedSamples::default();
        let n = cache.ingest(&c, b"a 1\nc 3\n", 50, &mut out, 0).unwrap();
        assert_eq!(n.added, 0);
        assert_eq!(cache.end(&c, 50, &mut out, b"a 1\nc 3\n", false), 1);
    }

    #[test]
    fn series_first_seen_in_a_failing_scrape_get_no_marker() {
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        scrape(&mut cache, &c, "a 1\n", 10).unwrap();
        let mut out = EncodedSamples::default();
        // The scrape fails after two samples: its samples are discarded.
        let e = cache.ingest(&c, b"a 2\nnew 3\nbad{ 1\n", 20, &mut out, 0);
        assert!(matches!(e, Err(IngestError::Parse(_))), "{e:?}");
        out.clear();
        assert_eq!(cache.mark_all_stale(&c, 20, &mut out), 1);
        assert_eq!(decode(&out).timeseries[0].labels[0].value, "a");
    }
}
