//! Wiring: config → remote-write queues and senders, scrape loops, admin
//! server; reloads; and the shutdown sequence.
//!
//! Reload (SIGHUP or `POST /-/reload`): the new file is loaded, validated and
//! its TLS material built first; any error rejects the reload and the running
//! config stays. Otherwise targets whose identity (job, URL, labels, scrape
//! settings) is unchanged keep running with their series cache (no false
//! staleness); removed targets send staleness markers for their series and
//! stop; new ones start. Remote-write destinations whose config is unchanged
//! keep their queue; removed ones send what they hold (within the grace
//! period) and stop.
//!
//! Shutdown (SIGTERM/SIGINT, or the caller's token): scraping stops first
//! (no staleness markers, as Prometheus), then every sender seals its open
//! batch and keeps sending what is queued for at most the grace period, then
//! the admin server stops. What could not be sent in time is counted as
//! dropped with `reason="shutdown"`.
//!
//! Layout: this file holds the running agent (apply a prepared config,
//! reload, run until a signal, stop); `prepare` builds what a config needs
//! first and the checks `check` shares with `run`; `start` what `run` does
//! before the agent runs (data directory, admin thread, config watch);
//! `handles` the lifecycle handles of scrape loops and senders.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState, ReloadRequest};
use crate::config::{Config, RemoteWriteConfig};
use crate::discovery::{Found, Update};
use crate::http::{self, HttpClient};
use crate::remote_write::queue::{Queue, StorageConfig};
use crate::remote_write::sender::Sender;
use crate::scrape::{self, ScrapeLoop, SharedStatus, Sink, TargetIdentity, TargetStatus};
use crate::shard::Sharding;
use crate::telemetry::{Metrics, RemoteLabels};
use crate::tls::TlsError;

mod handles;
mod prepare;
mod start;

use handles::{DestinationHandle, TargetHandle};

use prepare::{Built, preflight};
pub use prepare::{Checked, check};
use start::{Admin, ConfigWatch, bind_admin, export_sharding, prepare_data_dir};

/// Errors that stop the relay from starting (or reject a reload).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Config(#[from] Box<crate::config::ConfigError>),
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
    #[error(
        "the scrape configs give no target (after relabel_configs): the agent would run and scrape nothing"
    )]
    NoTargets,
    #[error("remote_write[{index}].queue: {message}")]
    Queue { index: usize, message: String },
    #[error("remote_write[{index}].url: {source}")]
    RemoteUrl {
        index: usize,
        #[source]
        source: crate::remote_write::sender::SenderError,
    },
    #[error("{field}: {message}")]
    Credentials { field: String, message: String },
    #[error("{0}")]
    Discovery(String),
    #[error("server.listen_address {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server.tls_server_config: {0}")]
    ServerTls(#[source] TlsError),
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
    /// How often TLS files and kubeconfigs are checked for rotation.
    pub tls_reload_interval: Duration,
    /// Serve `POST /-/reload` (`--web.enable-lifecycle`).
    pub enable_lifecycle: bool,
    /// Which targets this agent scrapes (`--shard-count`, `--shard-index`,
    /// `--replication-factor`).
    pub sharding: Sharding,
    /// `--external-label NAME=VALUE`: added to (or replacing) the config's
    /// `global.external_labels`, at every load (e.g. a replica label from the
    /// pod name, where the config file is shared by the replicas).
    pub external_labels: Vec<(String, String)>,
    /// `--config.auto-reload-interval`: compare the config file with what
    /// was loaded this often, and reload when it changed. Off when `None`.
    pub config_reload_every: Option<Duration>,
}

/// Loads the config file with the command line's external labels.
fn load(path: &Path, external_labels: &[(String, String)]) -> Result<Config, RelayError> {
    let mut cfg = Config::load(path).map_err(Box::new)?;
    for (k, v) in external_labels {
        cfg.global.external_labels.insert(k.clone(), v.clone());
    }
    Ok(cfg)
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            listen_address: None,
            data_dir: None,
            shutdown_grace: Duration::from_secs(10),
            tls_reload_interval: http::TLS_RELOAD_INTERVAL,
            enable_lifecycle: false,
            sharding: Sharding::default(),
            external_labels: Vec::new(),
            config_reload_every: None,
        }
    }
}

