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
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Paths served to a connection over the cap: the probes, so that a flood
/// of idle connections never fails a liveness check.
pub(super) fn probe_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/-/healthy" | "/readyz" | "/-/ready")
}

/// How long a connection over the cap may take to send its request.
pub(super) const OVER_CAP_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a new connection may take to become one: its TLS handshake
/// (client certificate included), or its first byte without TLS.
pub(super) const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections over the cap served one answer on the probe paths at once.
const OVER_CAP_SLOTS: usize = 32;

/// Descriptors the admin server may hold: half the soft open-file limit
/// (the other half is the scrapes', the queue's and the senders'), at least
/// 64, and no more than its connections can use.
fn descriptor_share(max_connections: usize, handshakes: usize) -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let half = usize::try_from(soft / 2).unwrap_or(usize::MAX).max(64);
    half.min(max_connections + handshakes + OVER_CAP_SLOTS)
}

/// Connections still in their handshake, oldest first. When there are too
/// many, the oldest is closed to make room: a client that completes its
/// handshake in milliseconds cannot be kept out by sockets that say
/// nothing, however many are opened.
#[derive(Default)]
struct Pending {
    next: u64,
    order: std::collections::VecDeque<(u64, CancellationToken)>,
}

impl Pending {
    fn insert(&mut self) -> (u64, CancellationToken) {
        self.next += 1;
        let t = CancellationToken::new();
        self.order.push_back((self.next, t.clone()));
        (self.next, t)
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.order.iter().position(|(x, _)| *x == id) {
            self.order.remove(i);
        }
    }

    /// Closes the oldest pending connection; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        match self.order.pop_front() {
            Some((_, t)) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves until `cancel`, over TLS when `tls` is given (its current
/// configuration for each new connection: rotation needs no restart).
///
/// A connection first has [`HANDSHAKE_TIMEOUT`] to become one (its TLS
/// handshake and client-certificate check, or its first byte); at most
/// `max_connections` connections wait so at once, and a new one beyond that
/// closes the oldest waiting. Only then does it count against
/// `max_connections`: that many are served as usual (keep-alive); one
/// beyond them gets one answer, on the probe paths only (others: 503), then
/// is closed. The admin server holds at most its share of descriptors
/// (half the open-file limit): past it, a new connection closes the oldest
/// waiting one, or is closed at once, so a flood of connections never takes
/// the descriptors the disk queue and the scrapes need. Accept errors (out
/// of file descriptors) back off and are logged once per ten seconds.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    cancel: CancellationToken,
    max_connections: usize,
    tls: Option<tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>>,
) {
    let max_connections = max_connections.max(1);
    let handshakes = max_connections.max(16);
    let share = descriptor_share(max_connections, handshakes);
    let served = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let over_cap = Arc::new(tokio::sync::Semaphore::new(OVER_CAP_SLOTS));
    let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
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
        let (id, evicted) = {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            // Descriptors in use: connections served, over the cap, and
            // waiting. An evicted one is no longer counted (its task closes
            // its socket as soon as it runs).
            let in_use = (max_connections - served.available_permits())
                + (OVER_CAP_SLOTS - over_cap.available_permits())
                + p.order.len();
            if (in_use >= share || p.order.len() >= handshakes) && !p.evict_oldest() {
                // Every descriptor of the share is a working connection:
                // this one is closed at once.
                drop(p);
                drop(stream);
                tracing::debug!(
                    "admin server: closed a new connection at once (its descriptor share is in use)"
                );
                continue;
            }
            p.insert()
        };
        let state = state.clone();
        let cancel = cancel.clone();
        let tls = tls.as_ref().map(|rx| rx.borrow().clone());
        let (served, over_cap, pending) = (served.clone(), over_cap.clone(), pending.clone());
        tokio::spawn(async move {
            let done = |p: &std::sync::Mutex<Pending>| {
                p.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            };
            match tls {
                None => {
                    // The first byte ends the "handshake" of plain HTTP
                    // (peeked, not read: hyper reads it; `readable()` alone
                    // may wake before any byte came).
                    let mut first = [0u8; 1];
                    let ready = tokio::select! {
                        _ = evicted.cancelled() => false,
                        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)) => matches!(r, Ok(Ok(n)) if n > 0),
                    };
                    done(&pending);
                    if ready {
                        serve_established(stream, state, cancel, &served, &over_cap, true).await;
                    } else {
                        tracing::debug!(
                            "admin server closed a connection that sent nothing (timed out, or to make room)"
                        );
                    }
                }
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    let handshake = tokio::select! {
                        _ = evicted.cancelled() => None,
                        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => Some(r),
                    };
                    done(&pending);
                    match handshake {
                        Some(Ok(Ok(tls))) => {
                            // With a client CA, a connection without a
                            // verified certificate (VerifyClientCertIfGiven:
                            // a kubelet probe) gets the probe paths only.
                            let (_, session) = tls.get_ref();
                            let verified =
                                session.peer_certificates().is_some_and(|c| !c.is_empty());
                            let needs_cert = state.client_certs_required;
                            serve_established(
                                tls,
                                state,
                                cancel,
                                &served,
                                &over_cap,
                                verified || !needs_cert,
                            )
                            .await;
                        }
                        Some(Ok(Err(e))) => {
                            tracing::debug!(error = %e, "admin server TLS handshake failed")
                        }
                        Some(Err(_)) => tracing::debug!("admin server TLS handshake timed out"),
                        None => tracing::debug!(
                            "admin server closed a connection still in its handshake to make room"
                        ),
                    }
                }
            }
        });
    }
}

/// A connection past its handshake: served as usual with a permit, else
/// one answer on the probe paths if an over-cap slot is free, else closed.
async fn serve_established<I>(
    io: I,
    state: AdminState,
    cancel: CancellationToken,
    served: &Arc<tokio::sync::Semaphore>,
    over_cap: &Arc<tokio::sync::Semaphore>,
    authenticated: bool,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match served.clone().try_acquire_owned() {
        Ok(permit) => {
            serve_conn(io, state, cancel, false, authenticated).await;
            drop(permit);
        }
        Err(_) => {
            if let Ok(slot) = over_cap.clone().try_acquire_owned() {
                serve_conn(io, state, cancel, true, authenticated).await;
                drop(slot);
            } else {
                tracing::debug!(
                    "admin server: closed a connection past max_connections and the probe slots"
                );
            }
        }
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
