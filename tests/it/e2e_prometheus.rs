//! End to end against a real Prometheus (Debian's `prometheus` package) as
//! the remote-write receiver: what Prometheus stores equals, series by series,
//! what the mTLS target served.
//!
//! Needs `prometheus` on PATH (or `PROMETHEUS_BIN`); `scripts/test.sh`
//! installs it. Set `METRICS_RELAY_SKIP_E2E=1` to skip deliberately.

use crate::common;

use std::time::Duration;

use common::prom::{query, require_prometheus, start_prometheus};
use common::{MtlsTarget, Pki, RelayProc, payload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_what_the_target_served() {
    let Some(bin) = require_prometheus() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(
        &bin,
        &dir.path().join("prom"),
        "global:\n  scrape_interval: 1h\n",
    )
    .await;
    let pki = Pki::new(&dir.path().join("pki"));
    let page = payload::control_plane(3);
    let target = MtlsTarget::start(&pki, page.text.clone()).await;
    let cfg = format!(
        r#"
global:
  scrape_interval: 1s
  external_labels: {{cluster: ack-one-e2e}}
scrape_configs:
  - job_name: ack-control-plane
    scheme: https
    params: {{hosting: ["true"]}}
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: kubernetes}}
    static_configs: [{{targets: ["{addr}"]}}]
remote_write:
  - url: {url}/api/v1/write
    queue_config: {{batch_send_deadline: 500ms}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        addr = target.addr,
        url = prom.url,
    );
    let relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    let instance = target.addr.to_string();

    let mut up = Vec::new();
    for _ in 0..200 {
        up = query(&prom, "up{job=\"ack-control-plane\"}").await;
        if !up.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.len(), 1, "up never arrived; relay log:\n{}", relay.log());
    let (labels, value) = &up[0];
    assert_eq!(*value, 1.0);
    assert_eq!(labels["instance"], instance);
    assert_eq!(labels["cluster"], "ack-one-e2e");

    // Every series the target served, with its value, and nothing else.
    let stored = query(
        &prom,
        "{job=\"ack-control-plane\",__name__!~\"up|scrape_.*\"}",
    )
    .await;
    assert_eq!(stored.len(), page.series.len(), "series count");
    for s in &page.series {
        let mut want = s.labels.clone();
        want.insert("job".into(), "ack-control-plane".into());
        want.insert("instance".into(), instance.clone());
        want.insert("cluster".into(), "ack-one-e2e".into());
        let got = stored.iter().find(|(l, _)| *l == want);
        let (_, v) = got.unwrap_or_else(|| panic!("series {want:?} missing from Prometheus"));
        assert_eq!(*v, s.value, "value of {want:?}");
    }
    let n = query(&prom, "scrape_samples_scraped{job=\"ack-control-plane\"}").await;
    assert_eq!(n[0].1, page.series.len() as f64);
    drop(relay);
    drop(prom);
}
