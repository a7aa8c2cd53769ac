//! The differential test: one real Prometheus scrapes the mTLS target
//! directly while metrics-relay scrapes the same target, with the very same
//! `scrape_configs` YAML, and remote-writes into a second Prometheus. Over
//! several scrapes — with a relabel config, a dropped metric family, a series
//! that disappears and a page that changes — both TSDBs must answer the same
//! queries with the same series and values.
//!
//! Each comparison runs once per Prometheus major version the tests are
//! given (scripts/test.sh: Prometheus 3 and Debian's 2.42), both sides the
//! same version and the agent set to it (`global.prometheus_compatibility`).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::prom::{Prometheus, every_major_version, query, start_prometheus};
use common::{MtlsTarget, Pki, RelayProc, payload};

type Answer = BTreeMap<BTreeMap<String, String>, u64>;

async fn answer(p: &Prometheus, q: &str) -> Answer {
    query(p, q)
        .await
        .into_iter()
        .map(|(l, v)| (l, v.to_bits()))
        .collect()
}

async fn wait_until(p: &Prometheus, q: &str, what: &str) {
    for _ in 0..300 {
        if !query(p, q).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {q} stayed empty on {}", p.url);
}

/// `scrape_configs` for one mTLS target, every `interval`.
fn simple_scrape(job: &str, interval: &str, pki: &Pki, target: &MtlsTarget) -> String {
    format!(
        "scrape_configs:\n  - job_name: {job}\n    scrape_interval: {interval}\n    scrape_timeout: {interval}\n    scheme: https\n    tls_config: {{ca_file: {}, cert_file: {}, key_file: {}, server_name: localhost}}\n    static_configs: [{{targets: [\"{}\"]}}]\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
        target.addr,
    )
}

/// The two sides of every comparison, with the very same `scrape_configs`:
/// a Prometheus scraping directly, and metrics-relay remote-writing into a
/// second Prometheus.
async fn both(
    bin: &std::path::Path,
    major: u8,
    dir: &std::path::Path,
    scrape: &str,
) -> (Prometheus, Prometheus, RelayProc) {
    let direct = start_prometheus(bin, &dir.join("direct"), scrape).await;
    let receiver = start_prometheus(
        bin,
        &dir.join("receiver"),
        "global:\n  scrape_interval: 1h\n",
    )
    .await;
    let relay_cfg = format!(
        "global:\n  prometheus_compatibility: {major}\n{scrape}remote_write:\n  - url: {}/api/v1/write\n    queue_config: {{batch_send_deadline: 200ms}}\n",
        receiver.url
    );
    let relay = RelayProc::start(&dir.join("relay"), &relay_cfg).await;
    (direct, receiver, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_prometheus_store_the_same() {
    for (bin, major) in every_major_version() {
        store_the_same(&bin, major).await;
    }
}

async fn store_the_same(bin: &std::path::Path, major: u8) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let page = |round| {
        format!(
            "{}vanishing_series{{reason=\"test\"}} 42\n",
            payload::control_plane(round).text
        )
    };
    let target = MtlsTarget::start(&pki, page(1)).await;

    let scrape = format!(
        r#"
scrape_configs:
  - job_name: ack-control-plane
    scrape_interval: 1s
    scrape_timeout: 1s
    scheme: https
    params: {{hosting: ["true"]}}
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: kubernetes}}
    static_configs: [{{targets: ["{addr}"], labels: {{env: diff}}}}]
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: "go_.*", action: drop}}
      - {{source_labels: [__name__], regex: "scheduler_.*", target_label: job, replacement: kube-scheduler}}
      - {{source_labels: [resource], regex: "(.*)s", target_label: resource_singular, replacement: "$1"}}
      - {{regex: "dry_run|subresource", action: labeldrop}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        addr = target.addr,
    );
    let (direct, receiver, relay) = both(bin, major, dir.path(), &scrape).await;

    // A few scrapes of page 1 on both sides.
    for p in [&direct, &receiver] {
        wait_until(
            p,
            "count_over_time(up{job=\"ack-control-plane\"}[1m]) >= 3",
            "three scrapes",
        )
        .await;
    }
    // Page 2: counters move and vanishing_series is gone: both sides have
    // scraped it once it has its staleness marker.
    target.set_body(payload::control_plane(2).text);
    for p in [&direct, &receiver] {
        wait_until(p, "absent(vanishing_series)", "page 2 scraped").await;
    }
    for p in [&direct, &receiver] {
        wait_until(
            p,
            "scrape_series_added{job=\"ack-control-plane\"} == 0",
            "steady state",
        )
        .await;
    }

    let queries = [
        // Everything except the one series whose value is a measurement.
        "{__name__=~\".+\", __name__!=\"scrape_duration_seconds\"}",
        "up",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "count by (job) ({__name__=~\".+\"})",
        "sum by (verb) (apiserver_request_total)",
        "vanishing_series",
        "present_over_time(vanishing_series[5m])",
        "go_goroutines",
        "count(scheduler_pending_pods{job=\"kube-scheduler\"})",
    ];
    for q in queries {
        let a = answer(&direct, q).await;
        let b = answer(&receiver, q).await;
        assert_eq!(
            a,
            b,
            "query {q} differs (Prometheus {major}):\nPrometheus: {a:?}\nrelay:      {b:?}\nrelay log:\n{}",
            relay.log()
        );
    }
    // And they are not trivially equal.
    assert!(
        answer(&direct, "vanishing_series").await.is_empty(),
        "stale after it vanished"
    );
    assert_eq!(
        answer(&direct, "present_over_time(vanishing_series[5m])")
            .await
            .len(),
        1
    );
    assert!(
        answer(&direct, "go_goroutines").await.is_empty(),
        "dropped by metric relabeling"
    );
    let all = answer(
        &direct,
        "{__name__=~\".+\", __name__!=\"scrape_duration_seconds\"}",
    )
    .await;
    assert!(all.len() > 150, "{} series", all.len());
    assert!(
        all.keys()
            .any(|l| l.get("resource_singular").map(String::as_str) == Some("pod"))
    );
}

