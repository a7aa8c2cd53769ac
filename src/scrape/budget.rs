//! What a target's per-family budget did, told once per change: the
//! families its last scrape dropped go to `/targets` (the status), to the
//! log when the set changes (not every scrape), and to the self-metrics
//! (`metrics_relay_scrape_family_budget_dropped_samples_total` by family,
//! `metrics_relay_scrape_families_over_budget`).

use std::collections::BTreeSet;

use crate::series::OverBudget;
use crate::telemetry::{FamilyLabels, Metrics, TargetLabels};

/// Families named in the per-family metrics of one target over its life;
/// past this a hostile target inventing family names is counted in the
/// gauge and the log only.
const LABELLED_MAX: usize = 256;

/// One target's budget report between scrapes.
#[derive(Default)]
pub(super) struct BudgetReport {
    /// The families the last scrape dropped (as last logged).
    over: BTreeSet<String>,
    /// Families that have a per-family metric (removed with the target).
    labelled: BTreeSet<String>,
}

impl BudgetReport {
    /// After a successful scrape: `over` is what the cache says it dropped
    /// (at most `series::budget::NAMED_MAX` named), `total` how many.
    pub(super) fn scraped(
        &mut self,
        over: &[OverBudget],
        total: usize,
        metrics: &Metrics,
        labels: &TargetLabels,
    ) {
        let (job, instance) = (labels.job.as_str(), labels.instance.as_str());
        metrics
            .families_over_budget
            .get_or_create(labels)
            .set(total as i64);
        for o in over {
            let named = self.labelled.contains(&o.family)
                || (self.labelled.len() < LABELLED_MAX && self.labelled.insert(o.family.clone()));
            if named {
                metrics
                    .family_budget_dropped
                    .get_or_create(&FamilyLabels {
                        job: labels.job.clone(),
                        instance: labels.instance.clone(),
                        family: o.family.clone(),
                    })
                    .inc_by(o.dropped);
            }
        }
        let now: BTreeSet<String> = over.iter().map(|o| o.family.clone()).collect();
        if now == self.over {
            return;
        }
        let added: Vec<String> = over
            .iter()
            .filter(|o| !self.over.contains(&o.family))
            .map(|o| format!("{} ({} over {})", o.family, o.kind, o.limit))
            .collect();
        let back: Vec<&String> = self.over.iter().filter(|f| !now.contains(*f)).collect();
        if !added.is_empty() {
            tracing::warn!(job, instance, families = %added.join(", "), over_budget = total, "metric families over their budget are dropped from each scrape (the rest of the scrape is kept; up stays 1); logged again when the set changes");
        }
        if !back.is_empty() {
            tracing::info!(job, instance, families = ?back, "metric families back within their budget are kept again");
        }
        self.over = now;
    }

    /// The target is gone: its per-family metrics go with it.
    pub(super) fn remove(&self, metrics: &Metrics, labels: &TargetLabels) {
        metrics.families_over_budget.remove(labels);
        for f in &self.labelled {
            metrics.family_budget_dropped.remove(&FamilyLabels {
                job: labels.job.clone(),
                instance: labels.instance.clone(),
                family: f.clone(),
            });
        }
    }
}
