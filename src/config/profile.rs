//! Shipped metric relabeling profiles (`scrape_configs[].profile`): rule
//! sets a job opts into by name, run before its own
//! `metric_relabel_configs`. The rules live in `config/profiles/*.yml`, the
//! same files the README shows, compiled into the binary.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::relabel::RelabelConfig;

/// `scrape_configs[].profile`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Thins the API server's and its etcd client's latency histograms and
    /// drops deprecated control-plane metrics (`config/profiles/control-plane.yml`).
    ControlPlane,
}

const CONTROL_PLANE: &str = include_str!("../../config/profiles/control-plane.yml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    metric_relabel_configs: Vec<RelabelConfig>,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::ControlPlane => "control-plane",
        }
    }

    /// The profile's rules (parsed once).
    pub fn metric_relabel_configs(self) -> Result<&'static [RelabelConfig], &'static ProfileError> {
        static CP: OnceLock<Result<Vec<RelabelConfig>, ProfileError>> = OnceLock::new();
        let parsed = match self {
            Profile::ControlPlane => CP.get_or_init(|| parse(CONTROL_PLANE)),
        };
        parsed.as_deref()
    }
}

/// Why a shipped profile cannot be used (a build that broke its file; the
/// profile's unit test fails first).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("{0} YAML documents, want 1")]
    Documents(usize),
    #[error("not a profile (metric_relabel_configs: [...]): {0}")]
    Schema(#[source] serde_json::Error),
    #[error("rule {index}: {source}")]
    Rule {
        index: usize,
        #[source]
        source: crate::relabel::RelabelError,
    },
}

fn parse(text: &str) -> Result<Vec<RelabelConfig>, ProfileError> {
    let mut docs = crate::yaml::to_json(text, crate::yaml::Scalars::Typed)
        .map_err(|e| ProfileError::Yaml(e.to_string()))?;
    if docs.len() != 1 {
        return Err(ProfileError::Documents(docs.len()));
    }
    let f: ProfileFile = serde_json::from_value(docs.remove(0)).map_err(ProfileError::Schema)?;
    for (index, r) in f.metric_relabel_configs.iter().enumerate() {
        r.validate()
            .map_err(|source| ProfileError::Rule { index, source })?;
    }
    Ok(f.metric_relabel_configs)
}

impl super::ScrapeConfig {
    /// The metric relabeling this job runs: its profile's rules, then its own.
    pub fn effective_metric_relabel(&self) -> Vec<RelabelConfig> {
        let mut rules = Vec::new();
        if let Some(p) = self.profile
            && let Ok(r) = p.metric_relabel_configs()
        {
            rules.extend_from_slice(r);
        }
        rules.extend_from_slice(&self.metric_relabel_configs);
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;

    fn labels(name: &str, le: &str) -> Labels {
        let mut l = vec![("__name__".to_string(), name.to_string())];
        if !le.is_empty() {
            l.push(("le".to_string(), le.to_string()));
        }
        l.sort();
        l
    }

    #[test]
    fn the_shipped_control_plane_profile_parses_and_thins_as_documented() {
        let rules = Profile::ControlPlane.metric_relabel_configs().unwrap();
        assert!(rules.len() >= 5);
        let kept = |n: &str, le: &str| crate::relabel::process(labels(n, le), rules).is_some();
        let b = "apiserver_request_duration_seconds_bucket";
        // Kubernetes' 40 buckets: 15 stay, in both stored forms.
        let layout = [
            "0.005", "0.025", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4", "0.45",
            "0.5", "0.6", "0.7", "0.8", "0.9", "1", "1.25", "1.5", "1.75", "2", "2.5", "3", "3.5",
            "4", "4.5", "5", "6", "7", "8", "9", "10", "15", "20", "25", "30", "40", "50", "60",
            "+Inf",
        ];
        let stay: Vec<&str> = layout.iter().copied().filter(|le| kept(b, le)).collect();
        assert_eq!(
            stay,
            [
                "0.005", "0.025", "0.05", "0.1", "0.2", "0.5", "1", "2", "4", "5", "10", "20",
                "40", "60", "+Inf"
            ]
        );
        for le in ["3.0", "30.0", "8.0", "1.5"] {
            assert!(!kept(b, le), "{le}");
        }
        for le in ["1.0", "5.0", "60.0", "0.1"] {
            assert!(kept(b, le), "{le}");
        }
        // The SLI histogram keeps the mixin's SLO thresholds.
        for le in ["1", "5", "30", "30.0"] {
            assert!(
                kept("apiserver_request_sli_duration_seconds_bucket", le),
                "{le}"
            );
        }
        assert!(!kept("etcd_request_duration_seconds_bucket", "0.4"));
        assert!(kept("etcd_request_duration_seconds_bucket", "1"));
        // Everything else passes: etcd's own metrics, other families, _sum/_count.
        for n in [
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            "apiserver_request_duration_seconds_count",
            "apiserver_request_total",
            "scheduler_pending_pods",
        ] {
            assert!(kept(n, "3"), "{n}");
        }
        assert!(!kept("apiserver_request_latencies_summary", ""));
    }

    #[test]
    fn a_profile_runs_before_the_jobs_own_rules() {
        let cfg = crate::config::Config::from_yaml(
            "scrape_configs:\n  - job_name: cp\n    profile: control-plane\n    series_per_family_limit: 10\n    metric_relabel_configs: [{source_labels: [__name__], regex: x, action: drop}]\n    static_configs: [{targets: ['a:1']}]\n",
        )
        .unwrap();
        let sc = &cfg.scrape_configs[0];
        let rules = sc.effective_metric_relabel();
        let n = Profile::ControlPlane
            .metric_relabel_configs()
            .unwrap()
            .len();
        assert_eq!(rules.len(), n + 1);
        assert_eq!(rules[n].regex, sc.metric_relabel_configs[0].regex);
        assert_eq!(sc.series_per_family_limit, 10);
        let e = crate::config::Config::from_yaml(
            "scrape_configs:\n  - job_name: cp\n    profile: everything\n    static_configs: [{targets: ['a:1']}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("profile") || e.contains("everything"), "{e}");
    }
}
