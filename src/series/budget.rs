//! Per-family budgets: a job's limit on series per metric family (and on
//! buckets per classic histogram), enforced while a scrape is ingested.
//!
//! A family over its budget is dropped from that scrape as a whole (every
//! series of it, never a partial histogram), while the scrape succeeds and
//! every other family flows: `sample_limit` keeps Prometheus's all-or-nothing
//! meaning, a budget is the per-family valve beside it. Series are counted
//! after metric relabeling, as `sample_limit` counts samples, so a thinning
//! rule (the control-plane profile) counts before a budget does.
//!
//! How, without a second pass over the page: families are followed as the
//! parser meets them ([`crate::exposition::Parser::family`]); a family's
//! samples are encoded as usual until it goes over, then its remaining
//! samples are skipped unencoded, and when the page is done the entries it
//! already wrote are cut out of the scrape's samples (families of a page
//! are nearly always contiguous, so this is a cut of one range; a family
//! split across the page is cut range by range). Its series are then
//! forgotten by the series table, so those the last scrape sent get their
//! staleness markers as any vanished series do. While no family is over,
//! nothing here allocates in the steady state (`benches/alloc_count.rs`
//! checks it): the family table and the list of ranges are kept and reused,
//! and given back after a page with unusually many families. A scrape that
//! drops a family takes the slow path, as one with a vanished series does:
//! the cut series' keys, the series table's comparison sets and the report.

use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::exposition::Family;
use crate::remote_write::samples::{EncodedSamples, split_entry};

use super::track::{Hashers, KeySet, Track};

/// A job's per-family limits; 0 = none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FamilyBudget {
    /// Series (after metric relabeling) per metric family per scrape.
    pub series: u64,
    /// Buckets per classic histogram (one histogram series' `_bucket`
    /// samples, after metric relabeling).
    pub buckets: u64,
}

impl FamilyBudget {
    pub fn enabled(&self) -> bool {
        self.series > 0 || self.buckets > 0
    }
}

/// Which limit a family went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    Series,
    Buckets,
}

impl std::fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BudgetKind::Series => "series per family",
            BudgetKind::Buckets => "buckets per histogram",
        })
    }
}

/// A family dropped from the last scrape for its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    pub family: String,
    pub kind: BudgetKind,
    /// The limit it went over.
    pub limit: u64,
    /// Its samples dropped from the scrape.
    pub dropped: u64,
}

/// At most this many over-budget families are named per target (in the
/// status, the log and the per-family metrics); the rest are counted.
pub(super) const NAMED_MAX: usize = 64;

/// Family tables bigger than this are given back after the scrape.
const KEEP_FAMILIES: usize = 4096;

/// One family of the page being ingested.
struct Fam {
    name: (usize, usize),
    series: u64,
    /// `_bucket` samples kept in a row (one histogram series' buckets).
    run: u64,
    over: Option<BudgetKind>,
    dropped: u64,
}

/// The budget state of one target: the current page's families, and what
/// the last scrape dropped.
#[derive(Default)]
pub(super) struct Budgets {
    fams: Vec<Fam>,
    index: HashMap<u64, u32, foldhash::quality::RandomState>,
    cur: Option<u32>,
    /// (family, index of its first entry) at every change of family.
    runs: Vec<(u32, u32)>,
    /// Entries written by families that went over (to be cut).
    withdrawn: u64,
    /// The last scrape's dropped families (at most [`NAMED_MAX`]).
    pub(super) over: Vec<OverBudget>,
    /// How many families the last scrape dropped.
    pub(super) over_total: usize,
}

impl Budgets {
    pub(super) fn start(&mut self) {
        self.fams.clear();
        self.index.clear();
        self.runs.clear();
        self.cur = None;
        self.withdrawn = 0;
    }

    /// Kept samples that count against `sample_limit` for sure: less those
    /// of families already over and of the current family (it may still go
    /// over). A family that comes back later in the page and then goes over
    /// is not allowed for here (the text format wants a family's lines
    /// together); the exact count is checked when the page is done.
    pub(super) fn surely_kept(&self, kept: u64) -> u64 {
        let current = self.cur.map_or(0, |i| {
            let f = &self.fams[i as usize];
            if f.over.is_some() { 0 } else { f.series }
        });
        kept.saturating_sub(self.withdrawn + current)
    }

