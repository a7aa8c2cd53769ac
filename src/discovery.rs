//! Service discovery from files: `file_sd_configs` (Prometheus's semantics)
//! and the extension `kubeconfig_sd_configs` (one target per kubeconfig).
//!
//! A [`Discoverer`] watches the files of one scrape config. Every
//! [`POLL_INTERVAL`] it lists the files its patterns match (wildcards `*` and
//! `?` in the last path segment) and compares each file's length, mtime,
//! inode and device, following symlinks, so a Kubernetes Secret or ConfigMap
//! volume's `..data` swap counts as a change; a changed, new or removed file
//! is read again at once, and every file is read again every
//! `refresh_interval` whatever its stamp says. Entries named `..*` (the
//! atomic writer's own) are skipped. Listing and reading run on a
//! blocking-pool thread; files are read with [`crate::fsread`] (regular
//! files only, never blocking on a FIFO, at most 16 MiB), and YAML passes
//! [`crate::yaml::check`] first. A directory, FIFO or device matching a
//! pattern, a dangling link or a link loop is a failing file like any other.
//!
//! A file that cannot be read or parsed keeps its last good targets and is
//! reported (a warning once per new error, `metrics_relay_sd_file_errors_total`,
//! `metrics_relay_sd_files_failing`); a removed file removes its targets.
//! Only when the targets found differ from the last ones is an update sent,
//! so a rewrite with the same content touches nothing.
//!
//! - **file_sd**: a JSON or YAML list of `{targets: [host:port], labels: {}}`
//!   groups (by extension); every target gets `__meta_filepath`.
//! - **kubeconfig_sd**: each file is a kubeconfig. Its current context gives
//!   one target: `__address__` and `__scheme__` from the cluster's `server`
//!   URL (a path in it prefixes `metrics_path`), the CA, client certificate
//!   and key for this target's TLS (the scrape config's `tls_config` still
//!   gives `server_name` and the rest), and `__meta_kubeconfig_cluster`,
//!   `__meta_kubeconfig_context`, `__meta_kubeconfig_server`,
//!   `__meta_filepath` for relabeling. A kubeconfig whose user has a token,
//!   an exec plugin or no client certificate is reported and skipped. A
//!   rotated certificate with the same server is picked up by the target's
//!   client (see [`crate::http::watched_client`]), without a restart of the
//!   target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{ScrapeConfig, TlsConfig};
use crate::events::DiscoveryFailed;
use crate::metric_labels::SdMechanism;
use crate::telemetry::Metrics;

/// How often the files' stamps are compared.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Targets that share labels (and, for a kubeconfig, TLS material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub targets: Vec<String>,
    /// Labels before relabeling, `__meta_*` included.
    pub labels: Vec<(String, String)>,
    /// This group's own `tls_config` (kubeconfig_sd), replacing the job's.
    pub tls: Option<Arc<TlsConfig>>,
}

/// The two kinds of discovery file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Targets,
    Kubeconfig,
}

impl Kind {
    fn mechanism(self) -> SdMechanism {
        match self {
            Kind::Targets => SdMechanism::File,
            Kind::Kubeconfig => SdMechanism::Kubeconfig,
        }
    }
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: Option<std::time::SystemTime>,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(md: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: md.len(),
            mtime: md.modified().ok(),
            ino: md.ino(),
            dev: md.dev(),
        }
    }
}

#[derive(Debug)]
struct FileState {
    kind: Kind,
    stamp: Option<Stamp>,
    /// The last good content's targets.
    groups: Vec<Group>,
    error: Option<String>,
}

/// One scrape config's discovery: its patterns and what each file gave.
pub(crate) struct Discoverer {
    job: String,
    patterns: Vec<(Kind, String)>,
    refresh: Duration,
    /// The job's `tls_config`, the base of a kubeconfig target's.
    tls: Option<TlsConfig>,
    metrics_path: String,
    files: BTreeMap<PathBuf, FileState>,
    metrics: Metrics,
}

/// What discovery found, per scrape config index.
pub(crate) type Found = std::collections::HashMap<usize, Vec<Group>>;

/// A discoverer's new targets, for scrape config `index`.
#[derive(Debug)]
pub(crate) struct Update {
    pub index: usize,
    pub generation: u64,
    pub groups: Vec<Group>,
}