/// The running agent: what a config was applied into.
struct Runtime {
    metrics: Metrics,
    /// `server.relay_metrics` (shared with the admin server and every scrape
    /// loop): keep each scrape's result for the pull path.
    keep_latest: Arc<std::sync::atomic::AtomicBool>,
    /// How often TLS material is checked for rotation.
    tls_every: Duration,
    /// `--data-dir`: where disk queues live by default.
    data_dir: Option<PathBuf>,
    /// How long a stopping destination may keep sending.
    grace: Duration,
    /// Shutdown of every scrape loop (no staleness markers).
    shutdown: CancellationToken,
    /// One per `remote_write` entry, in config order.
    destinations: Vec<DestinationHandle>,
    /// The sinks every scrape loop writes to (swapped whole on a reload).
    sinks_tx: watch::Sender<Arc<Vec<Sink>>>,
    /// Running scrape loops by what makes each target what it is.
    targets: HashMap<TargetIdentity, TargetHandle>,
    /// The config applied last, and its scrape configs' clients.
    cfg: Arc<Config>,
    clients: Vec<watch::Receiver<HttpClient>>,
    /// What discovery found last, per scrape config.
    found: Found,
    /// Discovery of the config applied last: updates of older generations
    /// (before a reload) are ignored.
    generation: u64,
    discovery_stop: CancellationToken,
    discovery_tx: mpsc::Sender<Update>,
    /// Which targets this agent scrapes.
    sharding: Sharding,
    /// `--external-label`s, applied at every reload too.
    external_labels: Vec<(String, String)>,
    /// Every target's status, in config order, for `/targets` and `/readyz`.
    statuses: Arc<std::sync::RwLock<Vec<SharedStatus>>>,
    /// The config and discovered targets, as `/explain` reads them.
    running: crate::explain::SharedRunning,
    /// The scrape loops' and the senders' tasks, waited for at shutdown.
    scrapers: TaskTracker,
    senders: TaskTracker,
}

