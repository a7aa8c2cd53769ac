//! `metrics-relay render`: Kubernetes manifests from a kubeconfig, ready for
//! `kubectl apply -f -`.
//!
//! - `direct` (the vendor's recipe, done for you): a Secret with `ca.crt`,
//!   `tls.crt`, `tls.key` from the kubeconfig; a headless Service and its
//!   Endpoints holding the SLB IP; a ServiceMonitor that scrapes
//!   `/metrics?hosting=true` over mTLS with those Secret keys.
//! - `agent`: what `kubectl apply -k deploy/` installs, for this cluster:
//!   the Secret `metrics-relay-tls` (a kubeconfig of the chosen context only),
//!   the shipped ACK One config with the cluster's values filled in, as a
//!   ConfigMap whose name carries a hash of its content (a changed config is
//!   a new name, so the Deployment rolls), and the Deployment, Service,
//!   ServiceMonitor, PrometheusRule and PodDisruptionBudget of
//!   `deploy/base`, read from those very files with the base's labels and
//!   image applied as kustomize applies them (a test diffs the two).
//! - `pull`: `deploy/overlays/pull` likewise: no remote write, the pull path
//!   served with a token (a new one, or the one of `--pull-token-file`), the
//!   token Secret mounted, and the ServiceMonitor endpoint that presents it.
//!
//! The SLB address defaults to the host of the kubeconfig's server address.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::kubeconfig::{self, base64_encode};

/// What to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Direct,
    Agent,
    Pull,
}

