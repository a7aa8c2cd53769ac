//! Config validation: [`finalize`] fills the defaults that depend on other
//! fields and checks every section, with errors that name the field
//! (`scrape_configs[0].scrape_timeout`) and say what is wrong, in
//! Prometheus's words where it has them.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::labels::is_valid_label_name;

/// Headers a remote_write config may not set (as in Prometheus).
const RESERVED_HEADERS: [&str; 6] = [
    "authorization",
    "host",
    "content-encoding",
    "content-type",
    "x-prometheus-remote-write-version",
    "user-agent",
];

/// Most admin connections served at once (each is a descriptor).
pub(crate) const MAX_CONNECTIONS: usize = 65_536;
/// Most senders per destination.
pub(crate) const MAX_SHARDS: usize = 1_024;
/// Most samples in one request.
pub(crate) const MAX_SAMPLES_PER_SEND: usize = 1_000_000;
/// Most samples buffered per sender (`capacity`).
pub(crate) const MAX_CAPACITY: usize = 10_000_000;

/// Fills defaults and checks `cfg`, section by section.
pub(super) fn finalize(cfg: &mut Config) -> Result<(), ConfigError> {
    if let Some(t) = &cfg.server.tls_server_config {
        t.validate()
            .map_err(|e| invalid("server.tls_server_config", e.to_string()))?;
    }
    if !(1..=MAX_CONNECTIONS).contains(&cfg.server.max_connections) {
        return Err(invalid(
            "server.max_connections",
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        ));
    }
    let (interval, timeout) = finalize_global(&mut cfg.global)?;
    let mut jobs = HashSet::new();
    for (i, sc) in cfg.scrape_configs.iter_mut().enumerate() {
        finalize_scrape_config(i, sc, interval, timeout, &mut jobs)?;
    }
    let mut names = HashSet::new();
    for (i, rw) in cfg.remote_write.iter_mut().enumerate() {
        finalize_remote_write(i, rw, &mut names)?;
    }
    cfg.server
        .listen_address
        .parse::<std::net::SocketAddr>()
        .map_err(|e| {
            invalid(
                "server.listen_address",
                format!(
                    "{:?} is not HOST:PORT with an IP host: {e}",
                    cfg.server.listen_address
                ),
            )
        })?;
    Ok(())
}

/// The name of a `${NAME}` left in `value` (expansion replaces the ones
/// that are set), if it is one: an uppercase environment-style name.
fn unset_variable(value: &str) -> Option<&str> {
    let start = value.find("${")? + 2;
    let name = &value[start..start + value[start..].find('}')?];
    let env_like = name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    env_like.then_some(name)
}

/// `global`: the scrape interval and timeout every job inherits.
fn finalize_global(g: &mut GlobalConfig) -> Result<(Duration, Duration), ConfigError> {
    let interval = g
        .scrape_interval
        .map(|d| d.0)
        .unwrap_or(DEFAULT_SCRAPE_INTERVAL);
    if interval.is_zero() {
        return Err(invalid("global.scrape_interval", "must be greater than 0"));
    }
    let timeout = match g.scrape_timeout {
        Some(t) => t.0,
        None => DEFAULT_SCRAPE_TIMEOUT.min(interval),
    };
    if timeout.is_zero() {
        return Err(invalid("global.scrape_timeout", "must be greater than 0"));
    }
    if timeout > interval {
        return Err(invalid(
            "global.scrape_timeout",
            "global scrape timeout greater than scrape interval",
        ));
    }
    g.scrape_interval = Some(PromDuration(interval));
    g.scrape_timeout = Some(PromDuration(timeout));
    for (name, value) in &g.external_labels {
        let field = format!("global.external_labels.{name}");
        validate_label_name(&field, name)?;
        if let Some(var) = unset_variable(value) {
            return Err(invalid(
                field,
                format!(
                    "{value:?} names the environment variable {var}, which is not set in the agent's environment"
                ),
            ));
        }
    }

    Ok((interval, timeout))
}

