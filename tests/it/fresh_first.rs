//! `queue.fresh_first` (issue 25): after an outage each target's newest
//! scrape goes ahead of its backlog, and the backlog still arrives whole.
//! Against a real Prometheus with `out_of_order_time_window` (every scrape
//! stored, none refused), and at a test receiver that records the order in
//! which requests arrive (the newest before the end of the backlog; without
//! the option, strictly in order).

use crate::common;

use std::time::Duration;

use common::prom::{require_prometheus, start_prometheus_on};
use common::{MtlsTarget, Pki, Receiver, RelayProc, http_get, metric_value, wait_async, wait_for};

fn relay_config(
    pki: &Pki,
    target: &MtlsTarget,
    url: &str,
    fresh_first: bool,
    per_send: usize,
) -> String {
    format!(
        r#"
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: counter
    scheme: https
    tls_config: {tls}
    static_configs: [{{targets: ["{addr}"]}}]
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms, max_shards: 4, max_samples_per_send: {per_send}}}
    queue: {{fresh_first: {fresh_first}}}
"#,
        tls = pki.tls_yaml("localhost"),
        addr = target.addr,
    )
}

async fn counter_target(pki: &Pki) -> MtlsTarget {
    MtlsTarget::counter(pki, "relay_test_counter").await
}

fn scrapes(t: &MtlsTarget) -> f64 {
    t.scrapes()
}

/// The counter values of each accepted request, in arrival order.
fn arrivals(rx: &Receiver) -> Vec<Vec<f64>> {
    rx.received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.status < 300)
        .map(|r| {
            r.request
                .timeseries
                .iter()
                .filter(|t| {
                    t.labels
                        .iter()
                        .any(|l| l.name == "__name__" && l.value == "relay_test_counter")
                })
                .flat_map(|t| t.samples.iter().map(|s| s.value))
                .collect::<Vec<f64>>()
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// An outage of ten scrapes at a receiver that answers 503, then a slow
/// receiver (150 ms a request, one scrape a request): returns the counter
/// values in arrival order, the value scraped last before the receiver came
/// back, and the agent.
async fn outage_then_slow(fresh_first: bool) -> (Vec<Vec<f64>>, f64, RelayProc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = counter_target(&pki).await;
    let rx = Receiver::start().await;
    // One scrape is 6 samples (the counter and 5 synthetic series).
    let relay = RelayProc::start(
        &dir.path().join("relay"),
        &relay_config(&pki, &target, &rx.url(), fresh_first, 6),
    )
    .await;
    assert!(
        wait_async(Duration::from_secs(20), || async {
            rx.latest("relay_test_counter", &[])
                .is_some_and(|v| v >= 2.0)
        })
        .await,
        "nothing arrived: {}",
        relay.log()
    );
    rx.script
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n((503, None), 1_000_000));
    let down = scrapes(&target);
    wait_for(Duration::from_secs(40), || {
        (scrapes(&target) >= down + 10.0).then_some(())
    })
    .await
    .expect("scraping goes on");
    *rx.delay.lock().unwrap() = Duration::from_millis(150);
    let at_return = scrapes(&target);
    rx.script.lock().unwrap().clear();
    // Every value up to the return (newer ones may come first).
    let all_in = wait_async(Duration::from_secs(60), || async {
        let got: Vec<f64> = arrivals(&rx).into_iter().flatten().collect();
        (1..=at_return as u64).all(|v| got.contains(&(v as f64)))
    })
    .await;
    assert!(
        all_in,
        "the backlog did not arrive: {:?}\n{}",
        arrivals(&rx),
        relay.log()
    );
    (arrivals(&rx), at_return, relay, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_first_sends_the_newest_scrape_before_the_backlog_ends() {
    let (order, at_return, relay, _dir) = outage_then_slow(true).await;
    let flat: Vec<f64> = order.iter().flatten().copied().collect();
    let newest = flat.iter().position(|&v| v >= at_return - 1.0).unwrap();
    let last_backlog = flat.iter().rposition(|&v| v < at_return - 3.0).unwrap();
    assert!(
        newest < last_backlog,
        "the newest scrape ({at_return}) arrived after the backlog: {order:?}"
    );
    // Nothing lost, nothing twice.
    let mut sorted = flat.clone();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    assert_eq!(sorted.len(), flat.len(), "a value twice: {order:?}");
    // Up to the return, every value (later ones may still be on their way).
    let upto: Vec<f64> = sorted.into_iter().filter(|&v| v <= at_return).collect();
    assert_eq!(
        upto,
        (1..=at_return as usize)
            .map(|i| i as f64)
            .collect::<Vec<_>>(),
        "a gap: {order:?}"
    );
    let m = relay.metrics().await;
    assert!(
        m.contains("metrics_relay_remote_write_queue_backlog_samples{"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fresh_first_every_scrape_arrives_in_order() {
    let (order, _, _relay, _dir) = outage_then_slow(false).await;
    let flat: Vec<f64> = order.iter().flatten().copied().collect();
    assert!(
        flat.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?}"
    );
}

/// A real Prometheus receiving (optionally `delay` away behind a proxy)
/// from an agent with `fresh_first` on that scrapes a counter every second,
/// one scrape a request.
struct PromWorld {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    prom_cfg: &'static str,
    prom: common::prom::Prometheus,
    port: u16,
    target: MtlsTarget,
    relay: RelayProc,
}

impl PromWorld {
    async fn start(prom_cfg: &'static str, delay: Option<Duration>) -> PromWorld {
        let bin = require_prometheus().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&dir.path().join("pki"));
        let prom = start_prometheus_on(&bin, &dir.path().join("prom"), prom_cfg, 0).await;
        let port = prom.port();
        let url = match delay {
            Some(d) => format!("http://{}/api/v1/write", delaying_proxy(port, d).await),
            None => format!("{}/api/v1/write", prom.url),
        };
        let target = counter_target(&pki).await;
        let relay = RelayProc::start(
            &dir.path().join("relay"),
            &relay_config(&pki, &target, &url, true, 6),
        )
        .await;
        PromWorld {
            dir,
            bin,
            prom_cfg,
            prom,
            port,
            target,
            relay,
        }
    }

    /// Prometheus again, on its port and data.
    async fn restart_prometheus(&self) -> common::prom::Prometheus {
        start_prometheus_on(
            &self.bin,
            &self.dir.path().join("prom"),
            self.prom_cfg,
            self.port,
        )
        .await
    }
}

/// A real Prometheus 3 with `out_of_order_time_window` takes the backlog
/// that arrives after the newest scrape: every scrape stored, none refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_with_an_out_of_order_window_stores_every_scrape() {
    let mut w = PromWorld::start(
        "global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 30m\n",
        None,
    )
    .await;
    let stored = |url: String| async move {
        let (_, body) = http_get(&format!(
            "{url}/api/v1/query?query=relay_test_counter%5B30m%5D"
        ))
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["values"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p[1].as_str().unwrap().parse::<f64>().unwrap())
                    .collect::<Vec<f64>>()
            })
            .unwrap_or_default()
    };
    assert!(
        wait_async(Duration::from_secs(30), || async {
            stored(w.prom.url.clone()).await.len() >= 2
        })
        .await
    );
    receiver_away(&mut w.prom, &w.target, 10.0).await;
    // The backlog is visible while it waits.
    let m = w.relay.metrics().await;
    assert!(
        metric_value(&m, "metrics_relay_remote_write_queue_backlog_samples{")
            .is_some_and(|v| v > 0.0),
        "{m}"
    );
    let t = w.relay.targets().await;
    assert!(
        t[0]["backlog"][0]["samples"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{t}"
    );
    let at_return = scrapes(&w.target);
    let prom = w.restart_prometheus().await;
    let url = prom.url.clone();
    // Complete: as many values as scrapes up to the return (the newest
    // arrives first, so the last value alone says nothing about the rest).
    let complete = wait_async(Duration::from_secs(60), || async {
        stored(url.clone()).await.len() as f64 >= at_return
    })
    .await;
    let values = stored(prom.url.clone()).await;
    assert!(complete, "stored {values:?}; log:\n{}", w.relay.log());
    // In timestamp order, 1, 2, 3, ...: nothing missing, nothing refused.
    assert_eq!(
        values,
        (1..=values.len()).map(|i| i as f64).collect::<Vec<_>>()
    );
    let m = w.relay.metrics().await;
    assert!(
        !m.contains("samples_dropped_total{"),
        "nothing dropped:\n{m}"
    );
    assert!(
        !m.contains("metrics_relay_remote_write_rejections_total{"),
        "nothing refused:\n{m}"
    );
    assert!(
        !m.contains("metrics_relay_remote_write_samples_failed_total{"),
        "nothing failed:\n{m}"
    );
}

/// Stops the receiving Prometheus and waits for `scrapes` more scrapes.
async fn receiver_away(prom: &mut common::prom::Prometheus, target: &MtlsTarget, n: f64) {
    prom.stop();
    let down = scrapes(target);
    wait_for(Duration::from_secs(40), || {
        (scrapes(target) >= down + n).then_some(())
    })
    .await
    .expect("scraping goes on while the receiver is away");
}

/// A TCP proxy to `upstream` that holds every chunk towards it for `delay`
/// (a distant receiver). Returns its address.
async fn delaying_proxy(upstream: u16, delay: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (mut cr, mut cw) = conn.into_split();
                let (mut ur, mut uw) = up.into_split();
                let to_up = async move {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let back = async move {
                    let _ = tokio::io::copy(&mut ur, &mut cw).await;
                };
                tokio::join!(to_up, back);
            });
        }
    });
    addr
}

