//! What `/targets` and `/readyz` see of a target: its latest state, shared
//! between its scrape loop and the admin server.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::Target;
use crate::remote_write::samples::EncodedSamples;

/// Health of a target, as shown on `/targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Health {
    Unknown,
    Up,
    Down,
}

/// The latest state of a target (shared with the admin server).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetStatus {
    pub job: String,
    pub instance: String,
    pub url: String,
    pub health: Health,
    /// Unix seconds of the last scrape's start.
    pub last_scrape: Option<f64>,
    pub last_scrape_duration_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub samples: u64,
    pub series: usize,
    /// Its labels after relabeling (`job` and `instance` included).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The discovery file it came from; none for a static target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovered_from: Option<String>,
    /// The shards that scrape it (this one among them), when sharded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<u32>,
    /// Families the last scrape dropped for their budget (at most 64 named).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub over_budget: Vec<FamilyOver>,
    /// How many families the last scrape dropped for their budget.
    pub over_budget_total: usize,
    /// Per destination with `queue.fresh_first`: what of this target is
    /// queued behind its newest scrape (none when it is not behind).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backlog: Vec<Backlog>,
    /// The latest successful scrape's samples (for `/relay/metrics`); none
    /// while the target is down.
    #[serde(skip)]
    pub latest: Option<Arc<EncodedSamples>>,
}

/// A target's backlog to one destination, as `/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Backlog {
    pub remote_name: String,
    pub samples: usize,
    /// Unix seconds of its oldest scrape.
    pub oldest_scrape: f64,
}

/// A family dropped for its budget, as `/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FamilyOver {
    pub family: String,
    /// `series` (series per family) or `buckets` (buckets per histogram).
    pub limit_kind: &'static str,
    pub limit: u64,
    pub dropped_samples: u64,
}

impl From<&crate::series::OverBudget> for FamilyOver {
    fn from(o: &crate::series::OverBudget) -> Self {
        FamilyOver {
            family: o.family.clone(),
            limit_kind: match o.kind {
                crate::series::BudgetKind::Series => "series",
                crate::series::BudgetKind::Buckets => "buckets",
            },
            limit: o.limit,
            dropped_samples: o.dropped,
        }
    }
}

pub(crate) type SharedStatus = Arc<Mutex<TargetStatus>>;

impl TargetStatus {
    pub(crate) fn new(t: &Target) -> Self {
        TargetStatus {
            job: t.job.clone(),
            instance: t.instance.clone(),
            url: t.url.to_string(),
            health: Health::Unknown,
            last_scrape: None,
            last_scrape_duration_seconds: None,
            last_error: None,
            samples: 0,
            series: 0,
            labels: t.ctx.target_labels.iter().cloned().collect(),
            discovered_from: t.source.clone(),
            shards: t.owners.clone(),
            over_budget: Vec::new(),
            over_budget_total: 0,
            backlog: Vec::new(),
            latest: None,
        }
    }
}
