//! The pull (ServiceMonitor) path: `/relay/metrics` re-exposes the latest
//! successful scrape of every target with its labels, optionally behind a
//! bearer token; `/targets` for people and tools.

use crate::common;

use std::time::Duration;

use common::prom::{query, require_prometheus, start_prometheus};
use common::{MtlsTarget, Pki, RelayProc, http_get, payload};
use metrics_relay::Parser;

fn config(pki: &Pki, targets: &[&MtlsTarget], extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{}\"", t.addr)).collect();
    format!(
        r#"
global: {{scrape_interval: 1s, scrape_timeout: 1s, external_labels: {{cluster: pull}}}}
scrape_configs:
  - job_name: ack-control-plane
    scheme: https
    params: {{hosting: ["true"]}}
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: kubernetes}}
    static_configs: [{{targets: [{list}]}}]
{extra}"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        list = list.join(", "),
    )
}

async fn get_with(url: &str, token: Option<&str>) -> (u16, String) {
    get_auth(url, token.map(|t| format!("Bearer {t}"))).await
}

async fn get_auth(url: &str, authorization: Option<String>) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = metrics_relay::http_client(None, Duration::from_secs(2)).unwrap();
    let mut b = hyper::Request::get(url);
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    let resp = client
        .request(b.body(Full::default()).unwrap())
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// (name, sorted labels without __name__, value) of one line.
type Line = (String, Vec<(String, String)>, f64);

