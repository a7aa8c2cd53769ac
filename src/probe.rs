//! `metrics-relay probe`: the vendor's "verify the collection status" step in
//! one command. Each target is scraped once, and the TLS handshake, both
//! certificates, the HTTP status, the size, the samples and the first parse
//! error are reported; then one test sample (`metrics_relay_probe`) is sent
//! to every remote-write URL. Any failure makes the result unsuccessful.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;

use crate::config::Config;
use crate::exposition::Parser;
use crate::remote_write::queue::{Batch, Queue};
use crate::remote_write::retry::Outcome;
use crate::remote_write::samples::{EncodedSamples, encode_labels};
use crate::remote_write::sender::Sender;
use crate::scrape::{self, Target};
use crate::series::SeriesCache;
use crate::telemetry::{Metrics, RemoteLabels};
use crate::tls::{self, Material};
use crate::x509::{CertInfo, format_time};

fn describe(info: &CertInfo) -> String {
    let now = crate::clock::unix_secs();
    let days = (info.not_after - now) / 86_400;
    let when = if info.not_after < now {
        "EXPIRED".to_string()
    } else {
        format!("in {days} days")
    };
    format!(
        "{} (issuer {}), expires {} ({when})",
        info.subject,
        info.issuer,
        format_time(info.not_after)
    )
}

