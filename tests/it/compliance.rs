//! The remote-write sender compliance cases (prometheus/compliance,
//! `remote_write_sender`, RW 1.0), restated as our own black-box tests over
//! loopback: a target serves an exposition, `metrics-relay` scrapes it and
//! writes to a receiver that decodes every request.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{MtlsTarget, Pki, Receiver, RelayProc, wait_for};

struct Case {
    _dir: tempfile::TempDir,
    target: MtlsTarget,
    rx: Receiver,
    relay: RelayProc,
}

async fn start(body: &str, honor_labels: bool, script: &[(u16, Option<&str>)]) -> Case {
    start_with(body, honor_labels, script, "").await
}

/// As [`start`], with `extra` lines in the scrape config.
async fn start_with(
    body: &str,
    honor_labels: bool,
    script: &[(u16, Option<&str>)],
    extra: &str,
) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, body.to_string()).await;
    let rx = Receiver::start().await;
    rx.script
        .lock()
        .unwrap()
        .extend(script.iter().map(|(c, r)| (*c, r.map(String::from))));
    let cfg = format!(
        r#"
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: compliance
    scheme: https
    honor_labels: {honor_labels}
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: localhost}}
    static_configs: [{{targets: ["{addr}"]}}]
{extra}
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 20ms, max_backoff: 100ms}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        addr = target.addr,
        url = rx.url(),
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    Case {
        _dir: dir,
        target,
        rx,
        relay,
    }
}

impl Case {
    /// Waits until `up` has arrived `n` times.
    async fn scrapes(&self, n: usize) {
        let ok = wait_for(Duration::from_secs(15), || {
            let ups = self
                .rx
                .accepted()
                .into_iter()
                .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == "up"))
                .count();
            (ups >= n).then_some(())
        })
        .await;
        assert!(
            ok.is_some(),
            "{n} scrapes did not arrive; log:\n{}",
            self.relay.log()
        );
    }

    fn series(&self, name: &str) -> Vec<common::servers::AcceptedSample> {
        self.rx
            .accepted()
            .into_iter()
            .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == name))
            .collect()
    }
}

