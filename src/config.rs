//! The configuration schema: a strict subset of Prometheus's YAML, plus a few
//! named extensions.
//!
//! A config that Prometheus accepts for `global`, `scrape_configs` and
//! `remote_write` means the same here; unknown keys are errors (as in
//! Prometheus). Loading goes through the `config` crate: the YAML file first,
//! then environment overrides named `METRICS_RELAY__SECTION__KEY`
//! (for example `METRICS_RELAY__SERVER__LISTEN_ADDRESS=127.0.0.1:9464`).
//!
//! [`Config::load`] parses, fills Prometheus's defaults and validates; every
//! validation error names the offending field by its path
//! (`scrape_configs[0].scrape_timeout`). Secrets ([`Secret`]) never print:
//! `Debug`, `Display` and the config dump show `<secret>`.
//!
//! Deliberate differences from Prometheus, all documented in the README:
//! `queue_config.retry_on_http_429` defaults to `true`; `body_size_limit`
//! defaults to 256MiB (an explicit `0` means unlimited, as in Prometheus).
//!
//! Layout: this file holds the schema (types, defaults, loading); `validate`
//! the checks and derived defaults, `env` `${NAME}` expansion, `secret` the
//! redacted secret type.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod env;
mod profile;
mod remote;
mod secret;
mod validate;

pub use env::expand_env;
pub use profile::{Profile, ProfileError};
pub use remote::{MetadataConfig, ProtobufMessage, QueueCodec};
pub use secret::Secret;
pub use validate::split_userinfo;

use crate::units::{ByteSize, PromDuration};

/// Environment variables starting with this override the config file:
/// `METRICS_RELAY__SERVER__LISTEN_ADDRESS` sets `server.listen_address`.
pub const ENV_PREFIX: &str = "METRICS_RELAY__";

/// Prometheus's default `global.scrape_interval`.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);
/// Prometheus's default `global.scrape_timeout`.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Our default `body_size_limit` (Prometheus has none; see the module docs).
pub const DEFAULT_BODY_SIZE_LIMIT: u64 = 256 << 20;

/// Errors from loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: ::config::ConfigError,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment override ({vars}): {message}")]
    Env { vars: String, message: String },
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub global: GlobalConfig,
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
    #[serde(default)]
    pub server: ServerConfig,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    pub scrape_interval: Option<PromDuration>,
    pub scrape_timeout: Option<PromDuration>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Extension: the Prometheus major version whose scrape semantics are
    /// followed where 2 and 3 store different things (`3`, the default: `le`
    /// and `quantile` values of histograms and summaries in float form,
    /// `1` stored as `1.0`; `2`: as the target wrote them).
    #[serde(default)]
    pub prometheus_compatibility: PrometheusCompatibility,
}

/// `global.prometheus_compatibility`: `2` or `3`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(try_from = "u64", into = "u64")]
pub enum PrometheusCompatibility {
    V2,
    #[default]
    V3,
}

impl PrometheusCompatibility {
    /// Whether `le`/`quantile` values are stored in float form.
    pub fn float_label_values(self) -> bool {
        self == PrometheusCompatibility::V3
    }
}

/// A `prometheus_compatibility` that is not a Prometheus major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("prometheus_compatibility must be 2 or 3 (a Prometheus major version), not {0}")]
pub struct UnknownMajorVersion(pub u64);

impl TryFrom<u64> for PrometheusCompatibility {
    type Error = UnknownMajorVersion;
    fn try_from(v: u64) -> Result<Self, UnknownMajorVersion> {
        match v {
            2 => Ok(PrometheusCompatibility::V2),
            3 => Ok(PrometheusCompatibility::V3),
            _ => Err(UnknownMajorVersion(v)),
        }
    }
}

