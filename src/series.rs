//! Label sets, the per-target series cache, and staleness.
//!
//! The cache is the hot path (as Prometheus's scrape cache is). It maps the
//! series text exactly as the target exposed it (`name{labels}`, borrowed from
//! the response body) to the series' final label set, already merged with the
//! target labels (honoring `honor_labels`), completed with the external labels,
//! sorted by name and encoded as the protobuf `repeated Label` bytes of a
//! remote-write `TimeSeries`. In steady state a sample costs one hash lookup
//! and one memcpy of those bytes into the outgoing request: no allocation, no
//! label parsing, no sorting.
//!
//! Each scrape is a generation. A series not seen in the current generation
//! gets a staleness marker (the NaN `0x7ff0000000000002`) at the scrape's
//! timestamp, unless it carried an explicit timestamp (as in Prometheus), and
//! leaves the cache.

use std::collections::HashMap;
use std::sync::Arc;

use crate::exposition::Sample;
use crate::remote_write::proto::{encode_label, write_series};

/// The NaN Prometheus uses as a staleness marker.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Why a series could not be accepted; fails the whole scrape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("label name {name:?} is not unique in series {series}")]
    DuplicateLabel { name: String, series: String },
    #[error("{0}")]
    InvalidLabel(String),
    #[error("duplicate sample for series {0} in one scrape")]
    DuplicateSeries(String),
    #[error("{0}")]
    LabelLimit(String),
}

/// `label_limit`, `label_name_length_limit`, `label_value_length_limit`
/// (0 = no limit), checked after metric relabeling as in Prometheus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelLimits {
    pub labels: usize,
    pub name_length: usize,
    pub value_length: usize,
}

impl LabelLimits {
    fn check(&self, lbls: &Labels) -> Result<(), SeriesError> {
        let metric = lbls
            .iter()
            .find(|(n, _)| n == "__name__")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let metric: String = metric.chars().take(50).collect();
        if self.labels > 0 && lbls.len() > self.labels {
            return Err(SeriesError::LabelLimit(format!(
                "label_limit exceeded (metric: {metric}, number of labels: {}, limit: {})",
                lbls.len(),
                self.labels
            )));
        }
        for (n, v) in lbls {
            if self.name_length > 0 && n.len() > self.name_length {
                return Err(SeriesError::LabelLimit(format!(
                    "label_name_length_limit exceeded (metric: {metric}, label name: {n}, length: {}, limit: {})",
                    n.len(),
                    self.name_length
                )));
            }
            if self.value_length > 0 && v.len() > self.value_length {
                return Err(SeriesError::LabelLimit(format!(
                    "label_value_length_limit exceeded (metric: {metric}, label name: {n}, length: {}, limit: {})",
                    v.len(),
                    self.value_length
                )));
            }
        }
        Ok(())
    }
}

/// A label set sorted by name.
pub type Labels = Vec<(String, String)>;

/// What every series of one target gets, computed once per target.
#[derive(Debug, Clone, Default)]
pub struct TargetContext {
    /// Target labels (`job`, `instance`, static labels), sorted, no empty values.
    pub target_labels: Labels,
    /// External labels, sorted; added only where a series lacks the name.
    pub external_labels: Labels,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    /// `metric_relabel_configs`, applied after the target labels are merged.
    pub metric_relabel: std::sync::Arc<[crate::relabel::RelabelConfig]>,
    pub limits: LabelLimits,
}

impl TargetContext {
    /// Builds the final, sorted label set of an exposed sample (the slow path,
    /// run once per new series); `None` when metric relabeling drops it.
    pub fn series_labels(&self, s: &Sample<'_>) -> Result<Option<Labels>, SeriesError> {
        let mut exposed: Labels = Vec::with_capacity(8);
        exposed.push(("__name__".to_string(), s.name.to_string()));
        for l in s.labels() {
            let (name, value) = l.map_err(SeriesError::InvalidLabel)?;
            if exposed.iter().any(|(n, _)| n == name) {
                return Err(SeriesError::DuplicateLabel {
                    name: name.to_string(),
                    series: String::from_utf8_lossy(s.series).into_owned(),
                });
            }
            exposed.push((name.to_string(), value.into_owned()));
        }
        // Empty label values are the same as absent labels.
        exposed.retain(|(_, v)| !v.is_empty());
        let merged = self.merge_target(exposed);
        let Some(lbls) = crate::relabel::process(merged, &self.metric_relabel) else {
            return Ok(None);
        };
        if lbls.is_empty() {
            return Ok(None);
        }
        // Relabeling (labelmap) can make names Prometheus would refuse.
        for (n, v) in &lbls {
            if !crate::config::is_valid_label_name(n)
                || (n == "__name__" && !is_valid_metric_name(v))
            {
                return Err(SeriesError::InvalidLabel(format!(
                    "invalid metric name or label name {n:?} after metric relabeling in series {}",
                    String::from_utf8_lossy(s.series)
                )));
            }
        }
        self.limits.check(&lbls)?;
        Ok(Some(self.add_external(lbls)))
    }

