//! `metrics-relay explain` and the `/explain` page: why a target has the
//! labels it has, and what becomes of one series on its way to each
//! destination, step by step.
//!
//! For each target of a job (or the one named by its address or URL) it
//! prints the labels before `relabel_configs`, then every rule with what it
//! changed, kept or dropped, and the scrape URL and target labels that
//! result. Given a series (`name{labels}` as a target exposes it), it goes
//! on: the target's labels merged (`honor_labels`), every metric-relabel
//! rule (the profile's first), the external labels, then each destination's
//! `write_relabel_configs`, to the labels sent. It runs the code the agent
//! runs (`relabel::process_traced`, the target resolution, the series
//! cache's label path and write relabeling, each with a step callback), so
//! what it shows cannot drift from what happens.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{Config, ScrapeConfig};
use crate::discovery::Found;
use crate::labels::Labels;
use crate::relabel::{Action, RelabelConfig};
use crate::scrape::target as t;

/// Why an explanation could not be given.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(
        "no target matches {wanted:?}: give a job name, a target address or a scrape URL (jobs: {jobs})"
    )]
    NoTarget { wanted: String, jobs: String },
    #[error(
        "--series {series:?} is not a series as a target exposes it (name{{label=\"value\",...}}): {reason}"
    )]
    Series { series: String, reason: String },
}

/// Labels as `{a="1", b="2"}`.
fn show(l: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = l.iter().collect();
    sorted.sort();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// What one rule is, in the config's words (only the fields its action reads).
fn describe(r: &RelabelConfig) -> String {
    let action = serde_json::to_value(r.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut s = format!("action: {action}");
    let uses_sources = !matches!(
        r.action,
        Action::LabelMap | Action::LabelDrop | Action::LabelKeep
    );
    if uses_sources {
        let _ = write!(s, ", source_labels: [{}]", r.source_labels.join(", "));
    }
    if !matches!(
        r.action,
        Action::KeepEqual
            | Action::DropEqual
            | Action::Lowercase
            | Action::Uppercase
            | Action::HashMod
    ) {
        let _ = write!(
            s,
            ", regex: {:?}",
            format!("{:?}", r.regex).trim_matches('"')
        );
    }
    if matches!(
        r.action,
        Action::Replace
            | Action::KeepEqual
            | Action::DropEqual
            | Action::Lowercase
            | Action::Uppercase
            | Action::HashMod
    ) {
        let _ = write!(s, ", target_label: {:?}", r.target_label);
    }
    if matches!(r.action, Action::Replace | Action::LabelMap) {
        let _ = write!(s, ", replacement: {:?}", r.replacement);
    }
    if r.action == Action::HashMod {
        let _ = write!(s, ", modulus: {}", r.modulus);
    }
    s
}

/// What a rule did to a label set: the changes, or "no change", or "DROPPED".
fn change(before: &Labels, after: Option<&Labels>) -> String {
    let Some(after) = after else {
        return "DROPPED".into();
    };
    let get = |l: &Labels, n: &str| l.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut parts = Vec::new();
    for (n, v) in after {
        match get(before, n) {
            None => parts.push(format!("+{n}={v:?}")),
            Some(old) if old != *v => parts.push(format!("{n}: {old:?} -> {v:?}")),
            Some(_) => {}
        }
    }
    for (n, v) in before {
        if get(after, n).is_none() {
            parts.push(format!("-{n}={v:?}"));
        }
    }
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join(", ")
    }
}

/// Writes one line per relabel rule as the production code reports its
/// steps: the rule's name, what it is and what it changed against the
/// labels before it.
struct Tracer<'a, N> {
    out: &'a mut String,
    indent: &'static str,
    before: Labels,
    rules: &'a [RelabelConfig],
    name: N,
}

impl<N: Fn(usize) -> String> Tracer<'_, N> {
    fn step(&mut self, i: usize, after: Option<&Labels>) {
        let what = self.rules.get(i).map(describe).unwrap_or_default();
        let _ = writeln!(
            self.out,
            "{}{} ({what}): {}",
            self.indent,
            (self.name)(i),
            change(&self.before, after)
        );
        if let Some(a) = after {
            self.before = a.clone();
        }
    }
}