impl Runtime {
    /// Makes the running state match `cfg` (already validated and built).
    ///
    /// A transaction: everything that can fail (HTTP clients, opening and
    /// locking disk queues, senders) is built first, into `prepared`; only
    /// when all of it succeeded does anything running change. On an error the
    /// prepared pieces are dropped (a queue opened here is closed again and
    /// its lock released) and every running destination and target is left
    /// exactly as it was.
    fn apply(&mut self, cfg: &Config, built: Built) -> Result<(), RelayError> {
        // Phase 1: prepare. Nothing running is touched.
        struct Start {
            name: String,
            config: RemoteWriteConfig,
            sender: Sender,
            queue: Arc<Queue>,
            write_relabel: Arc<[crate::relabel::RelabelConfig]>,
            /// The running destination of the same name whose queue this
            /// one takes over.
            takes_over: Option<usize>,
        }
        enum Plan {
            Keep(usize),
            Start(Box<Start>),
        }
        let mut plans = Vec::with_capacity(cfg.remote_write.len());
        for (index, rw) in cfg.remote_write.iter().enumerate() {
            let name = rw.queue_name(index);
            if let Some(pos) = self.destinations.iter().position(|d| d.runs(&name, rw)) {
                plans.push(Plan::Keep(pos));
                continue;
            }
            let client = http::watched_client(
                rw.tls_config.as_ref(),
                rw.remote_timeout.0,
                self.metrics.clone(),
                crate::metric_labels::TlsScope::RemoteWrite,
                &name,
                self.tls_every,
            )
            .map_err(|source| RelayError::RemoteTls { index, source })?;
            // A changed destination keeps its queue (a disk queue cannot be
            // opened twice, and nothing queued may be lost).
            let takes_over = self.destinations.iter().position(|d| d.name() == name);
            let queue = match takes_over {
                Some(pos) => self.destinations[pos].sink().queue.clone(),
                None => Arc::new(self.open_queue(index, rw, &name)?),
            };
            let sender = Sender::new(
                name.clone(),
                rw.clone(),
                client,
                queue.clone(),
                self.metrics.clone(),
            )
            .map_err(|source| RelayError::RemoteUrl { index, source })?;
            plans.push(Plan::Start(Box::new(Start {
                name,
                config: rw.clone(),
                sender,
                queue,
                write_relabel: rw.write_relabel_configs.clone().into(),
                takes_over,
            })));
        }

        // Phase 2: commit. Nothing below fails.
        let mut old: Vec<Option<DestinationHandle>> = std::mem::take(&mut self.destinations)
            .into_iter()
            .map(Some)
            .collect();
        for plan in plans {
            match plan {
                Plan::Keep(pos) => {
                    if let Some(d) = old[pos].take() {
                        self.destinations.push(d);
                    }
                }
                Plan::Start(start) => {
                    let Start {
                        name,
                        config,
                        sender,
                        queue,
                        write_relabel,
                        takes_over,
                    } = *start;
                    // The predecessor stops at once (its queue stays) and the
                    // new sender starts on the queue when it has ended.
                    let predecessor = takes_over
                        .and_then(|pos| old[pos].take())
                        .map(DestinationHandle::hand_over);
                    tracing::info!(remote_name = %name, url = %sender.url(), "remote write configured");
                    let sink = Sink {
                        queue,
                        write_relabel,
                        metadata_every: config
                            .metadata_config
                            .send
                            .then_some(config.metadata_config.send_interval.0),
                    };
                    self.destinations.push(DestinationHandle::spawn(
                        &self.senders,
                        sender,
                        sink,
                        name,
                        config,
                        self.grace,
                        predecessor,
                    ));
                }
            }
        }
        for d in old.into_iter().flatten() {
            tracing::info!(remote_name = %d.name(), "remote write removed; sending what it holds, then stopping");
            d.stop();
        }
        if self.destinations.is_empty() {
            tracing::warn!("no remote_write configured: samples are kept for /relay/metrics only");
        }
        self.sinks_tx.send_replace(Arc::new(
            self.destinations.iter().map(|d| d.sink().clone()).collect(),
        ));

        self.cfg = Arc::new(cfg.clone());
        self.clients = built.clients;
        self.found = built.found;
        self.publish_running();
        self.apply_targets(built.targets);
        // Discovery starts again from what `build` read; updates from the
        // previous config's watchers are ignored from now on.
        self.discovery_stop.cancel();
        self.discovery_stop = self.shutdown.child_token();
        self.generation += 1;
        for (index, d) in built.discoverers {
            d.spawn(
                index,
                self.generation,
                self.discovery_tx.clone(),
                self.discovery_stop.clone(),
            );
        }
        Ok(())
    }

    /// What `/explain` sees: the config and discovered targets in use.
    fn publish_running(&self) {
        let running = Arc::new(crate::explain::Running {
            cfg: self.cfg.clone(),
            found: self.found.clone(),
        });
        *self.running.write().unwrap_or_else(|p| p.into_inner()) = running;
    }

    /// A discoverer found new targets for scrape config `u.index`.
    fn discovered(&mut self, u: Update) {
        if u.generation != self.generation {
            return;
        }
        self.found.insert(u.index, u.groups);
        self.publish_running();
        let targets = scrape::resolve(&self.cfg, &self.found, &self.sharding);
        self.apply_targets(targets);
        tracing::info!(targets = self.targets.len(), "discovered targets changed");
    }