/// An OpenMetrics page (served as `application/openmetrics-text`, which the
/// Accept header of both asks for first): exemplars, `_created` series,
/// `# UNIT`, info and state-set families, `# EOF`. Prometheus 2.x and
/// metrics-relay must store the same series and values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_pages_are_stored_as_prometheus_stores_them() {
    for (bin, major) in every_major_version() {
        openmetrics_stored_the_same(&bin, major).await;
    }
}

async fn openmetrics_stored_the_same(bin: &std::path::Path, major: u8) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let page = |round: u64| {
        format!(
            "# HELP rpc_seconds RPC latency.\n# TYPE rpc_seconds histogram\n# UNIT rpc_seconds seconds\n\
rpc_seconds_bucket{{le=\"0.1\"}} {a} # {{trace_id=\"abc{round}\"}} 0.05 1520879607.789\n\
rpc_seconds_bucket{{le=\"1\"}} {a}\n\
rpc_seconds_bucket{{le=\"+Inf\"}} {b} # {{}} 3\n\
rpc_seconds_count {b}\nrpc_seconds_sum {s}\nrpc_seconds_created 1520879000.5\n\
# TYPE requests counter\nrequests_total{{code=\"200\"}} {b} # {{trace_id=\"t\"}} 1\nrequests_created{{code=\"200\"}} 1520879001\n\
# TYPE build info\nbuild_info{{version=\"1.2\"}} 1\n\
# TYPE feature stateset\nfeature{{feature=\"a\"}} 1\nfeature{{feature=\"b\"}} 0\n\
# TYPE lat summary\nlat{{quantile=\"1\"}} 2\nlat{{quantile=\"0.50\"}} 1\nlat_sum 3\nlat_count {b}\n\
# TYPE temp gauge\ntemp{{room=\"x\\\\y\\\"z\"}} -1.5e3\n# EOF\n",
            a = 5 * round,
            b = 7 * round,
            s = 1.25 * round as f64,
        )
    };
    let target = MtlsTarget::start(&pki, page(1)).await;
    target.behavior.lock().unwrap().content_type =
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8".into());
    let scrape = simple_scrape("om", "1s", &pki, &target);
    let (direct, receiver, relay) = both(bin, major, dir.path(), &scrape).await;
    for p in [&direct, &receiver] {
        wait_until(p, "count_over_time(up{job=\"om\"}[1m]) >= 2", "two scrapes").await;
    }
    target.set_body(page(2));
    // Page 2 on both sides: its counter is 7 x 2.
    for p in [&direct, &receiver] {
        wait_until(p, "requests_total{code=\"200\"} == 14", "page 2 scraped").await;
    }
    let q = "{__name__=~\".+\", __name__!=\"scrape_duration_seconds\"}";
    let a = answer(&direct, q).await;
    let b = answer(&receiver, q).await;
    assert_eq!(
        a,
        b,
        "OpenMetrics page stored differently (Prometheus {major}); relay log:\n{}",
        relay.log()
    );
    assert_eq!(
        answer(&direct, "up").await.values().next(),
        Some(&1f64.to_bits()),
        "Prometheus parsed it"
    );
    for name in [
        "rpc_seconds_created",
        "requests_created",
        "build_info",
        "feature",
    ] {
        assert!(
            a.keys()
                .any(|l| l.get("__name__").map(String::as_str) == Some(name)),
            "{name} missing: {a:?}"
        );
    }
}