fn label<'a>(l: &'a [(String, String)], name: &str) -> Option<&'a str> {
    l.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter() {
    let c = start("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"GET\"} 1027\n", false, &[]).await;
    c.scrapes(1).await;
    let s = c.series("http_requests_total");
    assert_eq!(label(&s[0].0, "method"), Some("GET"));
    assert_eq!(s[0].1, 1027.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauge() {
    let c = start(
        "# TYPE temperature_celsius gauge\ntemperature_celsius -4.5\n",
        false,
        &[],
    )
    .await;
    c.scrapes(1).await;
    assert_eq!(c.series("temperature_celsius")[0].1, -4.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram() {
    let c = start(
        "# TYPE rpc_duration_seconds histogram\nrpc_duration_seconds_bucket{le=\"0.1\"} 3\nrpc_duration_seconds_bucket{le=\"1\"} 5\nrpc_duration_seconds_bucket{le=\"+Inf\"} 6\nrpc_duration_seconds_sum 4.2\nrpc_duration_seconds_count 6\n",
        false,
        &[],
    )
    .await;
    c.scrapes(1).await;
    let b = c.series("rpc_duration_seconds_bucket");
    let mut les: Vec<_> = b
        .iter()
        .map(|(l, v, _)| (label(l, "le").unwrap().to_string(), *v))
        .collect();
    les.sort_by(|a, b| a.1.total_cmp(&b.1));
    // Prometheus 3's float form (the default `prometheus_compatibility: 3`).
    assert_eq!(
        les,
        vec![
            ("0.1".into(), 3.0),
            ("1.0".into(), 5.0),
            ("+Inf".into(), 6.0)
        ]
    );
    assert_eq!(c.series("rpc_duration_seconds_sum")[0].1, 4.2);
    assert_eq!(c.series("rpc_duration_seconds_count")[0].1, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary() {
    let c = start(
        "# TYPE rpc_latency_seconds summary\nrpc_latency_seconds{quantile=\"0.5\"} 0.05\nrpc_latency_seconds{quantile=\"0.99\"} 0.3\nrpc_latency_seconds_sum 12.5\nrpc_latency_seconds_count 200\n",
        false,
        &[],
    )
    .await;
    c.scrapes(1).await;
    let q: HashMap<String, f64> = c
        .series("rpc_latency_seconds")
        .iter()
        .map(|(l, v, _)| (label(l, "quantile").unwrap().to_string(), *v))
        .collect();
    assert_eq!(q["0.5"], 0.05);
    assert_eq!(q["0.99"], 0.3);
    assert_eq!(c.series("rpc_latency_seconds_count")[0].1, 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_and_job_instance_name_sorted_labels() {
    let c = start("m{z=\"1\",a=\"2\"} 1\n", false, &[]).await;
    c.scrapes(2).await;
    let up = c.series("up");
    assert!(up.iter().all(|(_, v, _)| *v == 1.0));
    let instance = c.target.addr.to_string();
    for (l, _, _) in c.rx.accepted() {
        assert_eq!(label(&l, "job"), Some("compliance"), "JobLabel: {l:?}");
        assert_eq!(
            label(&l, "instance"),
            Some(instance.as_str()),
            "InstanceLabel: {l:?}"
        );
        assert!(label(&l, "__name__").is_some(), "NameLabel: {l:?}");
        assert!(
            l.windows(2).all(|w| w[0].0 < w[1].0),
            "SortedLabels/RepeatedLabels: {l:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_exposition_gives_up_zero() {
    let c = start("this is not an exposition\n", false, &[]).await;
    c.scrapes(1).await;
    assert!(c.series("up").iter().all(|(_, v, _)| *v == 0.0));
    let names: Vec<_> =
        c.rx.accepted()
            .into_iter()
            .filter_map(|(l, _, _)| label(&l, "__name__").map(String::from))
            .collect();
    assert!(
        names.iter().all(|n| n == "up" || n.starts_with("scrape_")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_labels_fail_the_scrape() {
    let c = start("m{a=\"1\",a=\"2\"} 1\n", false, &[]).await;
    c.scrapes(1).await;
    assert_eq!(c.series("up")[0].1, 0.0);
    assert!(c.series("m").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_labels_are_not_sent() {
    let c = start("m{a=\"\",b=\"x\"} 1\n", false, &[]).await;
    c.scrapes(1).await;
    let (l, _, _) = &c.series("m")[0];
    assert_eq!(label(l, "a"), None);
    assert_eq!(label(l, "b"), Some("x"));
    assert!(
        c.rx.accepted()
            .iter()
            .all(|(l, _, _)| l.iter().all(|(_, v)| !v.is_empty()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honor_labels_false_exports_conflicts() {
    let c = start("m{job=\"exposed\",instance=\"elsewhere\"} 1\n", false, &[]).await;
    c.scrapes(1).await;
    let (l, _, _) = &c.series("m")[0];
    assert_eq!(label(l, "job"), Some("compliance"));
    assert_eq!(label(l, "exported_job"), Some("exposed"));
    assert_eq!(label(l, "exported_instance"), Some("elsewhere"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honor_labels_true_keeps_exposed() {
    let c = start("m{job=\"exposed\"} 1\n", true, &[]).await;
    c.scrapes(1).await;
    let (l, _, _) = &c.series("m")[0];
    assert_eq!(label(l, "job"), Some("exposed"));
    assert_eq!(label(l, "exported_job"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_marker_for_a_vanished_series() {
    let c = start("stays 1\ngoes 2\n", false, &[]).await;
    c.scrapes(1).await;
    c.target.set_body("stays 1\n".into());
    let got = wait_for(Duration::from_secs(10), || {
        c.series("goes")
            .into_iter()
            .find(|(_, v, _)| v.to_bits() == 0x7ff0_0000_0000_0002)
    })
    .await;
    let (_, _, marker_ts) = got.expect("staleness marker");
    let last_value_ts = c
        .series("goes")
        .iter()
        .filter(|(_, v, _)| *v == 2.0)
        .map(|(_, _, t)| *t)
        .max()
        .unwrap();
    assert!(marker_ts > last_value_ts);
    assert!(
        c.series("stays").iter().all(|(_, v, _)| *v == 1.0),
        "no marker for a series still exposed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_are_scrape_times_or_the_exposed_ones() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // An explicit timestamp ten minutes back is kept as exposed; one from
    // 2009 is out of bounds (Prometheus refuses samples an hour behind its
    // newest) and dropped at scrape time, unless the window is turned off.
    let recent = before - 600_000;
    let c = start(
        &format!("now 1\nexplicit 2 {recent}\nancient 3 1234567890123\n"),
        false,
        &[],
    )
    .await;
    c.scrapes(1).await;
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (_, _, t) in c.series("now").iter().chain(c.series("up").iter()) {
        assert!(
            *t >= before && *t <= after,
            "{t} not in [{before}, {after}]"
        );
    }
    assert_eq!(c.series("explicit")[0].2, recent);
    assert!(c.series("ancient").is_empty(), "out of bounds, dropped");
    let c = start_with(
        "ancient 3 1234567890123\n",
        false,
        &[],
        "    explicit_timestamp_max_age: 0s",
    )
    .await;
    c.scrapes(1).await;
    assert_eq!(c.series("ancient")[0].2, 1_234_567_890_123);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers() {
    let c = start("m 1\n", false, &[]).await;
    c.scrapes(1).await;
    for r in c.rx.received.lock().unwrap().iter() {
        assert_eq!(r.headers["content-encoding"], "snappy");
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        assert_eq!(r.headers["x-prometheus-remote-write-version"], "0.1.0");
        assert!(
            r.headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("metrics-relay/")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_per_series() {
    let body: String = (0..500).map(|i| format!("series_{i} {i}\n")).collect();
    // A few failures in between, so retries are part of the sequence.
    let c = start(&body, false, &[(500, None), (200, None), (503, None)]).await;
    c.scrapes(4).await;
    let mut last: HashMap<Vec<(String, String)>, i64> = HashMap::new();
    for (l, _, t) in c.rx.accepted() {
        if let Some(prev) = last.insert(l.clone(), t) {
            assert!(t > prev, "out of order for {l:?}: {prev} then {t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_500() {
    let c = start("m 1\n", false, &[(500, None), (500, None), (500, None)]).await;
    c.scrapes(1).await;
    let all = c.rx.received.lock().unwrap().clone();
    assert!(
        all[..3]
            .iter()
            .all(|r| r.status == 500 && r.raw == all[0].raw)
    );
    assert_eq!(
        all[3].raw, all[0].raw,
        "the failed batch is delivered after the 500s"
    );
}

/// The samples of a request: (labels, timestamp) each.
fn samples_of(r: &common::servers::Received) -> Vec<(Vec<(String, String)>, i64)> {
    r.request
        .timeseries
        .iter()
        .flat_map(|ts| {
            let l: Vec<(String, String)> = ts
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            ts.samples.iter().map(move |s| (l.clone(), s.timestamp))
        })
        .collect()
}

/// Remote write 1.0: a sender "MUST NOT retry write requests on HTTP 4xx
/// responses other than 429". Asserted on samples, not request bytes: no
/// sample of the refused request is ever sent again, alone or in a later
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_400() {
    let c = start("m 1\n", false, &[(400, None)]).await;
    c.scrapes(2).await;
    let all = c.rx.received.lock().unwrap().clone();
    assert_eq!(all[0].status, 400);
    let refused: std::collections::HashSet<_> = samples_of(&all[0]).into_iter().collect();
    assert!(!refused.is_empty());
    for r in &all[1..] {
        for s in samples_of(r) {
            assert!(
                !refused.contains(&s),
                "a sample of the refused request was sent again: {s:?}"
            );
        }
    }
    let m = c.relay.metrics().await;
    assert!(
        m.lines().any(
            |l| l.starts_with("metrics_relay_remote_write_samples_dropped_total{")
                && l.contains("reason=\"rejected\"")
        ),
        "{m}"
    );
}

/// A receiver that refuses everything (400), with several targets whose
/// scrapes are joined into one request: every sample is sent exactly once,
/// never again part by part, and every one is counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_joined_request_is_never_sent_again_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut targets = Vec::new();
    for i in 0..3 {
        targets.push(MtlsTarget::start(&pki, format!("m{{t=\"{i}\"}} 1\n")).await);
    }
    let rx = Receiver::start().await;
    rx.script
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n((400, None), 100_000));
    let addrs: Vec<String> = targets.iter().map(|t| format!("\"{}\"", t.addr)).collect();
    let cfg = format!(
        r#"
global: {{scrape_interval: 500ms, scrape_timeout: 500ms}}
scrape_configs:
  - job_name: refused
    scheme: https
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: localhost}}
    static_configs: [{{targets: [{addrs}]}}]
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 1s, min_backoff: 20ms, max_backoff: 100ms}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        addrs = addrs.join(", "),
        url = rx.url(),
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    // Until at least 30 scrapes were sent, some of them joined.
    let ok = wait_for(Duration::from_secs(30), || {
        let r = rx.received.lock().unwrap();
        let joined = r.iter().any(|q| {
            q.request
                .timeseries
                .iter()
                .any(|t| t.labels.iter().any(|l| l.value == "0"))
                && q.request
                    .timeseries
                    .iter()
                    .any(|t| t.labels.iter().any(|l| l.value == "1"))
        });
        let ups: usize = r
            .iter()
            .map(|q| {
                q.request
                    .timeseries
                    .iter()
                    .filter(|t| {
                        t.labels
                            .iter()
                            .any(|l| l.name == "__name__" && l.value == "up")
                    })
                    .count()
            })
            .sum();
        (ups >= 30 && joined).then_some(())
    })
    .await;
    let all = rx.received.lock().unwrap().clone();
    assert!(
        ok.is_some(),
        "{} requests; log:\n{}",
        all.len(),
        relay.log()
    );
    let mut seen = std::collections::HashSet::new();
    let mut sent = 0usize;
    for r in &all {
        assert_eq!(r.status, 400);
        for s in samples_of(r) {
            sent += 1;
            assert!(seen.insert(s.clone()), "sent twice: {s:?}");
        }
    }
    let m = relay.metrics().await;
    let dropped: usize = m
        .lines()
        .filter(|l| {
            l.starts_with("metrics_relay_remote_write_samples_dropped_total{")
                && l.contains("reason=\"rejected\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize;
    // (A request may be answered while the metrics are read.)
    assert!(
        dropped >= sent - sent.min(50) && dropped <= sent + 50,
        "dropped {dropped}, sent {sent}\n{m}"
    );
    assert!(
        !relay.log().contains("sending its parts one by one"),
        "{}",
        relay.log()
    );
}
