//! Scrape targets resolved from the config: `static_configs` through
//! `relabel_configs` into a [`Target`] (labels, URL with `params`, interval,
//! timeout), as Prometheus does it.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};

use crate::config::{Config, ScrapeConfig};
use crate::discovery::{Found, Group};
use crate::series::TargetContext;
use crate::shard::Sharding;

/// One scrape target, fully resolved from the config.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub job: String,
    /// `host:port` as configured.
    pub instance: String,
    pub url: Uri,
    pub ctx: TargetContext,
    pub interval: Duration,
    pub timeout: Duration,
    /// `X-Prometheus-Scrape-Timeout-Seconds`, formatted once.
    pub timeout_header: Option<HeaderValue>,
    pub body_limit: Option<u64>,
    pub sample_limit: u64,
    /// Index of its scrape config.
    pub config_index: usize,
    /// Its own `tls_config` (a kubeconfig it was discovered from), used
    /// instead of its scrape config's.
    pub tls: Option<Arc<crate::config::TlsConfig>>,
    /// The discovery file it came from (`__meta_filepath`), if any.
    pub source: Option<String>,
    /// The shards that scrape it (see [`crate::shard`]); empty when the
    /// agent is not sharded.
    pub owners: Vec<u32>,
    /// Its samples' stream in the remote-write queues (never 0): a fixed
    /// hash of its URL and labels.
    pub stream: u64,
    /// Everything that makes this target what it is; a reload keeps a
    /// running target (and its series cache) exactly when this is unchanged.
    pub identity: TargetIdentity,
}

/// Everything that makes a target what it is, compared as values (secrets
/// included, which no printed form may carry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TargetIdentity {
    /// Its scrape config, without the target list (shared by the job's
    /// targets).
    config: Arc<ScrapeConfig>,
    external_labels: Vec<(String, String)>,
    /// `global.prometheus_compatibility` changes what is stored.
    float_label_values: bool,
    url: Uri,
    labels: Vec<(String, String)>,
    interval: Duration,
    timeout: Duration,
    tls: Option<Arc<crate::config::TlsConfig>>,
}

/// Percent-encodes a query component (RFC 3986 unreserved kept).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a target gives no scrape (it is dropped with a warning naming the
/// job and address, as Prometheus drops it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("no address after relabeling")]
    NoAddress,
    #[error("{0:?} is not a valid address")]
    Address(String),
    #[error("invalid scheme {0:?} after relabeling (http or https)")]
    Scheme(String),
    #[error("{label}: {source}")]
    Duration {
        label: &'static str,
        #[source]
        source: crate::units::UnitError,
    },
    #[error("scrape timeout {timeout:?} must be >0 and at most the interval {interval:?}")]
    Timeout {
        timeout: Duration,
        interval: Duration,
    },
    #[error("target {address:?} gives an invalid URL {url:?}: {reason}")]
    Url {
        address: String,
        url: String,
        reason: String,
    },
}

/// The scrape URL from the post-relabeling meta labels.
fn url_from(
    scheme: &str,
    address: &str,
    path: &str,
    params: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Uri, TargetError> {
    let mut url = format!("{scheme}://{address}{path}");
    let mut first = true;
    for (k, vs) in params {
        for v in vs {
            url.push(if first { '?' } else { '&' });
            first = false;
            url.push_str(&query_escape(k));
            url.push('=');
            url.push_str(&query_escape(v));
        }
    }
    url.parse()
        .map_err(|e: http::uri::InvalidUri| TargetError::Url {
            address: address.into(),
            reason: e.to_string(),
            url,
        })
}

/// The targets of a config this shard scrapes, and how many it leaves to
/// other shards.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub owned: Vec<Target>,
    pub others: usize,
}

/// The key a target is sharded by: its job, scrape URL and labels.
fn shard_key(url: &Uri, labels: &[(String, String)]) -> Vec<u8> {
    let mut k = url.to_string().into_bytes();
    for (n, v) in labels {
        k.push(0);
        k.extend_from_slice(n.as_bytes());
        k.push(b'=');
        k.extend_from_slice(v.as_bytes());
    }
    k
}

/// Every static target of the config, in config order, after
/// `relabel_configs` (no discovery, one shard); see [`resolve`].
#[cfg(test)]
pub(crate) fn targets(cfg: &Config) -> Vec<Target> {
    resolve(cfg, &Default::default(), &Sharding::default()).owned
}