impl From<PrometheusCompatibility> for u64 {
    fn from(v: PrometheusCompatibility) -> u64 {
        match v {
            PrometheusCompatibility::V2 => 2,
            PrometheusCompatibility::V3 => 3,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    pub scrape_interval: Option<PromDuration>,
    pub scrape_timeout: Option<PromDuration>,
    pub tls_config: Option<TlsConfig>,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Targets from JSON or YAML files (Prometheus's `file_sd_configs`).
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Extension: one target per kubeconfig file (see [`crate::discovery`]).
    #[serde(default)]
    pub kubeconfig_sd_configs: Vec<KubeconfigSdConfig>,
    #[serde(default)]
    pub honor_labels: bool,
    #[serde(default = "yes")]
    pub honor_timestamps: bool,
    pub body_size_limit: Option<ByteSize>,
    /// Maximum samples per scrape after metric relabeling; 0 = no limit.
    #[serde(default)]
    pub sample_limit: u64,
    /// Most labels per series after metric relabeling; 0 = no limit.
    #[serde(default)]
    pub label_limit: usize,
    /// Longest label name; 0 = no limit.
    #[serde(default)]
    pub label_name_length_limit: usize,
    /// Longest label value; 0 = no limit.
    #[serde(default)]
    pub label_value_length_limit: usize,
    /// Rules on the target's labels, before scraping.
    #[serde(default)]
    pub relabel_configs: Vec<crate::relabel::RelabelConfig>,
    /// Rules on every scraped series, before it is sent.
    #[serde(default)]
    pub metric_relabel_configs: Vec<crate::relabel::RelabelConfig>,
    /// Extension: a shipped rule set run before `metric_relabel_configs`
    /// (`control-plane`: `config/profiles/control-plane.yml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Extension: most series (after metric relabeling) one metric family
    /// may have in a scrape; a family over it is dropped from that scrape
    /// as a whole, the rest of the scrape goes on. 0 = no limit.
    #[serde(default)]
    pub series_per_family_limit: u64,
    /// Extension: most buckets one classic histogram series may have
    /// (after metric relabeling); its family is dropped as above. 0 = no limit.
    #[serde(default)]
    pub buckets_per_histogram_limit: u64,
    /// Extension: samples exposed with an explicit timestamp older than
    /// this (relative to the scrape) are dropped and counted at scrape time,
    /// not sent for the receiver to refuse: Prometheus refuses samples more
    /// than an hour behind its newest as "out of bounds", and refuses the
    /// whole request with them. `0` = no limit.
    #[serde(default = "default_timestamp_max_age")]
    pub explicit_timestamp_max_age: PromDuration,
    /// Extension: likewise for timestamps ahead of the scrape (a sample far
    /// in the future moves a receiver's head forward, so that every current
    /// sample then looks out of bounds). `0` = no limit.
    #[serde(default = "default_timestamp_max_ahead")]
    pub explicit_timestamp_max_ahead: PromDuration,
}

fn default_timestamp_max_age() -> PromDuration {
    PromDuration(Duration::from_secs(3600))
}

fn default_timestamp_max_ahead() -> PromDuration {
    PromDuration(Duration::from_secs(600))
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Extension: take the CA, client certificate and key from a kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Extension: the kubeconfig context (default: its current-context).
    pub context: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Prometheus's `file_sd_configs` entry: files whose last path segment may
/// hold `*` and `?` wildcards, read again when they change and every
/// `refresh_interval`. Relative paths are relative to the config file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    pub files: Vec<String>,
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: PromDuration,
}

/// Extension: `kubeconfig_sd_configs`, the same shape as `file_sd_configs`;
/// every file found is a kubeconfig and becomes one target.
pub type KubeconfigSdConfig = FileSdConfig;

fn default_refresh_interval() -> PromDuration {
    PromDuration(Duration::from_secs(300))
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    pub url: String,
    pub name: Option<String>,
    #[serde(default = "default_remote_timeout")]
    pub remote_timeout: PromDuration,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
    pub tls_config: Option<TlsConfig>,
    #[serde(default)]
    pub queue_config: QueueConfig,
    /// Rules applied to every series sent to this destination.
    #[serde(default)]
    pub write_relabel_configs: Vec<crate::relabel::RelabelConfig>,
    /// Extension: the durable queue of this destination.
    #[serde(default)]
    pub queue: QueueStorage,
    /// Extension, off by default and a deviation from remote write 1.0
    /// (a sender "MUST NOT retry write requests on HTTP 4xx responses other
    /// than 429"): when a request that joins several scrapes is refused
    /// with a 4xx, send its scrapes again one by one, so that only the part
    /// the receiver refuses is dropped. A receiver that ingests partially
    /// (Mimir, Thanos) then receives the good part twice. A 413 (too large)
    /// is split whatever this says: it refused the size, not the data.
    #[serde(default)]
    pub split_refused_requests: bool,
    /// Prometheus's key: the message sent, `prometheus.WriteRequest`
    /// (remote write 1.0, the default, as in Prometheus) or
    /// `io.prometheus.write.v2.Request` (2.0, falling back to 1.0 for a
    /// receiver that does not speak it); extension: `auto`, the best the
    /// receiver takes of 2.0, 1.0 with zstd (VictoriaMetrics) and 1.0 with
    /// snappy, negotiated on the first requests (`remote_write::wire`).
    #[serde(default)]
    pub protobuf_message: ProtobufMessage,
    /// Prometheus's key: whether and how often metric metadata (TYPE,
    /// HELP, UNIT) goes with the samples.
    #[serde(default)]
    pub metadata_config: MetadataConfig,
}

/// Extension: where and how much a destination's queue may keep on disk.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct QueueStorage {
    /// Default: `<data-dir>/queue/<name>`; without either, the queue is in memory.
    pub path: Option<PathBuf>,
    /// Most bytes kept on disk; past it the oldest batches are dropped and counted.
    #[serde(default = "default_queue_max_size")]
    pub max_size: ByteSize,
    /// Batches whose oldest sample is older are dropped and counted; `0` = no limit.
    #[serde(default = "default_queue_max_age")]
    pub max_age: PromDuration,
    /// How queued batches are compressed (see `remote_write::codec`).
    #[serde(default)]
    pub codec: QueueCodec,
    /// After an outage, each target's newest scrape goes ahead of its
    /// backlog (which follows, oldest first, beside it). Only for receivers
    /// that accept out-of-order samples (see `remote_write::queue::fresh`).
    #[serde(default)]
    pub fresh_first: bool,
}

impl Default for QueueStorage {
    fn default() -> Self {
        QueueStorage {
            path: None,
            max_size: default_queue_max_size(),
            max_age: default_queue_max_age(),
            codec: QueueCodec::default(),
            fresh_first: false,
        }
    }
}

fn default_queue_max_size() -> ByteSize {
    ByteSize(512 << 20)
}
fn default_queue_max_age() -> PromDuration {
    PromDuration(Duration::from_secs(2 * 3600))
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(rename = "type", default = "default_auth_type")]
    pub kind: String,
    pub credentials: Option<Secret>,
    pub credentials_file: Option<PathBuf>,
}

/// Prometheus's `queue_config`, with its names and defaults
/// (except `retry_on_http_429`, which is `true` here).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Samples buffered per shard; the in-memory queue holds at most
    /// `capacity * max_shards` samples before dropping its oldest batch.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    #[serde(default = "default_max_shards")]
    pub max_shards: usize,
    #[serde(default = "default_min_shards")]
    pub min_shards: usize,
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: usize,
    #[serde(default = "default_batch_send_deadline")]
    pub batch_send_deadline: PromDuration,
    #[serde(default = "default_min_backoff")]
    pub min_backoff: PromDuration,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: PromDuration,
    #[serde(default = "yes")]
    pub retry_on_http_429: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: default_capacity(),
            max_shards: default_max_shards(),
            min_shards: default_min_shards(),
            max_samples_per_send: default_max_samples_per_send(),
            batch_send_deadline: default_batch_send_deadline(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            retry_on_http_429: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen_address")]
    pub listen_address: String,
    /// Extension: bearer-token protection of `/relay/metrics`.
    pub relay_auth: Option<RelayAuth>,
    /// Extension: connections served at once (keep-alive); beyond them a
    /// connection gets one answer on the probe paths only, then is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TLS (and client certificates) for the admin server, in the shape of
    /// Prometheus's web config; see [`crate::web_tls`].
    pub tls_server_config: Option<TlsServerConfig>,
    /// Extension: serve `/relay/metrics` (the pull path), with data from the
    /// first scrape on. Default: on for a pull-only agent (no
    /// `remote_write`), off otherwise (then the path answers 404).
    pub relay_metrics: Option<bool>,
}

fn default_max_connections() -> usize {
    256
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAuth {
    /// A file holding the token (a mounted Secret); re-read on every request.
    pub credentials_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_address: default_listen_address(),
            relay_auth: None,
            max_connections: default_max_connections(),
            tls_server_config: None,
            relay_metrics: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_scheme() -> String {
    "http".into()
}
fn default_metrics_path() -> String {
    "/metrics".into()
}
fn default_remote_timeout() -> PromDuration {
    PromDuration(Duration::from_secs(30))
}
fn default_auth_type() -> String {
    "Bearer".into()
}
fn default_capacity() -> usize {
    10_000
}
fn default_max_shards() -> usize {
    50
}
fn default_min_shards() -> usize {
    1
}
/// Prometheus uses 2,000. A disk queue writes every scrape through as its
/// own batches, so the limit decides how many requests a scrape costs (a
/// 2,000-series target plus its five synthetic series would be two); 10,000
/// (vmagent's `-remoteWrite.maxRowsPerBlock`) keeps one request per scrape
/// for typical targets, with fewer, larger requests for the receiver too.
fn default_max_samples_per_send() -> usize {
    10_000
}
fn default_batch_send_deadline() -> PromDuration {
    PromDuration(Duration::from_secs(5))
}
fn default_min_backoff() -> PromDuration {
    PromDuration(Duration::from_millis(30))
}
fn default_max_backoff() -> PromDuration {
    PromDuration(Duration::from_secs(5))
}
fn default_listen_address() -> String {
    "0.0.0.0:9464".into()
}

impl Config {
    /// Reads `path` (YAML), applies `METRICS_RELAY__…` environment overrides,
    /// fills defaults and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let vars: std::collections::HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Self::load_with_env(path, vars)
    }

    /// [`Config::load`] with the overrides given (names with their
    /// `METRICS_RELAY__` prefix).
    fn load_with_env(
        path: &Path,
        vars: std::collections::HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.into(),
            message,
        };
        let text = crate::fsread::read_text(path, crate::fsread::MAX_DOCUMENT).map_err(|e| {
            parse_error(match e {
                crate::fsread::ReadError::NotFound { .. } => "file not found".into(),
                e => format!("cannot read: {}", e.reason()),
            })
        })?;
        if text.trim().is_empty() {
            return Err(parse_error(
                "the file is empty: it configures no scrape_configs and no remote_write (an empty Prometheus config is valid, but an agent running it does nothing)".into(),
            ));
        }
        let text = expand_env(&text, |k| std::env::var(k).ok());
        crate::yaml::check(&text).map_err(|e| parse_error(format!("not valid YAML: {e}")))?;
        let build = |vars: Option<std::collections::HashMap<String, String>>| {
            let mut b = ::config::Config::builder()
                .add_source(::config::File::from_str(&text, ::config::FileFormat::Yaml));
            if let Some(vars) = vars {
                b = b.add_source(
                    ::config::Environment::with_prefix("METRICS_RELAY")
                        .prefix_separator("__")
                        .separator("__")
                        .source(Some(vars)),
                );
            }
            b.build()
                .and_then(|raw| raw.try_deserialize::<Config>())
                .map_err(|e| e.to_string())
        };
        let mut cfg = match build((!vars.is_empty()).then(|| vars.clone())) {
            Ok(c) => c,
            Err(message) => {
                // Whose mistake: the file's, or an environment override's?
                if !vars.is_empty() && build(None).is_ok() {
                    let mut names: Vec<&str> = vars.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    return Err(ConfigError::Env {
                        vars: names.join(", "),
                        message: crate::yaml::redact_quoted(&message),
                    });
                }
                return Err(parse_error(crate::yaml::redact_quoted(&message)));
            }
        };
        // As Prometheus: files a config names (discovery files, TLS files,
        // credentials) are relative to the config file's directory.
        let base = path.parent().unwrap_or(Path::new(""));
        cfg.resolve_paths(base);
        cfg.finalize()?;
        Ok(cfg)
    }

    /// Makes every relative file path in the config relative to `base` (the
    /// config file's directory), as Prometheus does.
    pub fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        let tls = |t: &mut TlsConfig| {
            for p in [
                &mut t.ca_file,
                &mut t.cert_file,
                &mut t.key_file,
                &mut t.kubeconfig,
            ]
            .into_iter()
            .flatten()
            {
                join(p);
            }
        };
        for sc in &mut self.scrape_configs {
            for sd in sc
                .file_sd_configs
                .iter_mut()
                .chain(sc.kubeconfig_sd_configs.iter_mut())
            {
                for f in &mut sd.files {
                    if Path::new(f.as_str()).is_relative() {
                        *f = base.join(&*f).to_string_lossy().into_owned();
                    }
                }
            }
            if let Some(t) = &mut sc.tls_config {
                tls(t);
            }
        }
        for rw in &mut self.remote_write {
            if let Some(t) = &mut rw.tls_config {
                tls(t);
            }
            if let Some(p) = rw
                .basic_auth
                .as_mut()
                .and_then(|b| b.password_file.as_mut())
            {
                join(p);
            }
            if let Some(p) = rw
                .authorization
                .as_mut()
                .and_then(|a| a.credentials_file.as_mut())
            {
                join(p);
            }
        }
        if let Some(a) = &mut self.server.relay_auth {
            join(&mut a.credentials_file);
        }
        if let Some(t) = &mut self.server.tls_server_config {
            join(&mut t.cert_file);
            join(&mut t.key_file);
            if let Some(p) = &mut t.client_ca_file {
                join(p);
            }
        }
    }