#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    pub slb_ip: Option<String>,
    pub namespace: String,
    pub mode: Mode,
    /// For `agent`: where the agent remote-writes (default: the operator's
    /// Prometheus in `namespace`, `prometheus-operated`).
    pub remote_write_url: Option<String>,
    /// For `agent` and `pull`: the image (default: the one `deploy/base`
    /// names).
    pub image: Option<String>,
    /// For `pull`: a file with the token to keep (default: a new one).
    pub pull_token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::KubeconfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot make a random token for the pull path: {0}")]
    Random(String),
    #[error("--pull-token-file: {0}")]
    Token(#[from] crate::fsread::ReadError),
    #[error("a shipped manifest ({file}) does not read: {message}")]
    Shipped { file: &'static str, message: String },
}

/// Host and port of `https://host:port`.
fn host_port(server: &str) -> Option<(String, u16)> {
    let uri: http::Uri = server.parse().ok()?;
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Some((host, uri.port_u16().unwrap_or(6443)))
}

const APP: &str = "ack-control-plane-metrics";
const SECRET: &str = "ack-control-plane-metrics-tls";
/// The Secret holding the bearer token of the pull path (`/relay/metrics`).
pub(crate) const PULL_SECRET: &str = "metrics-relay-pull-token";

/// The Secret the agent reads its kubeconfig from (key `kubeconfig`), as in
/// the README's walk-through and `deploy/`.
pub(crate) const AGENT_SECRET: &str = "metrics-relay-tls";

/// The ACK One config the project ships (`config/ack-one.yml`, which is also
/// `deploy/base/ack-one.yml`): `render --mode agent` writes this very text
/// with the values below replaced, so there is one config to keep true.
pub(crate) const ACK_ONE_CONFIG: &str = include_str!("../config/ack-one.yml");
/// The pull overlay's config (`render --mode pull`).
pub(crate) const ACK_ONE_PULL_CONFIG: &str =
    include_str!("../deploy/overlays/pull/ack-one-pull.yml");
/// The values of the shipped configs that `render` replaces.
pub const ACK_ONE_TARGET: &str = "\"192.168.0.10:6443\"";
pub const ACK_ONE_CLUSTER: &str = "cluster: ack-one-prod";
pub const ACK_ONE_SERVER_NAME: &str = "server_name: kubernetes";
pub const ACK_ONE_REMOTE_WRITE: &str =
    "url: http://prometheus-operated.monitoring.svc:9090/api/v1/write";

/// The shipped manifests `agent` and `pull` start from.
const BASE: [(&str, &str); 5] = [
    (
        "deploy/base/deployment.yaml",
        include_str!("../deploy/base/deployment.yaml"),
    ),
    (
        "deploy/base/service.yaml",
        include_str!("../deploy/base/service.yaml"),
    ),
    (
        "deploy/base/servicemonitor.yaml",
        include_str!("../deploy/base/servicemonitor.yaml"),
    ),
    (
        "deploy/base/prometheusrule.yaml",
        include_str!("../deploy/base/prometheusrule.yaml"),
    ),
    (
        "deploy/base/poddisruptionbudget.yaml",
        include_str!("../deploy/base/poddisruptionbudget.yaml"),
    ),
];
const BASE_KUSTOMIZATION: &str = include_str!("../deploy/base/kustomization.yaml");
const PULL_KUSTOMIZATION: &str = include_str!("../deploy/overlays/pull/kustomization.yaml");
const PULL_TOKEN_PATCH: &str = include_str!("../deploy/overlays/pull/pull-token.yaml");

fn shipped(file: &'static str, text: &str) -> Result<Vec<Value>, RenderError> {
    crate::yaml::to_json(text, crate::yaml::Scalars::Typed).map_err(|e| RenderError::Shipped {
        file,
        message: e.to_string(),
    })
}

/// A YAML double-quoted scalar.
fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The shipped `config` text for this cluster: each placeholder must occur
/// exactly once (an edit of the shipped config that breaks this fails here,
/// and in the tests, rather than rendering a config that is not the one
/// shipped); its opening comment, written for someone editing it by hand,
/// becomes one that says where this one came from.
fn fill_config(
    config: &str,
    header: &str,
    values: &[(&str, String)],
) -> Result<String, RenderError> {
    let body_start = config
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let mut text = format!("{header}{}", &config[body_start.min(config.len())..]);
    for (from, to) in values {
        if text.matches(from).count() != 1 {
            return Err(RenderError::Invalid(format!(
                "the shipped config no longer has exactly one {from:?} to fill in"
            )));
        }
        text = text.replacen(from, to, 1);
    }
    crate::config::Config::from_yaml(&text)
        .map_err(|e| RenderError::Invalid(format!("the rendered config does not load: {e}")))?;
    Ok(text)
}

/// A kubeconfig holding only `c`'s cluster, user and context (the
/// credentials of other clusters in the source stay out of the Secret).
fn minimal_kubeconfig(c: &kubeconfig::Credentials, ca: &[u8]) -> String {
    let server = c.server.as_deref().unwrap_or_default();
    let tls_name = c
        .tls_server_name
        .as_deref()
        .map(|n| format!("\n    tls-server-name: {}", q(n)))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {ctx}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}{tls_name}\nusers:\n- name: {ctx}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {ctx}\n  context:\n    cluster: {ctx}\n    user: {ctx}\ncurrent-context: {ctx}\n",
        ctx = q(&c.context),
        server = q(server),
        ca = base64_encode(ca),
        cert = base64_encode(&c.cert.1),
        key = base64_encode(&c.key.1),
    )
}