/// One `scrape_configs` entry: its interval and timeout, TLS, relabeling,
/// targets and labels.
fn finalize_scrape_config(
    i: usize,
    sc: &mut ScrapeConfig,
    interval: Duration,
    timeout: Duration,
    jobs: &mut HashSet<String>,
) -> Result<(), ConfigError> {
    let at = |f: &str| format!("scrape_configs[{i}].{f}");
    if sc.job_name.is_empty() {
        return Err(invalid(at("job_name"), "must not be empty"));
    }
    if !jobs.insert(sc.job_name.clone()) {
        return Err(invalid(
            at("job_name"),
            format!(
                "found multiple scrape configs with job name {:?}",
                sc.job_name
            ),
        ));
    }
    if sc.scheme != "http" && sc.scheme != "https" {
        return Err(invalid(
            at("scheme"),
            format!("unknown scheme {:?} (use http or https)", sc.scheme),
        ));
    }
    if !sc.metrics_path.starts_with('/') {
        return Err(invalid(at("metrics_path"), "must start with '/'"));
    }
    let iv = sc.scrape_interval.map(|d| d.0).unwrap_or(interval);
    if iv.is_zero() {
        return Err(invalid(at("scrape_interval"), "must be greater than 0"));
    }
    let to = match sc.scrape_timeout {
        Some(t) => t.0,
        None => timeout.min(iv),
    };
    if to.is_zero() {
        return Err(invalid(at("scrape_timeout"), "must be greater than 0"));
    }
    if to > iv {
        return Err(invalid(
            at("scrape_timeout"),
            format!(
                "scrape timeout {} greater than scrape interval {}",
                PromDuration(to),
                PromDuration(iv)
            ),
        ));
    }
    sc.scrape_interval = Some(PromDuration(iv));
    sc.scrape_timeout = Some(PromDuration(to));
    if let Some(tls) = &sc.tls_config {
        validate_tls(&at("tls_config"), tls)?;
    }
    for (j, r) in sc.relabel_configs.iter().enumerate() {
        r.validate()
            .map_err(|e| invalid(at(&format!("relabel_configs[{j}]")), e.to_string()))?;
    }
    for (j, r) in sc.metric_relabel_configs.iter().enumerate() {
        r.validate()
            .map_err(|e| invalid(at(&format!("metric_relabel_configs[{j}]")), e.to_string()))?;
    }
    if let Some(p) = sc.profile {
        p.metric_relabel_configs().map_err(|e| {
            invalid(
                at("profile"),
                format!("the shipped profile {} is broken: {e}", p.name()),
            )
        })?;
    }
    for (what, sds) in [
        ("file_sd_configs", &sc.file_sd_configs),
        ("kubeconfig_sd_configs", &sc.kubeconfig_sd_configs),
    ] {
        for (j, sd) in sds.iter().enumerate() {
            validate_sd(&at(&format!("{what}[{j}]")), what == "file_sd_configs", sd)?;
        }
    }
    for (j, st) in sc.static_configs.iter().enumerate() {
        for (k, t) in st.targets.iter().enumerate() {
            validate_target(&at(&format!("static_configs[{j}].targets[{k}]")), t)?;
        }
        for name in st.labels.keys() {
            validate_label_name(&at(&format!("static_configs[{j}].labels.{name}")), name)?;
        }
    }
    Ok(())
}

