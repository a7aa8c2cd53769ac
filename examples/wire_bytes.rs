//! Bytes per sample, on disk and on the wire, for each storage codec and
//! wire format, through the agent's own code path: consecutive scrapes of a
//! page are encoded by the series cache (target and external labels, as a
//! scrape loop does), cut into batches of 2,000 samples, the target's
//! metadata in its scrape's first batch every other scrape (30 s scrapes,
//! `send_interval` 1m), stored under each codec and encoded in each format.
//! No timing: these are sizes, the same on every machine (`scripts/bench.sh`
//! puts them in BENCHMARKS.md).
//!
//! `cargo run --release --example wire_bytes`; `HARNESS_PAGES=DIR` adds the
//! peer harness's generated target (the `v0.prom`..`v3.prom` of one target
//! directory, the pages of the fleet cases).

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../tests/common/payload.rs"]
mod payload;

use bytes::Bytes;
use metrics_relay::{
    Codec, Compressor, EncodedSamples, ExpositionFormat, MetaCache, SeriesCache, Stored,
    WireEncoder, WireFormat, encode_metadata,
};

/// Samples per batch (`max_samples_per_send`); `BATCH` overrides.
fn batch_size() -> usize {
    std::env::var("BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(2_000)
}
const SCRAPES: u64 = 20;

/// A page by scrape round.
type Page = Box<dyn Fn(u64) -> Vec<u8>>;

/// Batches (1.0 `WriteRequest` bytes) of `SCRAPES` scrapes of `page(round)`,
/// and the number of samples in them.
fn batches(page: &dyn Fn(u64) -> Vec<u8>) -> (Vec<Vec<u8>>, usize) {
    let ctx = common::target_context();
    let mut cache = SeriesCache::default();
    let mut out = EncodedSamples::default();
    let mut all = Vec::new();
    let mut samples = 0;
    for round in 0..SCRAPES {
        let body = page(round);
        let ts = 1_764_000_000_000 + round as i64 * 30_000;
        out.clear();
        cache
            .ingest(&ctx, &body, ts, &mut out, 0)
            .expect("the page parses");
        cache.end(&ctx, ts, &mut out, &body, false);
        let mut meta = Vec::new();
        if round % 2 == 0 {
            encode_metadata(&body, ExpositionFormat::Text, &mut meta);
        }
        let mut i = 0;
        while i < out.len() {
            let j = (i + batch_size()).min(out.len());
            let mut b = out.slice(i, j).to_vec();
            if i == 0 {
                b.extend_from_slice(&meta);
            }
            all.push(b);
            samples += j - i;
            i = j;
        }
    }
    (all, samples)
}

fn main() {
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/prometheus-server.237mfs.prom.txt"
    ))
    .expect("tests/data fixture");
    let inputs: Vec<(&str, Page)> = vec![
        (
            "control-plane",
            Box::new(|r| payload::control_plane(r).text.into_bytes()),
        ),
        ("fixture-237mfs", Box::new(move |_| fixture.clone())),
    ];
    let mut inputs = inputs;
    if let Ok(dir) = std::env::var("HARNESS_PAGES") {
        // The peer harness's generated target (v0..v3 in turn).
        let pages: Vec<Vec<u8>> = (0..4)
            .map(|v| std::fs::read(format!("{dir}/v{v}.prom")).expect("harness page"))
            .collect();
        inputs.push((
            "peer harness target",
            Box::new(move |r| pages[r as usize % 4].clone()),
        ));
    }
    println!(
        "| page | samples | raw 1.0 | disk: snappy | disk: zstd-1 | disk: zstd-3 | wire: 1.0 snappy | wire: 1.0 zstd | wire: 2.0 snappy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, page) in &inputs {
        let (batches, samples) = batches(page.as_ref());
        let raw: usize = batches.iter().map(Vec::len).sum();
        let mut row = vec![name.to_string(), samples.to_string(), per(raw, samples)];
        for (codec, level) in [(Codec::Snappy, 1), (Codec::Zstd, 1), (Codec::Zstd, 3)] {
            let mut c = Compressor::new(level);
            let mut n = 0;
            for b in &batches {
                let mut out = Vec::new();
                c.compress(codec, b, &mut out).expect("compress");
                n += out.len();
            }
            row.push(per(n, samples));
        }
        // The wire, from zstd-stored records (the disk queue), one request
        // per record.
        let mut c = Compressor::new(1);
        let stored: Vec<Stored> = batches
            .iter()
            .map(|b| {
                let mut out = Vec::new();
                c.compress(Codec::Zstd, b, &mut out).expect("compress");
                Stored {
                    codec: Codec::Zstd,
                    data: Bytes::from(out),
                }
            })
            .collect();
        for format in [WireFormat::V1, WireFormat::V1Zstd, WireFormat::V2] {
            let mut enc = WireEncoder::default();
            let meta = MetaCache::default();
            let n: usize = stored
                .iter()
                .map(|s| {
                    enc.body(format, std::slice::from_ref(s), &meta)
                        .expect("encode")
                        .len()
                })
                .sum();
            row.push(per(n, samples));
        }
        println!("| {} |", row.join(" | "));
    }
}

fn per(bytes: usize, samples: usize) -> String {
    format!("{:.2}", bytes as f64 / samples as f64)
}