/// A new random token (256 bits from the kernel), hex.
fn random_token() -> Result<String, RenderError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| RenderError::Random(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A Kubernetes namespace name (RFC 1123 label).
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

/// The options that do not apply to the mode, named.
fn check_options(o: &RenderOptions) -> Result<(), RenderError> {
    if !valid_namespace(&o.namespace) {
        return Err(RenderError::Invalid(format!(
            "--namespace {:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)",
            o.namespace
        )));
    }
    let misplaced = match o.mode {
        Mode::Direct => [
            ("--image", o.image.is_some()),
            ("--remote-write-url", o.remote_write_url.is_some()),
            ("--pull-token-file", o.pull_token_file.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(f, _)| {
            (
                f,
                "the vendor's recipe runs no agent (--mode agent or pull does)",
            )
        }),
        Mode::Agent => o
            .pull_token_file
            .is_some()
            .then_some(("--pull-token-file", "the pull path is --mode pull's")),
        Mode::Pull => o.remote_write_url.is_some().then_some((
            "--remote-write-url",
            "--mode pull does not remote-write (--mode agent does)",
        )),
    };
    match misplaced {
        Some((flag, why)) => Err(RenderError::Invalid(format!("{flag}: {why}"))),
        None => Ok(()),
    }
}

/// Renders the manifests.
pub fn render(o: &RenderOptions) -> Result<String, RenderError> {
    check_options(o)?;
    let c = kubeconfig::load(&o.kubeconfig, o.context.as_deref())?;
    let (server_host, port) = c.server.as_deref().and_then(host_port).ok_or_else(|| {
        RenderError::Invalid("the kubeconfig's cluster has no usable server address".into())
    })?;
    let host = o.slb_ip.clone().unwrap_or(server_host);
    let Some((_, ca)) = &c.ca else {
        return Err(RenderError::Invalid(
            "the kubeconfig's cluster has no certificate-authority(-data)".into(),
        ));
    };
    let ns = &o.namespace;
    let server_name = c
        .tls_server_name
        .clone()
        .unwrap_or_else(|| "kubernetes".into());
    let header = format!(
        "# Rendered by metrics-relay {} from {} (context {}, cluster {}).\n",
        env!("CARGO_PKG_VERSION"),
        o.kubeconfig.display(),
        c.context,
        c.cluster,
    );
    let docs = match o.mode {
        Mode::Direct => {
            if host.parse::<std::net::IpAddr>().is_err() {
                return Err(RenderError::Invalid(format!(
                    "{host:?} is not an IP address: the vendor's recipe puts the SLB's IP in an Endpoints object (pass --slb-ip, or use --mode agent, which takes a host name)"
                )));
            }
            direct(ns, &host, port, &server_name, &c, ca)
        }
        Mode::Agent | Mode::Pull => agent(o, &header, &host, port, &server_name, &c, ca)?,
    };
    let mut y = header;
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            y.push_str("---\n");
        }
        y.push_str(&crate::yaml::emit(d));
    }
    Ok(y)
}

/// The vendor's recipe: Secret, headless Service, Endpoints, ServiceMonitor.
fn direct(
    ns: &str,
    ip: &str,
    port: u16,
    server_name: &str,
    c: &kubeconfig::Credentials,
    ca: &[u8],
) -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/name": APP});
    vec![
        // Prometheus reads PEM files: the vendor's three keys.
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": ns},
            "type": "Opaque",
            "data": {
                "ca.crt": base64_encode(ca),
                "tls.crt": base64_encode(&c.cert.1),
                "tls.key": base64_encode(&c.key.1),
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": APP, "namespace": ns, "labels": labels},
            "spec": {
                "clusterIP": "None",
                "ports": [{"name": "https-metrics", "port": port, "targetPort": port, "protocol": "TCP"}],
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": APP, "namespace": ns, "labels": labels},
            "subsets": [{
                "addresses": [{"ip": ip}],
                "ports": [{"name": "https-metrics", "port": port, "protocol": "TCP"}],
            }],
        }),
        json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "ack-control-plane", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": labels},
                "namespaceSelector": {"matchNames": [ns]},
                "endpoints": [{
                    "port": "https-metrics",
                    "scheme": "https",
                    "path": "/metrics",
                    "params": {"hosting": ["true"]},
                    "interval": "30s",
                    "tlsConfig": {
                        "serverName": server_name,
                        "ca": {"secret": {"name": SECRET, "key": "ca.crt"}},
                        "cert": {"secret": {"name": SECRET, "key": "tls.crt"}},
                        "keySecret": {"name": SECRET, "key": "tls.key"},
                    },
                }],
            },
        }),
    ]
}