    /// The next sample belongs to `f`; `entries` samples are written so
    /// far. Returns false when its family is over budget already (the
    /// sample is skipped, and counted as dropped).
    #[inline]
    pub(super) fn enter(&mut self, body: &[u8], f: &Family, entries: usize) -> bool {
        let name = &body[f.name.0..f.name.1];
        let idx = match self.cur {
            Some(i)
                if {
                    let n = self.fams[i as usize].name;
                    &body[n.0..n.1] == name
                } =>
            {
                i
            }
            _ => {
                let i = self.lookup(body, f.name);
                self.cur = Some(i);
                self.runs.push((i, entries as u32));
                i
            }
        };
        let fam = &mut self.fams[idx as usize];
        if fam.over.is_some() {
            fam.dropped += 1;
            return false;
        }
        true
    }

    #[cold]
    fn lookup(&mut self, body: &[u8], span: (usize, usize)) -> u32 {
        let name = &body[span.0..span.1];
        let h = self.index.hasher().hash_one(name);
        if let Some(&i) = self.index.get(&h) {
            let n = self.fams[i as usize].name;
            if &body[n.0..n.1] == name {
                return i;
            }
            // A hash collision (seeded, so not aimed): a scan settles it.
            if let Some(j) = self
                .fams
                .iter()
                .position(|x| &body[x.name.0..x.name.1] == name)
            {
                return j as u32;
            }
        }
        let i = self.fams.len() as u32;
        self.fams.push(Fam {
            name: span,
            series: 0,
            run: 0,
            over: None,
            dropped: 0,
        });
        self.index.entry(h).or_insert(i);
        i
    }

    /// The current sample was not kept (metric relabeling dropped it, or it
    /// repeated a series): a `+Inf` bucket still ends its histogram series'
    /// run of buckets.
    #[inline]
    pub(super) fn not_kept(&mut self, inf: bool) {
        if inf && let Some(i) = self.cur {
            self.fams[i as usize].run = 0;
        }
    }

    /// The current sample was kept (written as an entry). `bucket`: it is a
    /// `_bucket` sample; `inf`: its `le` is `+Inf` (the last bucket of one
    /// histogram series).
    #[inline]
    pub(super) fn kept(&mut self, budget: &FamilyBudget, bucket: bool, inf: bool) {
        let Some(i) = self.cur else { return };
        let fam = &mut self.fams[i as usize];
        fam.series += 1;
        if bucket {
            fam.run += 1;
        }
        let over = if budget.series > 0 && fam.series > budget.series {
            Some(BudgetKind::Series)
        } else if budget.buckets > 0 && fam.run > budget.buckets {
            Some(BudgetKind::Buckets)
        } else {
            None
        };
        if !bucket || inf {
            fam.run = 0;
        }
        if over.is_some() {
            fam.over = over;
            fam.dropped += fam.series;
            self.withdrawn += fam.series;
        }
    }

    /// The page is done: cuts the entries of over-budget families out of
    /// `out` (written since entry `base`), makes the series table forget
    /// their series, and records what was dropped. Returns (entries cut,
    /// of them new series, samples dropped).
    pub(super) fn settle(
        &mut self,
        body: &[u8],
        budget: &FamilyBudget,
        out: &mut EncodedSamples,
        base: usize,
        hashers: &Hashers,
        track: &mut Track,
    ) -> Settled {
        let mut settled = Settled::default();
        self.over.clear();
        self.over_total = 0;
        let mut gone = KeySet::default();
        if self.fams.iter().any(|f| f.over.is_some()) {
            // Cut the ranges of over-budget families, keeping the rest in order.
            let total = out.ends.len();
            let mut write_entry = base;
            let mut write_byte = entry_start(out, base);
            for (r, &(fam, first)) in self.runs.iter().enumerate() {
                let first = first as usize;
                let end = self
                    .runs
                    .get(r + 1)
                    .map_or(total, |&(_, next)| next as usize);
                if first >= end {
                    continue;
                }
                if self.fams[fam as usize].over.is_some() {
                    for e in first..end {
                        let bytes = &out.buf[entry_start(out, e)..out.ends[e] as usize];
                        if let Some((labels, _, _)) = split_entry(bytes) {
                            gone.insert(hashers.key(labels));
                        }
                    }
                    settled.cut += (end - first) as u64;
                    continue;
                }
                let (from, to) = (entry_start(out, first), out.ends[end - 1] as usize);
                out.buf.copy_within(from..to, write_byte);
                let shift = from - write_byte;
                for e in first..end {
                    out.ends[write_entry] = out.ends[e] - shift as u32;
                    write_entry += 1;
                }
                write_byte += to - from;
            }
            // Entries written before the first run (none: every kept sample
            // follows an `enter`) stay where they are.
            out.buf.truncate(write_byte);
            out.ends.truncate(write_entry);
            settled.new_cut = track.forget(&gone);
        }
        for f in &self.fams {
            let Some(kind) = f.over else { continue };
            settled.dropped += f.dropped;
            self.over_total += 1;
            if self.over.len() < NAMED_MAX {
                self.over.push(OverBudget {
                    family: String::from_utf8_lossy(&body[f.name.0..f.name.1]).into_owned(),
                    kind,
                    limit: match kind {
                        BudgetKind::Series => budget.series,
                        BudgetKind::Buckets => budget.buckets,
                    },
                    dropped: f.dropped,
                });
            }
        }
        settled.gone = gone;
        if self.fams.capacity() > KEEP_FAMILIES {
            self.fams = Vec::new();
            self.index = HashMap::default();
            self.runs = Vec::new();
        }
        settled
    }
}