    /// Parses YAML text (no environment overrides); used by tests and tools.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        crate::yaml::check(text).map_err(|e| ConfigError::Parse {
            path: "<inline>".into(),
            message: format!("not valid YAML: {e}"),
        })?;
        let raw = ::config::Config::builder()
            .add_source(::config::File::from_str(text, ::config::FileFormat::Yaml))
            .build()
            .map_err(|source| ConfigError::Load {
                path: "<inline>".into(),
                source,
            })?;
        let mut cfg: Config = raw.try_deserialize().map_err(|e| ConfigError::Parse {
            path: "<inline>".into(),
            message: e.to_string(),
        })?;
        cfg.finalize()?;
        Ok(cfg)
    }

    /// Fills Prometheus's defaults and validates, naming the field on error.
    /// Whether `/relay/metrics` is served (see [`ServerConfig::relay_metrics`]).
    pub fn relay_metrics_enabled(&self) -> bool {
        self.server
            .relay_metrics
            .unwrap_or(self.remote_write.is_empty())
    }

    /// Fills the defaults that depend on other fields (scrape intervals and
    /// timeouts from `global`, basic auth from URL credentials) and checks
    /// everything; each error names its field (`config/validate.rs`).
    pub fn finalize(&mut self) -> Result<(), ConfigError> {
        validate::finalize(self)
    }

    /// The effective config as YAML-ish JSON text with secrets redacted.
    pub fn redacted_dump(&self) -> String {
        // serde's Serialize on Secret prints "<secret>"; Debug is redacted too.
        format!("{self:#?}")
    }
}