    /// Targets: keep the unchanged (series cache and all), start the new,
    /// remove the rest (with staleness markers).
    fn apply_targets(&mut self, resolved: scrape::Resolved) {
        let mut old = std::mem::take(&mut self.targets);
        let mut statuses = Vec::new();
        let owned = resolved.owned.len();
        for t in resolved.owned {
            if let Some(running) = old.remove(&t.identity) {
                statuses.push(running.status().clone());
                self.targets.insert(t.identity.clone(), running);
                continue;
            }
            let client = match &t.tls {
                None => self.clients[t.config_index].clone(),
                // A discovered kubeconfig: a client of its own, following
                // its rotation.
                Some(tls) => match http::watched_client(
                    Some(tls),
                    t.timeout,
                    self.metrics.clone(),
                    crate::metric_labels::TlsScope::Scrape,
                    &format!("{}/{}", t.job, t.instance),
                    self.tls_every,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(job = %t.job, url = %t.url, error = %e, "discovered target not started: its TLS material does not load");
                        continue;
                    }
                },
            };
            let status = Arc::new(Mutex::new(TargetStatus::new(&t)));
            statuses.push(status.clone());
            tracing::info!(job = %t.job, url = %t.url, interval = %crate::units::format_duration(t.interval), source = t.source.as_deref().unwrap_or("static"), "target configured");
            let identity = t.identity.clone();
            let sl = ScrapeLoop::new(
                Arc::new(t),
                client,
                self.sinks_tx.subscribe(),
                self.keep_latest.clone(),
                self.metrics.clone(),
                status.clone(),
            );
            let handle = TargetHandle::spawn(&self.scrapers, sl, self.shutdown.clone(), status);
            // Targets are unique by identity (`scrape::resolve`); were one
            // not, the handle replaced here would stop its loop on drop.
            if let Some(replaced) = self.targets.insert(identity, handle) {
                replaced.remove();
            }
        }
        for (_, t) in old {
            t.remove();
        }
        *self.statuses.write().unwrap_or_else(|p| p.into_inner()) = statuses;
        for (owned, n) in [("true", owned), ("false", resolved.others)] {
            self.metrics
                .shard_targets
                .get_or_create(&crate::telemetry::OwnedLabels {
                    owned: owned.into(),
                })
                .set(n as i64);
        }
    }

    async fn reload(&mut self, path: &Path) -> Result<Config, RelayError> {
        let cfg = load(path, &self.external_labels)?;
        // The admin server stays on the address it was started on.
        preflight(&cfg, Some("0.0.0.0:0"))?;
        let built = Self::build(&cfg, &self.metrics, self.tls_every, &self.sharding)?;
        self.apply(&cfg, built)?;
        Ok(cfg)
    }
}

