//! `metrics-relay render`: Kubernetes manifests from a kubeconfig, ready for
//! `kubectl apply -f -`.
//!
//! - `direct` (the vendor's recipe, done for you): a Secret with `ca.crt`,
//!   `tls.crt`, `tls.key` from the kubeconfig; a headless Service and its
//!   Endpoints holding the SLB IP; a ServiceMonitor that scrapes
//!   `/metrics?hosting=true` over mTLS with those Secret keys.
//! - `agent`: the same Secret, a ConfigMap with an ACK One config for
//!   metrics-relay, its Deployment, Service and a ServiceMonitor for both
//!   `/metrics` (the agent's own) and `/relay/metrics` (the pull path).
//!
//! The SLB IP defaults to the host of the kubeconfig's server address.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::kubeconfig::{self, base64_encode};

/// What to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Direct,
    Agent,
}

#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    pub slb_ip: Option<String>,
    pub namespace: String,
    pub mode: Mode,
    /// For `agent`: where the agent remote-writes.
    pub remote_write_url: String,
    /// For `agent`: the image.
    pub image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::KubeconfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot make a random token for the pull path: {0}")]
    Random(String),
}

/// A YAML double-quoted scalar.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
/// The Secret holding the bearer token of the pull path (`/relay/metrics`),
/// and where the agent finds it.
pub const PULL_SECRET: &str = "metrics-relay-pull-token";
pub const PULL_DIR: &str = "/var/run/secrets/metrics-relay/pull-token";

/// The Secret the agent reads its kubeconfig from (key `kubeconfig`), as in
/// the README's walk-through and `deploy/`.
pub const AGENT_SECRET: &str = "metrics-relay-tls";

/// The ACK One config the project ships (`config/ack-one.yml`, which is also
/// `deploy/base/ack-one.yml`): `render --mode agent` writes this very text
/// with the four values below replaced, so there is one config to keep true.
pub const ACK_ONE_CONFIG: &str = include_str!("../config/ack-one.yml");
/// The values of [`ACK_ONE_CONFIG`] that `render` replaces.
pub const ACK_ONE_TARGET: &str = "\"192.168.0.10:6443\"";
pub const ACK_ONE_CLUSTER: &str = "cluster: ack-one-prod";
pub const ACK_ONE_SERVER_NAME: &str = "server_name: kubernetes";
pub const ACK_ONE_REMOTE_WRITE: &str =
    "url: http://prometheus-operated.monitoring.svc:9090/api/v1/write";

