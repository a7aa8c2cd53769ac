//! The admin listener: the connection cap that keeps the probes answering
//! under a connection flood, TLS with hot certificate rotation, accept-error
//! backoff, and the open-file limit raised at start.

use super::*;

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
pub(super) fn probe_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/-/healthy" | "/readyz" | "/-/ready")
}

/// How long a connection over the cap may take to send its request.
pub(super) const OVER_CAP_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

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
pub(super) const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
