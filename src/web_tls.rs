//! TLS for the admin server, in the shape of Prometheus's web configuration
//! (`--web.config.file`'s `tls_server_config`): `cert_file`, `key_file`,
//! `client_ca_file`, `client_auth_type`.
//!
//! The pull path re-exposes control-plane metrics that the source only gives
//! out over mutual TLS, so it must be able to ask as much: with
//! `client_auth_type: RequireAndVerifyClientCert` nobody without a
//! certificate issued by `client_ca_file` gets a byte of any endpoint.
//!
//! The files are read again every `--tls-reload-interval` and compared by
//! content (a Secret volume swaps its `..data` symlink); a new set is
//! validated (certificates parse, the key matches) and used for the next
//! handshakes; a bad set keeps the old one, and is logged and counted
//! (`metrics_relay_tls_reloads_total{scope="server"}`), as for the scrape
//! and remote-write certificates.
//!
//! Of Go's client auth types, `RequestClientCert` and `RequireAnyClientCert`
//! (a certificate is asked for but not verified) are refused: they would look
//! like protection without being any.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::sync::watch;

use crate::config::{ClientAuthType, TlsServerConfig};
use crate::telemetry::{Metrics, TlsLabels};
use crate::tls::{TlsError, parse_certs, parse_key, provider};

type Files = Vec<(String, Vec<u8>)>;

fn read_all(c: &TlsServerConfig) -> Result<Files, TlsError> {
    let mut out = Vec::new();
    for (field, p) in [
        ("server.tls_server_config.cert_file", Some(&c.cert_file)),
        ("server.tls_server_config.key_file", Some(&c.key_file)),
        (
            "server.tls_server_config.client_ca_file",
            c.client_ca_file.as_ref(),
        ),
    ] {
        let Some(p) = p else { continue };
        let data = crate::fsread::read_regular(p, crate::fsread::MAX_PEM)
            .map_err(|source| TlsError::Read { field, source })?;
        out.push((p.display().to_string(), data));
    }
    Ok(out)
}

fn build(c: &TlsServerConfig, files: &Files) -> Result<ServerConfig, TlsError> {
    c.validate().map_err(|e| TlsError::Config(e.to_string()))?;
    let certs = parse_certs("server.tls_server_config.cert_file", &files[0])?;
    let key = parse_key(&files[1])?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (c.client_auth_type, files.get(2)) {
        (ClientAuthType::NoClientCert, _) | (_, None) => builder.with_no_client_auth(),
        (kind, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in parse_certs("server.tls_server_config.client_ca_file", ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    field: "server.tls_server_config.client_ca_file",
                    origin: ca.0.clone(),
                    reason: e.to_string(),
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if kind == ClientAuthType::VerifyClientCertIfGiven {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder
                .with_client_cert_verifier(v.build().map_err(|e| TlsError::Config(e.to_string()))?)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::ClientAuth(format!("server certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Reads and builds the server configuration once (what `check` and the
/// start of `run` both do).
pub(crate) fn load(c: &TlsServerConfig) -> Result<ServerConfig, TlsError> {
    build(c, &read_all(c)?)
}

/// The server configuration for `c`, kept current: the files are re-read
/// every `every` and a changed, valid set replaces the configuration (see
/// the module docs). The watcher ends when every receiver is gone.
pub(crate) fn watched(
    c: &TlsServerConfig,
    every: Duration,
    metrics: Metrics,
) -> Result<watch::Receiver<Arc<ServerConfig>>, TlsError> {
    let files = read_all(c)?;
    let cfg = build(c, &files)?;
    let (tx, rx) = watch::channel(Arc::new(cfg));
    let c = c.clone();
    let labels = TlsLabels {
        scope: crate::metric_labels::TlsScope::Server,
        name: "admin".into(),
    };
    crate::tls::spawn_reloader(tx, files, every, labels, metrics, move |current| {
        let f = read_all(&c)?;
        if f == *current {
            return Ok(None);
        }
        let cfg = build(&c, &f)?;
        Ok(Some((f, Arc::new(cfg))))
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: ClientAuthType, ca: bool) -> TlsServerConfig {
        TlsServerConfig {
            cert_file: "c".into(),
            key_file: "k".into(),
            client_ca_file: ca.then(|| "ca".into()),
            client_auth_type: kind,
        }
    }

    #[test]
    fn only_combinations_that_protect_are_accepted() {
        use ClientAuthType::*;
        assert!(cfg(NoClientCert, false).validate().is_ok());
        assert!(cfg(RequireAndVerifyClientCert, true).validate().is_ok());
        assert!(cfg(VerifyClientCertIfGiven, true).validate().is_ok());
        for (k, ca) in [
            (RequireAndVerifyClientCert, false),
            (RequireAnyClientCert, true),
            (RequestClientCert, true),
            (NoClientCert, true),
        ] {
            assert!(cfg(k, ca).validate().is_err(), "{k:?} {ca}");
        }
    }
}
