//! The Grafana dashboards in `deploy/dashboards/` (issue 13): well-formed,
//! shipped as ConfigMaps the kube-prometheus-stack sidecar loads, every
//! query valid PromQL (`promtool check rules` on a rule file made of them),
//! and every query returning data from a real Prometheus that receives what
//! the agent writes and scrapes the agent's `/metrics`, with the agent
//! running the shipped ACK One config (its job split included) against a
//! control-plane target, a target that is down, a receiver that refuses
//! everything and one that is not there (so failures, retries, drops and
//! refusals have data too). The ACK config runs with its opt-in
//! control-plane profile on, so the thinning is proven not to cost a panel.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::payload::control_plane;
use common::prom::{prometheus_bin, query, require_prometheus, start_prometheus_on};
use common::schema::{documents, kustomize};
use common::{MtlsTarget, Pki, Receiver, RelayProc, http_get};

const DASHBOARDS: [&str; 2] = ["metrics-relay.json", "ack-control-plane.json"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dashboard(file: &str) -> (String, Value) {
    let p = root().join("deploy/dashboards").join(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    (text, v)
}

/// One query of a dashboard: where it is, and its PromQL as written.
struct Query {
    place: String,
    expr: String,
}

/// Every panel query and every query variable (`label_values(m, l)` as the
/// PromQL it stands for).
fn queries(file: &str, d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!("{file}: panel {:?} ({})", p["title"], t["refId"]),
                expr: t["expr"].as_str().unwrap().to_string(),
            });
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{file}: variable {}: {q}", v["name"]));
        let (metric, label) = inner.rsplit_once(',').unwrap();
        out.push(Query {
            place: format!("{file}: variable {}", v["name"]),
            expr: format!("count by ({}) ({metric})", label.trim()),
        });
    }
    out
}

/// Grafana's variables, given the values of this test's world.
fn substitute(expr: &str, cluster: &str) -> String {
    expr.replace("$__rate_interval", "20s")
        .replace("$job", "metrics-relay")
        .replace("$instance", ".*")
        .replace("$cluster", cluster)
}

#[test]
fn dashboards_are_well_formed_and_shipped_for_the_grafana_sidecar() {
    let mut uids = BTreeSet::new();
    for file in DASHBOARDS {
        let (_, d) = dashboard(file);
        let uid = d["uid"].as_str().unwrap();
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} twice");
        assert!(
            uid.len() <= 40,
            "{file}: Grafana uids are at most 40 characters"
        );
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            vars[0], "datasource",
            "{file}: a data source variable first"
        );
        let mut ids = BTreeSet::new();
        let mut panels = 0;
        for p in d["panels"].as_array().unwrap() {
            let title = &p["title"];
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: panel id twice"
            );
            let g = &p["gridPos"];
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{file}: {title} is wider than the grid"
            );
            if p["type"] == "row" {
                continue;
            }
            panels += 1;
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file}: {title}");
            assert!(
                p["description"].as_str().is_some_and(|t| !t.is_empty()),
                "{file}: {title} has no description"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            for t in targets {
                let expr = t["expr"].as_str().unwrap();
                // Every variable used is defined (or Grafana's own).
                for part in expr.split('$').skip(1) {
                    let name: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        name == "__rate_interval" || vars.contains(&name.as_str()),
                        "{file}: {title}: ${name} is not a variable"
                    );
                }
            }
        }
        assert!(panels >= 10, "{file}: {panels} panels");
    }

    // The kustomize output of deploy/ and of every overlay carries them, as
    // the Grafana sidecar wants them: label grafana_dashboard="1", a fixed
    // name, the files unchanged.
    let mut dirs = vec![root().join("deploy"), root().join("deploy/dashboards")];
    for e in std::fs::read_dir(root().join("deploy/overlays")).unwrap() {
        dirs.push(e.unwrap().path());
    }
    for dir in dirs {
        let docs = documents(&kustomize(&dir));
        let cms: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1"
            })
            .collect();
        assert_eq!(cms.len(), 1, "{}: one dashboards ConfigMap", dir.display());
        assert_eq!(cms[0]["metadata"]["name"], "metrics-relay-dashboards");
        for file in DASHBOARDS {
            assert_eq!(
                cms[0]["data"][file].as_str(),
                Some(dashboard(file).0.as_str()),
                "{}: {file}",
                dir.display()
            );
        }
    }
}

