//! TLS material: PEM loading and the rustls client configuration.
//!
//! One crypto provider (ring). Roots are exactly the configured CA; only when
//! no CA is configured are the system's roots read (from the usual bundle
//! files, or `SSL_CERT_FILE`). Client certificates and keys are PEM (PKCS#8,
//! PKCS#1 RSA, SEC1 EC); a key that does not match its certificate is an
//! error before any connection is made. `server_name` overrides the name the
//! server certificate is checked against (an SLB IP target whose certificate
//! names `kubernetes`). `insecure_skip_verify` accepts any server certificate
//! but still checks handshake signatures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::TlsConfig;

/// Errors loading TLS material; each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field}: reading {source}")]
    Read {
        field: &'static str,
        #[source]
        source: crate::fsread::ReadError,
    },
    #[error("{field}: {origin}: {reason}")]
    Pem {
        field: &'static str,
        origin: String,
        reason: String,
    },
    #[error("cert_file/key_file: {0}")]
    ClientAuth(String),
    #[error("tls_config: {0}")]
    Config(String),
    #[error("tls_config.kubeconfig: {0}")]
    Kubeconfig(#[from] crate::kubeconfig::KubeconfigError),
}

/// The crypto provider used everywhere (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(field: &'static str, path: &Path) -> Result<(String, Vec<u8>), TlsError> {
    crate::fsread::read_regular(path, crate::fsread::MAX_PEM)
        .map(|b| (path.display().to_string(), b))
        .map_err(|source| TlsError::Read { field, source })
}

/// Parses every certificate of PEM bytes (at least one).
pub(crate) fn parse_certs(
    field: &'static str,
    (origin, data): &(String, Vec<u8>),
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            field,
            origin: origin.clone(),
            reason: format!("not a valid PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            field,
            origin: origin.clone(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// Parses the first private key of PEM bytes (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn parse_key(
    (origin, data): &(String, Vec<u8>),
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(data).map_err(|e| TlsError::Pem {
        field: "key_file",
        origin: origin.clone(),
        reason: format!("no usable private key (PKCS#8, RSA or EC PEM expected): {e}"),
    })
}

/// The TLS material of a `tls_config`, read from its files or kubeconfig.
#[derive(Debug, Clone, Default)]
pub(crate) struct Material {
    pub ca: Option<(String, Vec<u8>)>,
    pub cert: Option<(String, Vec<u8>)>,
    pub key: Option<(String, Vec<u8>)>,
    pub server_name: Option<String>,
    pub insecure: bool,
}

impl Material {
    /// Reads everything a `tls_config` references.
    pub(crate) fn load(tls: Option<&TlsConfig>) -> Result<Material, TlsError> {
        let Some(tls) = tls else {
            return Ok(Material::default());
        };
        let mut m = Material {
            server_name: tls.server_name.clone().filter(|s| !s.is_empty()),
            insecure: tls.insecure_skip_verify,
            ..Material::default()
        };
        if let Some(kc) = &tls.kubeconfig {
            let c = crate::kubeconfig::load(kc, tls.context.as_deref())?;
            m.ca = c.ca;
            m.cert = Some(c.cert);
            m.key = Some(c.key);
            m.insecure |= c.insecure;
            if m.server_name.is_none() {
                m.server_name = c.tls_server_name;
            }
        }
        if let Some(p) = &tls.ca_file {
            m.ca = Some(read("ca_file", p)?);
        }
        if let Some(p) = &tls.cert_file {
            m.cert = Some(read("cert_file", p)?);
        }
        if let Some(p) = &tls.key_file {
            m.key = Some(read("key_file", p)?);
        }
        Ok(m)
    }

    /// A fingerprint of the bytes, to notice rotation.
    pub(crate) fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for part in [&self.ca, &self.cert, &self.key] {
            part.as_ref().map(|(_, b)| b).hash(&mut h);
        }
        h.finish()
    }

    /// The client certificate's validity, if there is one.
    pub(crate) fn client_cert_info(&self) -> Option<crate::x509::CertInfo> {
        let certs = parse_certs("cert_file", self.cert.as_ref()?).ok()?;
        crate::x509::CertInfo::parse(certs.first()?)
    }
}

const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for p in candidates {
        if let Ok(data) = std::fs::read(&p) {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&data).flatten().collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added > 0 {
                break;
            }
        }
    }
    roots
}

/// Builds the rustls client configuration for a `tls_config` (or none).
pub(crate) fn client_config(tls: Option<&TlsConfig>) -> Result<ClientConfig, TlsError> {
    client_config_from(&Material::load(tls)?)
}

