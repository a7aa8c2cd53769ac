//! Test support shared by the integration tests and the demo aggregator:
//! certificates made at test time (rcgen), an mTLS target, a decoding
//! remote-write receiver, a realistic control-plane payload, and a handle on
//! the `metrics-relay` binary.
#![allow(dead_code)]

pub mod payload;
pub mod prom;
pub mod schema;
pub mod servers;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::Request;

#[allow(unused_imports)]
pub use servers::{MtlsTarget, Pki, Receiver};

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound (so nobody else gets it) but not listening. For a
/// target that is down or a receiver that is not there.
pub fn refused_port() -> (rustix::fd::OwnedFd, u16) {
    use rustix::net::{AddressFamily, SocketType, bind, getsockname, ipproto, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, Some(ipproto::TCP)).expect("socket");
    bind(
        &fd,
        &std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0),
    )
    .expect("bind");
    let port = match getsockname(&fd).expect("getsockname").try_into() {
        Ok(std::net::SocketAddr::V4(a)) => a.port(),
        other => panic!("getsockname: {other:?}"),
    };
    (fd, port)
}

/// The TCP port process `pid` listens on (its first listening socket),
/// read from /proc: for programs started on port 0 that do not say which
/// port they got. Waits up to `limit`.
pub fn listening_port(pid: u32, limit: Duration) -> Option<u16> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|l| {
                let l = l.to_string_lossy().into_owned();
                l.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .map(String::from)
            })
            .collect();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local address, state 0A = LISTEN, inode.
                if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                    let port = f[1].rsplit(':').next()?;
                    return u16::from_str_radix(port, 16).ok();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
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
        metrics_relay::http_client(tls, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::default()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| metrics_relay::describe_error(&e))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The first `name` on `$PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The `metrics-relay` binary under test.
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
        Self::start_with_env(dir, config, durable, &[]).await
    }

    /// As [`RelayProc::start_with`], with extra environment variables.
    pub async fn start_with_env(
        dir: &Path,
        config: &str,
        durable: bool,
        env: &[(&str, &str)],
    ) -> RelayProc {
        std::fs::create_dir_all(dir).expect("relay dir");
        let cfg = dir.join("relay.yml");
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.join("relay.log");
        let mut cmd = Command::new(relay_bin());
        cmd.args(["run", "--config"]).arg(&cfg).args([
            // Port 0: the kernel picks one (no race with another test); the
            // agent logs the address it bound.
            "--listen-address",
            "127.0.0.1:0",
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
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn metrics-relay");
        let mut child = Reaped::new(child);
        let admin = bound_address(&log, child.child(), Duration::from_secs(10))
            .map(|a| format!("http://{a}"))
            .unwrap_or_else(|| {
                panic!(
                    "metrics-relay did not come up; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let ok = wait_async(Duration::from_secs(10), || {
            http_get_ok(format!("{admin}/healthz"))
        })
        .await;
        assert!(
            ok,
            "metrics-relay did not come up; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        RelayProc {
            child: child.take(),
            admin,
            log,
        }
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

/// `text` with each `from` replaced by its `to`; every `from` must be there
/// (a shipped file that changed fails the test that adapts it, by name).
pub fn replace_all(text: &str, pairs: &[(&str, String)], what: &str) -> String {
    let mut out = text.to_string();
    for (from, to) in pairs {
        assert!(out.contains(from), "{what} has no {from:?}");
        out = out.replace(from, to);
    }
    out
}

pub async fn wait_async<F, Fut>(timeout: Duration, mut f: F) -> bool
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

/// (VmHWM, VmRSS) of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A child process killed (and reaped) on drop.
pub struct Reaped(Option<Child>);

impl Reaped {
    pub fn new(child: Child) -> Reaped {
        Reaped(Some(child))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child until taken")
    }

    /// The child, no longer killed on drop.
    pub fn take(mut self) -> Child {
        self.0.take().expect("a child until taken")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The admin address an agent started with `--listen-address HOST:0`
/// bound, read from its `metrics-relay started` log line; None if it exited
/// or did not log it within `limit`.
pub fn bound_address(log: &Path, child: &mut Child, limit: Duration) -> Option<String> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("metrics-relay started")) {
            let addr = line
                .split("listen_address=")
                .nth(1)?
                .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                .find(|s| !s.is_empty())?;
            return Some(addr.to_string());
        }
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