/// One `remote_write` entry: URL (credentials in it become basic auth),
/// name, headers, auth, TLS, relabeling and queue settings.
fn finalize_remote_write(
    i: usize,
    rw: &mut RemoteWriteConfig,
    names: &mut HashSet<String>,
) -> Result<(), ConfigError> {
    let at = |f: &str| format!("remote_write[{i}].{f}");
    // Credentials in the URL (`https://user:pass@host/...`) become
    // basic auth and leave the URL, so the password never reaches a
    // label, a log line or a page that shows the URL.
    let (stripped, userinfo) = split_userinfo(&rw.url);
    if let Some((user, pass)) = userinfo {
        if rw.basic_auth.is_some() || rw.authorization.is_some() {
            return Err(invalid(
                at("url"),
                format!(
                    "{stripped:?} carries credentials (user@host) and basic_auth or authorization is set too; keep one of them"
                ),
            ));
        }
        rw.basic_auth = Some(BasicAuth {
            username: user,
            password: Some(Secret::new(pass)),
            password_file: None,
        });
        rw.url = stripped;
    }
    let rw = &*rw;
    let url: http::Uri = rw
        .url
        .parse()
        .map_err(|e| invalid(at("url"), format!("{:?} is not a valid URL: {e}", rw.url)))?;
    match url.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(invalid(
                at("url"),
                format!("{:?} must be an http or https URL", rw.url),
            ));
        }
    }
    if url.host().is_none() {
        return Err(invalid(at("url"), format!("{:?} has no host", rw.url)));
    }
    let name = rw.queue_name(i);
    if !names.insert(name.clone()) {
        return Err(invalid(
            at("name"),
            format!("found multiple remote write configs named {name:?}"),
        ));
    }
    if rw.remote_timeout.0.is_zero() {
        return Err(invalid(at("remote_timeout"), "must be greater than 0"));
    }
    for h in rw.headers.keys() {
        if RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                at(&format!("headers.{h}")),
                "is a reserved header and may not be set",
            ));
        }
        http::HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| invalid(at(&format!("headers.{h}")), "is not a valid header name"))?;
    }
    for (h, v) in &rw.headers {
        http::HeaderValue::from_str(v)
            .map_err(|_| invalid(at(&format!("headers.{h}")), "is not a valid header value"))?;
    }
    if let Some(b) = &rw.basic_auth
        && b.password.is_some()
        && b.password_file.is_some()
    {
        return Err(invalid(
            at("basic_auth"),
            "at most one of password and password_file must be configured",
        ));
    }
    if let Some(a) = &rw.authorization {
        if rw.basic_auth.is_some() {
            return Err(invalid(
                at("authorization"),
                "at most one of basic_auth and authorization must be configured",
            ));
        }
        if a.credentials.is_some() && a.credentials_file.is_some() {
            return Err(invalid(
                at("authorization"),
                "at most one of credentials and credentials_file must be configured",
            ));
        }
        if a.kind.eq_ignore_ascii_case("basic") {
            return Err(invalid(
                at("authorization.type"),
                "authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
            ));
        }
    }
    if let Some(tls) = &rw.tls_config {
        validate_tls(&at("tls_config"), tls)?;
    }
    for (j, r) in rw.write_relabel_configs.iter().enumerate() {
        r.validate()
            .map_err(|e| invalid(at(&format!("write_relabel_configs[{j}]")), e.to_string()))?;
    }
    let q = &rw.queue_config;
    if !(1..=MAX_SAMPLES_PER_SEND).contains(&q.max_samples_per_send) {
        return Err(invalid(
            at("queue_config.max_samples_per_send"),
            format!("must be between 1 and {MAX_SAMPLES_PER_SEND}"),
        ));
    }
    if !(1..=MAX_CAPACITY).contains(&q.capacity) {
        return Err(invalid(
            at("queue_config.capacity"),
            format!("must be between 1 and {MAX_CAPACITY}"),
        ));
    }
    if q.max_shards > MAX_SHARDS {
        return Err(invalid(
            at("queue_config.max_shards"),
            format!("must be at most {MAX_SHARDS}"),
        ));
    }
    if q.max_shards == 0 || q.min_shards == 0 || q.min_shards > q.max_shards {
        return Err(invalid(
            at("queue_config.min_shards"),
            "shards must satisfy 1 <= min_shards <= max_shards",
        ));
    }
    if q.min_backoff.0 > q.max_backoff.0 {
        return Err(invalid(
            at("queue_config.min_backoff"),
            "greater than max_backoff",
        ));
    }
    if rw.queue.max_size.0 < 1 << 20 {
        return Err(invalid(at("queue.max_size"), "must be at least 1MiB"));
    }
    if q.batch_send_deadline.0.is_zero() {
        return Err(invalid(
            at("queue_config.batch_send_deadline"),
            "must be greater than 0",
        ));
    }
    Ok(())
}

