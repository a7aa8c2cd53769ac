//! What every series of one target gets: its target and external labels,
//! `honor_labels`, metric relabeling, limits and timestamp bounds
//! ([`TargetContext`]), and the general (allocating) path that builds a
//! series' final label set from them.

use crate::exposition::Sample;

use crate::labels::{LabelLimits, Labels, is_valid_label_name, is_valid_metric_name};
use crate::remote_write::samples::encode_labels;

use super::SeriesError;

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
    /// Which explicit timestamps are accepted.
    pub timestamp_bounds: TimestampBounds,
    /// `le`/`quantile` values in Prometheus 3's float form
    /// (`global.prometheus_compatibility: 3`).
    pub float_label_values: bool,
    /// Limits per metric family ([`super::FamilyBudget`]).
    pub family_budget: super::FamilyBudget,
}

/// The window around the scrape time in which explicit timestamps are
/// accepted (with `honor_timestamps`); samples outside are dropped and
/// counted. 0 = no bound on that side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampBounds {
    pub max_age_ms: i64,
    pub max_ahead_ms: i64,
}

impl TimestampBounds {
    /// The accepted range for a scrape at `ts`.
    #[inline]
    pub fn window(&self, ts: i64) -> (i64, i64) {
        let lo = if self.max_age_ms > 0 {
            ts.saturating_sub(self.max_age_ms)
        } else {
            i64::MIN
        };
        let hi = if self.max_ahead_ms > 0 {
            ts.saturating_add(self.max_ahead_ms)
        } else {
            i64::MAX
        };
        (lo, hi)
    }
}

impl TargetContext {
    /// Builds the final, sorted label set of an exposed sample (the slow path,
    /// run once per new series); `None` when metric relabeling drops it.
    pub fn series_labels(&self, s: &Sample<'_>) -> Result<Option<Labels>, SeriesError> {
        self.series_labels_traced(s, |_| {}, |_, _| {})
    }

    /// [`TargetContext::series_labels`], telling `merged` the label set
    /// before metric relabeling (target labels merged) and `step` each
    /// metric-relabel rule's result (see [`crate::relabel::process_traced`]).
    pub(crate) fn series_labels_traced(
        &self,
        s: &Sample<'_>,
        merged: impl FnOnce(&Labels),
        step: impl FnMut(usize, Option<&Labels>),
    ) -> Result<Option<Labels>, SeriesError> {
        let mut exposed: Labels = Vec::with_capacity(8);
        exposed.push((
            "__name__".to_string(),
            String::from_utf8_lossy(s.name).into_owned(),
        ));
        for l in s.labels() {
            let (name, value) = l.map_err(|e| SeriesError::InvalidLabel(e.to_string()))?;
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
        let with_target = self.merge_target(exposed);
        merged(&with_target);
        let Some(lbls) = crate::relabel::process_traced(with_target, &self.metric_relabel, step)
        else {
            return Ok(None);
        };
        if lbls.is_empty() {
            return Ok(None);
        }
        // Relabeling (labelmap) can make names Prometheus would refuse.
        for (n, v) in &lbls {
            if !is_valid_label_name(n) || (n == "__name__" && !is_valid_metric_name(v)) {
                return Err(SeriesError::InvalidLabel(format!(
                    "invalid metric name or label name {n:?} after metric relabeling in series {}",
                    String::from_utf8_lossy(s.series)
                )));
            }
        }
        self.limits
            .check(&lbls)
            .map_err(|e| SeriesError::LabelLimit(e.0))?;
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
