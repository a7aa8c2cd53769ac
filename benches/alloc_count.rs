//! Heap allocations per sample on the hot path, counted by a wrapping global
//! allocator (the only `unsafe` in the project, and only in this benchmark).
//!
//! A target is scraped repeatedly: parse → labels encoded from the text →
//! staleness table → encoded output, reusing buffers as the scrape loop does.
//! The pages (same series, changing values) go round twice: the first round
//! fills the table and sizes the buffers (a page a few bytes longer than the
//! last grows a buffer once); the second round is the steady state and must
//! not allocate at all. Prints the counts, and exits non-zero if a
//! steady-state scrape allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use metrics_relay::EncodedSamples;
use metrics_relay::SeriesCache;

mod common;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn page(n: usize, round: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "apiserver_request_total{{code=\"200\",resource=\"r{}\",verb=\"LIST\",escaped=\"a\\\"b\"}} {}\n",
            i,
            i + round
        ));
    }
    s.into_bytes()
}

fn main() {
    let ctx = common::target_context();
    let mut inputs: Vec<(String, Vec<Vec<u8>>)> = vec![(
        "generated-20k".into(),
        (0..3).map(|r| page(20_000, r)).collect(),
    )];
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/prometheus-server.237mfs.prom.txt"
    );
    let b = std::fs::read(fixture).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    inputs.push((
        "fixture-237mfs".into(),
        vec![b.clone(), b.clone(), b.clone()],
    ));
    // The same with per-family budgets on (no family over them): following
    // families costs no allocation either.
    inputs.push((
        "fixture-237mfs-budgets".into(),
        vec![b.clone(), b.clone(), b],
    ));
    let budgeted = metrics_relay::TargetContext {
        family_budget: metrics_relay::FamilyBudget {
            series: 10_000,
            buckets: 100,
        },
        ..ctx.clone()
    };
    let mut failed = false;
    for (name, pages) in inputs {
        let ctx = if name.ends_with("-budgets") {
            &budgeted
        } else {
            &ctx
        };
        let mut cache = SeriesCache::new();
        let mut out = EncodedSamples::default();
        let mut results = Vec::new();
        for (round, body) in pages.iter().chain(pages.iter()).enumerate() {
            let before = ALLOCS.load(Ordering::Relaxed);
            out.clear();
            let ts = 1_700_000_000_000 + round as i64;
            let samples = cache
                .ingest(ctx, body, ts, &mut out, 0)
                .expect("valid page")
                .scraped;
            cache.end(ctx, ts, &mut out, body, false);
            let allocs = ALLOCS.load(Ordering::Relaxed) - before;
            results.push((samples, allocs));
        }
        for (round, (samples, allocs)) in results.iter().enumerate() {
            let steady = round >= pages.len();
            let kind = if round == 0 {
                "first scrape (table fill)"
            } else if !steady {
                "sizing buffers"
            } else {
                "steady state"
            };
            println!(
                "{name}: scrape {round} ({kind}): {samples} samples, {allocs} heap allocations, {:.4} per sample",
                *allocs as f64 / *samples as f64
            );
            if steady && *allocs > 0 {
                failed = true;
            }
        }
    }
    if failed {
        eprintln!("a steady-state scrape allocated");
        std::process::exit(1);
    }
}
