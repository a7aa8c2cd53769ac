//! A mutation fuzzer for the exposition parser and the series cache, on
//! stable Rust (cargo-fuzz needs nightly, which this project's machines do
//! not have). Seeds: the real fixture and the demo payload; mutations: byte
//! flips, inserted syntax characters, truncation, line splicing and
//! duplication. Every input goes through the parser, every sample through the
//! label iterator and the series cache, whose encoded labels are checked
//! against the general path; any panic is a finding and its input
//! is written to `fuzz-crash-*.txt`.
//!
//! ```sh
//! cargo run --release --example fuzz_parser -- SECONDS [SEED]
//! ```

#[path = "../tests/common/payload.rs"]
mod payload;

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use metrics_relay::Parser;
use metrics_relay::{EncodedSamples, encode_labels, split_entry};
use metrics_relay::{SeriesCache, TargetContext};

const SPECIAL: &[u8] = b"{}\",=\\\n #\t:_e+-.0123456789NaInfHELPTYPE\x00\xff\r";

fn mutate(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.usize(..seeds.len())].clone();
    if b.len() > 4096 && rng.bool() {
        let start = rng.usize(..b.len());
        let end = (start + rng.usize(1..4096)).min(b.len());
        b = b[start..end].to_vec();
    }
    for _ in 0..rng.usize(1..8) {
        if b.is_empty() {
            b.push(SPECIAL[rng.usize(..SPECIAL.len())]);
            continue;
        }
        let i = rng.usize(..b.len());
        match rng.u8(..6) {
            0 => b[i] ^= 1 << rng.u8(..8),
            1 => b.insert(i, SPECIAL[rng.usize(..SPECIAL.len())]),
            2 => {
                b.remove(i);
            }
            3 => b.truncate(i),
            4 => {
                let j = rng.usize(..b.len());
                let (lo, hi) = (i.min(j), i.max(j).min(lo_cap(i.min(j), b.len())));
                let chunk = b[lo..hi].to_vec();
                let at = rng.usize(..=b.len());
                b.splice(at..at, chunk);
            }
            _ => b[i] = SPECIAL[rng.usize(..SPECIAL.len())],
        }
    }
    b
}

fn lo_cap(lo: usize, len: usize) -> usize {
    (lo + 256).min(len)
}

fn exercise(input: &[u8], ctx: &TargetContext) -> (usize, usize) {
    let mut cache = SeriesCache::new();
    let mut out = EncodedSamples::default();
    let (mut ok, mut err) = (0, 0);
    // The whole input, then its first half (series vanish: the previous
    // body is re-read for their markers), then the whole again.
    let half = input[..input.len() / 2]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(&input[..0], |p| &input[..=p]);
    for (round, body) in [input, half, input].into_iter().enumerate() {
        // The parser alone, label by label.
        for s in Parser::new(body) {
            match s {
                Ok(s) => {
                    for l in s.labels() {
                        let _ = l;
                    }
                }
                Err(e) => {
                    assert!(e.line >= 1);
                    err += 1;
                    break;
                }
            }
        }
        out.clear();
        match cache.ingest(ctx, body, round as i64, &mut out, 0) {
            Ok(n) => {
                ok += n.scraped as usize;
                // Differential: every sample's labels, as the hot path
                // encoded them, equal the general path's.
                for (i, s) in Parser::new(body).flatten().enumerate() {
                    let want = ctx
                        .series_labels(&s)
                        .ok()
                        .flatten()
                        .map(|l| encode_labels(&l));
                    let got = split_entry(out.slice(i, i + 1)).map(|(l, ..)| l.to_vec());
                    assert_eq!(got.as_deref(), want.as_deref(), "sample {i}");
                }
                cache.end(ctx, round as i64, &mut out, body, false);
            }
            Err(_) => {
                out.clear();
                cache.mark_all_stale(ctx, round as i64, &mut out);
            }
        }
        // Whatever was encoded must slice at every boundary.
        let _ = out.slice(0, out.len());
    }
    (ok, err)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut seeds = vec![payload::control_plane(1).text.into_bytes()];
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/prometheus-server.237mfs.prom.txt"
    );
    seeds.push(std::fs::read(fixture).unwrap_or_else(|e| panic!("{fixture}: {e}")));
    seeds.push(b"a{b=\"c\\\\\\\"\\n\",} 1 2\n# TYPE a counter\n".to_vec());
    let ctx = common::target_context();
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut samples, mut errors, mut crashes) = (0u64, 0u64, 0u64, 0u64);
    std::panic::set_hook(Box::new(|_| {}));
    while Instant::now() < end {
        for _ in 0..256 {
            let input = mutate(&mut rng, &seeds);
            match std::panic::catch_unwind(|| exercise(&input, &ctx)) {
                Ok((ok, err)) => {
                    samples += ok as u64;
                    errors += err as u64;
                    // Keep interesting, still-parsable inputs as new seeds.
                    if err == 0 && ok > 0 && seeds.len() < 64 && rng.u8(..100) == 0 {
                        seeds.push(input);
                    }
                }
                Err(_) => {
                    crashes += 1;
                    let path = format!("fuzz-crash-{seed}-{runs}.txt");
                    let _ = std::fs::write(&path, &input);
                    eprintln!("PANIC on input written to {path}");
                }
            }
            runs += 1;
        }
    }
    println!(
        "fuzz_parser: {secs}s, seed {seed}: {runs} inputs, {samples} samples accepted, {errors} inputs rejected, {crashes} panics"
    );
    if crashes > 0 {
        std::process::exit(1);
    }
}