/// What [`Budgets::settle`] cut.
#[derive(Default)]
pub(super) struct Settled {
    /// Entries cut from the scrape.
    pub(super) cut: u64,
    /// Of them, series the series table had counted as new.
    pub(super) new_cut: u64,
    /// Samples of over-budget families dropped (cut, and skipped unencoded).
    pub(super) dropped: u64,
    /// The keys of the series cut.
    pub(super) gone: KeySet,
}

/// Whether a bucket's `le` is `+Inf` (the last bucket of a histogram
/// series).
#[inline]
pub(super) fn is_inf_bucket(spans: &[crate::exposition::LabelSpan], body: &[u8]) -> bool {
    spans.iter().any(|l| {
        &body[l.name_start..l.name_end] == b"le" && &body[l.value_start..l.value_end] == b"+Inf"
    })
}

fn entry_start(out: &EncodedSamples, e: usize) -> usize {
    if e == 0 { 0 } else { out.ends[e - 1] as usize }
}

#[cfg(test)]
mod tests {
    use super::super::{SeriesCache, TargetContext};
    use super::*;
    use crate::remote_write::proto::WriteRequest;
    use prost::Message;

    fn ctx(series: u64, buckets: u64, rules: &str) -> TargetContext {
        let metric_relabel: Vec<crate::relabel::RelabelConfig> = if rules.is_empty() {
            Vec::new()
        } else {
            serde_json::from_value(
                crate::yaml::to_json(rules, crate::yaml::Scalars::Typed)
                    .unwrap()
                    .remove(0),
            )
            .unwrap()
        };
        TargetContext {
            target_labels: vec![("job".into(), "j".into())],
            honor_timestamps: true,
            metric_relabel: metric_relabel.into(),
            family_budget: FamilyBudget { series, buckets },
            ..Default::default()
        }
    }

    /// The names of the samples in `out` (markers as `name!`).
    fn names(out: &EncodedSamples) -> Vec<String> {
        let w = WriteRequest::decode(&out.buf[..]).unwrap();
        w.timeseries
            .iter()
            .map(|t| {
                let n = t
                    .labels
                    .iter()
                    .find(|l| l.name == "__name__")
                    .unwrap()
                    .value
                    .clone();
                if t.samples[0].value.is_nan() {
                    format!("{n}!")
                } else {
                    n
                }
            })
            .collect()
    }

    fn scrape(
        c: &mut SeriesCache,
        ctx: &TargetContext,
        page: &str,
        ts: i64,
        limit: u64,
    ) -> (super::super::Ingested, Vec<String>) {
        let mut out = EncodedSamples::default();
        let n = c.ingest(ctx, page.as_bytes(), ts, &mut out, limit).unwrap();
        c.end(ctx, ts, &mut out, page.as_bytes(), false);
        (n, names(&out))
    }

    fn histogram(name: &str, series: usize, buckets: &[&str]) -> String {
        let mut s = format!("# TYPE {name} histogram\n");
        for i in 0..series {
            for le in buckets {
                s.push_str(&format!("{name}_bucket{{i=\"{i}\",le=\"{le}\"}} 1\n"));
            }
            s.push_str(&format!(
                "{name}_sum{{i=\"{i}\"}} 1\n{name}_count{{i=\"{i}\"}} 1\n"
            ));
        }
        s
    }

    const LES: [&str; 6] = ["0.1", "0.5", "1", "5", "10", "+Inf"];

