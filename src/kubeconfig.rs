//! Client credentials from a kubeconfig: what the vendor's three
//! `kubectl config view --raw` commands extract, in one config line.
//!
//! The context is `tls_config.context`, else `current-context`. From its
//! cluster: `certificate-authority-data` (or `certificate-authority`, a path
//! relative to the kubeconfig), `server`, `tls-server-name`,
//! `insecure-skip-tls-verify`; from its user: `client-certificate-data` /
//! `client-key-data` (or the file forms). A user that authenticates with a
//! token, `exec` or an `auth-provider` has no client certificate, and mutual
//! TLS needs one: that is an error that says so.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("kubeconfig {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize, Default)]
struct Kubeconfig {
    #[serde(default, rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "context")]
    item: T,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Debug, Deserialize, Default)]
struct Cluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
    #[serde(rename = "tls-server-name")]
    tls_server_name: Option<String>,
    #[serde(default, rename = "insecure-skip-tls-verify")]
    insecure: bool,
}

#[derive(Debug, Deserialize, Default)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Debug, Deserialize, Default)]
struct User {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<PathBuf>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-key")]
    key_file: Option<PathBuf>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    exec: Option<serde_json::Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_json::Value>,
    username: Option<String>,
}

/// PEM bytes with a description of where they came from (for errors).
pub(crate) type Pem = (String, Vec<u8>);

/// What a kubeconfig context gives an mTLS client.
#[derive(Debug)]
pub struct Credentials {
    pub context: String,
    /// The context's cluster name.
    pub cluster: String,
    pub server: Option<String>,
    pub ca: Option<Pem>,
    pub cert: Pem,
    pub key: Pem,
    pub tls_server_name: Option<String>,
    pub insecure: bool,
}

/// Standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(input)
}

/// Standard base64, padded or not, with ASCII whitespace ignored (as Go's
/// decoder skips line breaks in kubeconfig data fields); `None` when not
/// base64.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    LENIENT.decode(compact).ok()
}

