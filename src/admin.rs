//! The admin HTTP server (hyper 1): health, readiness, self-metrics, targets.
//!
//! - `GET /healthz`: 200 while the process loop runs.
//! - `GET /readyz`: 200 once the config and TLS material are loaded (they are
//!   before the server starts) and every target had its first scrape attempt;
//!   503 with the targets still waiting otherwise.
//! - `GET /metrics`: our own metrics ([`crate::telemetry`]).
//! - `GET /targets`: each target's state as JSON.
//! - `POST /-/reload`: reload the config file; 200, or 400 with the reason
//!   (the running config stays).

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
pub fn route(state: &AdminState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match path {
        "/healthz" | "/-/healthy" => reply(StatusCode::OK, "text/plain", "ok\n"),
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
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.encode(),
        ),
        "/targets" => match serde_json::to_vec_pretty(&state.snapshot()) {
            Ok(j) => reply(StatusCode::OK, "application/json", j),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
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

/// Binds the listener (so a bad address fails start-up, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `cancel`.
pub async fn serve(listener: TcpListener, state: AdminState, cancel: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin server accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    if req.uri().path() == "/-/reload" && req.method() == Method::POST {
                        return Ok::<_, Infallible>(reload(&state).await);
                    }
                    Ok(route(&state, req.method(), req.uri().path()))
                }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
            }
        });
    }
}