impl GlobalConfig {
    pub fn interval(&self) -> Duration {
        self.scrape_interval
            .map(|d| d.0)
            .unwrap_or(DEFAULT_SCRAPE_INTERVAL)
    }
    pub fn timeout(&self) -> Duration {
        self.scrape_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_SCRAPE_TIMEOUT)
    }
}

impl ScrapeConfig {
    /// Effective interval (set by [`Config::finalize`]).
    pub fn interval(&self) -> Duration {
        self.scrape_interval
            .map(|d| d.0)
            .unwrap_or(DEFAULT_SCRAPE_INTERVAL)
    }
    /// Effective timeout (set by [`Config::finalize`]).
    pub fn timeout(&self) -> Duration {
        self.scrape_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_SCRAPE_TIMEOUT)
    }
    /// Effective body size limit in bytes; `None` means unlimited.
    pub fn body_limit(&self) -> Option<u64> {
        match self.body_size_limit {
            Some(ByteSize(0)) => None,
            Some(ByteSize(n)) => Some(n),
            None => Some(DEFAULT_BODY_SIZE_LIMIT),
        }
    }
}

impl RemoteWriteConfig {
    /// The queue's name: `name`, or a stable name derived from the position.
    pub fn queue_name(&self, index: usize) -> String {
        match &self.name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => format!("rw{index}"),
        }
    }
}