/// Builds the rustls client configuration from loaded material, refusing a
/// client certificate that has expired or is not yet valid.
pub(crate) fn client_config_from(m: &Material) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if m.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let roots = match &m.ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in parse_certs("ca_file", ca)? {
                    roots.add(c).map_err(|e| TlsError::Pem {
                        field: "ca_file",
                        origin: ca.0.clone(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                roots
            }
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    // ALPN stays empty: the HTTP connector sets it (http/1.1).
    let cfg = match (&m.cert, &m.key) {
        (Some(cert), Some(key)) => {
            let chain = parse_certs("cert_file", cert)?;
            if let Some(info) = chain.first().and_then(crate::x509::CertInfo::parse) {
                let now = crate::clock::unix_secs();
                if info.not_after < now {
                    return Err(TlsError::ClientAuth(format!(
                        "the client certificate {} ({}) expired at {}",
                        cert.0,
                        info.subject,
                        crate::x509::format_time(info.not_after)
                    )));
                }
                if info.not_before > now + 300 {
                    return Err(TlsError::ClientAuth(format!(
                        "the client certificate {} ({}) is not valid before {}",
                        cert.0,
                        info.subject,
                        crate::x509::format_time(info.not_before)
                    )));
                }
            }
            let key_der = parse_key(key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                TlsError::ClientAuth(format!(
                    "{} and {} do not form a usable client identity: {}",
                    cert.0,
                    key.0,
                    describe_rustls(&e)
                ))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Config(
                "cert_file and key_file must be given together".into(),
            ));
        }
    };
    Ok(cfg)
}

/// The server name to verify, when `server_name` overrides the target host.
pub(crate) fn server_name_override(
    tls: Option<&TlsConfig>,
) -> Result<Option<ServerName<'static>>, TlsError> {
    server_name_of(tls.and_then(|t| t.server_name.as_deref()))
}

/// Parses a server name override (`None` or empty: the URL's host).
pub(crate) fn server_name_of(name: Option<&str>) -> Result<Option<ServerName<'static>>, TlsError> {
    match name {
        None | Some("") => Ok(None),
        Some(n) => ServerName::try_from(n.to_string()).map(Some).map_err(|e| {
            TlsError::Config(format!(
                "server_name {n:?} is not a valid DNS name or IP: {e}"
            ))
        }),
    }
}

/// Words a person can act on for a rustls error.
pub(crate) fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "x509: certificate signed by unknown authority (the server certificate was not issued by the configured ca_file)".into()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!("x509: certificate is not valid for the requested name ({e}); set tls_config.server_name to a name the certificate holds")
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            format!("x509: certificate has expired ({e})")
        }
        Error::InvalidCertificate(CertificateError::NotValidYet)
        | Error::InvalidCertificate(CertificateError::NotValidYetContext { .. }) => {
            format!("x509: certificate is not yet valid ({e})")
        }
        Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "the server requires a client certificate and none was sent (set tls_config.cert_file and key_file)".into()
        }
        Error::AlertReceived(rustls::AlertDescription::BadCertificate)
        | Error::AlertReceived(rustls::AlertDescription::UnknownCA) => {
            format!("the server rejected our client certificate ({e}); is it issued by the CA the server trusts?")
        }
        Error::InvalidCertificate(CertificateError::BadSignature) => {
            "x509: the server certificate names the configured CA as its issuer, but that CA did not sign it: it was issued by another CA of the same name (every Kubernetes cluster CA is called \"kubernetes\"): this is another cluster's CA: the wrong SLB IP, or another cluster's kubeconfig".into()
        }
        Error::InconsistentKeys(_) => "the private key does not match the certificate".into(),
        _ => e.to_string(),
    }
}