/// `deploy/base` (and, for `pull`, its pull overlay) for this cluster.
fn agent(
    o: &RenderOptions,
    header: &str,
    host: &str,
    port: u16,
    server_name: &str,
    c: &kubeconfig::Credentials,
    ca: &[u8],
) -> Result<Vec<Value>, RenderError> {
    let ns = &o.namespace;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut values = vec![
        (ACK_ONE_TARGET, q(&target)),
        // The cluster's name, as the fleet overlay labels its clusters.
        (ACK_ONE_CLUSTER, format!("cluster: {}", q(&c.cluster))),
        (
            ACK_ONE_SERVER_NAME,
            format!("server_name: {}", q(server_name)),
        ),
    ];
    let config = match o.mode {
        Mode::Pull => fill_config(ACK_ONE_PULL_CONFIG, header, &values)?,
        _ => {
            let url = o.remote_write_url.clone().unwrap_or_else(|| {
                format!("http://prometheus-operated.{ns}.svc:9090/api/v1/write")
            });
            values.push((ACK_ONE_REMOTE_WRITE, format!("url: {}", q(&url))));
            fill_config(ACK_ONE_CONFIG, header, &values)?
        }
    };
    let kustomization = shipped("deploy/base/kustomization.yaml", BASE_KUSTOMIZATION)?.remove(0);
    // The ConfigMap, named as kustomize's generator names it: with a hash
    // of its content.
    let config_map = format!("metrics-relay-config-{}", content_hash(&config));
    let mut docs = vec![
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": AGENT_SECRET},
            "type": "Opaque",
            "data": {"kubeconfig": base64_encode(minimal_kubeconfig(c, ca).as_bytes())},
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": config_map},
            "data": {"config.yml": config},
        }),
    ];
    for (file, text) in BASE {
        docs.extend(shipped(file, text)?);
    }
    if o.mode == Mode::Pull {
        let token = match &o.pull_token_file {
            Some(f) => crate::fsread::read_text(f, crate::fsread::MAX_SECRET)?
                .trim()
                .to_string(),
            None => random_token()?,
        };
        if token.is_empty() {
            return Err(RenderError::Invalid(
                "--pull-token-file: the file is empty".into(),
            ));
        }
        docs.insert(
            1,
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": PULL_SECRET},
                "type": "Opaque",
                "data": {"token": base64_encode(token.as_bytes())},
            }),
        );
        pull_overlay(&mut docs)?;
    }
    let image = match &o.image {
        Some(i) => i.clone(),
        None => {
            let i = &kustomization["images"][0];
            format!(
                "{}:{}",
                i["newName"].as_str().unwrap_or("metrics-relay"),
                i["newTag"].as_str().unwrap_or("latest")
            )
        }
    };
    for d in &mut docs {
        d["metadata"]["namespace"] = json!(ns);
        apply_labels(d, &kustomization);
        if d["kind"] == "Deployment" {
            let pod = &mut d["spec"]["template"]["spec"];
            for c in pod["containers"].as_array_mut().into_iter().flatten() {
                if c["image"] == "metrics-relay" {
                    c["image"] = json!(image);
                }
            }
            for v in pod["volumes"].as_array_mut().into_iter().flatten() {
                if v["configMap"]["name"] == "metrics-relay-config" {
                    v["configMap"]["name"] = json!(config_map);
                }
            }
        }
    }
    Ok(docs)
}

/// A short hash of `text`, as a name suffix (FNV-1a, ten base-36 digits).
fn content_hash(text: &str) -> String {
    let mut h = crate::shard::fnv1a(text.as_bytes());
    let mut out = String::new();
    for _ in 0..10 {
        let d = (h % 36) as u32;
        out.push(char::from_digit(d, 36).unwrap_or('0'));
        h /= 36;
    }
    out
}