impl Discoverer {
    /// `None` when `sc` has no discovery.
    pub(crate) fn new(sc: &ScrapeConfig, metrics: Metrics) -> Option<Discoverer> {
        let patterns: Vec<(Kind, String)> = sc
            .file_sd_configs
            .iter()
            .flat_map(|c| c.files.iter().map(|f| (Kind::Targets, f.clone())))
            .chain(
                sc.kubeconfig_sd_configs
                    .iter()
                    .flat_map(|c| c.files.iter().map(|f| (Kind::Kubeconfig, f.clone()))),
            )
            .collect();
        if patterns.is_empty() {
            return None;
        }
        let refresh = sc
            .file_sd_configs
            .iter()
            .chain(&sc.kubeconfig_sd_configs)
            .map(|c| c.refresh_interval.0)
            .min()
            .unwrap_or(Duration::from_secs(300));
        Some(Discoverer {
            job: sc.job_name.clone(),
            patterns,
            refresh,
            tls: sc.tls_config.clone(),
            metrics_path: sc.metrics_path.clone(),
            files: BTreeMap::new(),
            metrics,
        })
    }

    /// Lists and reads what changed (everything when `full`); true when the
    /// targets found changed.
    pub(crate) fn scan(&mut self, full: bool) -> bool {
        let mut found: BTreeMap<PathBuf, Kind> = BTreeMap::new();
        for (kind, pattern) in &self.patterns {
            for p in expand(pattern) {
                found.entry(p).or_insert(*kind);
            }
        }
        let mut changed = false;
        let before = self.files.len();
        self.files.retain(|p, st| {
            let keep = found.get(p) == Some(&st.kind);
            if !keep {
                tracing::info!(file = %p.display(), "discovery file gone; its targets are removed");
            }
            keep
        });
        changed |= self.files.len() != before;
        for (path, kind) in found {
            // Following symlinks (a `..data` swap changes the target's
            // stamp). What cannot be stat'ed (a dangling link, a loop) or is
            // not a regular file is a failing file like any other: reported,
            // never skipped in silence.
            let stamp = std::fs::metadata(&path).ok().map(|md| Stamp::of(&md));
            let st = self.files.entry(path.clone()).or_insert(FileState {
                kind,
                stamp: None,
                groups: Vec::new(),
                error: None,
            });
            if !full && stamp.is_some() && st.stamp == stamp {
                continue;
            }
            st.stamp = stamp;
            let read = match kind {
                Kind::Targets => read_target_file(&path),
                Kind::Kubeconfig => {
                    read_kubeconfig(&path, self.tls.as_ref(), &self.metrics_path).map(|g| vec![g])
                }
            };
            match read.map_err(|e| e.to_string()) {
                Ok(groups) => {
                    if groups != st.groups {
                        changed = true;
                        st.groups = groups;
                    }
                    st.error = None;
                }
                Err(error) => {
                    if st.error.as_deref() != Some(error.as_str()) {
                        DiscoveryFailed {
                            job: &self.job,
                            mechanism: kind.mechanism(),
                            file: &path,
                            error: &error,
                            kept: st.groups.iter().map(|g| g.targets.len()).sum(),
                        }
                        .emit(&self.metrics);
                    }
                    st.error = Some(error);
                }
            }
        }
        self.export();
        changed
    }

    fn export(&self) {
        for kind in [Kind::Targets, Kind::Kubeconfig] {
            let files = self.files.values().filter(|f| f.kind == kind);
            let labels = crate::telemetry::SdLabels {
                job: self.job.clone(),
                mechanism: kind.mechanism(),
            };
            self.metrics
                .sd_files
                .get_or_create(&labels)
                .set(files.clone().count() as i64);
            self.metrics
                .sd_files_failing
                .get_or_create(&labels)
                .set(files.filter(|f| f.error.is_some()).count() as i64);
        }
    }