    /// Merges target and external labels into a label set and sorts
    /// (synthetic series: no metric relabeling, as in Prometheus).
    pub fn finish(&self, lbls: Labels) -> Labels {
        self.add_external(self.merge_target(lbls))
    }

    /// Adds the target labels, honoring `honor_labels`.
    fn merge_target(&self, mut lbls: Labels) -> Labels {
        if self.honor_labels {
            for (n, v) in &self.target_labels {
                if !lbls.iter().any(|(en, _)| en == n) {
                    lbls.push((n.clone(), v.clone()));
                }
            }
        } else {
            let mut conflicts: Labels = Vec::new();
            for (n, v) in &self.target_labels {
                if let Some(pos) = lbls.iter().position(|(en, _)| en == n) {
                    let old = std::mem::replace(&mut lbls[pos].1, v.clone());
                    conflicts.push((n.clone(), old));
                } else {
                    lbls.push((n.clone(), v.clone()));
                }
            }
            // As Prometheus: shortest names first, prefix `exported_` until free.
            conflicts.sort_by_key(|(n, _)| n.len());
            for (n, v) in conflicts {
                let mut name = n;
                loop {
                    name = format!("exported_{name}");
                    if !lbls.iter().any(|(en, _)| *en == name) {
                        lbls.push((name, v));
                        break;
                    }
                }
            }
        }
        lbls
    }

    /// Adds external labels where absent, then sorts by name.
    fn add_external(&self, mut lbls: Labels) -> Labels {
        for (n, v) in &self.external_labels {
            if !lbls.iter().any(|(en, _)| en == n) {
                lbls.push((n.clone(), v.clone()));
            }
        }
        lbls.sort_by(|a, b| a.0.cmp(&b.0));
        lbls
    }

    /// Encoded labels of a synthetic series (`up`, `scrape_*`).
    pub fn synthetic(&self, name: &str) -> Box<[u8]> {
        let lbls = self.finish(vec![("__name__".to_string(), name.to_string())]);
        encode_labels(&lbls)
    }
}

/// Prometheus 2.x metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// Encodes sorted labels as the `repeated Label labels = 1` bytes of a TimeSeries.
pub fn encode_labels(lbls: &[(String, String)]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(lbls.iter().map(|(n, v)| n.len() + v.len() + 6).sum());
    for (n, v) in lbls {
        encode_label(&mut out, n, v);
    }
    out.into_boxed_slice()
}

struct Entry {
    /// Encoded labels; `None` for a series metric relabeling drops.
    labels: Option<Arc<[u8]>>,
    first_seen: u64,
    last_seen: u64,
    explicit_ts: bool,
}

/// Encoded samples of one scrape: concatenated `TimeSeries` fields of a
/// `WriteRequest`, with the end offset of each so batches can be cut anywhere.
#[derive(Debug, Clone)]
pub struct EncodedSamples {
    pub buf: Vec<u8>,
    pub ends: Vec<u32>,
    /// When the scrape that produced these samples started (ms); the queue's
    /// `max_age` measures from it (exposed timestamps do not count).
    pub scraped_at_ms: i64,
}

impl Default for EncodedSamples {
    fn default() -> Self {
        EncodedSamples {
            buf: Vec::new(),
            ends: Vec::new(),
            scraped_at_ms: i64::MAX,
        }
    }
}

impl EncodedSamples {
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.scraped_at_ms = i64::MAX;
    }
    #[inline]
    pub fn push(&mut self, labels: &[u8], value: f64, ts: i64) {
        write_series(&mut self.buf, labels, value, ts);
        self.ends.push(self.buf.len() as u32);
    }
    /// The bytes of samples `from..to`.
    pub fn slice(&self, from: usize, to: usize) -> &[u8] {
        let start = if from == 0 {
            0
        } else {
            self.ends[from - 1] as usize
        };
        let end = if to == 0 {
            0
        } else {
            self.ends[to - 1] as usize
        };
        &self.buf[start..end]
    }
}