/// What the running agent explains from (`/explain`): the config applied
/// last and what discovery found for it, published by the relay whenever
/// either changes, so the page reads no file.
#[derive(Default)]
pub(crate) struct Running {
    pub cfg: Arc<Config>,
    pub found: Found,
}

/// Shared between the relay (writes) and the admin server (reads).
pub(crate) type SharedRunning = Arc<std::sync::RwLock<Arc<Running>>>;

/// [`explain`] with the config's discovery files read now (as `probe` does).
pub fn explain_config(
    cfg: &Config,
    wanted: &str,
    series: Option<&str>,
) -> Result<String, ExplainError> {
    let (found, _) = crate::discovery::discover_once(cfg, &crate::telemetry::Metrics::new());
    explain(cfg, &found, wanted, series)
}

/// The explanation of `wanted` (a job, a target address, or a URL) and, if
/// given, of one `series` on each of its targets.
pub(crate) fn explain(
    cfg: &Config,
    found: &Found,
    wanted: &str,
    series: Option<&str>,
) -> Result<String, ExplainError> {
    let page = match series {
        Some(s) => {
            let text = format!("{} 0\n", s.trim());
            let mut p = crate::exposition::Parser::new(text.as_bytes());
            match p.next() {
                Some(Ok(_)) if p.next().is_none() => Some(text),
                Some(Err(e)) => {
                    return Err(ExplainError::Series {
                        series: s.into(),
                        reason: e.to_string(),
                    });
                }
                _ => {
                    return Err(ExplainError::Series {
                        series: s.into(),
                        reason: "one series wanted".into(),
                    });
                }
            }
        }
        None => None,
    };
    let ext = t::external_labels(cfg);
    let float_labels = cfg.global.prometheus_compatibility.float_label_values();
    let mut out = String::new();
    let mut matched = 0;
    for (i, sc) in cfg.scrape_configs.iter().enumerate() {
        let statics = t::static_groups(sc);
        let discovered = found.get(&i).map(Vec::as_slice).unwrap_or_default();
        for (g, source) in statics
            .iter()
            .map(|g| (g, "static_configs".to_string()))
            .chain(discovered.iter().map(|g| {
                let file = g
                    .labels
                    .iter()
                    .find(|(k, _)| k == "__meta_filepath")
                    .map_or("discovery".to_string(), |(_, v)| {
                        format!("discovered from {v}")
                    });
                (g, file)
            }))
        {
            for addr in &g.targets {
                let mut text = String::new();
                let start = t::target_start_labels(sc, &g.labels, addr);
                let _ = writeln!(
                    text,
                    "target {addr} of job {:?} ({source})\n  before relabel_configs: {}",
                    sc.job_name,
                    show(&start)
                );
                if sc.relabel_configs.is_empty() {
                    let _ = writeln!(text, "  relabel_configs: none");
                }
                let mut tracer = Tracer {
                    out: &mut text,
                    indent: "  ",
                    before: start,
                    rules: &sc.relabel_configs,
                    name: |j| format!("relabel_configs[{j}]"),
                };
                let resolved =
                    t::resolve_target_traced(sc, &g.labels, addr, |i, a| tracer.step(i, a));
                let url = match &resolved {
                    Ok(Some((_, url, _, _))) => url.to_string(),
                    _ => String::new(),
                };
                let instance = match &resolved {
                    Ok(Some((tl, ..))) => tl
                        .iter()
                        .find(|(k, _)| k == "instance")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let hit = wanted == sc.job_name
                    || wanted == addr
                    || wanted == instance
                    || (!url.is_empty() && (wanted == url || url.starts_with(wanted)));
                if !hit {
                    continue;
                }
                matched += 1;
                match resolved {
                    Ok(None) => {
                        let _ = writeln!(text, "  => dropped by relabel_configs: not scraped");
                    }
                    Err(e) => {
                        let _ = writeln!(text, "  => not scraped: {e}");
                    }
                    Ok(Some((tl, url, interval, timeout))) => {
                        let _ = writeln!(
                            text,
                            "  => scraped as {url} every {} (timeout {}); target labels {}",
                            crate::units::format_duration(interval),
                            crate::units::format_duration(timeout),
                            show(&tl)
                        );
                        if let Some(page) = &page {
                            let metric_relabel: std::sync::Arc<[RelabelConfig]> =
                                sc.effective_metric_relabel().into();
                            let ctx =
                                t::target_context(sc, tl, &ext, float_labels, &metric_relabel);
                            explain_series(&mut text, cfg, sc, &ctx, page);
                        }
                    }
                }
                out.push_str(&text);
            }
        }
    }
    if matched == 0 {
        return Err(ExplainError::NoTarget {
            wanted: wanted.into(),
            jobs: cfg
                .scrape_configs
                .iter()
                .map(|s| format!("{:?}", s.job_name))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(out)
}

/// One series (the only line of `page`) through a target's label path and
/// every destination's write relabeling.
fn explain_series(
    out: &mut String,
    cfg: &Config,
    sc: &ScrapeConfig,
    ctx: &crate::series::TargetContext,
    page: &str,
) {
    let mut p =
        crate::exposition::Parser::new(page.as_bytes()).float_label_values(ctx.float_label_values);
    let Some(Ok(s)) = p.next() else {
        return;
    };
    let _ = writeln!(out, "  series {}", String::from_utf8_lossy(s.series));
    let profile = sc.profile.and_then(|pr| {
        pr.metric_relabel_configs()
            .ok()
            .map(|r| (pr.name(), r.len()))
    });
    let from_profile = profile.map_or(0, |(_, n)| n);
    // The rules' changes are shown against the label set before metric
    // relabeling (target labels merged), which the same pass reports first.
    let tracer = std::cell::RefCell::new(Tracer {
        out: &mut *out,
        indent: "    ",
        before: Labels::new(),
        rules: &ctx.metric_relabel,
        name: |j| match profile {
            Some((name, n)) if j < n => format!("profile {name} rule {j}"),
            _ => format!("metric_relabel_configs[{}]", j - from_profile),
        },
    });
    let result = ctx.series_labels_traced(
        &s,
        |merged| {
            let mut t = tracer.borrow_mut();
            let _ = writeln!(
                t.out,
                "    with the target's labels (honor_labels: {}): {}",
                ctx.honor_labels,
                show(merged)
            );
            if t.rules.is_empty() {
                let _ = writeln!(t.out, "    metric relabeling: none");
            }
            t.before = merged.clone();
        },
        |i, a| tracer.borrow_mut().step(i, a),
    );
    drop(tracer);
    let labels = match result {
        Err(e) => {
            let _ = writeln!(out, "    => error: {e} (the whole scrape fails: up 0)");
            return;
        }
        Ok(None) => {
            let _ = writeln!(out, "    => dropped by metric relabeling: sent nowhere");
            return;
        }
        Ok(Some(l)) => l,
    };
    let _ = writeln!(
        out,
        "    after metric relabeling, with external labels: {}",
        show(&labels)
    );
    let budget = ctx.family_budget;
    if budget.enabled() {
        let _ = writeln!(
            out,
            "    per-family budget: series_per_family_limit {}, buckets_per_histogram_limit {} (0 = none); whether its family is over is decided each scrape: see /targets",
            budget.series, budget.buckets
        );
    }
    if cfg.remote_write.is_empty() {
        let _ = writeln!(
            out,
            "    => no remote_write: served on /relay/metrics as {}",
            show(&labels)
        );
    }
    for (k, rw) in cfg.remote_write.iter().enumerate() {
        let name = rw.queue_name(k);
        let _ = writeln!(out, "    destination {name:?} ({})", rw.url);
        if rw.write_relabel_configs.is_empty() {
            let _ = writeln!(out, "      write_relabel_configs: none");
        }
        let mut tracer = Tracer {
            out: &mut *out,
            indent: "      ",
            before: labels.clone(),
            rules: &rw.write_relabel_configs,
            name: |j| format!("write_relabel_configs[{j}]"),
        };
        let sent = crate::remote_write::write_relabel::relabel_series(
            labels.clone(),
            &rw.write_relabel_configs,
            |i, a| tracer.step(i, a),
        );
        match sent {
            Some(l) => {
                let _ = writeln!(out, "      => sent as {}", show(&l));
            }
            None => {
                let _ = writeln!(out, "      => not sent there");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Config {
        Config::from_yaml(yaml).unwrap()
    }

    const ACK: &str = r#"
global: {external_labels: {cluster: c1}}
scrape_configs:
  - job_name: ack
    scheme: https
    profile: control-plane
    static_configs: [{targets: ["10.0.0.1:6443"], labels: {zone: a}}]
    relabel_configs:
      - {source_labels: [zone], regex: b, action: drop}
      - {source_labels: [__address__], regex: '([^:]+):.*', target_label: node, replacement: '$1'}
    metric_relabel_configs:
      - {source_labels: [__name__], regex: 'apiserver_.*', target_label: job, replacement: kube-apiserver}
remote_write:
  - {url: "http://127.0.0.1:1/w", name: all}
  - url: "http://127.0.0.1:2/w"
    name: no-apiserver
    write_relabel_configs: [{source_labels: [job], regex: kube-apiserver, action: drop}]
"#;

    #[test]
    fn a_target_and_a_series_step_by_step() {
        let c = cfg(ACK);
        let e = explain(
            &c,
            &Found::default(),
            "ack",
            Some("apiserver_request_total{code=\"200\",job=\"x\"}"),
        )
        .unwrap();
        for want in [
            "target 10.0.0.1:6443 of job \"ack\" (static_configs)",
            "relabel_configs[0] (action: drop, source_labels: [zone], regex: \"b\"): no change",
            "relabel_configs[1] (action: replace, source_labels: [__address__], regex: \"([^:]+):.*\", target_label: \"node\", replacement: \"$1\"): +node=\"10.0.0.1\"",
            "=> scraped as https://10.0.0.1:6443/metrics every 1m (timeout 10s); target labels {instance=\"10.0.0.1:6443\", job=\"ack\", node=\"10.0.0.1\", zone=\"a\"}",
            "with the target's labels (honor_labels: false): {__name__=\"apiserver_request_total\", code=\"200\", exported_job=\"x\", instance=\"10.0.0.1:6443\", job=\"ack\", node=\"10.0.0.1\", zone=\"a\"}",
            "profile control-plane rule 0 (action: drop",
            "metric_relabel_configs[0] (action: replace, source_labels: [__name__], regex: \"apiserver_.*\", target_label: \"job\", replacement: \"kube-apiserver\"): job: \"ack\" -> \"kube-apiserver\"",
            "after metric relabeling, with external labels: {__name__=\"apiserver_request_total\", cluster=\"c1\", code=\"200\", exported_job=\"x\", instance=\"10.0.0.1:6443\", job=\"kube-apiserver\", node=\"10.0.0.1\", zone=\"a\"}",
            "destination \"all\" (http://127.0.0.1:1/w)\n      write_relabel_configs: none\n      => sent as",
            "write_relabel_configs[0] (action: drop, source_labels: [job], regex: \"kube-apiserver\"): DROPPED\n      => not sent there",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn a_thinned_bucket_and_a_dropped_target_are_said() {
        let c = cfg(ACK);
        let e = explain(
            &c,
            &Found::default(),
            "10.0.0.1:6443",
            Some("apiserver_request_duration_seconds_bucket{le=\"0.4\",verb=\"GET\"}"),
        )
        .unwrap();
        assert!(
            e.contains("regex: \"apiserver_request_duration_seconds_bucket;"),
            "{e}"
        );
        assert!(
            e.contains("): DROPPED\n    => dropped by metric relabeling: sent nowhere"),
            "{e}"
        );
        let c = cfg(&ACK.replace("labels: {zone: a}", "labels: {zone: b}"));
        let e = explain(&c, &Found::default(), "ack", None).unwrap();
        assert!(
            e.contains(
                "relabel_configs[0] (action: drop, source_labels: [zone], regex: \"b\"): DROPPED"
            ),
            "{e}"
        );
        assert!(
            e.contains("=> dropped by relabel_configs: not scraped"),
            "{e}"
        );
    }

    #[test]
    fn what_cannot_be_explained_is_said() {
        let c = cfg(ACK);
        let e = explain(&c, &Found::default(), "nope", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no target matches \"nope\"") && e.contains("\"ack\""),
            "{e}"
        );
        let e = explain(&c, &Found::default(), "ack", Some("m{a="))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a series"), "{e}");
        // By URL, too.
        assert!(explain(&c, &Found::default(), "https://10.0.0.1:6443/metrics", None).is_ok());
    }
}
