//! The admin HTTP server (hyper 1): health, readiness, self-metrics, targets.
//!
//! - `GET /healthz`: 200 while the process loop runs.
//! - `GET /readyz`: 200 once the config and TLS material are loaded (they are
//!   before the server starts) and every target had its first scrape attempt;
//!   503 with the targets still waiting otherwise.
//! - `GET /metrics`: our own metrics ([`crate::telemetry`]).
//! - `GET /targets`: each target's state: HTML for people, JSON with
//!   `Accept: application/json` or `?format=json`.
//! - `GET /relay/metrics`: the pull path. The latest successful scrape of
//!   every target that is up, re-exposed in the text format with its final
//!   labels (target labels applied, so a ServiceMonitor with
//!   `honor_labels: true` keeps them). Each target's samples are swapped in
//!   whole after a scrape, never half-written. Optional bearer token
//!   (`server.relay_auth.credentials_file`). Served when
//!   `server.relay_metrics` is on (the default for a pull-only agent), with
//!   the results of every scrape from start-up on; off, 404 (never an empty
//!   200 that a Prometheus would record as a successful scrape of nothing).
//! - `POST /-/reload`: reload the config file; 200, or 400 with the reason
//!   (the running config stays). Only with `--web.enable-lifecycle`, as in
//!   Prometheus; otherwise 403.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::remote_write::proto::TimeSeries;
use crate::remote_write::samples::{EncodedSamples, split_entry};
use crate::scrape::{Health, SharedStatus, TargetStatus};
use crate::telemetry::Metrics;

/// A reload request: the relay answers with the outcome.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

/// What the admin server reads.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    pub targets: Arc<std::sync::RwLock<Vec<SharedStatus>>>,
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// Bearer token file protecting `/relay/metrics`, re-read per request.
    pub relay_auth: Arc<std::sync::RwLock<Option<std::path::PathBuf>>>,
    /// `server.relay_metrics`: the pull path is served, and every scrape
    /// keeps its result for it (from the first scrape on); off, nothing is
    /// kept (no copy of every target's samples) and the path answers 404.
    pub relay_metrics: Arc<std::sync::atomic::AtomicBool>,
    /// `--web.enable-lifecycle`: whether `POST /-/reload` is served (a
    /// network request that changes state is off unless asked for; SIGHUP
    /// always works).
    pub lifecycle: bool,
    /// The admin server checks client certificates: connections without a
    /// verified one are served the probe paths only.
    pub client_certs_required: bool,
    /// Unix ms of the main runtime's last heartbeat (0: none yet). The admin
    /// server runs on a thread of its own; `/healthz` fails when the main
    /// runtime has not run for [`STALL_LIMIT`].
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
}

/// How long the main runtime may go without a heartbeat before `/healthz`
/// fails (a liveness probe then restarts a wedged agent).
pub const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs [`serve`] on a thread with its own single-threaded runtime; the
/// returned receiver fires when it has stopped.
pub fn spawn_thread(
    listener: TcpListener,
    state: AdminState,
    cancel: CancellationToken,
    max_connections: usize,
    tls: Option<tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, state, cancel, max_connections, tls).await,
                    Err(e) => tracing::error!(error = %e, "admin server cannot start"),
                }
            });
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

impl AdminState {
    fn snapshot(&self) -> Vec<TargetStatus> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// Routes one request.
pub fn route(
    state: &AdminState,
    method: &Method,
    path: &str,
    query: &str,
    headers: &http::HeaderMap,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match path {
        "/healthz" | "/-/healthy" => {
            let beat = state.heartbeat.load(std::sync::atomic::Ordering::Relaxed);
            let silent = unix_ms().saturating_sub(beat);
            if beat > 0 && silent > STALL_LIMIT.as_millis() as u64 {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "unhealthy: the agent's runtime has not run for {} s\n",
                        silent / 1000
                    ),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ok\n")
            }
        }
        "/readyz" | "/-/ready" => {
            let waiting: Vec<String> = state
                .snapshot()
                .into_iter()
                .filter(|t| t.health == Health::Unknown)
                .map(|t| format!("{} {}", t.job, t.url))
                .collect();
            if waiting.is_empty() {
                reply(StatusCode::OK, "text/plain", "ready\n")
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "not ready: waiting for the first scrape of {} target(s):\n{}\n",
                        waiting.len(),
                        waiting.join("\n")
                    ),
                )
            }
        }
        // The registry writes OpenMetrics text (it ends in `# EOF`), so that
        // is what the content type says.
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        "/targets" => {
            let wants_json = query.split('&').any(|kv| kv == "format=json")
                || headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/json"));
            let targets = state.snapshot();
            if wants_json {
                match serde_json::to_vec_pretty(&targets) {
                    Ok(j) => reply(StatusCode::OK, "application/json", j),
                    Err(e) => reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        e.to_string(),
                    ),
                }
            } else {
                reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    targets_html(&targets),
                )
            }
        }
        "/relay/metrics" => {
            if let Err(why) = check_bearer(state, headers) {
                let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", format!("{why}\n"));
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            if !state
                .relay_metrics
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "the pull path is off: set server.relay_metrics: true\n",
                );
            }
            let mut out = String::new();
            for t in state.snapshot() {
                if let Some(latest) = &t.latest {
                    render_text(latest, &mut out);
                }
            }
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                out,
            )
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