/// [`ACK_ONE_CONFIG`] for this cluster. Each value must occur exactly once
/// (an edit of the shipped config that breaks this fails here, and in the
/// tests, rather than rendering a config that is not the one shipped).
fn agent_config(
    target: &str,
    cluster: &str,
    server_name: &str,
    remote_write_url: &str,
) -> Result<String, RenderError> {
    let mut text = ACK_ONE_CONFIG.to_string();
    for (from, to) in [
        (ACK_ONE_TARGET, q(target)),
        (ACK_ONE_CLUSTER, format!("cluster: {}", q(cluster))),
        (
            ACK_ONE_SERVER_NAME,
            format!("server_name: {}", q(server_name)),
        ),
        (
            ACK_ONE_REMOTE_WRITE,
            format!("url: {}", q(remote_write_url)),
        ),
    ] {
        if text.matches(from).count() != 1 {
            return Err(RenderError::Invalid(format!(
                "config/ack-one.yml no longer has exactly one {from:?} to fill in"
            )));
        }
        text = text.replacen(from, &to, 1);
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

/// Renders the manifests.
pub fn render(o: &RenderOptions) -> Result<String, RenderError> {
    let c = kubeconfig::load(&o.kubeconfig, o.context.as_deref())?;
    let (server_host, port) = c.server.as_deref().and_then(host_port).ok_or_else(|| {
        RenderError::Invalid("the kubeconfig's cluster has no usable server address".into())
    })?;
    let ip = o.slb_ip.clone().unwrap_or(server_host);
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(RenderError::Invalid(format!(
            "{ip:?} is not an IP address: Endpoints need the SLB IP (pass --slb-ip)"
        )));
    }
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
    let mut y = format!(
        "# Rendered by metrics-relay {} from {} (context {}).\n",
        env!("CARGO_PKG_VERSION"),
        o.kubeconfig.display(),
        c.context,
    );
    if o.mode == Mode::Direct {
        // Prometheus reads PEM files: the vendor's three keys.
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {SECRET}\n  namespace: {ns}\ntype: Opaque\ndata:\n  ca.crt: {}\n  tls.crt: {}\n  tls.key: {}\n",
            base64_encode(ca),
            base64_encode(&c.cert.1),
            base64_encode(&c.key.1),
        );
    } else {
        // metrics-relay reads the kubeconfig itself: the Secret of the
        // walk-through and of deploy/ (metrics-relay-tls, key kubeconfig),
        // holding only the chosen context's cluster and user.
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {AGENT_SECRET}\n  namespace: {ns}\ntype: Opaque\ndata:\n  kubeconfig: {}\n",
            base64_encode(minimal_kubeconfig(&c, ca).as_bytes()),
        );
    }
    match o.mode {
        Mode::Direct => {
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {APP}\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/name: {APP}\nspec:\n  clusterIP: None\n  ports:\n    - name: https-metrics\n      port: {port}\n      targetPort: {port}\n      protocol: TCP\n\
---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: {APP}\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/name: {APP}\nsubsets:\n  - addresses:\n      - ip: {ip}\n    ports:\n      - name: https-metrics\n        port: {port}\n        protocol: TCP\n\
---\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: ack-control-plane\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {APP}\n  namespaceSelector:\n    matchNames:\n      - {ns}\n  endpoints:\n    - port: https-metrics\n      scheme: https\n      path: /metrics\n      params:\n        hosting:\n          - \"true\"\n      interval: 30s\n      tlsConfig:\n        serverName: {}\n        ca:\n          secret:\n            name: {SECRET}\n            key: ca.crt\n        cert:\n          secret:\n            name: {SECRET}\n            key: tls.crt\n        keySecret:\n          name: {SECRET}\n          key: tls.key\n",
                q(&server_name),
            );
        }
        Mode::Agent => {
            // The pull path re-exposes what only mutual TLS gets from the
            // source: it is protected by a token made here, which the
            // ServiceMonitor presents.
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {PULL_SECRET}\n  namespace: {ns}\ntype: Opaque\ndata:\n  token: {}\n",
                base64_encode(random_token()?.as_bytes()),
            );
            let target = if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            let config = agent_config(&target, &c.context, &server_name, &o.remote_write_url)?;
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: metrics-relay-config\n  namespace: {ns}\ndata:\n  config.yml: |\n"
            );
            for line in config.lines() {
                let _ = writeln!(y, "    {line}");
            }
            let _ = write!(
                y,
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: metrics-relay\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/name: metrics-relay\nspec:\n  replicas: 1\n  strategy:\n    type: Recreate\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: metrics-relay\n  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: metrics-relay\n    spec:\n      automountServiceAccountToken: false\n      securityContext:\n        runAsNonRoot: true\n        runAsUser: 65532\n        runAsGroup: 65532\n        fsGroup: 65532\n        seccompProfile:\n          type: RuntimeDefault\n      containers:\n        - name: metrics-relay\n          image: {}\n          args: [\"run\", \"--config=/etc/metrics-relay/config/config.yml\", \"--data-dir=/var/lib/metrics-relay\", \"--log-format=json\"]\n          ports:\n            - name: http-metrics\n              containerPort: 9464\n          livenessProbe:\n            httpGet: {{path: /healthz, port: http-metrics}}\n          readinessProbe:\n            httpGet: {{path: /readyz, port: http-metrics}}\n            failureThreshold: 12\n          resources:\n            requests: {{cpu: 20m, memory: 32Mi}}\n            limits: {{memory: 320Mi}}\n          securityContext:\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [\"ALL\"]\n          volumeMounts:\n            - {{name: config, mountPath: /etc/metrics-relay/config, readOnly: true}}\n            - {{name: tls, mountPath: /etc/metrics-relay/tls, readOnly: true}}\n            - {{name: data, mountPath: /var/lib/metrics-relay}}\n            - {{name: pull-token, mountPath: {PULL_DIR}, readOnly: true}}\n      volumes:\n        - name: config\n          configMap:\n            name: metrics-relay-config\n        - name: tls\n          secret:\n            secretName: {AGENT_SECRET}\n        - name: data\n          emptyDir:\n            sizeLimit: 1Gi\n        - name: pull-token\n          secret:\n            secretName: {PULL_SECRET}\n\
---\napiVersion: v1\nkind: Service\nmetadata:\n  name: metrics-relay\n  namespace: {ns}\n  labels:\n    app.kubernetes.io/name: metrics-relay\nspec:\n  selector:\n    app.kubernetes.io/name: metrics-relay\n  ports:\n    - name: http-metrics\n      port: 9464\n      targetPort: http-metrics\n\
---\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: metrics-relay\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: metrics-relay\n  endpoints:\n    - port: http-metrics\n      path: /metrics\n      interval: 30s\n    - port: http-metrics\n      path: /relay/metrics\n      interval: 30s\n      honorLabels: true\n      authorization:\n        type: Bearer\n        credentials:\n          name: {PULL_SECRET}\n          key: token\n",
                q(&o.image),
            );
        }
    }
    Ok(y)
}