/// Runs the relay from the config file at `path` until `cancel`; returns
/// after the shutdown sequence.
pub async fn run(
    path: PathBuf,
    opts: RunOptions,
    cancel: CancellationToken,
) -> Result<(), RelayError> {
    let cfg = load(&path, &opts.external_labels)?;
    preflight(&cfg, opts.listen_address.as_deref())?;
    let metrics = Metrics::new();
    prepare_data_dir(opts.data_dir.as_deref())?;
    let server_tls = match &cfg.server.tls_server_config {
        Some(t) => Some(
            crate::web_tls::watched(t, opts.tls_reload_interval, metrics.clone())
                .map_err(RelayError::ServerTls)?,
        ),
        None => None,
    };
    if server_tls.is_none() && cfg.server.relay_auth.is_none() && cfg.relay_metrics_enabled() {
        tracing::warn!(
            "the pull path (/relay/metrics) is served with neither TLS client certificates (server.tls_server_config) nor a token (server.relay_auth): anyone who reaches the admin port can read what is scraped"
        );
    }
    let built = Runtime::build(&cfg, &metrics, opts.tls_reload_interval, &opts.sharding)?;
    export_sharding(&metrics, &opts.sharding);
    let (listener, bound) = bind_admin(&cfg, &opts).await?;
    let (mut rt, discovery_rx) = Runtime::new(&cfg, &opts, metrics.clone(), &cancel);
    rt.apply(&cfg, built)?;
    metrics.reload_success.set(1);
    let admin = Admin::start(listener, &bound, &rt, &cfg, &opts, server_tls)?;
    tracing::info!(listen_address = %bound, version = env!("CARGO_PKG_VERSION"), "metrics-relay started");
    let watch = opts
        .config_reload_every
        .map(|every| ConfigWatch::new(&path, every));
    let events = Events {
        discovery: discovery_rx,
        reload: admin.reload_rx,
        watch,
    };
    rt.serve(&path, events, &admin.relay_auth, &cancel).await;
    rt.stop().await;
    admin.cancel.cancel();
    let _ = admin.task.await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// What the running agent reacts to besides its timers.
struct Events {
    discovery: mpsc::Receiver<Update>,
    reload: mpsc::Receiver<ReloadRequest>,
    watch: Option<ConfigWatch>,
}

impl Runtime {
    /// The running state for `cfg`, nothing applied yet; and the channel
    /// discovery updates arrive on.
    fn new(
        cfg: &Config,
        opts: &RunOptions,
        metrics: Metrics,
        cancel: &CancellationToken,
    ) -> (Runtime, mpsc::Receiver<Update>) {
        let (sinks_tx, _) = watch::channel(Arc::new(Vec::new()));
        let (discovery_tx, discovery_rx) = mpsc::channel::<Update>(16);
        let shutdown = cancel.child_token();
        let rt = Runtime {
            metrics,
            keep_latest: Arc::new(std::sync::atomic::AtomicBool::new(
                cfg.relay_metrics_enabled(),
            )),
            tls_every: opts.tls_reload_interval,
            data_dir: opts.data_dir.clone(),
            grace: opts.shutdown_grace,
            discovery_stop: shutdown.child_token(),
            shutdown,
            destinations: Vec::new(),
            sinks_tx,
            targets: HashMap::new(),
            cfg: Arc::new(cfg.clone()),
            clients: Vec::new(),
            found: Found::new(),
            generation: 0,
            discovery_tx,
            sharding: opts.sharding,
            external_labels: opts.external_labels.clone(),
            statuses: Arc::new(std::sync::RwLock::new(Vec::new())),
            running: Default::default(),
            scrapers: TaskTracker::new(),
            senders: TaskTracker::new(),
        };
        (rt, discovery_rx)
    }

    /// Runs until `cancel`: discovery updates, reloads (SIGHUP, `POST
    /// /-/reload`, a changed config file).
    async fn serve(
        &mut self,
        path: &Path,
        mut ev: Events,
        relay_auth: &std::sync::RwLock<Option<PathBuf>>,
        cancel: &CancellationToken,
    ) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let reply: Option<ReloadRequest> = tokio::select! {
                _ = cancel.cancelled() => return,
                Some(u) = ev.discovery.recv() => {
                    self.discovered(u);
                    continue;
                }
                Some(r) = ev.reload.recv() => Some(r),
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!(signal = "SIGHUP", "reloading config");
                    None
                }
                () = async { match ev.watch.as_mut() { Some(w) => w.changed().await, None => std::future::pending().await } } => {
                    tracing::info!(config = %path.display(), "config file changed; reloading");
                    None
                }
            };
            let result = self.reload_and_report(path, relay_auth).await;
            if let Some(w) = ev.watch.as_mut() {
                w.loaded();
            }
            if let Some(reply) = reply {
                let _ = reply.send(result.map_err(Into::into));
            }
        }
    }

    async fn reload_and_report(
        &mut self,
        path: &Path,
        relay_auth: &std::sync::RwLock<Option<PathBuf>>,
    ) -> Result<(), RelayError> {
        let result = self.reload(path).await.map(|c| {
            self.keep_latest.store(
                c.relay_metrics_enabled(),
                std::sync::atomic::Ordering::Relaxed,
            );
            *relay_auth.write().unwrap_or_else(|p| p.into_inner()) =
                c.server.relay_auth.map(|a| a.credentials_file);
        });
        match &result {
            Ok(()) => {
                self.metrics.reload_success.set(1);
                tracing::info!(config = %path.display(), targets = self.targets.len(), "config reloaded");
            }
            Err(e) => {
                self.metrics.reload_success.set(0);
                tracing::error!(config = %path.display(), error = %e, "config reload rejected; the running config stays");
            }
        }
        result
    }

    /// The shutdown sequence: scraping stops (no staleness markers), every
    /// destination sends what it holds within the grace period.
    async fn stop(&mut self) {
        tracing::info!("shutting down: scraping stopped, sending what is queued");
        self.shutdown.cancel();
        self.scrapers.close();
        self.scrapers.wait().await;
        for d in &self.destinations {
            d.stop();
        }
        self.senders.close();
        self.senders.wait().await;
    }
}