/// Every target of the config (static, then discovered, per scrape config in
/// config order) after `relabel_configs`, that this shard owns.
/// A target that relabeling drops is left out; one whose labels cannot make
/// a scrape URL is left out with a warning (Prometheus drops it likewise).
pub(crate) fn resolve(cfg: &Config, discovered: &Found, sharding: &Sharding) -> Resolved {
    let ext = external_labels(cfg);
    let float_labels = cfg.global.prometheus_compatibility.float_label_values();
    let mut out = Resolved::default();
    // One target, one loop: a target listed twice (twice in static_configs,
    // in two discovery files, or both) is scraped once, as Prometheus
    // merges targets with the same labels and URL; the first one is kept.
    let mut seen: std::collections::HashSet<(usize, Vec<u8>)> = std::collections::HashSet::new();
    for (i, sc) in cfg.scrape_configs.iter().enumerate() {
        let metric_relabel: Arc<[crate::relabel::RelabelConfig]> =
            sc.effective_metric_relabel().into();
        let config = {
            let mut c = sc.clone();
            c.static_configs.clear();
            c.file_sd_configs.clear();
            c.kubeconfig_sd_configs.clear();
            Arc::new(c)
        };
        let statics = static_groups(sc);
        let found = discovered.get(&i).map(Vec::as_slice).unwrap_or_default();
        for g in statics.iter().chain(found) {
            let source = g
                .labels
                .iter()
                .find(|(k, _)| k == "__meta_filepath")
                .map(|(_, v)| v.clone());
            for addr in &g.targets {
                match resolve_target(sc, &g.labels, addr) {
                    Ok(Some((tl, url, interval, timeout))) => {
                        let key = shard_key(&url, &tl);
                        if !seen.insert((i, key.clone())) {
                            tracing::debug!(job = %sc.job_name, target = %addr, "target listed more than once; scraped once");
                            continue;
                        }
                        let stream = crate::shard::fnv1a(&key).max(1);
                        let owners = if sharding.is_sharded() {
                            sharding.owners(&key)
                        } else {
                            Vec::new()
                        };
                        if sharding.is_sharded() && !owners.contains(&sharding.index) {
                            out.others += 1;
                            continue;
                        }
                        let identity = TargetIdentity {
                            config: config.clone(),
                            external_labels: ext.clone(),
                            float_label_values: float_labels,
                            url: url.clone(),
                            labels: tl.clone(),
                            interval,
                            timeout,
                            tls: g.tls.clone(),
                        };
                        let get = |n: &str| {
                            tl.iter()
                                .find(|(k, _)| k == n)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        out.owned.push(Target {
                            job: get("job"),
                            instance: get("instance"),
                            url,
                            ctx: target_context(sc, tl, &ext, float_labels, &metric_relabel),
                            interval,
                            timeout,
                            timeout_header: HeaderValue::from_str(
                                &timeout.as_secs_f64().to_string(),
                            )
                            .ok(),
                            body_limit: sc.body_limit(),
                            sample_limit: sc.sample_limit,
                            config_index: i,
                            tls: g.tls.clone(),
                            source: source.clone(),
                            owners,
                            stream,
                            identity,
                        });
                    }
                    Ok(None) => {
                        tracing::debug!(job = %sc.job_name, target = %addr, "target dropped by relabel_configs")
                    }
                    Err(e) => {
                        tracing::warn!(job = %sc.job_name, target = %addr, error = %e, "target dropped")
                    }
                }
            }
        }
    }
    out
}

/// What every series of a target gets (its labels, the job's metric
/// relabeling with its profile, limits, budgets).
pub(crate) fn target_context(
    sc: &ScrapeConfig,
    tl: Vec<(String, String)>,
    ext: &[(String, String)],
    float_labels: bool,
    metric_relabel: &Arc<[crate::relabel::RelabelConfig]>,
) -> TargetContext {
    TargetContext {
        target_labels: tl,
        external_labels: ext.to_vec(),
        honor_labels: sc.honor_labels,
        honor_timestamps: sc.honor_timestamps,
        metric_relabel: metric_relabel.clone(),
        limits: crate::labels::LabelLimits {
            labels: sc.label_limit,
            name_length: sc.label_name_length_limit,
            value_length: sc.label_value_length_limit,
        },
        timestamp_bounds: crate::series::TimestampBounds {
            max_age_ms: sc.explicit_timestamp_max_age.0.as_millis() as i64,
            max_ahead_ms: sc.explicit_timestamp_max_ahead.0.as_millis() as i64,
        },
        float_label_values: float_labels,
        family_budget: crate::series::FamilyBudget {
            series: sc.series_per_family_limit,
            buckets: sc.buckets_per_histogram_limit,
        },
    }
}

/// The external labels every series gets (sorted, none empty).
pub(crate) fn external_labels(cfg: &Config) -> Vec<(String, String)> {
    let mut ext: Vec<(String, String)> = cfg
        .global
        .external_labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ext.sort();
    ext
}

/// A scrape config's `static_configs` as target groups.
pub(crate) fn static_groups(sc: &ScrapeConfig) -> Vec<Group> {
    sc.static_configs
        .iter()
        .map(|st| Group {
            targets: st.targets.clone(),
            labels: st
                .labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tls: None,
        })
        .collect()
}

pub(crate) type OneTarget = (Vec<(String, String)>, Uri, Duration, Duration);

/// Prometheus's target label population: meta labels, `relabel_configs`,
/// then `instance` defaulting to the address and `__` labels removed.
fn resolve_target(
    sc: &ScrapeConfig,
    group_labels: &[(String, String)],
    addr: &str,
) -> Result<Option<OneTarget>, TargetError> {
    resolve_target_traced(sc, group_labels, addr, |_, _| {})
}

/// The labels a target has before `relabel_configs`: its group's, then the
/// defaults (`__address__`, `__scheme__`, `__metrics_path__`, the interval
/// and timeout, `job`, `__param_*`) where the group has none.
pub(crate) fn target_start_labels(
    sc: &ScrapeConfig,
    group_labels: &[(String, String)],
    addr: &str,
) -> Vec<(String, String)> {
    let mut lbls: Vec<(String, String)> = group_labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    let mut defaults = vec![
        ("__address__".to_string(), addr.to_string()),
        ("__scheme__".to_string(), sc.scheme.clone()),
        ("__metrics_path__".to_string(), sc.metrics_path.clone()),
        (
            "__scrape_interval__".to_string(),
            crate::units::format_duration(sc.interval()),
        ),
        (
            "__scrape_timeout__".to_string(),
            crate::units::format_duration(sc.timeout()),
        ),
        ("job".to_string(), sc.job_name.clone()),
    ];
    for (k, vs) in &sc.params {
        if let Some(v) = vs.first() {
            defaults.push((format!("__param_{k}"), v.clone()));
        }
    }
    for (k, v) in defaults {
        if !lbls.iter().any(|(n, _)| *n == k) {
            lbls.push((k, v));
        }
    }
    lbls
}

/// [`resolve_target`], `step` seeing each `relabel_configs` rule's result
/// (for `explain`).
pub(crate) fn resolve_target_traced(
    sc: &ScrapeConfig,
    group_labels: &[(String, String)],
    addr: &str,
    step: impl FnMut(usize, Option<&Vec<(String, String)>>),
) -> Result<Option<OneTarget>, TargetError> {
    let lbls = target_start_labels(sc, group_labels, addr);
    let Some(mut lbls) = crate::relabel::process_traced(lbls, &sc.relabel_configs, step) else {
        return Ok(None);
    };
    let get = |l: &Vec<(String, String)>, n: &str| {
        l.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let address = get(&lbls, "__address__");
    if address.is_empty() {
        return Err(TargetError::NoAddress);
    }
    if address.contains('/') {
        return Err(TargetError::Address(address));
    }
    if get(&lbls, "instance").is_empty() {
        lbls.push(("instance".into(), address.clone()));
    }
    let mut params = sc.params.clone();
    for (k, v) in &lbls {
        if let Some(name) = k.strip_prefix("__param_") {
            // As Prometheus: the label replaces the first value only.
            let vs = params.entry(name.to_string()).or_default();
            match vs.first_mut() {
                Some(first) => *first = v.clone(),
                None => vs.push(v.clone()),
            }
        }
    }
    let scheme = get(&lbls, "__scheme__");
    if scheme != "http" && scheme != "https" {
        return Err(TargetError::Scheme(scheme));
    }
    let duration = |label: &'static str| {
        crate::units::parse_duration(&get(&lbls, label))
            .map_err(|source| TargetError::Duration { label, source })
    };
    let interval = duration("__scrape_interval__")?;
    let timeout = duration("__scrape_timeout__")?;
    if interval.is_zero() || timeout.is_zero() || timeout > interval {
        return Err(TargetError::Timeout { timeout, interval });
    }
    let url = url_from(&scheme, &address, &get(&lbls, "__metrics_path__"), &params)?;
    lbls.retain(|(k, v)| !k.starts_with("__") && !v.is_empty());
    lbls.sort();
    Ok(Some((lbls, url, interval, timeout)))
}