/// `promtool`, next to the Prometheus the end-to-end tests use.
fn promtool() -> PathBuf {
    let bin = prometheus_bin().expect("no `prometheus` binary: scripts/test.sh installs Debian's");
    let p = bin.with_file_name("promtool");
    assert!(p.is_file(), "no promtool next to {}", bin.display());
    p
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n");
    let mut n = 0;
    for file in DASHBOARDS {
        let (_, d) = dashboard(file);
        rules.push_str(&format!(
            "  - name: {}\n    rules:\n",
            d["uid"].as_str().unwrap()
        ));
        for q in queries(file, &d) {
            n += 1;
            let expr = substitute(&q.expr, ".*");
            rules.push_str(&format!(
                "      - record: dashboard:query_{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let f = dir.path().join("dashboards.rules.yml");
    std::fs::write(&f, &rules).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("{n} rules found")), "{said}");
    println!("promtool: {n} dashboard queries are valid rules");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data() {
    let prom_bin = require_prometheus().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let aggregator = MtlsTarget::start(&pki, control_plane(1).text).await;
    // The control plane moves on: counters grow, as rate() needs.
    let behavior = aggregator.behavior.clone();
    let ticker = tokio::spawn(async move {
        for round in 2.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            behavior.lock().unwrap().body = control_plane(round).text;
        }
    });
    let refusing = Receiver::start().await;
    refusing
        .script
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n((400, None), 100_000));
    let (_absent_fd, absent) = common::refused_port();
    let (_dead_fd, dead_target) = common::refused_port();
    let kubeconfig = pki.kubeconfig(dir.path(), "https://127.0.0.1:6443");

    // The shipped ACK One config, scraping every second, with a target that
    // is down and three destinations: Prometheus, a receiver that refuses
    // everything (400), and one that is not there (short max_age: drops).
    // With its opt-in control-plane profile and family budget on: the
    // thinned series must still answer every dashboard query and alert
    // (without them the agent sends a superset of these series).
    let cfg = crate::budgets::ack_config_for_test(
        &kubeconfig,
        &format!("\"{}\", \"127.0.0.1:{dead_target}\"", aggregator.addr),
        &[],
    );
    let (head, rest) = cfg.split_once("\nremote_write:\n").unwrap();
    let server = &rest[rest.find("\nserver:\n").unwrap()..];
    let q = "queue_config: {batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 500ms}";
    // The receiving (and rule-evaluating) Prometheus first; it scrapes the
    // agent once the agent has its port.
    let rule_doc = documents(
        &std::fs::read_to_string(root().join("deploy/base/prometheusrule.yaml")).unwrap(),
    )
    .remove(0);
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        serde_json::json!({"groups": rule_doc["spec"]["groups"]}).to_string(),
    )
    .unwrap();
    let prom_dir = dir.path().join("prometheus");
    let prom_config = |scrape: &str| {
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\nrule_files: ['{}']\n{scrape}",
            rules.display()
        )
    };
    let prom = start_prometheus_on(&prom_bin, &prom_dir, &prom_config(""), 0).await;
    let cfg = format!(
        "{head}\nremote_write:\n  - {{url: \"{}/api/v1/write\", name: prometheus, {q}}}\n  - {{url: \"{}\", name: refusing, {q}}}\n  - {{url: \"http://127.0.0.1:{absent}/api/v1/write\", name: absent, {q}, queue: {{max_age: 3s}}}}\n{server}",
        prom.url,
        refusing.url()
    );
    let relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    let relay_addr = relay.admin.trim_start_matches("http://").to_string();
    // The shipped alert rules, evaluated by this Prometheus, which scrapes
    // the agent as the ServiceMonitor does (job metrics-relay).
    prom.reload(
        &prom_dir,
        &prom_config(&format!(
            "scrape_configs:\n  - job_name: metrics-relay\n    static_configs: [{{targets: ['{relay_addr}']}}]\n"
        )),
    )
    .await;

    let mut all = Vec::new();
    for file in DASHBOARDS {
        let (_, d) = dashboard(file);
        all.extend(queries(file, &d));
    }
    let started = Instant::now();
    let mut empty: Vec<&Query> = all.iter().collect();
    while !empty.is_empty() && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut still = Vec::new();
        for q in empty {
            let result = query(&prom, &substitute(&q.expr, "ack-one-prod")).await;
            if result.is_empty() {
                still.push(q);
            }
        }
        empty = still;
    }
    ticker.abort();
    assert!(
        empty.is_empty(),
        "queries without data after {:.0} s:\n{}\nagent log:\n{}",
        started.elapsed().as_secs_f64(),
        empty
            .iter()
            .map(|q| format!("  {}: {}", q.place, q.expr))
            .collect::<Vec<_>>()
            .join("\n"),
        relay.log()
    );
    println!(
        "{} dashboard queries returned data after {:.0} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    // Failures are classified: the target that is down and the destination
    // that is not there both refuse connections.
    let m = relay.metrics().await;
    for family in [
        "metrics_relay_scrape_failures_total",
        "metrics_relay_remote_write_batches_retried_total",
    ] {
        assert!(
            m.lines()
                .any(|l| l.starts_with(family) && l.contains("reason=\"connection_refused\"")),
            "{family} with reason=\"connection_refused\":\n{m}"
        );
    }
    // The target-down alert names the target that is down (pending for its
    // 5 minutes, its annotations already rendered).
    let dead = format!("127.0.0.1:{dead_target}");
    let mut alert = None;
    for _ in 0..100 {
        let (_, body) = http_get(&format!("{}/api/v1/alerts", prom.url))
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        alert = v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == "MetricsRelayTargetDown")
            .cloned();
        if alert.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alert = alert.expect("MetricsRelayTargetDown did not fire for the dead target");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains(&dead) && summary.contains("ack-control-plane"),
        "the alert does not name the target that is down ({dead}): {summary}"
    );
    // The control-plane dashboard sees the job split the shipped config makes.
    let jobs: BTreeSet<String> = query(&prom, "count by (job) ({cluster=\"ack-one-prod\"})")
        .await
        .into_iter()
        .filter_map(|(l, _)| l.get("job").cloned())
        .collect();
    for j in [
        "kube-apiserver",
        "kube-scheduler",
        "kube-controller-manager",
        "ack-control-plane",
    ] {
        assert!(jobs.contains(j), "{j} in {jobs:?}");
    }
    drop(prom);
}