/// The `labels:` of a kustomization applied as kustomize applies them: to
/// every object's `metadata.labels`, and with `includeSelectors` to the
/// selectors and pod templates it knows (Deployment, Service,
/// PodDisruptionBudget).
fn apply_labels(d: &mut Value, kustomization: &Value) {
    for entry in kustomization["labels"].as_array().into_iter().flatten() {
        let Some(pairs) = entry["pairs"].as_object() else {
            continue;
        };
        let selectors = entry["includeSelectors"] == true;
        for (k, v) in pairs {
            d["metadata"]["labels"][k] = v.clone();
            if !selectors {
                continue;
            }
            let kind = d["kind"].as_str().unwrap_or_default().to_string();
            match kind.as_str() {
                "Deployment" | "StatefulSet" | "DaemonSet" => {
                    d["spec"]["selector"]["matchLabels"][k] = v.clone();
                    d["spec"]["template"]["metadata"]["labels"][k] = v.clone();
                }
                "Service" => d["spec"]["selector"][k] = v.clone(),
                "PodDisruptionBudget" => d["spec"]["selector"]["matchLabels"][k] = v.clone(),
                _ => {}
            }
        }
    }
}

/// `deploy/overlays/pull`'s patches: the token's volume and mount on the
/// Deployment, the `/relay/metrics` endpoint on the ServiceMonitor.
fn pull_overlay(docs: &mut [Value]) -> Result<(), RenderError> {
    let patch = shipped("deploy/overlays/pull/pull-token.yaml", PULL_TOKEN_PATCH)?.remove(0);
    let k = shipped(
        "deploy/overlays/pull/kustomization.yaml",
        PULL_KUSTOMIZATION,
    )?
    .remove(0);
    let endpoint = k["patches"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["target"]["kind"] == "ServiceMonitor")
        .and_then(|p| p["patch"].as_str())
        .map(|text| shipped("deploy/overlays/pull/kustomization.yaml", text))
        .transpose()?
        .and_then(|ops| ops.into_iter().next())
        .and_then(|ops| ops[0]["value"].as_object().cloned())
        .ok_or_else(|| RenderError::Shipped {
            file: "deploy/overlays/pull/kustomization.yaml",
            message: "no ServiceMonitor endpoint patch".into(),
        })?;
    for d in docs.iter_mut() {
        if d["kind"] == "Deployment" {
            let pod = &mut d["spec"]["template"]["spec"];
            let add = &patch["spec"]["template"]["spec"];
            // As kustomize's strategic merge does: the patch's new list
            // items first.
            if let (Some(c), Some(mounts)) = (
                pod["containers"][0]["volumeMounts"].as_array_mut(),
                add["containers"][0]["volumeMounts"].as_array(),
            ) {
                c.splice(0..0, mounts.iter().cloned());
            }
            if let (Some(v), Some(vols)) =
                (pod["volumes"].as_array_mut(), add["volumes"].as_array())
            {
                v.splice(0..0, vols.iter().cloned());
            }
        }
        if d["kind"] == "ServiceMonitor"
            && let Some(e) = d["spec"]["endpoints"].as_array_mut()
        {
            e.push(Value::Object(endpoint.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_kubernetes_names() {
        for ok in ["monitoring", "a", "team-1", &"a".repeat(63)] {
            assert!(valid_namespace(ok), "{ok}");
        }
        for bad in ["", "Bad_NS", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(!valid_namespace(bad), "{bad}");
        }
    }

    #[test]
    fn the_opening_comment_is_replaced_and_placeholders_filled() {
        let text = fill_config(
            ACK_ONE_CONFIG,
            "# rendered\n",
            &[(ACK_ONE_TARGET, "\"10.1.2.3:6443\"".into())],
        )
        .unwrap();
        assert!(text.starts_with("# rendered\nglobal:"), "{text}");
        assert!(!text.contains("192.168.0.10"), "{text}");
        assert!(!text.contains("Replace"), "{text}");
    }
}
