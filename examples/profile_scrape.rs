//! The scrape hot path in a loop, for profilers (`perf record`,
//! `valgrind --tool=callgrind`, whose instruction counts are repeatable):
//! inflate (when FILE ends in `.gz`) → parse → labels encoded → staleness
//! table → protobuf → snappy, on a generated kube-apiserver-like page (or on
//! FILE), ROUNDS times. Prints the time per sample of each stage.
//!
//! `cargo build --release --example profile_scrape &&
//!  valgrind --tool=callgrind target/release/examples/profile_scrape 20000 5`

use std::time::{Duration, Instant};

use metrics_relay::EncodedSamples;
use metrics_relay::SeriesCache;

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_else(|| "20000".into());
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let (wire, gzip) = match first.parse::<usize>() {
        Ok(n) => (common::generated_page(n), false),
        Err(_) => (
            std::fs::read(&first).unwrap_or_else(|e| panic!("{first}: {e}")),
            first.ends_with(".gz"),
        ),
    };
    let ctx = common::target_context();
    let mut cache = SeriesCache::new();
    let mut out = EncodedSamples::default();
    let mut plain = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    let mut compressed = Vec::new();
    let mut samples = 0;
    let mut snapped = 0;
    let mut spent = [Duration::ZERO; 3];
    for round in 0..rounds {
        let t0 = Instant::now();
        let body: &[u8] = if gzip {
            plain.clear();
            metrics_relay::gzip_inflate(&wire, &mut plain, u64::MAX)
                .unwrap_or_else(|e| panic!("{e}"));
            &plain
        } else {
            &wire
        };
        let t1 = Instant::now();
        out.clear();
        let ts = 1_700_000_000_000 + round as i64;
        match cache.ingest(&ctx, body, ts, &mut out, 0) {
            Ok(n) => samples += n.scraped,
            Err(e) => panic!("{e}"),
        }
        cache.end(&ctx, ts, &mut out, &wire, gzip);
        let t2 = Instant::now();
        // As the queue does: the buffer keeps its worst-case size.
        let need = snap::raw::max_compress_len(out.buf.len());
        if compressed.len() < need {
            compressed.resize(need, 0);
        }
        let n = encoder
            .compress(&out.buf, &mut compressed)
            .unwrap_or_else(|e| panic!("{e}"));
        snapped = n;
        let t3 = Instant::now();
        if round > 0 {
            spent[0] += t1 - t0;
            spent[1] += t2 - t1;
            spent[2] += t3 - t2;
        }
    }
    let per = |d: Duration| {
        d.as_nanos() as f64 / (samples as f64 * (rounds as f64 - 1.0) / rounds as f64)
    };
    println!(
        "{rounds} scrapes, {samples} samples, {} bytes encoded, {} snappy; ns/sample after round 1: inflate {:.0}, parse+encode {:.0}, snappy {:.0}",
        out.buf.len(),
        snapped,
        per(spent[0]),
        per(spent[1]),
        per(spent[2]),
    );
}
