//! Measures `/healthz` latency of a running agent while it scrapes a very
//! large target (issue 12: "work off the async threads"). Not a test: it
//! prints figures, asserts nothing.
//!
//! ```sh
//! cargo build --release && cargo run --release --example healthz_latency -- [SERIES] [SECONDS]
//! ```
//! Starts an mTLS target serving SERIES series (default 2,000,000, ~70 MB of
//! text), a remote-write receiver that answers 204 without decoding, and
//! `target/release/metrics-relay` with a disk queue (so segments roll at
//! every scrape: a 2 M-series scrape is ~30 MB compressed). It then polls
//! `/healthz` every 10 ms for SECONDS (default 30), first with the big target
//! absent (baseline), then present, and prints p50 / p99 / max for both.

#[path = "../tests/common/servers.rs"]
mod servers;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn poll_health(url: &str, seconds: u64) -> Vec<f64> {
    let client = metrics_relay::http_client(None, Duration::from_secs(2)).expect("client");
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut lat = Vec::new();
    while Instant::now() < end {
        let t0 = Instant::now();
        let req = Request::get(url).body(Full::default()).unwrap();
        let ok = match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
            Ok(Ok(r)) => r.status().is_success() && r.into_body().collect().await.is_ok(),
            _ => false,
        };
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        lat.push(if ok { ms } else { 5000.0 });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lat.sort_by(f64::total_cmp);
    lat
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let series: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(30);
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/metrics-relay");
    assert!(
        bin.exists(),
        "build the release binary first: cargo build --release"
    );
    let dir = tempfile::tempdir().unwrap();
    let pki = servers::Pki::new(&dir.path().join("pki"));
    let small = servers::MtlsTarget::start(&pki, "small 1\n".into()).await;
    let mut body = String::with_capacity(series * 40);
    for i in 0..series {
        body.push_str(&format!(
            "big_series{{shard=\"{}\",i=\"{i}\"}} {i}\n",
            i % 64
        ));
    }
    eprintln!("big page: {} series, {} MB", series, body.len() >> 20);
    let big = servers::MtlsTarget::start(&pki, "absent 1\n".into()).await;

    // A receiver that reads each request and answers 204, decoding nothing.
    let rx = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rx_addr = rx.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = rx.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut r = Response::new(Full::<Bytes>::default());
                    *r.status_mut() = hyper::StatusCode::NO_CONTENT;
                    Ok::<_, Infallible>(r)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "global: {{scrape_interval: 10s, scrape_timeout: 10s}}\nscrape_configs:\n  - job_name: lat\n    scheme: https\n    tls_config: {{ca_file: {ca}, cert_file: {c}, key_file: {k}, server_name: localhost}}\n    static_configs: [{{targets: ['{a}', '{b}']}}]\nremote_write:\n  - url: http://{rx_addr}/api/v1/write\n",
        ca = pki.ca.display(),
        c = pki.client_cert.display(),
        k = pki.client_key.display(),
        a = small.addr,
        b = big.addr,
    );
    let cfg_path = dir.path().join("relay.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = std::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen-address",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
        ])
        .spawn()
        .expect("start metrics-relay");
    let url = format!("http://127.0.0.1:{port}/healthz");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = poll_health(&url, seconds).await;
    big.set_body(body);
    let loaded = poll_health(&url, seconds).await;
    let scrapes = big.requests.lock().unwrap().len();
    // What the agent made of the big target: health, samples, duration.
    let client = metrics_relay::http_client(None, Duration::from_secs(2)).expect("client");
    let req = Request::get(format!("http://127.0.0.1:{port}/targets?format=json"))
        .body(Full::default())
        .unwrap();
    if let Ok(r) = client.request(req).await
        && let Ok(b) = r.into_body().collect().await
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b.to_bytes())
    {
        for t in v.as_array().into_iter().flatten() {
            println!(
                "target {}: {} samples {} last duration {} s error {}",
                t["url"],
                t["health"],
                t["samples"],
                t["last_scrape_duration_seconds"],
                t["last_error"]
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for (name, l) in [("idle", &base), ("2M-series scrapes", &loaded)] {
        println!(
            "/healthz {name}: {} probes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.99),
            l.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!(
        "big target scraped {scrapes} times; p99 ratio loaded/idle {:.2}",
        percentile(&loaded, 0.99) / percentile(&base, 0.99)
    );
}
