//! A real VictoriaMetrics for the tests: the current release
//! (`VICTORIA_METRICS_BIN`, built by scripts/peers.sh) or Debian's 1.79
//! (`VICTORIA_METRICS_OLD_BIN`, else `/usr/bin/victoria-metrics`), on a port
//! the kernel picks, killed on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http_get;

/// The current VictoriaMetrics: `VICTORIA_METRICS_BIN` (scripts/test.sh
/// sets it to the release scripts/peers.sh builds), else
/// `victoria-metrics` on PATH.
pub fn current_bin() -> PathBuf {
    std::env::var_os("VICTORIA_METRICS_BIN")
        .map(PathBuf::from)
        .or_else(|| super::on_path("victoria-metrics"))
        .expect("no VictoriaMetrics: scripts/test.sh builds one (scripts/peers.sh), or set VICTORIA_METRICS_BIN")
}

/// Debian's VictoriaMetrics (1.79), the older release users still run:
/// `VICTORIA_METRICS_OLD_BIN`, else `/usr/bin/victoria-metrics`
/// (scripts/test.sh installs the package).
pub fn debian_bin() -> PathBuf {
    let p = std::env::var_os("VICTORIA_METRICS_OLD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/victoria-metrics"));
    assert!(
        p.exists(),
        "no Debian VictoriaMetrics at {}: scripts/test.sh installs the victoria-metrics package",
        p.display()
    );
    p
}

pub struct Victoria {
    pub child: Child,
    pub url: String,
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` with its data in `dir/vm`, its log in `dir/vm.log`, and
/// `extra` flags; returns once `/health` answers.
pub async fn start(bin: &Path, dir: &Path, extra: &[String]) -> Victoria {
    std::fs::create_dir_all(dir).unwrap();
    let mut child = Command::new(bin)
        .arg(format!("-storageDataPath={}", dir.join("vm").display()))
        // Port 0: the kernel picks; the test reads the port from /proc.
        .arg("-httpListenAddr=127.0.0.1:0")
        .args([
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("vm.log")).unwrap())
        .spawn()
        .expect("start victoria-metrics");
    let Some(port) = super::listening_port(child.id(), Duration::from_secs(30)) else {
        let _ = child.kill();
        panic!(
            "victoria-metrics did not listen: {}",
            std::fs::read_to_string(dir.join("vm.log")).unwrap_or_default()
        );
    };
    let url = format!("http://127.0.0.1:{port}");
    let vm = std::sync::Mutex::new(Victoria { child, url });
    let healthy = super::wait_async(Duration::from_secs(10), || async {
        let url = vm.lock().unwrap().url.clone();
        if let Ok((200, _)) = http_get(&format!("{url}/health")).await {
            return true;
        }
        if let Ok(Some(st)) = vm.lock().unwrap().child.try_wait() {
            panic!(
                "victoria-metrics exited ({st}): {}",
                std::fs::read_to_string(dir.join("vm.log")).unwrap_or_default()
            );
        }
        false
    })
    .await;
    assert!(healthy, "victoria-metrics did not become healthy");
    vm.into_inner().unwrap()
}

/// An instant query's first value, if any.
pub async fn query(vm: &Victoria, q: &str) -> Option<f64> {
    let url = format!(
        "{}/api/v1/query?query={}",
        vm.url,
        q.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let (_, body) = http_get(&url).await.expect("query");
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}
