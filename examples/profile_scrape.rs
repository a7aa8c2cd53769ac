//! The scrape hot path in a loop, for profilers (`perf record`,
//! `valgrind --tool=callgrind`, whose instruction counts are repeatable):
//! parse → labels encoded → staleness table → protobuf, on a generated
//! kube-apiserver-like page (or on FILE), ROUNDS times.
//!
//! `cargo build --release --example profile_scrape &&
//!  valgrind --tool=callgrind target/release/examples/profile_scrape 20000 5`

use metrics_relay::series::{EncodedSamples, SeriesCache, TargetContext};

fn page(n: usize) -> Vec<u8> {
    let les = ["0.005", "0.025", "0.1", "0.5", "1", "2.5", "10", "+Inf"];
    let mut s = String::from(
        "# HELP apiserver_request_duration_seconds Response latency distribution.\n\
         # TYPE apiserver_request_duration_seconds histogram\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "apiserver_request_duration_seconds_bucket{{component=\"apiserver\",dry_run=\"\",group=\"g{}\",resource=\"r{}\",scope=\"namespace\",subresource=\"\",verb=\"LIST\",version=\"v1\",le=\"{}\"}} {}\n",
            i % 13,
            i / les.len(),
            les[i % les.len()],
            i * 7
        ));
    }
    s.into_bytes()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_else(|| "20000".into());
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let body = match first.parse::<usize>() {
        Ok(n) => page(n),
        Err(_) => std::fs::read(&first).unwrap_or_else(|e| panic!("{first}: {e}")),
    };
    let ctx = TargetContext {
        target_labels: vec![
            ("instance".into(), "10.0.0.1:6443".into()),
            ("job".into(), "ack-control-plane".into()),
        ],
        external_labels: vec![("cluster".into(), "prod".into())],
        honor_labels: false,
        honor_timestamps: true,
        metric_relabel: Default::default(),
        limits: Default::default(),
    };
    let mut cache = SeriesCache::new();
    let mut out = EncodedSamples::default();
    let mut samples = 0;
    for round in 0..rounds {
        out.clear();
        let ts = 1_700_000_000_000 + round as i64;
        match cache.ingest(&ctx, &body, ts, &mut out, 0) {
            Ok(n) => samples += n.scraped,
            Err(e) => panic!("{e}"),
        }
        cache.end(&ctx, ts, &mut out, &body, false);
    }
    println!(
        "{rounds} scrapes, {samples} samples, {} bytes encoded last",
        out.buf.len()
    );
}
