//! End to end against a real Prometheus (Debian's `prometheus` package) as
//! the remote-write receiver: what Prometheus stores equals, series by series,
//! what the mTLS target served.
//!
//! Needs `prometheus` on PATH (or `PROMETHEUS_BIN`); `scripts/test.sh`
//! installs it. Set `METRICS_RELAY_SKIP_E2E=1` to skip deliberately.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{MtlsTarget, Pki, RelayProc, free_port, http_get, payload};

fn prometheus_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    })
}

struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_prometheus(bin: &Path, dir: &Path) -> Prometheus {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let port = free_port();
    let log = dir.join("prometheus.log");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start prometheus");
    let p = Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    for _ in 0..300 {
        if matches!(http_get(&format!("{}/-/ready", p.url)).await, Ok((200, _))) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "prometheus did not become ready:\n{}",
        std::fs::read_to_string(&p.log).unwrap_or_default()
    );
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Instant query → (labels, value) per series.
async fn query(prom: &Prometheus, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let (code, body) = http_get(&format!("{}/api/v1/query?query={}", prom.url, escape(q)))
        .await
        .expect("query");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let value = r["value"][1].as_str().unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap(),
            };
            (labels, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_what_the_target_served() {
    let Some(bin) = prometheus_bin() else {
        if std::env::var_os("METRICS_RELAY_SKIP_E2E").is_some() {
            eprintln!("METRICS_RELAY_SKIP_E2E set and no prometheus binary: skipped");
            return;
        }
        panic!(
            "no `prometheus` binary: install Debian's prometheus (scripts/test.sh does) or set PROMETHEUS_BIN"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let prom = start_prometheus(&bin, &dir.path().join("prom")).await;
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
