//! The admin HTTP server (hyper 1): health, readiness, self-metrics, targets.
//!
//! - `GET /healthz`: 200 while the process loop runs.
//! - `GET /readyz`: 200 once the config and TLS material are loaded (they are
//!   before the server starts) and every target had its first scrape attempt;
//!   503 with the targets still waiting otherwise.
//! - `GET /metrics`: our own metrics ([`crate::telemetry`]).
//! - `GET /targets`: each target's state: HTML for people, JSON with
//!   `Accept: application/json` or `?format=json`.
//! - `GET /explain?target=JOB|ADDRESS|URL&series=name{labels}`: the
//!   `explain` command's answer for the running config, as a page (linked
//!   from `/targets`).
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
//!
//! Layout: this file holds the shared state and the routes; `pull` the
//! pull path, `pages` the HTML, `server` the listener.

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

use crate::remote_write::samples::{EncodedSamples, label_pairs, split_entry};
use crate::scrape::{Health, SharedStatus, TargetStatus};
use crate::telemetry::Metrics;

mod pages;
mod pull;
mod server;

use pages::targets_html;
use pull::check_bearer;
pub(crate) use pull::render_text;
pub use server::raise_open_file_limit;
pub(crate) use server::{bind, serve};

/// A reload request: the relay answers with the outcome.
pub(crate) type ReloadRequest = tokio::sync::oneshot::Sender<Result<(), ReloadRejected>>;

/// Why a reload was refused (the relay's error; this module sits below it).
pub(crate) type ReloadRejected = Box<dyn std::error::Error + Send + Sync>;

/// What the admin server reads.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub metrics: Metrics,
    pub targets: Arc<std::sync::RwLock<Vec<SharedStatus>>>,
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// Bearer token file protecting `/relay/metrics`, re-read per request.
    pub relay_auth: Arc<std::sync::RwLock<Option<std::path::PathBuf>>>,
    /// The running config and discovered targets, for `/explain`.
    pub running: crate::explain::SharedRunning,
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
    /// Monotonic ms of the main runtime's last heartbeat (0: none yet;
    /// [`heartbeat_now`]). The admin
    /// server runs on a thread of its own; `/healthz` fails when the main
    /// runtime has not run for [`STALL_LIMIT`].
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
    /// Set by the relay once its first config runs; `/readyz` then waits
    /// for the first scrape of every target and latches.
    pub readiness: Readiness,
}

/// The readiness latch (as linkerd2-proxy's): not ready until the relay has
/// applied its first config ([`Readiness::started`]) and every target it
/// started had its first scrape attempt; then ready for good, so that a
/// reload adding a target never takes the pod out of its Service (and the
/// pull path out of Prometheus's reach).
#[derive(Clone, Debug, Default)]
pub(crate) struct Readiness {
    started: Arc<std::sync::atomic::AtomicBool>,
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Readiness {
    /// The relay's first config is applied: its targets are being scraped.
    pub(crate) fn started(&self) {
        self.started
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Ready, or the targets still waiting for their first scrape (latched
    /// once there are none).
    pub(crate) fn check(&self, waiting: impl FnOnce() -> Vec<String>) -> Result<(), Vec<String>> {
        use std::sync::atomic::Ordering;
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if !self.started.load(Ordering::Acquire) {
            return Err(vec!["the config is not applied yet".into()]);
        }
        let w = waiting();
        if w.is_empty() {
            self.ready.store(true, Ordering::Release);
            Ok(())
        } else {
            Err(w)
        }
    }
}

/// How long the main runtime may go without a heartbeat before `/healthz`
/// fails (a liveness probe then restarts a wedged agent).
pub(crate) const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Now on the monotonic clock, in milliseconds (what the heartbeat holds:
/// a wall-clock step must not look like a stalled runtime).
pub(crate) fn heartbeat_now() -> u64 {
    crate::clock::mono_ms() as u64
}

/// Runs [`serve`] on a thread with its own single-threaded runtime; the
/// returned receiver fires when it has stopped.
pub(crate) fn spawn_thread(
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
pub(crate) fn route(
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
            let silent = heartbeat_now().saturating_sub(beat);
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
            let ready = state.readiness.check(|| {
                state
                    .snapshot()
                    .into_iter()
                    .filter(|t| t.health == Health::Unknown)
                    .map(|t| format!("{} {}", t.job, t.url))
                    .collect()
            });
            if let Err(waiting) = ready {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "not ready: waiting for the first scrape of {} target(s):\n{}\n",
                        waiting.len(),
                        waiting.join("\n")
                    ),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "ready\n")
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
        "/explain" => {
            let param = |name: &str| {
                query.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k == name).then(|| pages::form_decode(v))
                })
            };
            let running = state
                .running
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let target = param("target").unwrap_or_default();
            let series = param("series").filter(|s| !s.trim().is_empty());
            let result = (!target.is_empty()).then(|| {
                crate::explain::explain(&running.cfg, &running.found, &target, series.as_deref())
            });
            reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                pages::explain_html(&target, series.as_deref().unwrap_or(""), result),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(lifecycle: bool) -> AdminState {
        AdminState {
            metrics: Metrics::new(),
            targets: Default::default(),
            reload: tokio::sync::mpsc::channel(1).0,
            relay_auth: Default::default(),
            running: Default::default(),
            relay_metrics: Default::default(),
            lifecycle,
            client_certs_required: false,
            heartbeat: Default::default(),
            readiness: Readiness::default(),
        }
    }

    fn target(health: Health) -> SharedStatus {
        let t = crate::scrape::targets(
            &crate::config::Config::from_yaml(
                "scrape_configs: [{job_name: j, static_configs: [{targets: ['h:1']}]}]",
            )
            .unwrap(),
        )
        .remove(0);
        let mut st = crate::scrape::TargetStatus::new(&t);
        st.health = health;
        Arc::new(std::sync::Mutex::new(st))
    }

    #[test]
    fn readiness_waits_for_the_config_and_first_scrapes_then_latches() {
        let s = state(false);
        let status = |s: &AdminState| {
            route(s, &Method::GET, "/readyz", "", &http::HeaderMap::new())
                .status()
                .as_u16()
        };
        assert_eq!(status(&s), 503, "no config applied yet");
        s.readiness.started();
        *s.targets.write().unwrap() = vec![target(Health::Unknown)];
        assert_eq!(status(&s), 503, "first scrape pending");
        *s.targets.write().unwrap() = vec![target(Health::Down)];
        assert_eq!(status(&s), 200, "a failed first scrape counts as attempted");
        // A reload adds a target that was never scraped: still ready.
        s.targets.write().unwrap().push(target(Health::Unknown));
        assert_eq!(status(&s), 200);
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
