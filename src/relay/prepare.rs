//! The first half of a config (re)load, where everything that can fail
//! happens before anything running changes: HTTP clients built, TLS files
//! loaded, targets resolved, disk queues opened and locked. `check` is this
//! half alone.

use super::*;
use crate::discovery::{Discoverer, discover_once};

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
    let (found, _) = discover_once(cfg, &Metrics::new());
    let t = scrape::resolve(cfg, &found, &Sharding::default()).map_err(RelayError::Target)?;
    Ok(t.owned.len())
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
                "scrape",
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
        let targets = scrape::resolve(cfg, &found, sharding).map_err(RelayError::Target)?;
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
