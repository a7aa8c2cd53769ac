//! A real Prometheus (Debian's package) for end-to-end tests: started on a
//! free loopback port with its own config and data dir, killed on drop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http_get;

/// `PROMETHEUS_BIN`, else `prometheus` on PATH.
pub fn prometheus_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return Some(PathBuf::from(p));
    }
    super::on_path("prometheus")
}

/// The major version of the Prometheus at `bin` (`prometheus, version
/// 3.16.0 …` → 3).
pub fn major_version(bin: &Path) -> u8 {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{}: no version in {text:?}", bin.display()))
}

/// Every Prometheus the tests are given, one per major version, with it:
/// `PROMETHEUS3_BIN` and `PROMETHEUS2_BIN` (scripts/test.sh sets both:
/// Prometheus 3 built by scripts/peers.sh, Debian's 2.42), and
/// `PROMETHEUS_BIN` / PATH. Fails when there is none; says which ran.
pub fn every_major_version() -> Vec<(PathBuf, u8)> {
    let mut out: Vec<(PathBuf, u8)> = Vec::new();
    let given = ["PROMETHEUS3_BIN", "PROMETHEUS2_BIN"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .chain(prometheus_bin());
    for bin in given {
        let major = major_version(&bin);
        if !out.iter().any(|(_, m)| *m == major) {
            out.push((bin, major));
        }
    }
    assert!(
        !out.is_empty(),
        "no `prometheus` binary: scripts/test.sh sets PROMETHEUS3_BIN and PROMETHEUS2_BIN"
    );
    eprintln!(
        "against Prometheus {}",
        out.iter()
            .map(|(b, m)| format!("{m} ({})", b.display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

pub struct Prometheus {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Prometheus {
    /// SIGTERM and wait (its TSDB stays for a restart).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Replaces its config file with `config` and reloads it (SIGHUP),
    /// waiting until the running config is the new one.
    pub async fn reload(&self, dir: &Path, config: &str) {
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let _ = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status();
        let want: String = config.split_whitespace().collect();
        for _ in 0..100 {
            if let Ok((200, body)) = http_get(&format!("{}/api/v1/status/config", self.url)).await
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
                && let Some(yaml) = v["data"]["yaml"].as_str()
                && want.contains("job_name:")
                && config
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("- job_name: "))
                    .all(|job| yaml.contains(job))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "prometheus did not take its new config:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus with `config` (YAML) as a remote-write receiver too,
/// on a port the kernel picks.
pub async fn start_prometheus(bin: &Path, dir: &Path, config: &str) -> Prometheus {
    start_prometheus_on(bin, dir, config, 0).await
}

/// A Prometheus that only receives (remote write), in `dir/prom`.
pub async fn receiving_prometheus(dir: &Path) -> Prometheus {
    let bin = require_prometheus().expect("a Prometheus to receive");
    start_prometheus(&bin, &dir.join("prom"), "global:\n  scrape_interval: 1h\n").await
}

/// As [`start_prometheus`], on a given port (to restart one in place; 0:
/// the kernel picks one, read back from /proc).
pub async fn start_prometheus_on(bin: &Path, dir: &Path, config: &str, port: u16) -> Prometheus {
    let p = spawn_prometheus(bin, dir, config, port, &[]);
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

/// Starts Prometheus with `config` and `extra` flags, returning once it
/// listens (not once it is ready: with a `--web.config.file` asking for
/// client certificates, plain HTTP cannot ask). `url` is `http://`.
pub fn spawn_prometheus(
    bin: &Path,
    dir: &Path,
    config: &str,
    port: u16,
    extra: &[String],
) -> Prometheus {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join("prometheus.log");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start prometheus");
    let mut child = super::Reaped::new(child);
    let port = match port {
        0 => super::listening_port(child.child().id(), Duration::from_secs(30)).unwrap_or_else(
            || {
                panic!(
                    "prometheus did not listen:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        ),
        p => p,
    };
    Prometheus {
        child: child.take(),
        url: format!("http://127.0.0.1:{port}"),
        log,
    }
}

pub fn escape(s: &str) -> String {
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
pub async fn query(prom: &Prometheus, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
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

/// Skips (with `METRICS_RELAY_SKIP_E2E`) or fails when there is no Prometheus.
pub fn require_prometheus() -> Option<PathBuf> {
    match prometheus_bin() {
        Some(b) => Some(b),
        None if std::env::var_os("METRICS_RELAY_SKIP_E2E").is_some() => {
            eprintln!("METRICS_RELAY_SKIP_E2E set and no prometheus binary: skipped");
            None
        }
        None => panic!(
            "no `prometheus` binary: install Debian's prometheus (scripts/test.sh does) or set PROMETHEUS_BIN"
        ),
    }
}