fn check_bearer(state: &AdminState, headers: &http::HeaderMap) -> Result<(), &'static str> {
    let Some(path) = state
        .relay_auth
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    else {
        return Ok(());
    };
    let Ok(token) = std::fs::read_to_string(&path) else {
        tracing::error!(file = %path.display(), "cannot read server.relay_auth.credentials_file; refusing /relay/metrics");
        return Err("credentials unavailable");
    };
    let token = token.trim();
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110, section 11.1).
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim_start_matches(' '))
        })
        .unwrap_or("");
    // Compare without an early exit on the first differing byte.
    let same = token.len() == given.len()
        && token
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !token.is_empty() && same {
        Ok(())
    } else {
        Err("unauthorized")
    }
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v:?}")
    }
}

/// Renders encoded samples as text-format lines (no timestamps: the scraper
/// stamps them, and Prometheus's staleness handling keeps working).
pub fn render_text(samples: &EncodedSamples, out: &mut String) {
    use prost::Message;
    for k in 0..samples.len() {
        let Some((labels, value, _ts)) = split_entry(samples.slice(k, k + 1)) else {
            continue;
        };
        let Ok(ts) = TimeSeries::decode(labels) else {
            continue;
        };
        let Some(name) = ts.label("__name__") else {
            continue;
        };
        out.push_str(name);
        let mut first = true;
        for l in ts.labels.iter().filter(|l| l.name != "__name__") {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(&l.name);
            out.push_str("=\"");
            escape_label_value(&l.value, out);
            out.push('"');
        }
        if !first {
            out.push('}');
        }
        out.push(' ');
        out.push_str(&format_value(value));
        out.push('\n');
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn targets_html(targets: &[TargetStatus]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let up = targets.iter().filter(|t| t.health == Health::Up).count();
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>metrics-relay targets</title><style>\
         body{font-family:system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
         .up{background:#d4f7d4}.down{background:#f9d0d0}.unknown{background:#eee}\
         .err{font-family:monospace;white-space:pre-wrap;max-width:50em}</style></head><body>",
    );
    h.push_str(&format!(
        "<h1>Targets</h1><p>{up} of {} up. JSON: <a href=\"?format=json\">?format=json</a></p>",
        targets.len()
    ));
    h.push_str("<table><tr><th>job</th><th>endpoint</th><th>state</th><th>last scrape</th><th>duration</th><th>samples</th><th>error</th></tr>");
    for t in targets {
        let (class, state) = match t.health {
            Health::Up => ("up", "UP"),
            Health::Down => ("down", "DOWN"),
            Health::Unknown => ("unknown", "UNKNOWN"),
        };
        let last = t.last_scrape.map_or("never".to_string(), |ts| {
            format!("{:.1}s ago", (now - ts).max(0.0))
        });
        let dur = t
            .last_scrape_duration_seconds
            .map_or("-".to_string(), |d| format!("{:.3}s", d));
        h.push_str(&format!(
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{state}</td><td>{last}</td><td>{dur}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            html_escape(&t.job),
            html_escape(&t.url),
            t.samples,
            html_escape(t.last_error.as_deref().unwrap_or("")),
        ));
    }
    h.push_str("</table></body></html>\n");
    h
}

async fn reload(state: &AdminState) -> Response<Full<Bytes>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        );
    }
    match rx.await {
        Ok(Ok(())) => reply(StatusCode::OK, "text/plain", "config reloaded\n"),
        Ok(Err(e)) => reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("config reload rejected: {e}\n"),
        ),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        ),
    }
}

/// Raises the soft open-file limit to the hard limit (as Prometheus and most
/// servers do at start): a burst of connections or queue files should meet
/// the limit the administrator set, not the lower default soft one. Returns
/// (before, after).
pub fn raise_open_file_limit() -> std::io::Result<(Option<u64>, Option<u64>)> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    if l.current == l.maximum {
        return Ok((l.current, l.current));
    }
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    )?;
    Ok((l.current, l.maximum))
}

/// Binds the listener (so a bad address fails start-up, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Paths served to a connection over the cap: the probes, so that a flood
/// of idle connections never fails a liveness check.
fn probe_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/-/healthy" | "/readyz" | "/-/ready")
}