    #[test]
    fn a_family_over_its_series_budget_is_dropped_whole_and_the_rest_kept() {
        let c = ctx(10, 0, "");
        let mut cache = SeriesCache::new();
        // a: 3 series; big: 3 histograms of 8 series each (24); z: 2.
        let page = format!(
            "# TYPE a gauge\na{{x=\"1\"}} 1\na{{x=\"2\"}} 1\na{{x=\"3\"}} 1\n{}# TYPE z counter\nz_total 1\nz_created 1\n",
            histogram("big", 3, &LES)
        );
        let (n, got) = scrape(&mut cache, &c, &page, 1000, 0);
        assert_eq!(got, ["a", "a", "a", "z_total", "z_created"]);
        assert_eq!((n.scraped, n.kept, n.added, n.over_budget), (29, 5, 5, 24));
        let (over, total) = cache.over_budget();
        assert_eq!(total, 1);
        assert_eq!(over[0].family, "big");
        assert_eq!(
            (over[0].kind, over[0].limit, over[0].dropped),
            (BudgetKind::Series, 10, 24)
        );
        // sample_limit counts what is kept: 5 samples pass a limit of 5.
        let mut again = SeriesCache::new();
        let mut out = EncodedSamples::default();
        again
            .ingest(&c, page.as_bytes(), 1000, &mut out, 5)
            .unwrap();
        assert!(
            again
                .ingest(&c, page.as_bytes(), 2000, &mut out, 4)
                .is_err()
        );
    }

    #[test]
    fn the_bucket_budget_counts_one_histogram_series_at_a_time_after_relabeling() {
        let mut cache = SeriesCache::new();
        let page = histogram("h", 4, &LES);
        // 6 buckets per series: over a limit of 5, within one of 6.
        let (n, got) = scrape(&mut cache, &ctx(0, 5, ""), &page, 1000, 0);
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(n.over_budget, 24 + 8);
        assert_eq!(cache.over_budget().0[0].kind, BudgetKind::Buckets);
        let mut cache = SeriesCache::new();
        let (n, got) = scrape(&mut cache, &ctx(0, 6, ""), &page, 1000, 0);
        assert_eq!((got.len(), n.over_budget), (32, 0));
        // Thinning by metric relabeling counts first: 4 buckets left.
        let thin = "- source_labels: [__name__, le]\n  regex: 'h_bucket;(0.5|5)'\n  action: drop\n";
        let mut cache = SeriesCache::new();
        let (n, got) = scrape(&mut cache, &ctx(0, 4, thin), &page, 1000, 0);
        assert_eq!((got.len(), n.over_budget), (24, 0));
        // The +Inf bucket ends a series' run even when relabeling drops it.
        let no_inf =
            "- source_labels: [__name__, le]\n  regex: 'h_bucket;\\+Inf'\n  action: drop\n";
        let mut cache = SeriesCache::new();
        let (n, _) = scrape(&mut cache, &ctx(0, 5, no_inf), &page, 1000, 0);
        assert_eq!(n.over_budget, 0);
    }

    #[test]
    fn a_family_split_across_the_page_is_cut_everywhere() {
        let c = ctx(3, 0, "");
        let mut cache = SeriesCache::new();
        let page = "s{i=\"1\"} 1\ns{i=\"2\"} 1\nother 1\ns{i=\"3\"} 1\ns{i=\"4\"} 1\nlast 1\n";
        let (n, got) = scrape(&mut cache, &c, page, 1000, 0);
        assert_eq!(got, ["other", "last"]);
        assert_eq!((n.kept, n.over_budget), (2, 4));
    }

    #[test]
    fn a_family_going_over_gets_staleness_markers_and_comes_back_as_new_series() {
        let c = ctx(3, 0, "");
        let mut cache = SeriesCache::new();
        let small = "f{i=\"1\"} 1\nf{i=\"2\"} 1\ng 1\n";
        let big = "f{i=\"1\"} 1\nf{i=\"2\"} 1\nf{i=\"3\"} 1\nf{i=\"4\"} 1\ng 1\n";
        let (n, got) = scrape(&mut cache, &c, small, 1000, 0);
        assert_eq!((got.len(), n.added), (3, 3));
        // Over: the two series sent before get markers; g goes on.
        let (n, got) = scrape(&mut cache, &c, big, 2000, 0);
        assert_eq!(got, ["g", "f!", "f!"]);
        assert_eq!((n.kept, n.added), (1, 0));
        // Still over: nothing more.
        let (_, got) = scrape(&mut cache, &c, big, 3000, 0);
        assert_eq!(got, ["g"]);
        // Back under: its series are new again.
        let (n, got) = scrape(&mut cache, &c, small, 4000, 0);
        assert_eq!((got.len(), n.added), (3, 2));
        assert_eq!(cache.over_budget().1, 0);
        // A failed scrape marks what the last one sent.
        let mut out = EncodedSamples::default();
        cache.mark_all_stale(&c, 5000, &mut out);
        assert_eq!(names(&out), ["f!", "f!", "g!"]);
    }

    #[test]
    fn no_budget_no_change() {
        let mut cache = SeriesCache::new();
        let page = histogram("h", 50, &LES);
        let (n, got) = scrape(&mut cache, &ctx(0, 0, ""), &page, 1000, 0);
        assert_eq!((got.len() as u64, n.over_budget), (n.scraped, 0));
    }
}