fn parse(text: &str) -> Vec<Line> {
    Parser::new(text.as_bytes())
        .map(|s| {
            let s = s.unwrap();
            let mut l: Vec<(String, String)> = s
                .labels()
                .map(|l| l.map(|(n, v)| (n.to_string(), v.into_owned())).unwrap())
                .collect();
            l.sort();
            (String::from_utf8_lossy(s.name).into_owned(), l, s.value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_metrics_reexposes_every_target_pull_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let page = payload::control_plane(4);
    let a = MtlsTarget::start(&pki, page.text.clone()).await;
    let b = MtlsTarget::start(&pki, "other_metric{x=\"1\"} 7\n".into()).await;
    // No remote_write: pull only.
    let relay = RelayProc::start(dir.path(), &config(&pki, &[&a, &b], "")).await;
    let url = format!("{}/relay/metrics", relay.admin);
    let mut body = String::new();
    for _ in 0..100 {
        body = http_get(&url).await.unwrap().1;
        if body.contains("other_metric") && body.contains("apiserver_request_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = parse(&body);
    assert_eq!(
        got.len(),
        page.series.len() + 1,
        "every sample of both targets, nothing else:\n{body}"
    );
    assert!(
        !got.iter()
            .any(|(n, _, _)| n == "up" || n.starts_with("scrape_"))
    );
    for s in &page.series {
        let name = &s.labels["__name__"];
        let mut want: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        want.push(("cluster".into(), "pull".into()));
        want.push(("instance".into(), a.addr.to_string()));
        want.push(("job".into(), "ack-control-plane".into()));
        want.sort();
        let (_, _, v) = got
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .unwrap_or_else(|| panic!("{name} {want:?} missing"));
        assert_eq!(*v, s.value);
    }
    // A target that goes down leaves the page (no frozen values).
    b.behavior.lock().unwrap().status = 500;
    let mut ok = false;
    for _ in 0..100 {
        let body = http_get(&url).await.unwrap().1;
        if !body.contains("other_metric") && body.contains("apiserver_request_total") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a down target's samples leave /relay/metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_metrics_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let cfg = config(
        &pki,
        &[&a],
        &format!(
            "server:\n  relay_auth: {{credentials_file: {}}}\n",
            token.display()
        ),
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    let url = format!("{}/relay/metrics", relay.admin);
    assert_eq!(get_with(&url, None).await.0, 401);
    assert_eq!(get_with(&url, Some("wrong")).await.0, 401);
    assert_eq!(get_with(&url, Some("s3cret")).await.0, 200);
    // The scheme is case-insensitive.
    assert_eq!(get_auth(&url, Some("bearer s3cret".into())).await.0, 200);
    assert_eq!(get_auth(&url, Some("BEARER s3cret".into())).await.0, 200);
    assert_eq!(get_auth(&url, Some("Basic s3cret".into())).await.0, 401);
    // Rotating the mounted Secret takes effect at once.
    std::fs::write(&token, "n3w").unwrap();
    assert_eq!(get_with(&url, Some("s3cret")).await.0, 401);
    assert_eq!(get_with(&url, Some("n3w")).await.0, 200);
    assert!(!relay.log().contains("s3cret"), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_page_for_people_and_tools() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let b = MtlsTarget::start(&pki, "broken{ 1\n".into()).await;
    let relay = RelayProc::start(dir.path(), &config(&pki, &[&a, &b], "")).await;
    for _ in 0..100 {
        let t = relay.targets().await;
        if t.as_array()
            .unwrap()
            .iter()
            .all(|t| t["health"] != "unknown")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, html) = http_get(&format!("{}/targets", relay.admin)).await.unwrap();
    assert_eq!(code, 200);
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("1 of 2 up"), "{html}");
    assert!(html.contains(&format!("https://{}/metrics?hosting=true", a.addr)));
    assert!(
        html.contains("parse error: line 1"),
        "the error in words: {html}"
    );
    let (_, json) = get_with(&format!("{}/targets", relay.admin), None).await;
    assert!(json.starts_with("<!doctype"), "HTML unless asked for JSON");
    let j = relay.targets().await;
    assert_eq!(j.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicemonitor_style_prometheus_keeps_target_labels() {
    let Some(bin) = require_prometheus() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let page = payload::control_plane(2);
    let a = MtlsTarget::start(&pki, page.text.clone()).await;
    let relay = RelayProc::start(&dir.path().join("relay"), &config(&pki, &[&a], "")).await;
    let admin = relay.admin.trim_start_matches("http://").to_string();
    // What a ServiceMonitor with honor_labels: true renders to.
    let prom_cfg = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: serviceMonitor/monitoring/metrics-relay/1\n    honor_labels: true\n    metrics_path: /relay/metrics\n    static_configs: [{{targets: ['{admin}']}}]\n"
    );
    let prom = start_prometheus(&bin, &dir.path().join("prom"), &prom_cfg).await;
    let mut stored = Vec::new();
    for _ in 0..100 {
        stored = query(&prom, "apiserver_request_total").await;
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!stored.is_empty(), "scraped through /relay/metrics");
    for (labels, _) in &stored {
        assert_eq!(
            labels["job"], "ack-control-plane",
            "honor_labels keeps the original job"
        );
        assert_eq!(labels["instance"], a.addr.to_string());
    }
    let n = query(&prom, "count({job=\"ack-control-plane\"})").await;
    assert_eq!(n[0].1, page.series.len() as f64);
}

/// A push agent serves the pull path only when asked (`server.relay_metrics`),
/// and then with data from its first scrape on; off, the path is a 404, never
/// an empty 200 that a Prometheus would record as a successful scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_metrics_is_explicit_and_full_from_the_first_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "pushed_and_pulled 5\n".into()).await;
    let rx = common::Receiver::start().await;
    let rw = format!("remote_write:\n  - url: {}\n", rx.url());
    let on = RelayProc::start(
        &dir.path().join("on"),
        &config(
            &pki,
            &[&a],
            &format!("{rw}server:\n  relay_metrics: true\n"),
        ),
    )
    .await;
    let off = RelayProc::start(&dir.path().join("off"), &config(&pki, &[&a], &rw)).await;
    // Wait for a first scrape of both, without touching /relay/metrics.
    for r in [&on, &off] {
        let mut up = false;
        for _ in 0..100 {
            if r.targets().await[0]["health"] == "up" {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up);
    }
    // The very first request already has the data.
    let (code, body) = http_get(&format!("{}/relay/metrics", on.admin))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("pushed_and_pulled"), "first answer: {body:?}");
    let (code, body) = http_get(&format!("{}/relay/metrics", off.admin))
        .await
        .unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("server.relay_metrics"), "{body}");
}
