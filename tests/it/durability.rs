//! Durable delivery, end to end with a real Prometheus as the receiver and a
//! counter target whose value is the scrape number: outages, restarts and
//! crashes of the agent lose nothing and keep order.
//!
//! The receiver outage lasts ten scrapes here; `scripts/soak.sh` runs it for
//! two minutes (`METRICS_RELAY_OUTAGE_SECS=120`), outside the test command.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::prom::{Prometheus, require_prometheus, start_prometheus_on};
use common::{MtlsTarget, Pki, Receiver, RelayProc, http_get, wait_for};

const RECEIVER_CFG: &str = "global:\n  scrape_interval: 1h\n";

fn relay_config(pki: &Pki, target: &MtlsTarget, url: &str) -> String {
    format!(
        r#"
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: counter
    scheme: https
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: localhost}}
    static_configs: [{{targets: ["{addr}"]}}]
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 300ms, min_backoff: 50ms, max_backoff: 1s}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        addr = target.addr,
    )
}

async fn counter_target(pki: &Pki) -> MtlsTarget {
    MtlsTarget::counter(pki, "relay_test_counter").await
}

/// All stored values of the counter, in timestamp order.
async fn stored(p: &Prometheus) -> Vec<f64> {
    let (code, body) = http_get(&format!(
        "{}/api/v1/query?query=relay_test_counter%5B30m%5D",
        p.url
    ))
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let Some(series) = v["data"]["result"].as_array().and_then(|a| a.first()) else {
        return Vec::new();
    };
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Waits until Prometheus holds `1..=n` for some n >= `at_least`, then checks
/// there is no gap and no disorder.
async fn assert_complete(p: &Prometheus, at_least: f64, relay: &RelayProc) -> usize {
    let mut last = Vec::new();
    for _ in 0..600 {
        last = stored(p).await;
        if last.last().is_some_and(|v| *v >= at_least) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.last().is_some_and(|v| *v >= at_least),
        "stored only up to {:?}; log:\n{}",
        last.last(),
        relay.log()
    );
    let expected: Vec<f64> = (1..=last.len()).map(|i| i as f64).collect();
    assert_eq!(
        last,
        expected,
        "every scrape exactly once, in order; log:\n{}",
        relay.log()
    );
    last.len()
}

async fn pending(relay: &RelayProc) -> f64 {
    common::metric_value(
        &relay.metrics().await,
        "metrics_relay_remote_write_queue_samples{",
    )
    .unwrap_or(0.0)
}

fn scrapes(t: &MtlsTarget) -> f64 {
    t.scrapes()
}

async fn setup(dir: &Path) -> Option<(std::path::PathBuf, Pki)> {
    let bin = require_prometheus()?;
    let pki = Pki::new(&dir.join("pki"));
    Some((bin, pki))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some((bin, pki)) = setup(dir.path()).await else {
        return;
    };
    // Scrapes (one a second) the receiver is away for.
    let outage: u64 = std::env::var("METRICS_RELAY_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut prom = start_prometheus_on(&bin, &dir.path().join("prom"), RECEIVER_CFG, 0).await;
    // Restarted on the same port: the agent's URL stays.
    let port = prom.port();
    let target = counter_target(&pki).await;
    let relay = RelayProc::start(
        &dir.path().join("relay"),
        &relay_config(&pki, &target, &format!("{}/api/v1/write", prom.url)),
    )
    .await;
    assert_complete(&prom, 2.0, &relay).await;

    prom.stop();
    let down = scrapes(&target);
    wait_for(Duration::from_secs(outage * 3 + 30), || {
        (scrapes(&target) >= down + outage as f64).then_some(())
    })
    .await
    .expect("scraping goes on through the outage");
    assert!(
        pending(&relay).await > 0.0,
        "samples wait in the queue during the outage"
    );
    let during = scrapes(&target);
    let prom = start_prometheus_on(&bin, &dir.path().join("prom"), RECEIVER_CFG, port).await;
    let n = assert_complete(&prom, during, &relay).await;
    assert!(
        n as u64 >= outage,
        "{n} values after a {outage}s outage at 1s"
    );
    let m = relay.metrics().await;
    assert!(
        !m.contains("samples_dropped_total{"),
        "nothing dropped:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_during_outage_keeps_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let Some((bin, pki)) = setup(dir.path()).await else {
        return;
    };
    let mut prom = start_prometheus_on(&bin, &dir.path().join("prom"), RECEIVER_CFG, 0).await;
    // Restarted on the same port: the agent's URL stays.
    let port = prom.port();
    let target = counter_target(&pki).await;
    let cfg = relay_config(&pki, &target, &format!("{}/api/v1/write", prom.url));
    let mut relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    assert_complete(&prom, 2.0, &relay).await;

    prom.stop();
    // A backlog: a few scrapes queued while the receiver is away.
    let mut queued = 0.0;
    for _ in 0..100 {
        queued = pending(&relay).await;
        if queued >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(queued >= 3.0, "no backlog: {queued}");
    let code = tokio::task::spawn_blocking(move || {
        let c = relay.terminate();
        (c, relay)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "SIGTERM exits 0:\n{}", code.1.log());
    let before_restart = scrapes(&target);
    drop(code);
    let relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    // Scraping again (into the backlog) before the receiver is back.
    wait_for(Duration::from_secs(20), || {
        (scrapes(&target) >= before_restart + 2.0).then_some(())
    })
    .await
    .expect("scrapes after the restart");
    let prom = start_prometheus_on(&bin, &dir.path().join("prom"), RECEIVER_CFG, port).await;
    assert_complete(&prom, before_restart + 2.0, &relay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some((bin, pki)) = setup(dir.path()).await else {
        return;
    };
    let mut prom = start_prometheus_on(&bin, &dir.path().join("prom"), RECEIVER_CFG, 0).await;
    // Restarted on the same port: the agent's URL stays.
    let port = prom.port();
    let target = counter_target(&pki).await;
    let cfg = relay_config(&pki, &target, &format!("{}/api/v1/write", prom.url));
    let mut relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    assert_complete(&prom, 3.0, &relay).await;
    // kill -9 while sending normally ...
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let mut relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    assert_complete(&prom, scrapes(&target) + 1.0, &relay).await;
    // ... and while retrying against a stopped receiver.
    prom.stop();
    let mut retried = 0.0;
    for _ in 0..100 {
        retried = common::metric_value(
            &relay.metrics().await,
            "metrics_relay_remote_write_batches_retried_total{",
        )
        .unwrap_or(0.0);
        if retried >= 2.0 && pending(&relay).await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(retried >= 2.0, "no retries against the stopped receiver");
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    let prom = start_prometheus_on(&bin, &dir.path().join("prom"), RECEIVER_CFG, port).await;
    assert_complete(&prom, scrapes(&target) + 1.0, &relay).await;
    let log = relay.log();
    assert!(log.contains("disk queue opened"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_receiver_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = counter_target(&pki).await;
    let rx = Receiver::start().await;
    *rx.throttle_until.lock().unwrap() = Some(std::time::Instant::now() + Duration::from_secs(10));
    let relay = RelayProc::start(
        &dir.path().join("relay"),
        &relay_config(&pki, &target, &rx.url()),
    )
    .await;
    wait_for(Duration::from_secs(30), || rx.has_status(204).then_some(()))
        .await
        .expect("delivered after the throttling");
    let all = rx.received.lock().unwrap().clone();
    let throttled: Vec<_> = all.iter().filter(|r| r.status == 429).collect();
    assert!(
        throttled.len() >= 3,
        "{} throttled attempts",
        throttled.len()
    );
    for w in all.windows(2).filter(|w| w[0].status == 429) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(1900),
            "retried {gap:?} after a 429 with Retry-After: 2"
        );
    }
    // Everything scraped during the throttling arrives, in order.
    let _ = wait_for(Duration::from_secs(10), || {
        (rx.latest("relay_test_counter", &[]).unwrap_or(0.0) >= 12.0).then_some(())
    })
    .await;
    let mut values: Vec<f64> = rx
        .accepted()
        .into_iter()
        .filter(|(l, _, _)| {
            l.iter()
                .any(|(k, v)| k == "__name__" && v == "relay_test_counter")
        })
        .map(|(_, v, _)| v)
        .collect();
    let sent = values.clone();
    values.dedup();
    assert_eq!(sent, values, "no duplicates");
    let expected: Vec<f64> = (1..=values.len()).map(|i| i as f64).collect();
    assert_eq!(
        values,
        expected,
        "complete and in order; log:\n{}",
        relay.log()
    );
}
