//! Criterion benchmarks of the hot path: parsing, a whole steady-state
//! scrape (labels encoded from the text, staleness table, protobuf), the same
//! with a metric relabeling rule (cached results), snappy and zstd of a batch (the storage
//! codecs), and a request in each wire format from zstd-stored batches. Inputs: the real
//! Prometheus fixture in `tests/data/` and a generated
//! control-plane-sized page. The `prometheus-parse` crate is the baseline
//! for parsing (it builds owned samples; ours borrows from the body).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metrics_relay::Parser;
use metrics_relay::{
    Codec, Compressor, EncodedSamples, MetaCache, Stored, WireEncoder, WireFormat,
};
use metrics_relay::{SeriesCache, TargetContext};

mod common;

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![("generated-20k", common::generated_page(20_000))];
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/prometheus-server.237mfs.prom.txt"
    );
    let b = std::fs::read(fixture).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    v.push(("fixture-237mfs", b));
    v
}

fn bench(c: &mut Criterion) {
    for (name, body) in inputs() {
        let samples = Parser::new(&body).count() as u64;
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(samples));
        let text = String::from_utf8_lossy(&body).into_owned();
        g.bench_function("baseline-prometheus-parse", |b| {
            b.iter(|| {
                let lines = black_box(&text).lines().map(|l| Ok(l.to_owned()));
                prometheus_parse::Scrape::parse(lines)
                    .map(|s| s.samples.len())
                    .unwrap_or(0)
            })
        });
        g.bench_function("parse", |b| {
            b.iter(|| {
                let mut sum = 0.0;
                for s in Parser::new(black_box(&body)) {
                    sum += s.map(|s| s.value).unwrap_or(0.0);
                }
                sum
            })
        });
        let ctx = common::target_context();
        let mut cache = SeriesCache::new();
        let mut out = EncodedSamples::default();
        // A whole steady-state scrape: parse, labels merged and encoded
        // straight from the text, series looked up for staleness, samples
        // written as protobuf.
        g.bench_function("parse+encode+staleness", |b| {
            b.iter(|| {
                out.clear();
                let ts = 1_700_000_000_000;
                let _ = cache.ingest(&ctx, black_box(&body), ts, &mut out, 0);
                cache.end(&ctx, ts, &mut out, &body, false);
                out.len()
            })
        });
        // The same with `global.prometheus_compatibility: 2`: `le` and
        // `quantile` values as written, not in Prometheus 3's float form
        // (what the default costs).
        let v2_ctx = TargetContext {
            float_label_values: false,
            ..ctx.clone()
        };
        let mut v2_cache = SeriesCache::new();
        let mut v2_out = EncodedSamples::default();
        g.bench_function("parse+encode+staleness/prometheus-2-forms", |b| {
            b.iter(|| {
                v2_out.clear();
                let ts = 1_700_000_000_000;
                let _ = v2_cache.ingest(&v2_ctx, black_box(&body), ts, &mut v2_out, 0);
                v2_cache.end(&v2_ctx, ts, &mut v2_out, &body, false);
                v2_out.len()
            })
        });
        // The same with a metric_relabel_configs rule: relabeled label sets
        // come from the per-series relabeling cache.
        let relabel_ctx = TargetContext {
            metric_relabel: serde_json::from_str::<Vec<metrics_relay::RelabelConfig>>(
                r#"[{"source_labels": ["__name__"], "regex": "zzz_.*", "action": "drop"}]"#,
            )
            .expect("valid rule")
            .into(),
            ..ctx.clone()
        };
        let mut relabel_cache = SeriesCache::new();
        let mut relabel_out = EncodedSamples::default();
        g.bench_function("parse+relabel-cache-hit+staleness", |b| {
            b.iter(|| {
                relabel_out.clear();
                let ts = 1_700_000_000_000;
                let _ =
                    relabel_cache.ingest(&relabel_ctx, black_box(&body), ts, &mut relabel_out, 0);
                relabel_cache.end(&relabel_ctx, ts, &mut relabel_out, &body, false);
                relabel_out.len()
            })
        });
        let mut enc = snap::raw::Encoder::new();
        g.bench_function("snappy-batches-of-2000", |b| {
            b.iter(|| {
                let mut total = 0;
                let mut i = 0;
                while i < out.len() {
                    let j = (i + 2000).min(out.len());
                    total += enc
                        .compress_vec(out.slice(i, j))
                        .map(|v| v.len())
                        .unwrap_or(0);
                    i = j;
                }
                total
            })
        });
        for level in [1, 3] {
            let mut c = Compressor::new(level);
            let mut buf = Vec::new();
            g.bench_function(format!("zstd-{level}-batches-of-2000"), |b| {
                b.iter(|| {
                    let mut total = 0;
                    let mut i = 0;
                    while i < out.len() {
                        let j = (i + 2000).min(out.len());
                        buf.clear();
                        c.compress(Codec::Zstd, out.slice(i, j), &mut buf)
                            .expect("compress");
                        total += buf.len();
                        i = j;
                    }
                    total
                })
            });
        }
        // The sender's side: requests of two zstd-stored batches (joined),
        // in each wire format.
        let mut c = Compressor::new(1);
        let mut stored = Vec::new();
        let mut i = 0;
        while i < out.len() {
            let j = (i + 1000).min(out.len());
            let mut data = Vec::new();
            c.compress(Codec::Zstd, out.slice(i, j), &mut data)
                .expect("compress");
            stored.push(Stored {
                codec: Codec::Zstd,
                data: data.into(),
            });
            i = j;
        }
        let meta = MetaCache::default();
        for (label, format) in [
            ("wire-1.0-snappy-from-zstd", WireFormat::V1),
            ("wire-1.0-zstd-from-zstd", WireFormat::V1Zstd),
            ("wire-2.0-snappy-from-zstd", WireFormat::V2),
        ] {
            let mut enc = WireEncoder::default();
            g.bench_function(label, |b| {
                b.iter(|| {
                    stored
                        .chunks(2)
                        .map(|pair| enc.body(format, pair, &meta).expect("encode").len())
                        .sum::<usize>()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
