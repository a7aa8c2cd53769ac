//! The first half of a config (re)load, where everything that can fail
//! happens before anything running changes: HTTP clients built, TLS files
//! loaded, targets resolved, disk queues opened and locked. `check` is this
//! half alone.

use super::*;
use crate::discovery::{Discoverer, discover_once};

/// What `metrics-relay check` found in a config that passed.
#[derive(Debug, Default)]
pub struct Checked {
    /// Targets (static and discovered) after relabeling.
    pub targets: usize,
}

/// `metrics-relay check`: everything `run` checks before it starts (the same
/// functions: [`preflight`], the TLS material of every scrape config and
/// destination, discovery, target resolution), without starting anything;
/// plus what `run` would only retry forever (a credentials file that is not
/// there). The error is the one `run` would stop with.
pub fn check(cfg: &Config) -> Result<Checked, RelayError> {
    preflight(cfg, None)?;
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
        for (field, file) in [
            (
                "basic_auth.password_file",
                rw.basic_auth
                    .as_ref()
                    .and_then(|b| b.password_file.as_ref()),
            ),
            (
                "authorization.credentials_file",
                rw.authorization
                    .as_ref()
                    .and_then(|a| a.credentials_file.as_ref()),
            ),
        ] {
            if let Some(f) = file {
                crate::fsread::read_text(f, crate::fsread::MAX_SECRET).map_err(|e| {
                    RelayError::Credentials {
                        field: format!("remote_write[{index}].{field}"),
                        message: format!(
                            "{e} (the agent would retry every send until it is readable)"
                        ),
                    }
                })?;
            }
        }
    }
    if let Some(a) = &cfg.server.relay_auth {
        crate::fsread::read_text(&a.credentials_file, crate::fsread::MAX_SECRET).map_err(|e| {
            RelayError::Credentials {
                field: "server.relay_auth.credentials_file".into(),
                message: format!("{e} (every /relay/metrics request would be refused)"),
            }
        })?;
    }
    let metrics = Metrics::new();
    let (found, discoverers) = discover_once(cfg, &metrics);
    // `run` would start with these, and go on with fewer targets than the
    // config means without a word beyond a warning: `check` says so.
    let mut problems = Vec::new();
    for (index, d) in &discoverers {
        let job = &cfg.scrape_configs[*index].job_name;
        problems.extend(
            d.problems()
                .into_iter()
                .map(|p| format!("job {job:?}: {p}")),
        );
    }
    if !problems.is_empty() {
        return Err(RelayError::Discovery(problems.join("; ")));
    }
    let t = scrape::resolve(cfg, &found, &Sharding::default());
    if t.owned.is_empty() && !cfg.scrape_configs.is_empty() {
        return Err(RelayError::NoTargets);
    }
    Ok(Checked {
        targets: t.owned.len(),
    })
}

/// The checks `run` makes before anything starts, at start and at every
/// reload, and `check` makes too: the admin server's address (`listen`, the
/// command line's, else the config's) and TLS, and every destination's URL.
pub(super) fn preflight(cfg: &Config, listen: Option<&str>) -> Result<(), RelayError> {
    let listen = listen.unwrap_or(&cfg.server.listen_address);
    listen
        .parse::<SocketAddr>()
        .map_err(|e| RelayError::Listen {
            addr: listen.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{e} (expected HOST:PORT, e.g. 0.0.0.0:9464)"),
            ),
        })?;
    if let Some(t) = &cfg.server.tls_server_config {
        crate::web_tls::load(t).map_err(RelayError::ServerTls)?;
    }
    for (index, rw) in cfg.remote_write.iter().enumerate() {
        crate::remote_write::sender::parse_url(&rw.url)
            .map_err(|source| RelayError::RemoteUrl { index, source })?;
    }
    Ok(())
}

/// Everything built from one config, ready to swap in.
pub(super) struct Built {
    pub(super) clients: Vec<watch::Receiver<HttpClient>>,
    pub(super) targets: scrape::Resolved,
    /// What discovery read now, and the watchers to start with it.
    pub(super) found: Found,
    pub(super) discoverers: Vec<(usize, Discoverer)>,
}

/// Segment files of a disk queue are closed at this size (or at a sixteenth
/// of `queue.max_size`, if smaller).
pub(super) const SEGMENT_SIZE: u64 = 16 << 20;

/// A queue name as a directory name.
pub(super) fn path_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Runtime {
    pub(super) fn build(
        cfg: &Config,
        metrics: &Metrics,
        every: Duration,
        sharding: &Sharding,
    ) -> Result<Built, RelayError> {
        let mut clients = Vec::new();
        for (index, sc) in cfg.scrape_configs.iter().enumerate() {
            let c = http::watched_client(
                sc.tls_config.as_ref(),
                sc.timeout(),
                metrics.clone(),
                crate::metric_labels::TlsScope::Scrape,
                &sc.job_name,
                every,
            )
            .map_err(|source| RelayError::ScrapeTls {
                index,
                job: sc.job_name.clone(),
                source,
            })?;
            clients.push(c);
        }
        for (index, rw) in cfg.remote_write.iter().enumerate() {
            http::client_config_check(rw.tls_config.as_ref())
                .map_err(|source| RelayError::RemoteTls { index, source })?;
        }
        // Discovery files are read now, so a start or a reload begins with
        // every discovered target (none is dropped and re-added).
        let (found, discoverers) = discover_once(cfg, metrics);
        let targets = scrape::resolve(cfg, &found, sharding);
        Ok(Built {
            clients,
            targets,
            found,
            discoverers,
        })
    }

    pub(super) fn open_queue(
        &self,
        index: usize,
        rw: &RemoteWriteConfig,
        name: &str,
    ) -> Result<Queue, RelayError> {
        let qc = &rw.queue_config;
        let storage = match (&rw.queue.path, &self.data_dir) {
            (Some(p), _) => StorageConfig::Disk {
                dir: p.clone(),
                max_size: rw.queue.max_size.0,
                segment_size: SEGMENT_SIZE,
            },
            (None, Some(d)) => StorageConfig::Disk {
                dir: d.join("queue").join(path_safe(name)),
                max_size: rw.queue.max_size.0,
                segment_size: SEGMENT_SIZE,
            },
            (None, None) => StorageConfig::Memory {
                max_samples: qc.capacity.saturating_mul(qc.max_shards),
            },
        };
        let max_age = Some(rw.queue.max_age.0).filter(|a| !a.is_zero());
        let (queue, recovery) = Queue::new(
            qc.max_samples_per_send,
            qc.batch_send_deadline.0,
            max_age,
            storage,
            self.metrics.clone(),
            RemoteLabels {
                remote_name: name.to_string(),
                url: rw.url.clone(),
            },
        )
        .map_err(|e| RelayError::Queue {
            index,
            message: e.to_string(),
        })?;
        queue.set_fresh_first(rw.queue.fresh_first);
        match &recovery {
            Some(r) => {
                tracing::info!(remote_name = %name, batches = r.records, samples = r.samples, torn_tails = r.torn, corrupt_regions = r.corrupt, lost_batches = r.lost_records, lost_samples = r.lost_samples, "disk queue opened")
            }
            None => {
                tracing::warn!(remote_name = %name, "no --data-dir: the queue is in memory and lost on restart")
            }
        }
        Ok(queue)
    }
}