fn invalid(path: &Path, message: impl Into<String>) -> KubeconfigError {
    KubeconfigError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads the credentials of `context` (or the current context).
pub fn load(path: &Path, context: Option<&str>) -> Result<Credentials, KubeconfigError> {
    let text = crate::fsread::read_text(path, crate::fsread::MAX_DOCUMENT)
        .map_err(|e| invalid(path, format!("cannot read: {}", e.reason())))?;
    if text.trim_start().starts_with("-----BEGIN") {
        // Never quote it: it may be a private key.
        return Err(invalid(
            path,
            "is a PEM file (a certificate or a key), not a kubeconfig",
        ));
    }
    crate::yaml::check(&text).map_err(|e| invalid(path, format!("not a valid kubeconfig: {e}")))?;
    let kc: Kubeconfig = ::config::Config::builder()
        .add_source(::config::File::from_str(&text, ::config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            invalid(
                path,
                format!(
                    "not a valid kubeconfig: {}",
                    crate::yaml::redact_quoted(&e.to_string())
                ),
            )
        })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let ctx_name = match context.or(kc.current_context.as_deref()) {
        Some(c) => c.to_string(),
        None => return Err(invalid(path, "no context given and no current-context set")),
    };
    let names = |v: Vec<&str>| v.join(", ");
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .ok_or_else(|| {
            invalid(
                path,
                format!(
                    "context {ctx_name:?} not found (available: {})",
                    names(kc.contexts.iter().map(|c| c.name.as_str()).collect())
                ),
            )
        })?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.item.cluster)
        .ok_or_else(|| {
            invalid(
                path,
                format!(
                    "cluster {:?} of context {ctx_name:?} not found",
                    ctx.item.cluster
                ),
            )
        })?;
    let user = kc
        .users
        .iter()
        .find(|u| u.name == ctx.item.user)
        .ok_or_else(|| {
            invalid(
                path,
                format!("user {:?} of context {ctx_name:?} not found", ctx.item.user),
            )
        })?;
    let read_file = |p: &Path, what: &str| -> Result<Pem, KubeconfigError> {
        let full = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        crate::fsread::read_regular(&full, crate::fsread::MAX_PEM)
            .map(|b| (format!("{} ({what} {})", path.display(), full.display()), b))
            .map_err(|e| invalid(path, format!("{what} {e}")))
    };
    let decode = |data: &str, what: &str| -> Result<Pem, KubeconfigError> {
        base64_decode(data)
            .map(|b| (format!("{} ({what})", path.display()), b))
            .ok_or_else(|| invalid(path, format!("{what} is not valid base64")))
    };
    let u = &user.user;
    let cert = match (&u.cert_data, &u.cert_file) {
        (Some(d), _) => decode(d, "client-certificate-data")?,
        (None, Some(f)) => read_file(f, "client-certificate")?,
        (None, None) => {
            let how = if u.token.is_some() || u.token_file.is_some() {
                "a bearer token"
            } else if u.exec.is_some() {
                "an exec plugin"
            } else if u.auth_provider.is_some() {
                "an auth-provider"
            } else if u.username.is_some() {
                "basic auth"
            } else {
                "no credentials"
            };
            return Err(invalid(
                path,
                format!(
                    "user {:?} of context {ctx_name:?} authenticates with {how}; the metrics aggregator needs mutual TLS: use a kubeconfig with client-certificate-data and client-key-data",
                    user.name
                ),
            ));
        }
    };
    let key = match (&u.key_data, &u.key_file) {
        (Some(d), _) => decode(d, "client-key-data")?,
        (None, Some(f)) => read_file(f, "client-key")?,
        (None, None) => {
            return Err(invalid(
                path,
                format!(
                    "user {:?} has a client certificate but no client-key-data",
                    user.name
                ),
            ));
        }
    };
    let c = &cluster.item;
    let ca = match (&c.ca_data, &c.ca_file) {
        (Some(d), _) => Some(decode(d, "certificate-authority-data")?),
        (None, Some(f)) => Some(read_file(f, "certificate-authority")?),
        (None, None) => None,
    };
    Ok(Credentials {
        context: ctx_name,
        cluster: cluster.name.clone(),
        server: c.server.clone(),
        ca,
        cert,
        key,
        tls_server_name: c.tls_server_name.clone(),
        insecure: c.insecure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64_encode(s.as_bytes())
    }

    fn write(dir: &Path, user: &str) -> PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(&p, format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: admin@ack\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://192.168.0.10:6443\n  name: ack\ncontexts:\n- context:\n    cluster: ack\n    user: admin\n  name: admin@ack\n- context:\n    cluster: ack\n    user: other\n  name: other@ack\nusers:\n- name: admin\n  user:\n{user}\n- name: other\n  user:\n    token: abc\npreferences: {{}}\n",
            b64("CA PEM"),
        )).unwrap();
        p
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(base64_decode("aGVsbG8\n gd29ybGQ").unwrap(), b"hello world");
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn data_fields_of_the_current_context() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}",
                b64("CERT"),
                b64("KEY")
            ),
        );
        let c = load(&p, None).unwrap();
        assert_eq!(c.context, "admin@ack");
        assert_eq!(c.server.as_deref(), Some("https://192.168.0.10:6443"));
        assert_eq!(c.ca.unwrap().1, b"CA PEM");
        assert_eq!(c.cert.1, b"CERT");
        assert_eq!(c.key.1, b"KEY");
    }

    #[test]
    fn file_references_are_relative_to_the_kubeconfig() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("c.crt"), "C").unwrap();
        std::fs::write(d.path().join("c.key"), "K").unwrap();
        let p = write(
            d.path(),
            "    client-certificate: c.crt\n    client-key: c.key",
        );
        let c = load(&p, None).unwrap();
        assert_eq!(
            (c.cert.1.as_slice(), c.key.1.as_slice()),
            (&b"C"[..], &b"K"[..])
        );
    }

    #[test]
    fn clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            &format!(
                "    client-certificate-data: {}\n    client-key-data: {}",
                b64("CERT"),
                b64("KEY")
            ),
        );
        let e = load(&p, Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("context \"nope\" not found (available: admin@ack, other@ack)"),
            "{e}"
        );
        let e = load(&p, Some("other@ack")).unwrap_err().to_string();
        assert!(
            e.contains("authenticates with a bearer token") && e.contains("mutual TLS"),
            "{e}"
        );
        let p = write(d.path(), "    exec:\n      command: aliyun");
        let e = load(&p, None).unwrap_err().to_string();
        assert!(e.contains("an exec plugin"), "{e}");
        std::fs::write(&p, "not: [valid").unwrap();
        assert!(
            load(&p, None)
                .unwrap_err()
                .to_string()
                .contains("not a valid kubeconfig")
        );
    }
}