/// `server.tls_server_config`: the admin server's TLS, in the shape of
/// Prometheus's web config (served by [`crate::web_tls`]).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth_type: ClientAuthType,
}

/// Go's `tls.ClientAuthType` names, as Prometheus's web config takes them.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum ClientAuthType {
    #[default]
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// A `tls_server_config` whose settings do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsServerConfigError {
    #[error(
        "client_auth_type {0:?} accepts certificates without verifying them; use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
    )]
    Unverified(ClientAuthType),
    #[error("client_auth_type {0:?} needs client_ca_file")]
    NoClientCa(ClientAuthType),
    #[error(
        "client_ca_file is set but client_auth_type is NoClientCert: set client_auth_type: RequireAndVerifyClientCert"
    )]
    UnusedClientCa,
}

impl TlsServerConfig {
    /// Checks the combination (not the files).
    pub fn validate(&self) -> Result<(), TlsServerConfigError> {
        use ClientAuthType::*;
        match (self.client_auth_type, &self.client_ca_file) {
            (RequestClientCert | RequireAnyClientCert, _) => {
                Err(TlsServerConfigError::Unverified(self.client_auth_type))
            }
            (VerifyClientCertIfGiven | RequireAndVerifyClientCert, None) => {
                Err(TlsServerConfigError::NoClientCa(self.client_auth_type))
            }
            (NoClientCert, Some(_)) => Err(TlsServerConfigError::UnusedClientCa),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_secret_is_a_changed_destination() {
        // The reload compares destinations as values: a rotated password
        // restarts the sender with it, though every printed form is equal.
        let rw = |pw: &str| {
            Config::from_yaml(&format!(
                "remote_write: [{{url: 'http://h/w', basic_auth: {{username: u, password: {pw}}}}}]"
            ))
            .unwrap()
            .remote_write
            .remove(0)
        };
        assert_eq!(rw("a"), rw("a"));
        assert_ne!(rw("a"), rw("b"));
        assert_eq!(format!("{:?}", rw("a")), format!("{:?}", rw("b")));
    }

    #[test]
    fn url_credentials_become_basic_auth_and_leave_the_url() {
        let cfg = Config::from_yaml(
            "remote_write:\n  - url: https://alice:s%40cr3t@rx.example:9090/api/v1/write?x=1\n",
        )
        .unwrap();
        let rw = &cfg.remote_write[0];
        assert_eq!(rw.url, "https://rx.example:9090/api/v1/write?x=1");
        let b = rw.basic_auth.as_ref().unwrap();
        assert_eq!(b.username, "alice");
        assert_eq!(b.password.as_ref().unwrap().expose(), "s@cr3t");
        assert!(!format!("{cfg:?}").contains("cr3t"));
        let e = Config::from_yaml(
            "remote_write:\n  - url: https://a:b@rx:1/w\n    basic_auth: {username: c, password: d}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("carries credentials") && !e.contains(":b@"),
            "{e}"
        );
        assert_eq!(
            split_userinfo("http://h:1/p@x").1,
            None,
            "an @ in the path is not userinfo"
        );
    }

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_prometheus_defaults() {
        let c = Config::from_yaml(
            "scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:9100']}]\n",
        )
        .unwrap();
        assert_eq!(c.global.interval(), Duration::from_secs(60));
        assert_eq!(c.global.timeout(), Duration::from_secs(10));
        let sc = &c.scrape_configs[0];
        assert_eq!(sc.scheme, "http");
        assert_eq!(sc.metrics_path, "/metrics");
        assert!(sc.honor_timestamps);
        assert!(!sc.honor_labels);
        assert_eq!(sc.interval(), Duration::from_secs(60));
        assert_eq!(sc.timeout(), Duration::from_secs(10));
        assert_eq!(sc.body_limit(), Some(DEFAULT_BODY_SIZE_LIMIT));
        assert_eq!(c.server.listen_address, "0.0.0.0:9464");
    }

    #[test]
    fn full_prometheus_shaped_config() {
        let c = Config::from_yaml(
            r#"
global:
  scrape_interval: 30s
  external_labels: {cluster: ack-one-prod, Region: cn-hangzhou}
scrape_configs:
  - job_name: ack-control-plane
    scheme: https
    params: {hosting: ["true"]}
    scrape_interval: 5s
    tls_config:
      ca_file: /tmp/ca.crt
      cert_file: /tmp/tls.crt
      key_file: /tmp/tls.key
      server_name: kubernetes
    static_configs:
      - targets: ["192.168.0.10:6443"]
        labels: {env: prod}
    body_size_limit: 64MiB
    honor_labels: true
    honor_timestamps: false
remote_write:
  - url: http://127.0.0.1:9090/api/v1/write
    name: local
    remote_timeout: 5s
    headers: {X-Scope-OrgID: team-a}
    basic_auth: {username: u, password: hunter2}
    queue_config: {max_samples_per_send: 500, min_backoff: 100ms, max_backoff: 10s, retry_on_http_429: false}
server:
  listen_address: 127.0.0.1:9464
"#,
        )
        .unwrap();
        assert_eq!(c.global.timeout(), Duration::from_secs(10));
        assert_eq!(c.global.external_labels["Region"], "cn-hangzhou");
        let sc = &c.scrape_configs[0];
        assert_eq!(sc.interval(), Duration::from_secs(5));
        assert_eq!(
            sc.timeout(),
            Duration::from_secs(5),
            "timeout capped at interval"
        );
        assert_eq!(sc.params["hosting"], vec!["true".to_string()]);
        assert_eq!(sc.body_limit(), Some(64 << 20));
        assert_eq!(sc.static_configs[0].labels["env"], "prod");
        let rw = &c.remote_write[0];
        assert_eq!(rw.queue_config.max_samples_per_send, 500);
        assert_eq!(rw.queue_config.capacity, 10_000);
        assert!(!rw.queue_config.retry_on_http_429);
        assert_eq!(rw.headers["X-Scope-OrgID"], "team-a");
        let dump = c.redacted_dump();
        assert!(!dump.contains("hunter2"), "{dump}");
        assert!(dump.contains("<secret>"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = err("scrape_configs:\n  - job_name: a\n    scrape_intervall: 5s\n");
        assert!(e.contains("scrape_intervall"), "{e}");
        let e = err("globl: {}\n");
        assert!(e.contains("globl"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            (
                "global: {scrape_interval: 5s, scrape_timeout: 10s}\n",
                "global.scrape_timeout",
            ),
            (
                "scrape_configs: [{job_name: a, scrape_interval: 5s, scrape_timeout: 6s}]\n",
                "scrape_configs[0].scrape_timeout",
            ),
            (
                "scrape_configs: [{job_name: a, scheme: ftp}]\n",
                "scrape_configs[0].scheme",
            ),
            (
                "scrape_configs: [{job_name: a}, {job_name: a}]\n",
                "scrape_configs[1].job_name",
            ),
            (
                "scrape_configs: [{job_name: a, static_configs: [{targets: ['http://x:1/m']}]}]\n",
                "scrape_configs[0].static_configs[0].targets[0]",
            ),
            (
                "scrape_configs: [{job_name: a, tls_config: {cert_file: /x}}]\n",
                "scrape_configs[0].tls_config.key_file",
            ),
            (
                "scrape_configs: [{job_name: a, static_configs: [{labels: {'1x': y}}]}]\n",
                "scrape_configs[0].static_configs[0].labels.1x",
            ),
            (
                "remote_write: [{url: 'not a url'}]\n",
                "remote_write[0].url",
            ),
            (
                "remote_write: [{url: 'http://h/w', headers: {Authorization: x}}]\n",
                "remote_write[0].headers.Authorization",
            ),
            (
                "remote_write: [{url: 'http://h/w', queue_config: {max_samples_per_send: 0}}]\n",
                "remote_write[0].queue_config.max_samples_per_send",
            ),
            (
                "remote_write: [{url: 'http://h/w', basic_auth: {username: u, password: p, password_file: /f}}]\n",
                "remote_write[0].basic_auth",
            ),
            (
                "remote_write: [{url: 'http://h/w'}, {url: 'http://h/w2', name: rw0}]\n",
                "remote_write[1].name",
            ),
            (
                "server: {listen_address: 'nope'}\n",
                "server.listen_address",
            ),
            (
                "scrape_configs: [{job_name: a, file_sd_configs: [{files: ['/sd/tg_[0-9.json']}]}]\n",
                "scrape_configs[0].file_sd_configs[0].files[0]",
            ),
            (
                "global: {prometheus_compatibility: 4}\n",
                "prometheus_compatibility",
            ),
            (
                "scrape_configs: [{job_name: a, metric_relabel_configs: [{action: hashmod, target_label: h}]}]\n",
                "scrape_configs[0].metric_relabel_configs[0]",
            ),
            (
                "scrape_configs: [{job_name: a, relabel_configs: [{action: replace, target_label: ''}]}]\n",
                "scrape_configs[0].relabel_configs[0]",
            ),
            (
                "scrape_configs: [{job_name: a, relabel_configs: [{regex: '(', target_label: x}]}]\n",
                "invalid regex",
            ),
        ];
        for (yaml, field) in cases {
            let e = err(yaml);
            assert!(e.contains(field), "expected {field} in {e:?} for {yaml}");
        }
    }

    #[test]
    fn bad_duration_is_a_parse_error() {
        let e = err("global: {scrape_interval: 30}\n");
        assert!(e.contains("duration"), "{e}");
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yml");
        std::fs::write(&p, "server: {listen_address: '0.0.0.0:1'}\n").unwrap();
        let mut vars = std::collections::HashMap::new();
        vars.insert(
            "METRICS_RELAY__SERVER__LISTEN_ADDRESS".to_string(),
            "127.0.0.1:2".to_string(),
        );
        let c = Config::load_with_env(&p, vars).unwrap();
        assert_eq!(c.server.listen_address, "127.0.0.1:2");
        // A typo in an override is blamed on the override, not the file.
        let mut vars = std::collections::HashMap::new();
        vars.insert(
            "METRICS_RELAY__SERVER__LISTEN_ADRESS".to_string(),
            "127.0.0.1:2".to_string(),
        );
        let e = Config::load_with_env(&p, vars).unwrap_err().to_string();
        assert!(
            e.starts_with("environment override (METRICS_RELAY__SERVER__LISTEN_ADRESS): ")
                && e.contains("listen_adress"),
            "{e}"
        );
    }

    #[test]
    fn shipped_examples_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yml") {
                let text = std::fs::read_to_string(&p).unwrap();
                Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 2, "examples in {}", dir.display());
        // The kustomize base ships the same ACK One config.
        let deployed = std::fs::read_to_string(dir.join("../deploy/base/ack-one.yml")).unwrap();
        assert_eq!(
            deployed,
            std::fs::read_to_string(dir.join("ack-one.yml")).unwrap()
        );
    }

    #[test]
    fn ack_one_example_splits_jobs_by_metric_prefix() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ack-one.yml");
        let c = Config::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rules = &c.scrape_configs[0].metric_relabel_configs;
        let job = |name: &str| {
            let l = vec![
                ("__name__".to_string(), name.to_string()),
                ("job".to_string(), "ack-control-plane".to_string()),
            ];
            let out = crate::relabel::process(l, rules).unwrap();
            out.into_iter().find(|(k, _)| k == "job").unwrap().1
        };
        assert_eq!(job("apiserver_request_total"), "kube-apiserver");
        assert_eq!(
            job("etcd_request_duration_seconds_bucket"),
            "kube-apiserver"
        );
        assert_eq!(job("scheduler_pending_pods"), "kube-scheduler");
        assert_eq!(job("workqueue_depth"), "kube-controller-manager");
        assert_eq!(
            job("cloudprovider_alibaba_api_request_duration_seconds"),
            "cloud-controller-manager"
        );
        assert_eq!(job("etcd_server_has_leader"), "etcd");
        assert_eq!(job("process_cpu_seconds_total"), "ack-control-plane");
    }

    #[test]
    fn env_expansion_for_daemonsets() {
        let env = |k: &str| match k {
            "NODE_IP" => Some("10.1.2.3".to_string()),
            "named" => Some("X".to_string()),
            _ => None,
        };
        assert_eq!(
            expand_env("targets: ['${NODE_IP}:9100']", env),
            "targets: ['10.1.2.3:9100']"
        );
        assert_eq!(
            expand_env("replacement: '${1}-$1'", env),
            "replacement: '${1}-$1'"
        );
        assert_eq!(
            expand_env("x: ${UNSET} $${NODE_IP} ${", env),
            "x: ${UNSET} ${NODE_IP} ${"
        );
        assert_eq!(expand_env("${named}", env), "X");
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("topsecret");
        assert_eq!(format!("{s:?} {s}"), "<secret> <secret>");
    }
}
