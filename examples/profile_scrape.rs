//! The scrape hot path in a loop, for profilers (`perf record`,
//! `valgrind --tool=callgrind`, whose instruction counts are repeatable):
//! parse → labels encoded → staleness table → protobuf, on a generated
//! kube-apiserver-like page (or on FILE), ROUNDS times.
//!
//! `cargo build --release --example profile_scrape &&
//!  valgrind --tool=callgrind target/release/examples/profile_scrape 20000 5`

use metrics_relay::series::{EncodedSamples, SeriesCache};

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_else(|| "20000".into());
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let body = match first.parse::<usize>() {
        Ok(n) => common::generated_page(n),
        Err(_) => std::fs::read(&first).unwrap_or_else(|e| panic!("{first}: {e}")),
    };
    let ctx = common::target_context();
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
