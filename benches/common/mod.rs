//! Inputs shared by `benches/hot_path.rs`, `benches/alloc_count.rs`,
//! `examples/profile_scrape.rs` and `examples/fuzz_parser.rs` (the examples
//! include this file by path): a kube-apiserver-like page and the target
//! context they measure and check with. Each uses part of it.
#![allow(dead_code)]

use metrics_relay::TargetContext;

/// `n` histogram buckets of `apiserver_request_duration_seconds`, labels in
/// client_golang's order (`le` last), one `# HELP`/`# TYPE` pair.
pub fn generated_page(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 160);
    s.push_str("# HELP apiserver_request_duration_seconds Response latency distribution.\n# TYPE apiserver_request_duration_seconds histogram\n");
    let les = [
        "0.005", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
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

/// Two target labels and one external label, as a scrape loop would have.
pub fn target_context() -> TargetContext {
    TargetContext {
        target_labels: vec![
            ("instance".into(), "10.0.0.1:6443".into()),
            ("job".into(), "ack-control-plane".into()),
        ],
        external_labels: vec![("cluster".into(), "prod".into())],
        honor_labels: false,
        honor_timestamps: true,
        metric_relabel: Default::default(),
        limits: Default::default(),
        timestamp_bounds: Default::default(),
        // The default (`global.prometheus_compatibility: 3`).
        float_label_values: true,
        family_budget: Default::default(),
    }
}