    /// What would make this job run with fewer targets than meant, in
    /// words: a pattern that matches no file, a file that fails.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, pattern) in &self.patterns {
            if expand(pattern).is_empty() {
                out.push(format!(
                    "{}_sd_configs: {pattern:?} matches no file",
                    kind.mechanism()
                ));
            }
        }
        for (path, f) in &self.files {
            if let Some(e) = &f.error {
                out.push(format!(
                    "{}_sd_configs: {}: {e}",
                    f.kind.mechanism(),
                    path.display()
                ));
            }
        }
        out
    }

    /// Every file's last good targets, in path order.
    pub(crate) fn groups(&self) -> Vec<Group> {
        self.files
            .values()
            .flat_map(|f| f.groups.iter().cloned())
            .collect()
    }

    /// Watches the files until `cancel`, sending an [`Update`] whenever the
    /// targets change.
    pub(crate) fn spawn(
        mut self,
        index: usize,
        generation: u64,
        tx: mpsc::Sender<Update>,
        cancel: CancellationToken,
    ) {
        tokio::spawn(async move {
            let mut last_full = Instant::now();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                let full = last_full.elapsed() >= self.refresh;
                if full {
                    last_full = Instant::now();
                }
                // Listing and reading files blocks (a slow volume, a file of
                // 16 MiB): on a blocking-pool thread, never the runtime's.
                let scanned = tokio::task::spawn_blocking(move || {
                    let changed = self.scan(full);
                    (self, changed)
                })
                .await;
                let changed;
                (self, changed) = match scanned {
                    Ok(r) => r,
                    // Only a panic gets here: stop watching, loudly.
                    Err(e) => {
                        tracing::error!(error = %e, "file discovery stopped");
                        return;
                    }
                };
                if changed {
                    let update = Update {
                        index,
                        generation,
                        groups: self.groups(),
                    };
                    if tx.send(update).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// Reads every scrape config's discovery files once: what they give now,
/// and the discoverers to keep watching them.
pub(crate) fn discover_once(
    cfg: &crate::config::Config,
    metrics: &Metrics,
) -> (Found, Vec<(usize, Discoverer)>) {
    let mut found = Found::new();
    let mut discoverers = Vec::new();
    for (index, sc) in cfg.scrape_configs.iter().enumerate() {
        if let Some(mut d) = Discoverer::new(sc, metrics.clone()) {
            d.scan(true);
            found.insert(index, d.groups());
            discoverers.push((index, d));
        }
    }
    (found, discoverers)
}

/// The files a pattern names now, sorted.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    // Checked with the config; a pattern that fails here matches nothing.
    let Ok(glob) = crate::glob::Pattern::new(&name) else {
        return Vec::new();
    };
    if glob.is_literal() {
        // A dangling link is listed (and reported), not taken for absent.
        return if path.symlink_metadata().is_ok() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (!n.starts_with("..") && glob.matches(&n)).then(|| dir.join(n))
        })
        .collect();
    out.sort();
    out
}

/// A target group as written in a file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Why a discovery file gives no targets (its last good targets are kept).
/// The file's path is said by whoever reports it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiscoveryError {
    #[error("cannot read: {}", .0.reason())]
    Read(#[source] crate::fsread::ReadError),
    #[error("not a JSON target list: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not valid YAML: {0}")]
    Yaml(#[source] crate::yaml::YamlError),
    #[error("not a YAML target list: {0}")]
    YamlList(#[source] serde_json::Error),
    #[error("group {group}: {target:?} is not a valid target (use host:port)")]
    Target { group: usize, target: String },
    #[error("group {group}: {name:?} is not a valid label name")]
    LabelName { group: usize, name: String },
    #[error("{0}")]
    Kubeconfig(String),
    #[error("cluster {0:?} has no server")]
    NoServer(String),
    #[error("server {server:?} is not a URL: {reason}")]
    ServerUrl { server: String, reason: String },
    #[error("server {0:?}: scheme must be https or http")]
    ServerScheme(String),
    #[error("server {0:?} has no host")]
    ServerHost(String),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A `file_sd` file: JSON (`.json`) or YAML.
fn read_target_file(path: &Path) -> Result<Vec<Group>, DiscoveryError> {
    let bytes = crate::fsread::read_regular(path, crate::fsread::MAX_DOCUMENT)
        .map_err(DiscoveryError::Read)?;
    let raw: Vec<RawGroup> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(&bytes).map_err(DiscoveryError::Json)?
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|_| DiscoveryError::NotUtf8)?;
        let docs = crate::yaml::to_json(text, crate::yaml::Scalars::Strings)
            .map_err(DiscoveryError::Yaml)?;
        match docs.into_iter().next() {
            None => Vec::new(),
            Some(doc) => serde_json::from_value(doc).map_err(DiscoveryError::YamlList)?,
        }
    };
    let filepath = path.to_string_lossy().into_owned();
    let mut out = Vec::with_capacity(raw.len());
    for (i, g) in raw.into_iter().enumerate() {
        for t in &g.targets {
            if t.is_empty() || t.contains('/') {
                return Err(DiscoveryError::Target {
                    group: i,
                    target: t.clone(),
                });
            }
        }
        let mut labels = Vec::with_capacity(g.labels.len() + 1);
        for (k, v) in g.labels {
            if !crate::labels::is_valid_label_name(&k) {
                return Err(DiscoveryError::LabelName { group: i, name: k });
            }
            labels.push((k, v));
        }
        labels.push(("__meta_filepath".into(), filepath.clone()));
        out.push(Group {
            targets: g.targets,
            labels,
            tls: None,
        });
    }
    Ok(out)
}

/// A `kubeconfig_sd` file: one target from its current context.
fn read_kubeconfig(
    path: &Path,
    job_tls: Option<&TlsConfig>,
    metrics_path: &str,
) -> Result<Group, DiscoveryError> {
    let creds = crate::kubeconfig::load(path, None).map_err(|e| match e {
        crate::kubeconfig::KubeconfigError::Invalid { message, .. } => {
            DiscoveryError::Kubeconfig(message)
        }
    })?;
    let server = creds
        .server
        .clone()
        .ok_or_else(|| DiscoveryError::NoServer(creds.cluster.clone()))?;
    let uri: http::Uri =
        server
            .parse()
            .map_err(|e: http::uri::InvalidUri| DiscoveryError::ServerUrl {
                server: server.clone(),
                reason: e.to_string(),
            })?;
    let scheme = uri.scheme_str().unwrap_or("https").to_string();
    if scheme != "https" && scheme != "http" {
        return Err(DiscoveryError::ServerScheme(server));
    }
    let host = uri
        .host()
        .ok_or_else(|| DiscoveryError::ServerHost(server.clone()))?;
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let address = format!("{host}:{port}");
    let mut tls = job_tls.cloned().unwrap_or_default();
    tls.kubeconfig = Some(path.to_path_buf());
    tls.context = None;
    // Every piece of the material must load and fit together now, so a bad
    // kubeconfig is reported here, once, and never becomes a target.
    let material = crate::tls::Material::load(Some(&tls))?;
    crate::tls::client_config_from(&material)?;
    let mut labels = vec![
        ("__scheme__".to_string(), scheme),
        ("__meta_kubeconfig_cluster".to_string(), creds.cluster),
        ("__meta_kubeconfig_context".to_string(), creds.context),
        ("__meta_kubeconfig_server".to_string(), server.clone()),
        (
            "__meta_filepath".to_string(),
            path.to_string_lossy().into_owned(),
        ),
    ];
    let prefix = uri.path().trim_end_matches('/');
    if !prefix.is_empty() {
        labels.push(("__metrics_path__".into(), format!("{prefix}{metrics_path}")));
    }
    Ok(Group {
        targets: vec![address],
        labels,
        tls: Some(Arc::new(tls)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_target_files_give_the_same_groups() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("a.json");
        std::fs::write(
            &j,
            r#"[{"targets": ["h:1", "h:2"], "labels": {"env": "prod"}}]"#,
        )
        .unwrap();
        let y = dir.path().join("a.yml");
        std::fs::write(&y, "- targets: ['h:1', 'h:2']\n  labels:\n    env: prod\n").unwrap();
        let gj = read_target_file(&j).unwrap();
        let gy = read_target_file(&y).unwrap();
        assert_eq!(gj[0].targets, gy[0].targets);
        assert_eq!(gj[0].labels[0], ("env".into(), "prod".into()));
        assert_eq!(gy[0].labels[0], ("env".into(), "prod".into()));
        assert_eq!(gj[0].labels[1].0, "__meta_filepath");
        // A number in YAML is a label value like any other.
        std::fs::write(&y, "- targets: ['h:1']\n  labels: {port: 9100}\n").unwrap();
        assert_eq!(
            read_target_file(&y).unwrap()[0].labels[0],
            ("port".into(), "9100".into())
        );
        std::fs::write(&y, "").unwrap();
        assert!(read_target_file(&y).unwrap().is_empty());
    }

    #[test]
    fn bad_target_files_are_errors_that_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("a.json");
        for (text, want) in [
            ("[{", "not a JSON target list"),
            (
                r#"[{"targets": ["http://h:1/x"]}]"#,
                "is not a valid target",
            ),
            (
                r#"[{"targets": ["h:1"], "labels": {"a-b": "x"}}]"#,
                "not a valid label name",
            ),
            (r#"[{"target": ["h:1"]}]"#, "unknown field"),
        ] {
            std::fs::write(&j, text).unwrap();
            let e = read_target_file(&j).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn atomic_writer_internals_and_directories_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("..2026_11_29")).unwrap();
        std::fs::write(dir.path().join("..data"), "x").unwrap();
        std::fs::write(dir.path().join("c1"), "x").unwrap();
        std::fs::write(dir.path().join("c2"), "x").unwrap();
        let got = expand(&format!("{}/*", dir.path().display()));
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["c1", "c2"]);
    }
}