/// Why a probe step failed (printed in the report).
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{host:?} is not a valid server name: {reason}")]
    ServerName { host: String, reason: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The handshake failed; the explanation of [`tls::describe_error`].
    #[error("{0}")]
    Handshake(String),
    #[error("no TCP connection to {addr} within {limit} (scrape_timeout){hint}")]
    ConnectTimeout {
        addr: String,
        limit: String,
        hint: &'static str,
    },
    #[error(
        "connected, but no TLS handshake within {limit} (scrape_timeout): something on the way accepts the connection and does not answer as a TLS server (a proxy or a firewall that holds it)"
    )]
    HandshakeTimeout { limit: String },
    #[error("{0}")]
    Sender(#[from] crate::remote_write::SenderError),
    #[error("compressing the test sample: {0}")]
    Snappy(#[from] snap::Error),
    #[error("encoding the test sample: {0}")]
    Encode(#[from] crate::remote_write::wire::EncodeError),
}

/// What a probe says when a connection to the API server's port is never
/// answered: an SLB drops what its access control list does not allow, so
/// the connection times out instead of being refused.
const SLB_HINT: &str = "; the API server's SLB answers nothing to an address its access control list does not allow: is this machine's (or the cluster node's) egress address on the ACK cluster's API server SLB access control list (whitelist)?";

/// Handshake only, within `limit`: returns the server's leaf certificate and
/// the protocol.
async fn handshake(
    t: &Target,
    m: &Material,
    limit: Duration,
) -> Result<(Option<CertInfo>, String), ProbeError> {
    let cfg = tls::client_config_from(m)?;
    let host = t
        .url
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = t.url.port_u16().unwrap_or(443);
    let name = match tls::server_name_of(m.server_name.as_deref())? {
        Some(n) => n,
        None => ServerName::try_from(host.clone()).map_err(|e| ProbeError::ServerName {
            host: host.clone(),
            reason: e.to_string(),
        })?,
    };
    let deadline = tokio::time::Instant::now() + limit;
    let limit_text = crate::units::format_duration(limit);
    let tcp = match tokio::time::timeout_at(
        deadline,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Err(_) => {
            return Err(ProbeError::ConnectTimeout {
                addr: format!("{host}:{port}"),
                limit: limit_text,
                hint: if port == 6443 { SLB_HINT } else { "" },
            });
        }
        Ok(r) => r.map_err(|source| ProbeError::Connect {
            addr: format!("{host}:{port}"),
            source,
        })?,
    };
    let connect = async {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| ProbeError::Handshake(tls::describe_error(&e)))?;
        let (_, conn) = tls.get_ref();
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(CertInfo::parse);
        let proto = conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        Ok((leaf, proto))
    };
    tokio::time::timeout_at(deadline, connect)
        .await
        .map_err(|_| ProbeError::HandshakeTimeout { limit: limit_text })?
}

/// Fresh connections made to look for a second replica behind the address.
const REPLICA_SCRAPES: usize = 4;

/// The counters of a page (counter families; histogram and summary
/// `_count` and `_bucket`), by series text: values that only grow while one
/// process serves them.
fn counters(body: &[u8], format: crate::exposition::Format) -> HashMap<Vec<u8>, f64> {
    use crate::exposition::MetricType;
    let mut p = Parser::new(body).with_format(format);
    let mut out = HashMap::new();
    while let Some(Ok(s)) = p.next() {
        let f = p.family(&s);
        let counter = match f.kind {
            MetricType::Counter => true,
            MetricType::Histogram | MetricType::Summary => f.bucket || s.name.ends_with(b"_count"),
            _ => false,
        };
        if counter && s.value.is_finite() {
            out.insert(s.series.to_vec(), s.value);
        }
    }
    out
}

/// Scrapes the target again over fresh connections (an L4 load balancer
/// keeps a connection on one backend) and compares its counters with the
/// first scrape's: counters that go backwards within a second mean two
/// processes answer at one address (two API server replicas behind one SLB).
async fn replicas(t: &Target, m: &Material, first: &HashMap<Vec<u8>, f64>) -> Option<String> {
    let mut last = first.clone();
    for _ in 0..REPLICA_SCRAPES {
        let client = crate::http::client_from(m, t.timeout).ok()?;
        let (mut body, mut scratch) = (Vec::new(), Vec::new());
        let fetched = tokio::time::timeout(
            t.timeout,
            scrape::fetch(&client, t, &mut body, &mut scratch),
        )
        .await
        .ok()?
        .ok()?;
        let now = counters(&body, fetched.format);
        let mut back: Vec<(&Vec<u8>, f64, f64)> = now
            .iter()
            .filter_map(|(k, &v)| last.get(k).filter(|&&was| v < was).map(|&was| (k, was, v)))
            .collect();
        if !back.is_empty() {
            back.sort_by(|a, b| a.0.cmp(b.0));
            let (series, was, v) = back[0];
            return Some(format!(
                "counters went backwards between two scrapes a moment apart ({} series, e.g. {} {was} -> {v}): more than one process answers at this address (two or more API server replicas behind the SLB, each with its own counters), so rate() and increase() would see a counter reset at every switch. Scrape each API server replica as a target of its own (the addresses of `kubectl get endpoints kubernetes -n default`), so each keeps its instance label; or keep one connection per scrape target pinned to one replica",
                back.len(),
                String::from_utf8_lossy(series)
            ));
        }
        last = now;
    }
    None
}

/// Runs the probe; returns the report and whether everything worked.
pub async fn probe(cfg: &Config) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    // Discovered targets too: every kubeconfig found is probed with its own
    // credentials.
    let (found, discoverers) = crate::discovery::discover_once(cfg, &Metrics::new());
    for (index, d) in &discoverers {
        for p in d.problems() {
            let _ = writeln!(
                out,
                "job {:?}: discovery: {p}",
                cfg.scrape_configs[*index].job_name
            );
            ok = false;
        }
    }
    let targets = scrape::resolve(cfg, &found, &Default::default()).owned;
    if targets.is_empty() && !cfg.scrape_configs.is_empty() {
        let _ = writeln!(
            out,
            "no targets: every target was dropped by relabel_configs, or discovery found none"
        );
        ok = false;
    }
    for t in &targets {
        // One scrape_timeout for the whole target, as a scrape has: the
        // handshake and the request share it.
        let deadline = tokio::time::Instant::now() + t.timeout;
        let sc = &cfg.scrape_configs[t.config_index];
        let _ = writeln!(out, "target {} (job {:?})", t.url, t.job);
        if let Some(src) = &t.source {
            let _ = writeln!(out, "  discovered from {src}");
        }
        let tls = t.tls.as_deref().or(sc.tls_config.as_ref());
        let material = match Material::load(tls) {
            Ok(m) => m,
            Err(e) => {
                let _ = writeln!(out, "  TLS material: FAILED: {e}");
                ok = false;
                continue;
            }
        };
        if t.url.scheme_str() == Some("https") {
            let handshook = handshake(t, &material, t.timeout).await;
            match &handshook {
                Ok((leaf, proto)) => {
                    let _ = writeln!(out, "  TLS handshake: ok ({proto})");
                    if let Some(l) = leaf {
                        let _ = writeln!(out, "  server certificate: {}", describe(l));
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  TLS handshake: FAILED: {e}");
                    ok = false;
                }
            }
            match material.client_cert_info() {
                Some(c) => {
                    let _ = writeln!(out, "  client certificate: {}", describe(&c));
                }
                None => {
                    let _ = writeln!(out, "  client certificate: none configured");
                }
            }
            if handshook.is_err() {
                // The request would fail (or time out) the same way.
                let _ = writeln!(out, "  HTTP: skipped (no TLS connection)");
                continue;
            }
        }
        let client = match crate::http::client_from(&material, t.timeout) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(out, "  client: FAILED: {e}");
                ok = false;
                continue;
            }
        };
        let (mut body, mut scratch) = (Vec::new(), Vec::new());
        match tokio::time::timeout_at(deadline, scrape::fetch(&client, t, &mut body, &mut scratch))
            .await
        {
            Err(_) => {
                let _ = writeln!(
                    out,
                    "  HTTP: FAILED: no answer within {} (scrape_timeout)",
                    crate::units::format_duration(t.timeout)
                );
                ok = false;
            }
            Ok(Err(e)) => {
                let _ = writeln!(out, "  HTTP: FAILED: {e}");
                ok = false;
            }
            Ok(Ok(fetched)) => {
                let _ = writeln!(
                    out,
                    "  HTTP: 200 OK, {} bytes received, {} bytes of {}",
                    fetched.wire,
                    body.len(),
                    match fetched.format {
                        crate::exposition::Format::OpenMetrics => "OpenMetrics text",
                        crate::exposition::Format::Text => "text exposition",
                    }
                );
                let mut cache = SeriesCache::new();
                let mut enc = EncodedSamples::default();
                let (n, first_error) =
                    match cache.ingest_format(&t.ctx, &body, fetched.format, 0, &mut enc, 0) {
                        Ok(n) => (n.scraped, None),
                        // Samples up to the error.
                        Err(e) => (
                            Parser::new(&body)
                                .with_format(fetched.format)
                                .take_while(|r| r.is_ok())
                                .count() as u64,
                            Some(e.to_string()),
                        ),
                    };
                let _ = writeln!(out, "  samples: {n}");
                match first_error {
                    None => {
                        let _ = writeln!(out, "  parse: ok");
                        let first = counters(&body, fetched.format);
                        if !first.is_empty()
                            && let Some(w) = replicas(t, &material, &first).await
                        {
                            let _ = writeln!(out, "  replicas: WARNING: {w}");
                        }
                    }
                    Some(e) => {
                        let _ = writeln!(
                            out,
                            "  parse: FAILED: {e} (the whole scrape would fail, up 0)"
                        );
                        ok = false;
                    }
                }
            }
        }
    }
    let metrics = Metrics::new();
    for (index, rw) in cfg.remote_write.iter().enumerate() {
        let name = rw.queue_name(index);
        let _ = write!(out, "remote_write {name} {}: ", rw.url);
        let result = async {
            let material = Material::load(rw.tls_config.as_ref())?;
            let client = crate::http::client_from(&material, rw.remote_timeout.0)?;
            let (_tx, rx) = tokio::sync::watch::channel(client);
            let labels = RemoteLabels {
                remote_name: name.clone(),
                url: rw.url.clone(),
            };
            let queue = Arc::new(Queue::memory(
                1,
                1,
                Duration::from_secs(1),
                metrics.clone(),
                labels,
            ));
            let sender = Sender::new(name.clone(), rw.clone(), rx, queue, metrics.clone())?;
            let mut lbls = vec![("__name__".to_string(), "metrics_relay_probe".to_string())];
            lbls.extend(
                cfg.global
                    .external_labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            lbls.sort();
            let mut enc = EncodedSamples::default();
            enc.push(&encode_labels(&lbls), 1.0, crate::clock::unix_ms());
            let data = snap::raw::Encoder::new().compress_vec(&enc.buf)?;
            let batch = Batch {
                seq: 1,
                parts: vec![crate::remote_write::wire::Stored {
                    codec: crate::remote_write::codec::Codec::Snappy,
                    data: data.into(),
                }],
                samples: 1,
                oldest_ms: crate::clock::unix_ms(),
                born: crate::clock::mono_ms(),
                stream: 0,
            };
            Ok::<_, ProbeError>(sender.attempt(&batch, &mut None).await?)
        }
        .await;
        match result {
            Ok(Outcome::Sent) => {
                let _ = writeln!(out, "ok (1 test sample metrics_relay_probe accepted)");
            }
            Ok(Outcome::Retry {
                failure, message, ..
            })
            | Ok(Outcome::Reject {
                failure, message, ..
            }) => {
                let _ = writeln!(out, "FAILED ({}): {message}", failure.kind());
                ok = false;
            }
            Err(e) => {
                let _ = writeln!(out, "FAILED: {e}");
                ok = false;
            }
        }
    }
    if targets.is_empty() && cfg.remote_write.is_empty() {
        out.push_str("nothing to probe: no targets and no remote_write\n");
    }
    let _ = writeln!(out, "{}", if ok { "probe: OK" } else { "probe: FAILED" });
    (out, ok)
}
