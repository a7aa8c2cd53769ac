//! Wiring: config → remote-write queues and senders, scrape loops, admin
//! server; and the shutdown sequence.
//!
//! Shutdown (SIGTERM/SIGINT, or the caller's token): scraping stops first
//! (no staleness markers, as Prometheus), then every sender seals its open
//! batch and keeps sending what is queued for at most the grace period, then
//! the admin server stops. What could not be sent in time is counted as
//! dropped with `reason="shutdown"`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::http;
use crate::remote_write::queue::Queue;
use crate::remote_write::sender::Sender;
use crate::scrape::{self, ScrapeLoop, Sink, TargetStatus};
use crate::telemetry::{Metrics, RemoteLabels};
use crate::tls::TlsError;

/// Errors that stop the relay from starting.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("scrape_configs[{index}] (job {job:?}).tls_config: {source}")]
    ScrapeTls {
        index: usize,
        job: String,
        #[source]
        source: TlsError,
    },
    #[error("remote_write[{index}].tls_config: {source}")]
    RemoteTls {
        index: usize,
        #[source]
        source: TlsError,
    },
    #[error("{0}")]
    Target(String),
    #[error("server.listen_address {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub listen_address: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// How long shutdown may spend sending what is queued.
    pub shutdown_grace: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            listen_address: None,
            data_dir: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Checks what `check` checks: every TLS file loads and every target URL is valid.
pub fn check(cfg: &Config) -> Result<usize, RelayError> {
    for (index, sc) in cfg.scrape_configs.iter().enumerate() {
        http::client_config_check(sc.tls_config.as_ref()).map_err(|source| {
            RelayError::ScrapeTls {
                index,
                job: sc.job_name.clone(),
                source,
            }
        })?;
    }
    for (index, rw) in cfg.remote_write.iter().enumerate() {
        http::client_config_check(rw.tls_config.as_ref())
            .map_err(|source| RelayError::RemoteTls { index, source })?;
    }
    let t = scrape::targets(cfg).map_err(RelayError::Target)?;
    Ok(t.len())
}

/// Runs the relay until `cancel`; returns after the shutdown sequence.
pub async fn run(
    cfg: Config,
    opts: RunOptions,
    cancel: CancellationToken,
) -> Result<(), RelayError> {
    let metrics = Metrics::new();
    if let Some(dir) = &opts.data_dir {
        std::fs::create_dir_all(dir).map_err(|source| RelayError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }

    // Remote write: one queue and one sender per destination.
    let send_cancel = CancellationToken::new();
    let senders = TaskTracker::new();
    let mut queues = Vec::new();
    for (index, rw) in cfg.remote_write.iter().enumerate() {
        let client = http::client(rw.tls_config.as_ref(), rw.remote_timeout.0)
            .map_err(|source| RelayError::RemoteTls { index, source })?;
        let name = rw.queue_name(index);
        let qc = &rw.queue_config;
        let queue = Arc::new(Queue::new(
            qc.max_samples_per_send,
            qc.capacity.saturating_mul(qc.max_shards),
            qc.batch_send_deadline.0,
            metrics.clone(),
            RemoteLabels {
                remote_name: name.clone(),
                url: rw.url.clone(),
            },
        ));
        let sender = Sender::new(
            name.clone(),
            rw.clone(),
            client,
            queue.clone(),
            metrics.clone(),
        )
        .map_err(RelayError::Target)?;
        tracing::info!(remote_name = %name, url = %rw.url, "remote write configured");
        senders.spawn(sender.run(send_cancel.clone(), opts.shutdown_grace));
        queues.push(Sink {
            queue,
            write_relabel: rw.write_relabel_configs.clone().into(),
        });
    }
    if queues.is_empty() {
        tracing::warn!("no remote_write configured: scraped samples are not sent anywhere");
    }

    // Scraping: one HTTP client per scrape config, one task per target.
    let scrape_cancel = cancel.child_token();
    let scrapers = TaskTracker::new();
    let targets = scrape::targets(&cfg).map_err(RelayError::Target)?;
    let mut clients = Vec::new();
    for (index, sc) in cfg.scrape_configs.iter().enumerate() {
        let c = http::client(sc.tls_config.as_ref(), sc.timeout()).map_err(|source| {
            RelayError::ScrapeTls {
                index,
                job: sc.job_name.clone(),
                source,
            }
        })?;
        clients.push(c);
    }
    let mut statuses = Vec::new();
    let listen = opts
        .listen_address
        .clone()
        .unwrap_or_else(|| cfg.server.listen_address.clone());
    let addr: SocketAddr = listen.parse().map_err(|e| RelayError::Listen {
        addr: listen.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")),
    })?;
    let listener = admin::bind(addr)
        .await
        .map_err(|source| RelayError::Listen {
            addr: listen.clone(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    for t in targets {
        let status = Arc::new(Mutex::new(TargetStatus::new(&t)));
        statuses.push(status.clone());
        tracing::info!(job = %t.job, url = %t.url, interval = %crate::units::format_duration(t.interval), "target configured");
        let client = clients[t.config_index].clone();
        let sl = ScrapeLoop::new(Arc::new(t), client, queues.clone(), metrics.clone(), status);
        scrapers.spawn(sl.run(scrape_cancel.clone()));
    }
    scrapers.close();

    let admin_cancel = CancellationToken::new();
    let state = AdminState {
        metrics: metrics.clone(),
        targets: Arc::new(statuses),
    };
    let admin_task = tokio::spawn(admin::serve(listener, state, admin_cancel.clone()));
    tracing::info!(listen_address = %bound, version = env!("CARGO_PKG_VERSION"), "metrics-relay started");

    cancel.cancelled().await;
    tracing::info!("shutting down: scraping stopped, sending what is queued");
    scrape_cancel.cancel();
    scrapers.wait().await;
    send_cancel.cancel();
    senders.close();
    senders.wait().await;
    admin_cancel.cancel();
    let _ = admin_task.await;
    tracing::info!("shutdown complete");
    Ok(())
}