/// What [`SeriesCache::append`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The series was not in the cache.
    pub new: bool,
    /// Metric relabeling kept it (it was sent).
    pub kept: bool,
}

/// The per-target series cache; see the module docs.
#[derive(Default)]
pub struct SeriesCache {
    /// Exposed series text → entry.
    map: HashMap<Arc<[u8]>, Entry, foldhash::fast::RandomState>,
    /// Encoded labels → the exposed text that carries them: two spellings of
    /// one series (`a{x="1"}` and `a{x="1",}`) are one series.
    by_labels: HashMap<Arc<[u8]>, Arc<[u8]>, foldhash::fast::RandomState>,
    generation: u64,
    /// The generation of the last successful scrape ([`SeriesCache::end`]).
    completed: u64,
}

impl SeriesCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of series currently cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Starts a scrape: a new generation.
    pub fn begin(&mut self) {
        self.generation += 1;
    }

    /// Appends one exposed sample at `default_ts` (the scrape time) to `out`.
    /// Returns whether the series is new to the cache and whether it was kept
    /// by metric relabeling.
    #[inline]
    pub fn append(
        &mut self,
        ctx: &TargetContext,
        s: &Sample<'_>,
        default_ts: i64,
        out: &mut EncodedSamples,
    ) -> Result<Appended, SeriesError> {
        let ts = match s.timestamp {
            Some(t) if ctx.honor_timestamps => t,
            _ => default_ts,
        };
        let explicit_ts = s.timestamp.is_some() && ctx.honor_timestamps;
        let generation = self.generation;
        if let Some(e) = self.map.get_mut(s.series) {
            if e.last_seen == generation {
                return Err(SeriesError::DuplicateSeries(
                    String::from_utf8_lossy(s.series).into_owned(),
                ));
            }
            e.last_seen = generation;
            e.explicit_ts = explicit_ts;
            if let Some(l) = &e.labels {
                out.push(l, s.value, ts);
            }
            return Ok(Appended {
                new: false,
                kept: e.labels.is_some(),
            });
        }
        let labels: Option<Arc<[u8]>> = ctx.series_labels(s)?.map(|l| encode_labels(&l).into());
        let raw: Arc<[u8]> = s.series.into();
        if let Some(l) = &labels {
            if let Some(other) = self.by_labels.get(l).cloned() {
                if self
                    .map
                    .get(&other)
                    .is_some_and(|e| e.last_seen == generation)
                {
                    return Err(SeriesError::DuplicateSeries(
                        String::from_utf8_lossy(s.series).into_owned(),
                    ));
                }
                // The same series under a new spelling: it continues, no marker.
                self.map.remove(&other);
            }
            self.by_labels.insert(l.clone(), raw.clone());
            out.push(l, s.value, ts);
        }
        let kept = labels.is_some();
        self.map.insert(
            raw,
            Entry {
                labels,
                first_seen: generation,
                last_seen: generation,
                explicit_ts,
            },
        );
        Ok(Appended { new: true, kept })
    }

    /// Ends a successful scrape: staleness markers at `ts` for every series
    /// seen before but not in this scrape; those series leave the cache.
    pub fn end(&mut self, ts: i64, out: &mut EncodedSamples) -> u64 {
        let generation = self.generation;
        self.completed = generation;
        let mut stale = 0;
        let SeriesCache { map, by_labels, .. } = self;
        map.retain(|_, e| {
            if e.last_seen == generation {
                return true;
            }
            if let Some(l) = &e.labels {
                by_labels.remove(l);
                if !e.explicit_ts {
                    out.push(l, f64::from_bits(STALE_NAN), ts);
                    stale += 1;
                }
            }
            false
        });
        stale
    }

    /// A failed scrape (or a removed target): markers at `ts` for every series
    /// of the last successful scrape, and the cache empties. Series first
    /// seen by a scrape that failed half-way were never sent and get none.
    pub fn mark_all_stale(&mut self, ts: i64, out: &mut EncodedSamples) -> u64 {
        let mut stale = 0;
        for e in self.map.values() {
            if let (false, true, Some(l)) =
                (e.explicit_ts, e.first_seen <= self.completed, &e.labels)
            {
                out.push(l, f64::from_bits(STALE_NAN), ts);
                stale += 1;
            }
        }
        self.map.clear();
        self.by_labels.clear();
        stale
    }
}