/// Against a receiver that refuses out-of-order samples (Prometheus without
/// an out-of-order window) the backlog that arrives after the newest scrape
/// is refused (a 400 is never retried), and the log says why and what to
/// change. The receiver is 150 ms away, so the fresh lane's request lands
/// while the backlog (one scrape a request) is still on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_without_an_out_of_order_window_is_named_in_the_log() {
    let mut w = PromWorld::start(
        "global:\n  scrape_interval: 1h\n",
        Some(Duration::from_millis(150)),
    )
    .await;
    let sent =
        |m: &str| metric_value(m, "metrics_relay_remote_write_samples_sent_total{").unwrap_or(0.0);
    assert!(
        wait_async(Duration::from_secs(30), || async {
            sent(&w.relay.metrics().await) > 0.0
        })
        .await,
        "nothing sent: {}",
        w.relay.log()
    );
    receiver_away(&mut w.prom, &w.target, 8.0).await;
    let _prom = w.restart_prometheus().await;
    let said = wait_async(Duration::from_secs(60), || async {
        w.relay
            .log()
            .contains("queue.fresh_first is on for this destination")
    })
    .await;
    assert!(said, "no hint in the log:\n{}", w.relay.log());
    let m = w.relay.metrics().await;
    assert!(
        m.lines().any(
            |l| l.starts_with("metrics_relay_remote_write_rejections_total{")
                && l.contains("out_of_order")
        ),
        "{m}"
    );
}
