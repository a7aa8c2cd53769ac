//! A realistic control-plane `/metrics` page, as the ACK One metrics
//! aggregator serves it: kube-apiserver request counters and latency
//! histograms (with empty label values), etcd, scheduler and
//! controller-manager metrics, a summary, process/go metrics, HELP/TYPE
//! lines and a label value that needs escaping. `round` moves the counters
//! so that consecutive scrapes differ.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// One exposed series: its labels (with `__name__`) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub struct Payload {
    pub text: String,
    pub series: Vec<Series>,
}

struct W {
    text: String,
    series: Vec<Series>,
    /// The type of the last `# TYPE` line.
    kind: String,
}

/// A label value as Prometheus 3 (and the agent by default,
/// `global.prometheus_compatibility: 3`) stores it: `le` under a histogram
/// and `quantile` under a summary in float form. This page's bounds are
/// plain decimals, `+Inf` or integers; integers gain `.0`.
fn stored(kind: &str, name: &str, value: &str) -> String {
    let float_label =
        (kind == "histogram" && name == "le") || (kind == "summary" && name == "quantile");
    if float_label && !value.is_empty() && value.bytes().all(|c| c.is_ascii_digit()) {
        format!("{value}.0")
    } else {
        value.to_string()
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:e}")
    }
}

impl W {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.kind = kind.to_string();
        self.text
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut line = name.to_string();
        if !labels.is_empty() {
            line.push('{');
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
                .collect();
            line.push_str(&parts.join(","));
            line.push('}');
        }
        line.push(' ');
        line.push_str(&fmt_value(value));
        line.push('\n');
        self.text.push_str(&line);
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), stored(&self.kind, k, v)))
            .collect();
        l.insert("__name__".into(), name.into());
        self.series.push(Series { labels: l, value });
    }
}