/// Splits `scheme://user:pass@host/...` into the URL without its userinfo
/// and the (percent-decoded) user and password. URLs without userinfo come
/// back unchanged.
pub fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (
        format!("{scheme}://{host}{tail}"),
        Some((percent_decode(user), percent_decode(pass))),
    )
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn validate_tls(at: &str, tls: &TlsConfig) -> Result<(), ConfigError> {
    if tls.kubeconfig.is_some() && (tls.cert_file.is_some() || tls.key_file.is_some()) {
        return Err(invalid(
            format!("{at}.kubeconfig"),
            "kubeconfig supplies the client certificate and key; remove cert_file/key_file",
        ));
    }
    if tls.context.is_some() && tls.kubeconfig.is_none() {
        return Err(invalid(format!("{at}.context"), "context needs kubeconfig"));
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => Err(invalid(
            format!("{at}.key_file"),
            "client cert file specified without client key file",
        )),
        (None, Some(_)) => Err(invalid(
            format!("{at}.cert_file"),
            "client key file specified without client cert file",
        )),
        _ => Ok(()),
    }
}

fn validate_target(at: &str, t: &str) -> Result<(), ConfigError> {
    if let Some(i) = t.find("${") {
        let name: String = t[i + 2..].chars().take_while(|c| *c != '}').collect();
        return Err(invalid(
            at,
            format!("{t:?} still contains ${{{name}}}: the environment variable {name} is not set"),
        ));
    }
    if t.contains('/') {
        return Err(invalid(
            at,
            format!("{t:?} is not a valid address: use host:port, without scheme or path"),
        ));
    }
    if t.is_empty() {
        return Err(invalid(at, "empty target"));
    }
    Ok(())
}

/// A discovery entry: at least one file; wildcards only in the last path
/// segment; target files named `.json`, `.yml` or `.yaml` (as Prometheus).
fn validate_sd(at: &str, target_files: bool, sd: &FileSdConfig) -> Result<(), ConfigError> {
    if sd.files.is_empty() {
        return Err(invalid(
            format!("{at}.files"),
            "must list at least one file",
        ));
    }
    if sd.refresh_interval.0.is_zero() {
        return Err(invalid(
            format!("{at}.refresh_interval"),
            "must be greater than 0",
        ));
    }
    for (k, f) in sd.files.iter().enumerate() {
        let field = format!("{at}.files[{k}]");
        let p = Path::new(f);
        let dir_has_wildcard = p
            .parent()
            .is_some_and(|d| d.to_string_lossy().contains(['*', '?', '[', '\\']));
        if dir_has_wildcard {
            return Err(invalid(
                field,
                format!("{f:?}: only the last path segment may contain wildcards"),
            ));
        }
        let Some(name) = p.file_name() else {
            return Err(invalid(field, format!("{f:?} names no file")));
        };
        if let Err(e) = crate::glob::Pattern::new(&name.to_string_lossy()) {
            return Err(invalid(field, e.to_string()));
        }
        if target_files && ![".json", ".yml", ".yaml"].iter().any(|e| f.ends_with(e)) {
            return Err(invalid(
                field,
                format!("{f:?}: a target file must end in .json, .yml or .yaml"),
            ));
        }
    }
    Ok(())
}

fn validate_label_name(at: &str, name: &str) -> Result<(), ConfigError> {
    if is_valid_label_name(name) {
        Ok(())
    } else {
        Err(invalid(at, format!("{name:?} is not a valid label name")))
    }
}
