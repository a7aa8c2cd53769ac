//! Test support shared by the integration tests and the demo aggregator:
//! certificates made at test time (rcgen), an mTLS target, a decoding
//! remote-write receiver, a realistic control-plane payload, and a handle on
//! the `metrics-relay` binary.
#![allow(dead_code)]

pub mod payload;
pub mod prom;
pub mod schema;
pub mod servers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::Request;

#[allow(unused_imports)]
pub use servers::{MtlsTarget, Pki, Receiver};

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` every 100 ms until it returns Some or `timeout` passes.
pub async fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plain HTTP GET on loopback; (status, body).
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    http_request(hyper::Method::GET, url, None, Duration::from_secs(5)).await
}

/// Plain HTTP POST with an empty body on loopback; (status, body).
pub async fn http_post(url: &str) -> Result<(u16, String), String> {
    http_request(hyper::Method::POST, url, None, Duration::from_secs(15)).await
}

/// A request with an empty body, over TLS when `tls` is given; (status,
/// body), or the failure in words (a refused handshake included).
pub async fn http_request(
    method: hyper::Method,
    url: &str,
    tls: Option<&metrics_relay::config::TlsConfig>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    http_request_with(method, url, tls, &[], timeout).await
}

/// [`http_request`] with extra request headers.
pub async fn http_request_with(
    method: hyper::Method,
    url: &str,
    tls: Option<&metrics_relay::config::TlsConfig>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let client =
        metrics_relay::http::client(tls, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::default()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| metrics_relay::tls::describe_error(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The `metrics-relay` binary under test.
/// The first `name` on `$PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

pub fn relay_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_metrics-relay"))
}

/// A running `metrics-relay run`; killed on drop.
pub struct RelayProc {
    pub child: Child,
    pub admin: String,
    pub log: PathBuf,
}

impl RelayProc {
    /// Writes `config` to `dir/relay.yml` and starts the agent on a free port,
    /// with its data dir (the durable queue) in `dir/data`.
    pub async fn start(dir: &Path, config: &str) -> RelayProc {
        Self::start_with(dir, config, true).await
    }

    /// As [`RelayProc::start`], optionally without `--data-dir` (memory queue).
    pub async fn start_with(dir: &Path, config: &str, durable: bool) -> RelayProc {
        std::fs::create_dir_all(dir).expect("relay dir");
        let cfg = dir.join("relay.yml");
        std::fs::write(&cfg, config).expect("write config");
        let port = free_port();
        let log = dir.join("relay.log");
        let mut cmd = Command::new(relay_bin());
        cmd.args(["run", "--config"]).arg(&cfg).args([
            "--listen-address",
            &format!("127.0.0.1:{port}"),
            "--shutdown-grace",
            "3s",
            "--log-level",
            "debug",
            "--tls-reload-interval",
            "1s",
            "--web.enable-lifecycle",
        ]);
        if durable {
            cmd.arg("--data-dir").arg(dir.join("data"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn metrics-relay");
        let admin = format!("http://127.0.0.1:{port}");
        let ok = wait_async(Duration::from_secs(10), || {
            http_get_ok(format!("{admin}/healthz"))
        })
        .await;
        assert!(
            ok,
            "metrics-relay did not come up; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        RelayProc { child, admin, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The JSON of `/targets`.
    pub async fn targets(&self) -> serde_json::Value {
        let (_, body) = http_get(&format!("{}/targets?format=json", self.admin))
            .await
            .expect("targets");
        serde_json::from_str(&body).expect("targets json")
    }

    /// The `last_error` of target `i` on `/targets` ("" when none).
    pub async fn last_error(&self, i: usize) -> String {
        self.targets().await[i]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.admin))
            .await
            .expect("metrics")
            .1
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_get_ok(url: String) -> bool {
    matches!(http_get(&url).await, Ok((200, _)))
}

async fn wait_async<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A metric's value from a text exposition (first line starting with `prefix`).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
