//! What `run` does before the agent runs, besides building the config:
//! the data directory, the sharding facts, the admin listener and its
//! thread, and the config-file watch of `--config.auto-reload-interval`.

use super::*;

/// Creates the data directory, or says what is in its way.
pub(super) fn prepare_data_dir(dir: Option<&Path>) -> Result<(), RelayError> {
    let Some(dir) = dir else {
        return Ok(());
    };
    if let Ok(md) = std::fs::metadata(dir)
        && !md.is_dir()
    {
        return Err(RelayError::DataDir {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file is in the way: --data-dir must name a directory (it is created if missing)",
            ),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| RelayError::DataDir {
        path: dir.to_path_buf(),
        source,
    })
}

pub(super) fn export_sharding(metrics: &Metrics, sharding: &Sharding) {
    metrics
        .shard_info
        .get_or_create(&crate::telemetry::ShardLabels {
            shard_index: sharding.index.to_string(),
            shard_count: sharding.count.to_string(),
            replication_factor: sharding.replication_factor.to_string(),
        })
        .set(1);
    if sharding.is_sharded() {
        tracing::info!(
            shard_index = sharding.index,
            shard_count = sharding.count,
            replication_factor = sharding.replication_factor,
            "sharded: scraping only the targets this shard owns"
        );
    }
}

/// Binds the admin listener: (listener, the address it got).
pub(super) async fn bind_admin(
    cfg: &Config,
    opts: &RunOptions,
) -> Result<(tokio::net::TcpListener, String), RelayError> {
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
    Ok((listener, bound))
}

/// The admin server, running on a thread of its own.
pub(super) struct Admin {
    pub(super) reload_rx: mpsc::Receiver<ReloadRequest>,
    pub(super) relay_auth: Arc<std::sync::RwLock<Option<PathBuf>>>,
    pub(super) cancel: CancellationToken,
    pub(super) task: oneshot::Receiver<()>,
}

impl Admin {
    pub(super) fn start(
        listener: tokio::net::TcpListener,
        bound: &str,
        rt: &Runtime,
        cfg: &Config,
        opts: &RunOptions,
        tls: Option<watch::Receiver<Arc<rustls::ServerConfig>>>,
    ) -> Result<Admin, RelayError> {
        // Applied before this: /readyz now waits for the first scrapes,
        // then latches.
        let readiness = admin::Readiness::default();
        readiness.started();
        let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(4);
        let cancel = CancellationToken::new();
        let relay_auth = Arc::new(std::sync::RwLock::new(
            cfg.server
                .relay_auth
                .as_ref()
                .map(|a| a.credentials_file.clone()),
        ));
        let state = AdminState {
            metrics: rt.metrics.clone(),
            targets: rt.statuses.clone(),
            reload: reload_tx,
            relay_auth: relay_auth.clone(),
            running: rt.running.clone(),
            relay_metrics: rt.keep_latest.clone(),
            lifecycle: opts.enable_lifecycle,
            heartbeat: Default::default(),
            readiness,
            client_certs_required: cfg
                .server
                .tls_server_config
                .as_ref()
                .is_some_and(|t| t.client_ca_file.is_some()),
        };
        // The admin server runs on a thread (and runtime) of its own: a long
        // parse, a compression or a disk write on the runtime thread never
        // delays a probe. `/healthz` still tells whether that runtime runs:
        // it fails when the heartbeat below stops.
        let heartbeat = state.heartbeat.clone();
        tokio::spawn(async move {
            loop {
                heartbeat.store(admin::heartbeat_now(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let task = admin::spawn_thread(
            listener,
            state,
            cancel.clone(),
            cfg.server.max_connections,
            tls,
        )
        .map_err(|source| RelayError::Listen {
            addr: bound.to_string(),
            source,
        })?;
        Ok(Admin {
            reload_rx,
            relay_auth,
            cancel,
            task,
        })
    }
}

/// `--config.auto-reload-interval`: the config file's content is compared
/// every interval with what was loaded last (as Prometheus 3 does), and a
/// change reloads, as SIGHUP would. A file that does not load is tried
/// again only once it changes again.
pub(super) struct ConfigWatch {
    path: PathBuf,
    every: tokio::time::Interval,
    last: Option<u64>,
}

impl ConfigWatch {
    pub(super) fn new(path: &Path, every: Duration) -> ConfigWatch {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ConfigWatch {
            path: path.to_path_buf(),
            every: interval,
            last: Self::digest(path),
        }
    }

    fn digest(path: &Path) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let bytes = crate::fsread::read_regular(path, crate::fsread::MAX_DOCUMENT).ok()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        Some(h.finish())
    }

    /// Waits until the file's content differs from what was seen last (it
    /// is looked at every interval).
    pub(super) async fn changed(&mut self) {
        loop {
            self.every.tick().await;
            let now = Self::digest(&self.path);
            if now.is_some() && now != self.last {
                self.last = now;
                return;
            }
        }
    }

    /// A reload from another source read the file as it is now.
    pub(super) fn loaded(&mut self) {
        self.last = Self::digest(&self.path);
    }
}