/// After failed scrapes the same series come back: Prometheus keeps its
/// scrape cache through the failures, so `scrape_series_added` is 0 then,
/// and so must ours be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_added_after_failed_scrapes_as_prometheus_counts_it() {
    let (bin, major) = every_major_version().remove(0);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "a 1\nb 2\nc{x=\"1\"} 3\n".into()).await;
    let scrape = simple_scrape("flaky", "500ms", &pki, &target);
    let (direct, receiver, relay) = both(&bin, major, dir.path(), &scrape).await;
    for p in [&direct, &receiver] {
        wait_until(
            p,
            "count_over_time(up{job=\"flaky\"}[1m]) >= 3",
            "three scrapes",
        )
        .await;
    }
    target.behavior.lock().unwrap().status = 503;
    for p in [&direct, &receiver] {
        wait_until(p, "up{job=\"flaky\"} == 0", "a failed scrape").await;
    }
    // A few more failures (at 500 ms), then back.
    let failed = target.requests.lock().unwrap().len();
    common::wait_for(Duration::from_secs(10), || {
        (target.requests.lock().unwrap().len() >= failed + 4).then_some(())
    })
    .await
    .expect("scrapes go on");
    target.behavior.lock().unwrap().status = 200;
    for p in [&direct, &receiver] {
        wait_until(p, "up{job=\"flaky\"} == 1", "back up").await;
    }
    let q = "sum_over_time(scrape_series_added{job=\"flaky\"}[10m])";
    let a = answer(&direct, q).await;
    let b = answer(&receiver, q).await;
    assert_eq!(a, b, "relay log:\n{}", relay.log());
    assert_eq!(
        a.values().next().map(|v| f64::from_bits(*v)),
        Some(3.0),
        "three series, added once"
    );
}

/// Prometheus 2 and 3 store `le` and `quantile` values differently (3:
/// `1` → `1.0`, `1e3` → `1000.0`); the agent follows the major version its
/// config names. One Prometheus of each version given scrapes the page
/// itself and receives from two agents, one set to 2 and one to 3: the
/// agent set to its version stores what it stores, the other does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_named_major_version_decides_le_and_quantile_forms() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let page = "# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1\"} 2\n\
h_bucket{le=\"1e3\"} 3\nh_bucket{le=\"+Inf\"} 3\nh_sum 4\nh_count 3\n\
# TYPE s summary\ns{quantile=\"0.50\"} 1\ns{quantile=\"1\"} 2\ns_sum 3\ns_count 2\n\
# TYPE g gauge\ng{le=\"1\"} 1\n";
    let target = MtlsTarget::start(&pki, page.into()).await;
    for (bin, major) in every_major_version() {
        let here = dir.path().join(format!("v{major}"));
        let prom = start_prometheus(
            &bin,
            &here.join("prom"),
            &simple_scrape("direct", "1s", &pki, &target),
        )
        .await;
        let mut relays = Vec::new();
        for named in [2, 3] {
            let cfg = format!(
                "global:\n  prometheus_compatibility: {named}\n{}remote_write:\n  - url: {}/api/v1/write\n    queue_config: {{batch_send_deadline: 200ms}}\n",
                simple_scrape(&format!("v{named}"), "1s", &pki, &target),
                prom.url
            );
            relays.push(RelayProc::start(&here.join(format!("relay{named}")), &cfg).await);
        }
        let forms = |job: &'static str| {
            let prom = &prom;
            async move {
                let mut out: Vec<String> = query(
                    prom,
                    &format!("{{job=\"{job}\", __name__=~\"h_bucket|s|g\"}}"),
                )
                .await
                .into_iter()
                .map(|(l, _)| {
                    let get = |n: &str| l.get(n).cloned().unwrap_or_default();
                    format!(
                        "{} le={} quantile={}",
                        get("__name__"),
                        get("le"),
                        get("quantile")
                    )
                })
                .collect();
                out.sort();
                out
            }
        };
        for job in ["direct", "v2", "v3"] {
            wait_until(
                &prom,
                &format!("count({{job=\"{job}\", __name__=~\"h_bucket|s|g\"}}) == 7"),
                job,
            )
            .await;
        }
        let direct = forms("direct").await;
        let same = forms(if major == 3 { "v3" } else { "v2" }).await;
        let other = forms(if major == 3 { "v2" } else { "v3" }).await;
        let logs = || {
            relays
                .iter()
                .map(|r| r.log())
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            direct,
            same,
            "Prometheus {major} and the agent set to {major}:\n{}",
            logs()
        );
        assert_ne!(direct, other, "the other setting must show the difference");
        let want_le = if major == 3 { "le=1.0 " } else { "le=1 " };
        assert!(
            direct
                .iter()
                .any(|f| f.starts_with("h_bucket") && f.contains(want_le)),
            "{direct:?}"
        );
        assert!(
            direct.contains(&"g le=1 quantile=".to_string()),
            "a gauge's le stays: {direct:?}"
        );
    }
}