/// Walks an error chain into one line, translating TLS errors into words.
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for err in crate::failure::chain(e) {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            // Wrappers repeat the rustls message; keep the explained one only.
            let raw = r.to_string();
            parts.retain(|p| !p.contains(&raw));
            parts.push(describe_rustls(r));
            break;
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_parse()
        {
            parts.push(format!(
                "{h}: the server's answer is not HTTP; is this a TLS port spoken to in plain HTTP (set scheme: https)?"
            ));
            break;
        }
        let s = err.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// `insecure_skip_verify`: any certificate, signatures still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Watches TLS files for a holder of what they build (the HTTP client of a
/// scrape config or destination, the admin server's TLS): every `every`,
/// `reload` is given what is in use and answers `None` (the files did not
/// change), the new state and value, or why the new files cannot be used.
/// A new value is published to `tx` and counted; a failure keeps the value
/// in use, is counted, and is logged when it differs from the last one.
/// Ends when every receiver is gone.
pub(crate) fn spawn_reloader<S, T>(
    tx: tokio::sync::watch::Sender<T>,
    mut current: S,
    every: std::time::Duration,
    labels: crate::telemetry::TlsLabels,
    metrics: crate::telemetry::Metrics,
    mut reload: impl FnMut(&S) -> Result<Option<(S, T)>, TlsError> + Send + 'static,
) where
    S: Send + 'static,
    T: Send + Sync + 'static,
{
    use crate::events::TlsReloaded;
    tokio::spawn(async move {
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match reload(&current) {
                Ok(None) => {}
                Ok(Some((state, value))) => {
                    current = state;
                    tx.send_replace(value);
                    last_error = None;
                    TlsReloaded::Success { labels: &labels }.emit(&metrics);
                }
                Err(e) => {
                    let msg = e.to_string();
                    let new = last_error.as_deref() != Some(msg.as_str());
                    TlsReloaded::Failure {
                        labels: &labels,
                        error: &msg,
                        log_failure: new,
                    }
                    .emit(&metrics);
                    last_error = Some(msg);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A self-signed certificate and key made by the openssl CLI, with the
    /// key in the given form (rcgen/ring cannot make RSA keys).
    fn openssl_pair(dir: &Path, name: &str, newkey: &str, key_form: &[&str]) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let raw = dir.join(format!("{name}.raw.key"));
        let key = dir.join(format!("{name}.key"));
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=relay-test",
                "-newkey",
                newkey,
                "-keyout",
            ])
            .arg(&raw)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("the openssl CLI (scripts/test.sh installs it)")
            .status
            .success();
        assert!(ok, "openssl req");
        let ok = Command::new("openssl")
            .args(key_form)
            .arg("-in")
            .arg(&raw)
            .arg("-out")
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {key_form:?}");
        (cert, key)
    }

    fn with_client(cert: &Path, key: &Path) -> TlsConfig {
        TlsConfig {
            cert_file: Some(cert.into()),
            key_file: Some(key.into()),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn client_keys_in_every_pem_form_load() {
        let dir = tempfile::tempdir().unwrap();
        let forms: [(&str, &str, &[&str], &str); 4] = [
            ("rsa-pkcs8", "rsa:2048", &["pkey"], "BEGIN PRIVATE KEY"),
            (
                "rsa-pkcs1",
                "rsa:2048",
                &["rsa", "-traditional"],
                "BEGIN RSA PRIVATE KEY",
            ),
            ("ec-pkcs8", "ec:/dev/stdin", &["pkey"], "BEGIN PRIVATE KEY"),
            ("ec-sec1", "ec:/dev/stdin", &["ec"], "BEGIN EC PRIVATE KEY"),
        ];
        for (name, newkey, form, marker) in forms {
            let newkey = if newkey.starts_with("ec:") {
                let params = dir.path().join("p256.pem");
                let ok = Command::new("openssl")
                    .args(["ecparam", "-name", "prime256v1", "-out"])
                    .arg(&params)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
                format!("ec:{}", params.display())
            } else {
                newkey.to_string()
            };
            let (cert, key) = openssl_pair(dir.path(), name, &newkey, form);
            let pem = std::fs::read_to_string(&key).unwrap();
            assert!(pem.contains(marker), "{name}: {pem}");
            client_config(Some(&with_client(&cert, &key)))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn mismatched_key_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, _) = openssl_pair(dir.path(), "a", "rsa:2048", &["pkey"]);
        let (_, k2) = openssl_pair(dir.path(), "b", "rsa:2048", &["pkey"]);
        let e = client_config(Some(&with_client(&c1, &k2)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
        let e = client_config(Some(&with_client(&c1, &c1)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key_file") && e.contains("no usable private key"),
            "{e}"
        );
        let ca = TlsConfig {
            ca_file: Some(k2.clone()),
            ..TlsConfig::default()
        };
        let e = client_config(Some(&ca)).unwrap_err().to_string();
        assert!(e.contains("ca_file") && e.contains("no CERTIFICATE"), "{e}");
        let missing = TlsConfig {
            ca_file: Some(dir.path().join("nope.crt")),
            ..TlsConfig::default()
        };
        let e = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(e.starts_with("ca_file: reading"), "{e}");
    }

    #[test]
    fn server_name_must_be_a_name() {
        let t = TlsConfig {
            server_name: Some("not a name!".into()),
            ..TlsConfig::default()
        };
        assert!(server_name_override(Some(&t)).is_err());
        let t = TlsConfig {
            server_name: Some("kubernetes".into()),
            ..TlsConfig::default()
        };
        assert!(server_name_override(Some(&t)).unwrap().is_some());
    }
}