/// Splits one encoded `TimeSeries` entry (as [`EncodedSamples`] holds it)
/// into its label bytes, value and timestamp.
pub fn split_entry(entry: &[u8]) -> Option<(&[u8], f64, i64)> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let c = *b.get(*i)?;
            *i += 1;
            v |= u64::from(c & 0x7f) << shift;
            if c < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut i = 0;
    if *entry.first()? != 0x0a {
        return None;
    }
    i += 1;
    let len = varint(entry, &mut i)? as usize;
    let body = entry.get(i..i + len)?;
    let mut j = 0;
    while j < body.len() && body[j] == 0x0a {
        j += 1;
        let l = varint(body, &mut j)? as usize;
        j += l;
    }
    let labels = body.get(..j)?;
    if *body.get(j)? != 0x12 {
        return None;
    }
    j += 1;
    let _sample_len = varint(body, &mut j)?;
    if *body.get(j)? != 0x09 {
        return None;
    }
    let value = f64::from_le_bytes(body.get(j + 1..j + 9)?.try_into().ok()?);
    j += 9;
    if *body.get(j)? != 0x10 {
        return None;
    }
    j += 1;
    let ts = varint(body, &mut j)? as i64;
    Some((labels, value, ts))
}

type Rewritten = (Option<Box<[u8]>>, u64);

/// `write_relabel_configs` of one remote-write destination, for one target:
/// each series' relabeled (or dropped) label set is computed once and cached,
/// like the series cache does for metric relabeling.
pub struct WriteRelabelCache {
    rules: Arc<[crate::relabel::RelabelConfig]>,
    /// Encoded labels → (relabeled labels or dropped, generation last seen).
    map: HashMap<Box<[u8]>, Rewritten, foldhash::fast::RandomState>,
    generation: u64,
}

impl WriteRelabelCache {
    pub fn new(rules: Arc<[crate::relabel::RelabelConfig]>) -> Self {
        WriteRelabelCache {
            rules,
            map: HashMap::default(),
            generation: 0,
        }
    }