/// The page for scrape number `round`.
pub fn control_plane(round: u64) -> Payload {
    let mut w = W {
        text: String::new(),
        series: Vec::new(),
        kind: String::new(),
    };
    let r = round as f64;
    let verbs = ["GET", "LIST", "WATCH", "POST", "PATCH", "DELETE"];
    let resources = [
        "pods",
        "nodes",
        "configmaps",
        "leases",
        "deployments",
        "events",
    ];
    w.family("apiserver_request_total", "counter", "[STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.");
    for (i, verb) in verbs.iter().enumerate() {
        for (j, res) in resources.iter().enumerate() {
            let group = if *res == "deployments" {
                "apps"
            } else if *res == "leases" {
                "coordination.k8s.io"
            } else {
                ""
            };
            let code = if (i + j) % 5 == 0 { "404" } else { "200" };
            let scope = if *res == "nodes" {
                "cluster"
            } else {
                "namespace"
            };
            w.sample(
                "apiserver_request_total",
                &[
                    ("code", code),
                    ("component", "apiserver"),
                    ("dry_run", ""),
                    ("group", group),
                    ("resource", res),
                    ("scope", scope),
                    ("subresource", ""),
                    ("verb", verb),
                    ("version", "v1"),
                ],
                (1000 * (i + 1) + 37 * j) as f64 + 17.0 * r,
            );
        }
    }
    // Kubernetes' own bucket layouts (k8s.io/apiserver endpoints/metrics and
    // storage/etcd3/metrics), so that thinning them measures what it would
    // on a real API server.
    let buckets = [
        "0.005", "0.025", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4", "0.45",
        "0.5", "0.6", "0.7", "0.8", "0.9", "1", "1.25", "1.5", "1.75", "2", "2.5", "3", "3.5", "4",
        "4.5", "5", "6", "7", "8", "9", "10", "15", "20", "25", "30", "40", "50", "60", "+Inf",
    ];
    let etcd_buckets = [
        "0.005", "0.025", "0.05", "0.1", "0.2", "0.4", "0.6", "0.8", "1", "1.25", "1.5", "2", "3",
        "4", "5", "6", "8", "10", "15", "20", "30", "45", "60", "+Inf",
    ];
    w.family("apiserver_request_duration_seconds", "histogram", "[STABLE] Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.");
    for verb in ["GET", "LIST"] {
        for res in ["pods", "nodes"] {
            let base = [
                ("component", "apiserver"),
                ("dry_run", ""),
                ("group", ""),
                ("resource", res),
                ("scope", "resource"),
                ("subresource", ""),
                ("verb", verb),
                ("version", "v1"),
            ];
            let mut cum = 0.0;
            for (k, le) in buckets.iter().enumerate() {
                cum += (40 / (k + 1)) as f64 + r;
                let mut l = base.to_vec();
                l.push(("le", le));
                w.sample("apiserver_request_duration_seconds_bucket", &l, cum);
            }
            w.sample(
                "apiserver_request_duration_seconds_sum",
                &base,
                123.456 + r * 0.5,
            );
            w.sample("apiserver_request_duration_seconds_count", &base, cum);
        }
    }
    w.family(
        "etcd_request_duration_seconds",
        "histogram",
        "[ALPHA] Etcd request latency in seconds for each operation and object type.",
    );
    for op in ["get", "list", "update"] {
        let base = [("operation", op), ("type", "/registry/pods")];
        let mut cum = 0.0;
        for le in etcd_buckets {
            cum += 3.0 + r;
            let mut l = base.to_vec();
            l.push(("le", le));
            w.sample("etcd_request_duration_seconds_bucket", &l, cum);
        }
        w.sample(
            "etcd_request_duration_seconds_sum",
            &base,
            1.5e-2 * (1.0 + r),
        );
        w.sample("etcd_request_duration_seconds_count", &base, cum);
    }
    w.family(
        "etcd_db_total_size_in_bytes",
        "gauge",
        "[ALPHA] Total size of the etcd database file physically allocated in bytes.",
    );
    w.sample(
        "etcd_db_total_size_in_bytes",
        &[("endpoint", "https://10.0.0.5:2379")],
        2.3592960e7,
    );
    w.family(
        "apiserver_storage_objects",
        "gauge",
        "[STABLE] Number of stored objects at the time of last check split by kind.",
    );
    for (res, n) in [
        ("pods", 412.0),
        ("nodes", 6.0),
        ("events.events.k8s.io", 1893.0),
    ] {
        w.sample("apiserver_storage_objects", &[("resource", res)], n);
    }
    w.family(
        "scheduler_pending_pods",
        "gauge",
        "[STABLE] Number of pending pods, by the queue type.",
    );
    for q in ["active", "backoff", "unschedulable", "gated"] {
        w.sample(
            "scheduler_pending_pods",
            &[("queue", q)],
            if q == "active" { r % 3.0 } else { 0.0 },
        );
    }
    w.family(
        "scheduler_schedule_attempts_total",
        "counter",
        "[STABLE] Number of attempts to schedule pods, by the result.",
    );
    for (res, n) in [
        ("scheduled", 5021.0),
        ("unschedulable", 12.0),
        ("error", 0.0),
    ] {
        w.sample(
            "scheduler_schedule_attempts_total",
            &[("profile", "default-scheduler"), ("result", res)],
            n + r,
        );
    }
    w.family(
        "workqueue_depth",
        "gauge",
        "[ALPHA] Current depth of workqueue",
    );
    for name in [
        "deployment",
        "replicaset",
        "node_lifecycle_controller",
        "service",
        "garbage_collector_attempt_to_delete",
    ] {
        w.sample(
            "workqueue_depth",
            &[("name", name)],
            ((name.len() as u64 + round) % 4) as f64,
        );
    }
    w.family(
        "cloudprovider_alibaba_api_request_duration_seconds",
        "summary",
        "Latency of Alibaba Cloud API calls (cloud-controller-manager).",
    );
    for q in ["0.5", "0.9", "0.99"] {
        w.sample(
            "cloudprovider_alibaba_api_request_duration_seconds",
            &[("api", "DescribeLoadBalancers"), ("quantile", q)],
            0.12 * q.parse::<f64>().unwrap_or(1.0),
        );
    }
    w.sample(
        "cloudprovider_alibaba_api_request_duration_seconds_sum",
        &[("api", "DescribeLoadBalancers")],
        42.5 + r,
    );
    w.sample(
        "cloudprovider_alibaba_api_request_duration_seconds_count",
        &[("api", "DescribeLoadBalancers")],
        355.0 + r,
    );
    w.family("leader_election_master_status", "gauge", "[ALPHA] Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.");
    w.sample(
        "leader_election_master_status",
        &[("name", "kube-controller-manager")],
        1.0,
    );
    w.sample(
        "leader_election_master_status",
        &[("name", "kube-scheduler")],
        1.0,
    );
    w.family("aggregator_unavailable_apiservice", "gauge", "[ALPHA] Gauge of APIServices which are marked as unavailable broken down by APIService name.");
    w.sample(
        "aggregator_unavailable_apiservice",
        &[
            ("name", "v1beta1.metrics.k8s.io"),
            (
                "reason",
                "FailedDiscoveryCheck: \"timeout\" at C:\\path\nretrying",
            ),
        ],
        0.0,
    );
    w.family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    );
    w.sample("process_cpu_seconds_total", &[], 8123.45 + r);
    w.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    w.sample("process_resident_memory_bytes", &[], 1.073741824e9);
    w.family(
        "go_goroutines",
        "gauge",
        "Number of goroutines that currently exist.",
    );
    w.sample("go_goroutines", &[], 1432.0);
    w.family("apiserver_flowcontrol_seat_fair_frac", "gauge", "[ALPHA] Fair fraction of server's concurrency to allocate to each priority level that can use it");
    w.sample("apiserver_flowcontrol_seat_fair_frac", &[], 2.5e-1);
    Payload {
        text: w.text,
        series: w.series,
    }
}