/// How long a connection over the cap may take to send its request.
const OVER_CAP_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves until `cancel`, over TLS when `tls` is given (its current
/// configuration for each new connection: rotation needs no restart). At most `max_connections` connections are served
/// as usual (keep-alive); a connection beyond them gets one answer, and only
/// on the probe paths (others: 503), then is closed, and is dropped after
/// two seconds if it sends nothing. Accept errors (out of file descriptors)
/// back off and are logged once per ten seconds with a count.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    cancel: CancellationToken,
    max_connections: usize,
    tls: Option<tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut accept_errors = 0u64;
    let mut last_error_log: Option<std::time::Instant> = None;
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    accept_errors += 1;
                    if last_error_log.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
                        tracing::warn!(error = %e, failures = accept_errors, "admin server cannot accept connections (out of file descriptors?); retrying");
                        last_error_log = Some(std::time::Instant::now());
                        accept_errors = 0;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let cancel = cancel.clone();
        let permit = permits.clone().try_acquire_owned().ok();
        let tls = tls.as_ref().map(|rx| rx.borrow().clone());
        tokio::spawn(async move {
            let over_cap = permit.is_none();
            match tls {
                None => serve_conn(stream, state, cancel, over_cap, true).await,
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    let limit = if over_cap {
                        OVER_CAP_HEADER_TIMEOUT
                    } else {
                        HANDSHAKE_TIMEOUT
                    };
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            // With a client CA, a connection without a
                            // verified certificate (VerifyClientCertIfGiven:
                            // a kubelet probe) gets the probe paths only.
                            let (_, session) = tls.get_ref();
                            let verified =
                                session.peer_certificates().is_some_and(|c| !c.is_empty());
                            let needs_cert = state.client_certs_required;
                            serve_conn(tls, state, cancel, over_cap, verified || !needs_cert).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "admin server TLS handshake failed")
                        }
                        Err(_) => tracing::debug!("admin server TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// A connection that gets the probe paths only; anything else is answered
/// with `refusal`. With `keep_alive` (a verified-less TLS client such as a
/// kubelet) as usual; without (a connection over the cap) one answer within
/// [`OVER_CAP_HEADER_TIMEOUT`], then it is closed.
async fn serve_probes_only<I>(
    io: I,
    state: AdminState,
    refusal: (StatusCode, &'static str),
    keep_alive: bool,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let r = if probe_path(req.uri().path()) {
                route(
                    &state,
                    req.method(),
                    req.uri().path(),
                    req.uri().query().unwrap_or(""),
                    req.headers(),
                )
            } else {
                reply(refusal.0, "text/plain", refusal.1)
            };
            Ok::<_, Infallible>(r)
        }
    });
    let mut b = http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new());
    if keep_alive {
        b.header_read_timeout(std::time::Duration::from_secs(10));
        let _ = b.serve_connection(TokioIo::new(io), svc).await;
    } else {
        b.keep_alive(false)
            .header_read_timeout(OVER_CAP_HEADER_TIMEOUT);
        let conn = b.serve_connection(TokioIo::new(io), svc);
        let _ = tokio::time::timeout(OVER_CAP_HEADER_TIMEOUT * 2, conn).await;
    }
}

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one connection: as usual, or `over_cap` (one answer, probe paths
/// only, see [`serve`]). Unless `authenticated`, only the probe paths are
/// served (403 elsewhere).
async fn serve_conn<I>(
    io: I,
    state: AdminState,
    cancel: CancellationToken,
    over_cap: bool,
    authenticated: bool,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if over_cap {
        let refusal = (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections to the admin server\n",
        );
        serve_probes_only(io, state, refusal, false).await;
        return;
    }
    if !authenticated {
        let refusal = (
            StatusCode::FORBIDDEN,
            "a client certificate issued by server.tls_server_config.client_ca_file is required\n",
        );
        serve_probes_only(io, state, refusal, true).await;
        return;
    }
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            if req.uri().path() == "/-/reload" {
                if !state.lifecycle {
                    return Ok::<_, Infallible>(reply(
                        StatusCode::FORBIDDEN,
                        "text/plain",
                        "Lifecycle API is not enabled (start with --web.enable-lifecycle; SIGHUP reloads too)\n",
                    ));
                }
                if req.method() == Method::POST || req.method() == Method::PUT {
                    return Ok(reload(&state).await);
                }
            }
            Ok(route(
                &state,
                req.method(),
                req.uri().path(),
                req.uri().query().unwrap_or(""),
                req.headers(),
            ))
        }
    });
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(lifecycle: bool) -> AdminState {
        AdminState {
            metrics: Metrics::new(),
            targets: Default::default(),
            reload: tokio::sync::mpsc::channel(1).0,
            relay_auth: Default::default(),
            relay_metrics: Default::default(),
            lifecycle,
            client_certs_required: false,
            heartbeat: Default::default(),
        }
    }

    #[test]
    fn metrics_content_type_matches_the_body() {
        let r = route(
            &state(false),
            &Method::GET,
            "/metrics",
            "",
            &http::HeaderMap::new(),
        );
        let ct = r.headers()[http::header::CONTENT_TYPE].to_str().unwrap();
        assert!(
            ct.starts_with("application/openmetrics-text; version=1.0.0"),
            "{ct}"
        );
        let body = futures_body(r);
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    fn futures_body(r: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }
}