    /// Writes the relabeled samples of `input` into `out` (cleared first).
    pub fn apply(&mut self, input: &EncodedSamples, out: &mut EncodedSamples) {
        use prost::Message;
        out.clear();
        out.scraped_at_ms = input.scraped_at_ms;
        self.generation += 1;
        let generation = self.generation;
        for k in 0..input.len() {
            let Some((labels, value, ts)) = split_entry(input.slice(k, k + 1)) else {
                continue;
            };
            if let Some((l, seen)) = self.map.get_mut(labels) {
                *seen = generation;
                if let Some(l) = l {
                    out.push(l, value, ts);
                }
                continue;
            }
            let decoded = crate::remote_write::proto::TimeSeries::decode(labels)
                .map(|t| {
                    t.labels
                        .into_iter()
                        .map(|l| (l.name, l.value))
                        .collect::<Labels>()
                })
                .unwrap_or_default();
            let relabeled = crate::relabel::process(decoded, &self.rules).and_then(|mut l| {
                l.retain(|(_, v)| !v.is_empty());
                l.sort_by(|a, b| a.0.cmp(&b.0));
                (!l.is_empty()).then(|| encode_labels(&l))
            });
            if let Some(l) = &relabeled {
                out.push(l, value, ts);
            }
            self.map.insert(labels.into(), (relabeled, generation));
        }
        // Series absent from this scrape (their markers went through above).
        self.map.retain(|_, (_, seen)| *seen == generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::Parser;
    use crate::remote_write::proto::WriteRequest;
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
        cache.begin();
        for s in Parser::new(body.as_bytes()) {
            cache.append(c, &s.unwrap(), ts, &mut out)?;
        }
        cache.end(ts, &mut out);
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
        assert_eq!(cache.len(), 3);
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

    #[test]
    fn two_spellings_of_one_series_are_a_duplicate() {
        let e = scrape(
            &mut SeriesCache::new(),
            &ctx(false),
            "m{a=\"1\"} 1\nm{a=\"1\",} 2\n",
            1,
        )
        .unwrap_err();
        assert!(matches!(e, SeriesError::DuplicateSeries(_)), "{e}");
        let e = scrape(
            &mut SeriesCache::new(),
            &ctx(false),
            "m 1\nm{a=\"\"} 2\n",
            1,
        )
        .unwrap_err();
        assert!(matches!(e, SeriesError::DuplicateSeries(_)), "{e}");
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
    fn write_relabeling_rewrites_drops_and_keeps_values() {
        use crate::relabel::{Action, AnchoredRegex, RelabelConfig};
        let rules: Vec<RelabelConfig> = vec![
            RelabelConfig {
                source_labels: vec!["__name__".into()],
                regex: AnchoredRegex::new("secret_.*").unwrap(),
                action: Action::Drop,
                ..serde_yaml_default()
            },
            RelabelConfig {
                regex: AnchoredRegex::new("cluster").unwrap(),
                action: Action::LabelDrop,
                ..serde_yaml_default()
            },
            RelabelConfig {
                target_label: "aaa".into(),
                replacement: "first".into(),
                ..serde_yaml_default()
            },
        ];
        let mut cache = SeriesCache::new();
        let out = scrape(&mut cache, &ctx(false), "m 1.5 7\nsecret_x 2\n", 10).unwrap();
        let mut w = WriteRelabelCache::new(rules.into());
        let mut rewritten = EncodedSamples::default();
        for _ in 0..2 {
            w.apply(&out, &mut rewritten);
            let wr = decode(&rewritten);
            assert_eq!(wr.timeseries.len(), 1);
            let t = &wr.timeseries[0];
            assert_eq!(t.labels[0].name, "__name__", "sorted");
            assert_eq!(t.label("aaa"), Some("first"));
            assert_eq!(t.label("cluster"), None);
            assert_eq!((t.samples[0].value, t.samples[0].timestamp), (1.5, 7));
        }
    }

    #[test]
    fn split_entry_reads_back_what_push_wrote() {
        let mut e = EncodedSamples::default();
        let l = encode_labels(&[
            ("__name__".into(), "m".into()),
            ("a".into(), "b".repeat(200)),
        ]);
        e.push(&l, -3.25, 1_700_000_000_123);
        e.push(&l, f64::from_bits(STALE_NAN), 0);
        let (lb, v, ts) = split_entry(e.slice(0, 1)).unwrap();
        assert_eq!((lb, v, ts), (&l[..], -3.25, 1_700_000_000_123));
        let (_, v, ts) = split_entry(e.slice(1, 2)).unwrap();
        assert_eq!((v.to_bits(), ts), (STALE_NAN, 0));
        assert!(split_entry(&[0x0a, 0x05, 0x0a]).is_none());
    }

    #[test]
    fn repeated_label_fails() {
        let mut cache = SeriesCache::new();
        let e = scrape(&mut cache, &ctx(false), "m{a=\"1\",a=\"2\"} 1\n", 1).unwrap_err();
        assert!(matches!(e, SeriesError::DuplicateLabel { .. }), "{e}");
    }

    #[test]
    fn duplicate_series_fails() {
        let mut cache = SeriesCache::new();
        let e = scrape(&mut cache, &ctx(false), "m 1\nm 2\n", 1).unwrap_err();
        assert!(matches!(e, SeriesError::DuplicateSeries(_)), "{e}");
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
        assert_eq!(cache.mark_all_stale(20, &mut out), 2);
        assert!(cache.is_empty());
        assert!(
            decode(&out)
                .timeseries
                .iter()
                .all(|t| t.samples[0].value.to_bits() == STALE_NAN)
        );
    }

    #[test]
    fn series_first_seen_in_a_failing_scrape_get_no_marker() {
        let c = ctx(false);
        let mut cache = SeriesCache::new();
        scrape(&mut cache, &c, "a 1\n", 10).unwrap();
        let mut out = EncodedSamples::default();
        cache.begin();
        for s in Parser::new(b"a 2\nnew 3\n") {
            cache.append(&c, &s.unwrap(), 20, &mut out).unwrap();
        }
        // The scrape fails later (say, a parse error): its samples are discarded.
        out.clear();
        assert_eq!(cache.mark_all_stale(20, &mut out), 1);
        assert_eq!(decode(&out).timeseries[0].labels[0].value, "a");
    }

    #[test]
    fn slices_cut_at_sample_boundaries() {
        let mut out = EncodedSamples::default();
        for i in 0..5 {
            out.push(
                &encode_labels(&[("__name__".into(), format!("m{i}"))]),
                i as f64,
                i,
            );
        }
        let part = WriteRequest::decode(out.slice(1, 3)).unwrap();
        assert_eq!(part.timeseries.len(), 2);
        assert_eq!(part.timeseries[0].samples[0].value, 1.0);
        assert_eq!(out.slice(0, 5), out.buf.as_slice());
    }
}
