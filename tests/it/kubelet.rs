//! A kubelet in a test (issue 13): what `kubectl apply -k deploy/` would do
//! on a node, without a cluster. For the kustomize output of `deploy/` and of
//! every overlay, and for `render --mode agent`, each workload is run the way
//! a kubelet and a container runtime would run it:
//!
//! - the image's root filesystem from the Dockerfile's final stage (the CA
//!   bundle, the data directory owned by 65532, the entrypoint), made
//!   read-only when the manifest says `readOnlyRootFilesystem`;
//! - ConfigMaps and Secrets projected as the kubelet's atomic writer does (a
//!   timestamped directory, the `..data` symlink, one symlink per key, the
//!   manifest's `defaultMode`/`items`, group `fsGroup`), mounted read-only;
//!   an `emptyDir` as a tmpfs of its `sizeLimit`; a mount inside another is
//!   refused; the Secrets the README's walk-through creates stand in for the
//!   ones a bundle does not ship;
//! - the container's env (downward-API values faked on loopback: the node is
//!   127.0.0.2, the ACK SLB 127.0.0.3), its exact `args`, as the manifest's
//!   user and groups with no new privileges, in a mount namespace of its own
//!   (`unshare`, `chroot`, `setpriv`: util-linux and coreutils; root needed);
//! - then its probes on the port *name* they reference (ready within
//!   `initialDelaySeconds + failureThreshold x periodSeconds`, liveness never
//!   failing `failureThreshold` times), samples in a real Prometheus (the
//!   remote-write receiver), every ServiceMonitor endpoint scraped through its
//!   Service port with the ServiceMonitor's own scheme, path and credentials
//!   (and refused without them), and SIGTERM ending it with status 0 within
//!   `terminationGracePeriodSeconds`.
//!
//! A broken manifest (wrong Secret key, nested mount, probe on a wrong port,
//! an image not rewritten) fails with a message that names the mistake.
//!
//! The binary is the one `cargo test` built (the image builds a static musl
//! binary of the same code; the glibc this one needs is copied into the root
//! filesystem next to it).

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::payload::control_plane;
use common::prom::{Prometheus, query, require_prometheus, start_prometheus};
use common::schema::{dockerfile_instructions, documents, kustomize, quantity};
use common::{MtlsTarget, Pki, http_request, http_request_with, relay_bin};
use metrics_relay::{base64_decode, base64_encode};

/// The downward API's `status.hostIP`: node-local targets live here.
const NODE_IP: &str = "127.0.0.2";
/// The ACK One API server SLB, as the user fills it into the config.
const SLB_IP: &str = "127.0.0.3";
const NODE_NAME: &str = "sim-node";
/// The name of a Deployment's or DaemonSet's simulated pod; a StatefulSet's
/// pods are `<name>-<ordinal>`.
const POD_NAME: &str = "metrics-relay-sim";
const NAMESPACE: &str = "monitoring";
/// What the shipped configs carry for the user to replace.
const SHIPPED_SLB_IP: &str = "192.168.0.10";
const SHIPPED_REMOTE_WRITE: &str = "http://prometheus-operated.monitoring.svc:9090/api/v1/write";

/// Pods listen on their container ports on the host's loopback: one at a time.
static ONE_POD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What runs next to the pod: the aggregator (mTLS, on the SLB IP), a
/// node_exporter on the node IP, a Prometheus receiving remote write, and the
/// Secrets the walk-through has the user create.
struct World {
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    aggregator: MtlsTarget,
    node_exporter: tokio::task::JoinHandle<()>,
    prometheus: Prometheus,
    user_secrets: Vec<Value>,
}

impl World {
    /// Closes the listeners on fixed addresses, so that the next test (after
    /// `ONE_POD`) can bind them.
    async fn stop(self) {
        self.aggregator.stop().await;
        self.node_exporter.abort();
        let _ = self.node_exporter.await;
    }

    async fn start() -> World {
        let prom_bin = require_prometheus().expect("the end-to-end tests need Debian's prometheus");
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&dir.path().join("pki"));
        let aggregator =
            MtlsTarget::start_on(&pki, control_plane(1).text, &format!("{SLB_IP}:6443")).await;
        let node_exporter = plain_target(
            &format!("{NODE_IP}:9100"),
            "# TYPE node_load1 gauge\nnode_load1 0.25\n# TYPE node_boot_time_seconds gauge\nnode_boot_time_seconds 1.7e9\n",
        )
        .await;
        let prometheus = start_prometheus(
            &prom_bin,
            &dir.path().join("prometheus"),
            "global: {scrape_interval: 1h}\n",
        )
        .await;
        let kubeconfig = pki.kubeconfig(dir.path(), &format!("https://{SLB_IP}:6443"));
        // README, "ACK One walk-through": the kubeconfig Secret and the pull token.
        let user_secrets = vec![
            secret(
                "metrics-relay-tls",
                &[("kubeconfig", &std::fs::read(&kubeconfig).unwrap())],
            ),
            secret(
                "metrics-relay-pull-token",
                &[("token", b"0123456789abcdef")],
            ),
            // README, "A fleet of clusters": one kubeconfig per cluster.
            secret(
                "metrics-relay-clusters",
                &[("ack-one-prod", &std::fs::read(&kubeconfig).unwrap())],
            ),
        ];
        World {
            _dir: dir,
            kubeconfig,
            aggregator,
            node_exporter,
            prometheus,
            user_secrets,
        }
    }
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(base64_encode(v))))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data})
}

/// A plain-HTTP target that answers every request with `body`.
async fn plain_target(addr: &str, body: &'static str) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    })
}

/// One set of manifests a user would apply.
#[derive(Clone)]
struct Bundle {
    name: String,
    docs: Vec<Value>,
}

/// The kustomize output of `dir`, with the values the user fills in (the SLB
/// IP, the remote-write URL) set to the loopback stand-ins.
fn kustomized(dir: &Path, world: &World) -> Bundle {
    let mut docs = documents(&kustomize(dir));
    fill_in(&mut docs, world);
    Bundle {
        name: dir.strip_prefix(root()).unwrap().display().to_string(),
        docs,
    }
}

/// The values a user fills in, set to the world's stand-ins; and the
/// shipped 30 s scrape interval shortened to 2 s, so that a pod's first
/// scrape (up to one interval after start, as Prometheus spreads them) and
/// its readiness come in seconds. Nothing else of the manifests changes.
fn fill_in(docs: &mut [Value], world: &World) {
    for d in docs.iter_mut().filter(|d| d["kind"] == "ConfigMap") {
        if let Some(data) = d["data"].as_object_mut() {
            for v in data.values_mut() {
                if let Some(s) = v.as_str() {
                    *v = Value::String(
                        s.replace(SHIPPED_SLB_IP, SLB_IP)
                            .replace(SHIPPED_REMOTE_WRITE, &remote_write_url(world))
                            .replace("scrape_interval: 30s", "scrape_interval: 2s")
                            .replace("scrape_timeout: 10s", "scrape_timeout: 2s"),
                    );
                }
            }
        }
    }
}

fn remote_write_url(world: &World) -> String {
    format!("{}/api/v1/write", world.prometheus.url)
}

/// `render --mode MODE` for the world's kubeconfig (its server is the SLB).
fn rendered(world: &World, mode: &str) -> Bundle {
    let mut cmd = Command::new(relay_bin());
    cmd.args(["render", "--mode", mode, "--kubeconfig"])
        .arg(&world.kubeconfig);
    if mode == "agent" {
        cmd.args(["--remote-write-url", &remote_write_url(world)]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut docs = documents(&String::from_utf8_lossy(&out.stdout));
    fill_in(&mut docs, world);
    Bundle {
        name: format!("render --mode {mode}"),
        docs,
    }
}

/// Every bundle we ship: `deploy/`, each overlay, `render --mode agent` and
/// `--mode pull`.
fn shipped(world: &World) -> Vec<Bundle> {
    let mut out = vec![kustomized(&root().join("deploy"), world)];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/overlays"))
        .expect("deploy/overlays")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    overlays.sort();
    assert!(!overlays.is_empty(), "no overlays found");
    out.extend(overlays.iter().map(|o| kustomized(o, world)));
    out.push(rendered(world, "agent"));
    out.push(rendered(world, "pull"));
    out
}

fn workloads(b: &Bundle) -> Vec<Value> {
    b.docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("Deployment" | "DaemonSet" | "StatefulSet")
            )
        })
        .cloned()
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn int(v: &Value, default: u64) -> u64 {
    v.as_u64().unwrap_or(default)
}

/// The key/value contents of a ConfigMap or Secret.
fn contents(obj: &Value) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let decode = |k: &str, v: &Value| {
        base64_decode(s(v)).ok_or(format!("{}: key {k}: not base64", obj["metadata"]["name"]))
    };
    let secret = obj["kind"] == "Secret";
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let bytes = if secret {
            decode(k, v)?
        } else {
            s(v).as_bytes().to_vec()
        };
        out.insert(k.clone(), bytes);
    }
    for field in ["binaryData", "stringData"] {
        for (k, v) in obj[field].as_object().into_iter().flatten() {
            let bytes = if field == "binaryData" {
                decode(k, v)?
            } else {
                s(v).as_bytes().to_vec()
            };
            out.insert(k.clone(), bytes);
        }
    }
    Ok(out)
}

/// A volume as the runtime will mount it.
enum Source {
    /// A projected ConfigMap/Secret directory (what it is, its keys).
    Projected(PathBuf, String, Vec<String>),
    /// An `emptyDir`: a tmpfs of this many bytes.
    Empty(u64),
}

struct Mount {
    path: String,
    read_only: bool,
    source: Source,
}

/// The pod, ready to start: everything a kubelet checks before it runs
/// anything has been checked.
struct Plan {
    what: String,
    rootfs: PathBuf,
    mounts: Vec<Mount>,
    env: Vec<(String, String)>,
    argv: Vec<String>,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    read_only_root: bool,
    container: Value,
    grace: u64,
    config: metrics_relay::config::Config,
    pod_labels: Value,
}

/// The kubelet's atomic writer: `dir/..<timestamp>/<path>` files, `..data`
/// pointing at the timestamped directory, a symlink per top-level entry.
fn project(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    spec: &Value,
    fs_group: Option<u32>,
    what: &str,
) -> Result<Vec<String>, String> {
    let keys: Vec<String> = data.keys().cloned().collect();
    let default_mode = int(&spec["defaultMode"], 0o644) as u32;
    let mut files: Vec<(String, &[u8], u32)> = Vec::new();
    match spec["items"].as_array() {
        Some(items) => {
            for it in items {
                let key = s(&it["key"]);
                let bytes = data.get(key).ok_or_else(|| {
                    format!("{what} has no key {key:?} (its keys: {keys:?}): the volume's items name a key that is not there")
                })?;
                let mode = it["mode"]
                    .as_u64()
                    .map(|m| m as u32)
                    .unwrap_or(default_mode);
                files.push((s(&it["path"]).to_string(), bytes, mode));
            }
        }
        None => files.extend(
            data.iter()
                .map(|(k, v)| (k.clone(), v.as_slice(), default_mode)),
        ),
    }
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let ts_dir = format!("..{}_{:09}", ts.as_secs(), ts.subsec_nanos());
    std::fs::create_dir_all(dir.join(&ts_dir)).unwrap();
    let mut top = Vec::new();
    for (path, bytes, mode) in &files {
        let f = dir.join(&ts_dir).join(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, bytes).unwrap();
        let mut mode = *mode;
        if let Some(g) = fs_group {
            // The kubelet gives a read-only volume to fsGroup, group-readable.
            std::os::unix::fs::chown(&f, Some(0), Some(g)).unwrap();
            mode |= 0o440;
        }
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        let first = path.split('/').next().unwrap().to_string();
        if !top.contains(&first) {
            top.push(first);
        }
    }
    symlink(&ts_dir, dir.join("..data")).unwrap();
    for t in &top {
        symlink(format!("..data/{t}"), dir.join(t)).unwrap();
    }
    Ok(files.into_iter().map(|(p, _, _)| p).collect())
}

/// The image's root filesystem, from the Dockerfile's final stage.
/// What the image says about the process: entrypoint, command, user.
struct ImageProcess {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    user: Option<(u32, u32)>,
}

fn image_rootfs(dir: &Path, pod_name: &str) -> Result<ImageProcess, String> {
    let ins = dockerfile_instructions(
        &std::fs::read_to_string(root().join("Dockerfile"))
            .map_err(|e| format!("Dockerfile: {e}"))?,
    );
    let last = ins.iter().rposition(|i| i.starts_with("FROM ")).unwrap();
    let build_runs: String = ins[..last]
        .iter()
        .filter(|i| i.starts_with("RUN "))
        .cloned()
        .collect();
    let (mut entrypoint, mut cmd, mut user) = (Vec::new(), Vec::new(), None);
    let json_list = |t: &str| -> Vec<String> { serde_json::from_str(t.trim()).unwrap_or_default() };
    for i in &ins[last + 1..] {
        let words: Vec<&str> = i.split_whitespace().collect();
        match words[0] {
            "COPY" => {
                let flags: Vec<&str> = words[1..]
                    .iter()
                    .copied()
                    .filter(|w| w.starts_with("--"))
                    .collect();
                let paths: Vec<&str> = words[1..]
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (src, dst) = (paths[0], paths[paths.len() - 1]);
                let to = dir.join(dst.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                if src.starts_with("/out/") && build_runs.contains(&format!("mkdir -p {src}")) {
                    std::fs::create_dir_all(&to).unwrap();
                } else if src.starts_with("/out/") {
                    if !build_runs.contains(&format!(
                        "cp \"target/$(cat /rust-target)/release/metrics-relay\" {src}"
                    )) {
                        return Err(format!(
                            "the image copies {src}, which the build stage does not make"
                        ));
                    }
                    std::fs::copy(relay_bin(), &to).unwrap();
                    for lib in shared_libraries(&relay_bin()) {
                        let at = dir.join(lib.trim_start_matches('/'));
                        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                        std::fs::copy(&lib, &at).unwrap();
                    }
                } else {
                    // The build stage is Debian, as the machine running this is.
                    std::fs::copy(src, &to).map_err(|e| {
                        format!("the image copies {src} from the build stage; this Debian has none ({e}): install ca-certificates")
                    })?;
                }
                if let Some(c) = flags.iter().find_map(|f| f.strip_prefix("--chown=")) {
                    let (u, g) = c.split_once(':').unwrap_or((c, c));
                    std::os::unix::fs::chown(&to, u.parse().ok(), g.parse().ok()).unwrap();
                }
            }
            "USER" => {
                let (u, g) = words[1].split_once(':').unwrap_or((words[1], words[1]));
                user = Some((u.parse().unwrap(), g.parse().unwrap()));
            }
            "ENTRYPOINT" => entrypoint = json_list(&i["ENTRYPOINT".len()..]),
            "CMD" => cmd = json_list(&i["CMD".len()..]),
            _ => {}
        }
    }
    for d in ["proc", "dev", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for d in ["null", "zero", "random", "urandom"] {
        std::fs::write(dir.join("dev").join(d), b"").unwrap();
    }
    // What a runtime writes into every container.
    std::fs::write(dir.join("etc/hostname"), format!("{pod_name}\n")).unwrap();
    std::fs::write(
        dir.join("etc/hosts"),
        format!("127.0.0.1 localhost\n127.0.0.1 {pod_name}\n"),
    )
    .unwrap();
    Ok(ImageProcess {
        entrypoint,
        cmd,
        user,
    })
}

/// The shared libraries `ldd` lists for `bin` (absolute paths).
fn shared_libraries(bin: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_string)
        })
        .collect()
}

/// The downward API, faked on loopback.
fn field_ref(path: &str, pod_name: &str) -> Option<String> {
    Some(
        match path {
            "status.hostIP" | "status.hostIPs[0]" => NODE_IP,
            "status.podIP" | "status.podIPs[0]" => "127.0.0.1",
            "spec.nodeName" => NODE_NAME,
            "metadata.name" => pod_name,
            "metadata.namespace" => NAMESPACE,
            "spec.serviceAccountName" => "default",
            _ => return None,
        }
        .to_string(),
    )
}

/// Everything the kubelet checks before it starts the container, and the
/// pod's files laid out under `dir`.
fn plan(
    bundle: &Bundle,
    workload: &Value,
    extra_secrets: &[Value],
    dir: &Path,
    pod_name: &str,
) -> Result<Plan, String> {
    let what = format!(
        "{}: {} {} (pod {pod_name})",
        bundle.name,
        workload["kind"].as_str().unwrap_or("?"),
        s(&workload["metadata"]["name"])
    );
    let pod = &workload["spec"]["template"]["spec"];
    let containers = pod["containers"]
        .as_array()
        .ok_or(format!("{what}: no containers"))?;
    if containers.len() != 1 {
        return Err(format!(
            "{what}: {} containers; the simulation runs one",
            containers.len()
        ));
    }
    let c = &containers[0];
    let cname = s(&c["name"]);
    let image = s(&c["image"]);
    if !image.contains('/') || !image.rsplit('/').next().unwrap().contains([':', '@']) {
        return Err(format!(
            "{what}: container {cname}: image {image:?} was not rewritten to a registry and tag \
             (kustomize `images:`): a kubelet would pull docker.io/library/{image}"
        ));
    }
    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    let pick = |k: &str| {
        if csc[k].is_null() {
            psc[k].clone()
        } else {
            csc[k].clone()
        }
    };
    let fs_group = psc["fsGroup"].as_u64().map(|g| g as u32);

    // Volumes, and their mounts (none inside another).
    let mut volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    // A StatefulSet's claims: a fresh volume of the requested size per pod
    // (the simulation's storage class).
    for t in workload["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        volumes.push(json!({
            "name": t["metadata"]["name"],
            "emptyDir": {"sizeLimit": t["spec"]["resources"]["requests"]["storage"]},
        }));
    }
    let vmounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
    for a in &vmounts {
        for b in &vmounts {
            let (pa, pb) = (s(&a["mountPath"]), s(&b["mountPath"]));
            if !std::ptr::eq(a, b) && Path::new(pb).starts_with(pa) {
                return Err(format!(
                    "{what}: mount {pb} (volume {}) is nested inside mount {pa} (volume {}): \
                     its mount point would have to be made inside another volume",
                    b["name"], a["name"]
                ));
            }
        }
    }
    let secrets: Vec<Value> = bundle
        .docs
        .iter()
        .filter(|d| d["kind"] == "Secret")
        .chain(
            extra_secrets
                .iter()
                .filter(|u| find(&bundle.docs, "Secret", s(&u["metadata"]["name"])).is_none()),
        )
        .cloned()
        .collect();
    let mut mounts = Vec::new();
    for (i, m) in vmounts.iter().enumerate() {
        let vname = s(&m["name"]);
        let v = volumes.iter().find(|v| v["name"] == vname).ok_or(format!(
            "{what}: volumeMount {} names no volume {vname:?}",
            m["mountPath"]
        ))?;
        let vdir = dir.join("volumes").join(format!("{i}-{vname}"));
        let source = if let Some(cm) = v.get("configMap") {
            let name = s(&cm["name"]);
            let obj = find(&bundle.docs, "ConfigMap", name).ok_or(format!(
                "{what}: volume {vname}: ConfigMap {name:?} is not in the bundle"
            ))?;
            let label = format!("ConfigMap {name} (volume {vname})");
            let files = project(&vdir, &contents(obj)?, cm, fs_group, &label)
                .map_err(|e| format!("{what}: {e}"))?;
            Source::Projected(vdir, label, files)
        } else if let Some(sec) = v.get("secret") {
            let name = s(&sec["secretName"]);
            let obj = secrets.iter().find(|d| d["metadata"]["name"] == name).ok_or(format!(
                "{what}: volume {vname}: Secret {name:?} is neither shipped nor created by the README's walk-through"
            ))?;
            let label = format!("Secret {name} (volume {vname})");
            let files = project(&vdir, &contents(obj)?, sec, fs_group, &label)
                .map_err(|e| format!("{what}: {e}"))?;
            Source::Projected(vdir, label, files)
        } else if let Some(e) = v.get("emptyDir") {
            Source::Empty(if e["sizeLimit"].is_null() {
                1 << 30
            } else {
                quantity(&e["sizeLimit"])
            })
        } else {
            return Err(format!(
                "{what}: volume {vname}: only configMap, secret and emptyDir are simulated: {v}"
            ));
        };
        mounts.push(Mount {
            path: s(&m["mountPath"]).to_string(),
            read_only: m["readOnly"] == true || !matches!(source, Source::Empty(_)),
            source,
        });
    }

    // Environment: values, the downward API, Secret and ConfigMap keys.
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOSTNAME".to_string(), pod_name.to_string()),
    ];
    for e in c["env"].as_array().into_iter().flatten() {
        let name = s(&e["name"]).to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(f) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field_ref(f, pod_name)
                .ok_or(format!("{what}: env {name}: fieldRef {f} is not simulated"))?
        } else if let Some(r) = e["valueFrom"]
            .get("secretKeyRef")
            .or(e["valueFrom"].get("configMapKeyRef"))
        {
            let kind = if e["valueFrom"].get("secretKeyRef").is_some() {
                "Secret"
            } else {
                "ConfigMap"
            };
            let pool: Vec<Value> = if kind == "Secret" {
                secrets.clone()
            } else {
                bundle.docs.clone()
            };
            let obj = find(&pool, kind, s(&r["name"])).ok_or(format!(
                "{what}: env {name}: {kind} {} not found",
                r["name"]
            ))?;
            let data = contents(obj)?;
            String::from_utf8_lossy(data.get(s(&r["key"])).ok_or(format!(
                "{what}: env {name}: {kind} {} has no key {} (its keys: {:?})",
                r["name"],
                r["key"],
                data.keys().collect::<Vec<_>>()
            ))?)
            .into_owned()
        } else {
            return Err(format!("{what}: env {name}: not simulated: {e}"));
        };
        env.push((name, value));
    }

    // Probes on ports the container declares.
    let ports = c["ports"].as_array().cloned().unwrap_or_default();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let p = &c[probe]["httpGet"]["port"];
        if p.is_null() {
            continue;
        }
        container_port(&ports, p).map_err(|e| format!("{what}: {probe}: {e}"))?;
    }

    // The root filesystem and the process.
    let rootfs = dir.join("rootfs");
    let ImageProcess {
        entrypoint,
        cmd,
        user,
    } = image_rootfs(&rootfs, pod_name).map_err(|e| format!("{what}: {e}"))?;
    // The kubelet expands `$(NAME)` in the manifest's command and args from
    // the container's environment (`$$` is a literal `$`; an unknown name
    // stays as written).
    let expand = |v: &Value| -> String {
        let text = s(v);
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(a) = after.strip_prefix('$') {
                out.push('$');
                rest = a;
            } else if let Some((name, tail)) =
                after.strip_prefix('(').and_then(|a| a.split_once(')'))
            {
                match env.iter().find(|(k, _)| k == name) {
                    Some((_, val)) => out.push_str(val),
                    None => out.push_str(&format!("$({name})")),
                }
                rest = tail;
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    };
    let mut argv: Vec<String> = match c["command"].as_array() {
        Some(cmd) => cmd.iter().map(expand).collect(),
        None => entrypoint,
    };
    match c["args"].as_array() {
        Some(args) => argv.extend(args.iter().map(expand)),
        None if c["command"].is_null() => argv.extend(cmd),
        None => {}
    }
    let uid = pick("runAsUser")
        .as_u64()
        .map(|u| u as u32)
        .or(user.map(|u| u.0))
        .unwrap_or(0);
    let gid = pick("runAsGroup")
        .as_u64()
        .map(|g| g as u32)
        .or(user.map(|u| u.1))
        .unwrap_or(0);
    if pick("runAsNonRoot") == true && uid == 0 {
        return Err(format!(
            "{what}: runAsNonRoot, but the container would run as root"
        ));
    }
    let mut groups = vec![gid];
    groups.extend(fs_group);
    groups.extend(
        psc["supplementalGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_u64())
            .map(|g| g as u32),
    );

    // The config the container will read: every address on loopback.
    let config = config_of(&argv, &mounts, &env).map_err(|e| format!("{what}: {e}"))?;
    for sc in &config.scrape_configs {
        for t in sc.static_configs.iter().flat_map(|s| &s.targets) {
            require_loopback(t).map_err(|e| format!("{what}: job {}: {e}", sc.job_name))?;
        }
    }
    for rw in &config.remote_write {
        let host = rw
            .url
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        require_loopback(host).map_err(|e| format!("{what}: remote_write: {e}"))?;
    }

    Ok(Plan {
        what,
        rootfs,
        mounts,
        env,
        argv,
        uid,
        gid,
        groups,
        read_only_root: pick("readOnlyRootFilesystem") == true,
        container: c.clone(),
        grace: int(&pod["terminationGracePeriodSeconds"], 30),
        config,
        pod_labels: workload["spec"]["template"]["metadata"]["labels"].clone(),
    })
}

/// The test never sends traffic off this machine.
fn require_loopback(hostport: &str) -> Result<(), String> {
    let host = hostport
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(hostport);
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        _ => Err(format!(
            "{hostport} is not a loopback address (the test would leave the machine)"
        )),
    }
}

/// The `--config` file as the container sees it, loaded as the agent would.
fn config_of(
    argv: &[String],
    mounts: &[Mount],
    env: &[(String, String)],
) -> Result<metrics_relay::config::Config, String> {
    let path = argv
        .iter()
        .position(|a| a == "--config")
        .map(|i| argv[i + 1].clone())
        .or_else(|| {
            argv.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        })
        .ok_or("the container's args name no --config")?;
    let host =
        host_path(mounts, &path).ok_or(format!("--config={path} is on no mounted volume"))?;
    let text = std::fs::read_to_string(&host).map_err(|_| {
        format!(
            "--config={path}: {}",
            missing(mounts, &path).unwrap_or_else(|| "no such file".into())
        )
    })?;
    let text = metrics_relay::config::expand_env(&text, |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    });
    metrics_relay::config::Config::from_yaml(&text).map_err(|e| format!("{path}: {e}"))
}

/// Where a container path lives in the projected volumes.
fn host_path(mounts: &[Mount], path: &str) -> Option<PathBuf> {
    mounts.iter().find_map(|m| match &m.source {
        Source::Projected(dir, _, _) => Path::new(path)
            .strip_prefix(&m.path)
            .ok()
            .map(|r| dir.join(r)),
        Source::Empty(_) => None,
    })
}

/// Why a container path on a projected volume is missing, naming the volume.
fn missing(mounts: &[Mount], path: &str) -> Option<String> {
    mounts.iter().find_map(|m| match &m.source {
        Source::Projected(dir, label, files) => {
            let rel = Path::new(path).strip_prefix(&m.path).ok()?;
            (!dir.join(rel).exists()).then(|| {
                format!(
                    "{path}: {label}, mounted at {}, has no key {:?} (it has {files:?})",
                    m.path,
                    rel.display()
                )
            })
        }
        Source::Empty(_) => None,
    })
}

/// A probe's or Service's port: a number, or the name of a container port.
fn container_port(ports: &[Value], port: &Value) -> Result<u16, String> {
    if let Some(n) = port.as_u64() {
        return ports
            .iter()
            .find(|p| p["containerPort"] == n)
            .map(|_| n as u16)
            .ok_or(format!(
                "port {n} is not a port the container declares ({})",
                port_list(ports)
            ));
    }
    let name = s(port);
    ports
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .map(|n| n as u16)
        .ok_or(format!(
            "port {name:?} names no container port ({})",
            port_list(ports)
        ))
}

fn port_list(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| format!("{}={}", s(&p["name"]), p["containerPort"]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runtime: a mount namespace of the pod's own, its volumes mounted into
/// the image's root filesystem, then the process as the manifest's user.
fn start(plan: &Plan, log: &Path) -> Child {
    let r = plan.rootfs.display().to_string();
    let mut sh = vec![
        "set -eu".to_string(),
        format!("mount --bind '{r}' '{r}'"),
        format!("mount -t proc proc '{r}/proc'"),
    ];
    for d in ["null", "zero", "random", "urandom"] {
        sh.push(format!("mount --bind /dev/{d} '{r}/dev/{d}'"));
    }
    for m in &plan.mounts {
        let at = format!("{r}{}", m.path);
        sh.push(format!("mkdir -p '{at}'"));
        match &m.source {
            Source::Projected(dir, _, _) => {
                sh.push(format!("mount --bind '{}' '{at}'", dir.display()))
            }
            Source::Empty(size) => sh.push(format!(
                "mount -t tmpfs -o size={size},mode=0777 tmpfs '{at}'"
            )),
        }
        if m.read_only {
            sh.push(format!("mount -o remount,bind,ro '{at}'"));
        }
    }
    if plan.read_only_root {
        sh.push(format!("mount -o remount,bind,ro '{r}'"));
    }
    let groups: Vec<String> = plan.groups.iter().map(u32::to_string).collect();
    let quoted: Vec<String> = plan.argv.iter().map(|a| format!("'{a}'")).collect();
    sh.push(format!(
        "exec setpriv --no-new-privs chroot --userspec={}:{} --groups={} '{r}' {}",
        plan.uid,
        plan.gid,
        groups.join(","),
        quoted.join(" ")
    ));
    let f = std::fs::File::create(log).unwrap();
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(sh.join("\n"))
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .expect("unshare (util-linux)")
}

/// A probe's HTTP GET: Ok(status) or the failure.
async fn probe_get(plan: &Plan, probe: &Value) -> Result<u16, String> {
    let ports = plan.container["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let port = container_port(&ports, &probe["httpGet"]["port"])?;
    let scheme = probe["httpGet"]["scheme"]
        .as_str()
        .unwrap_or("HTTP")
        .to_lowercase();
    let path = probe["httpGet"]["path"].as_str().unwrap_or("/");
    let timeout = Duration::from_secs(int(&probe["timeoutSeconds"], 1));
    http_request(
        hyper::Method::GET,
        &format!("{scheme}://127.0.0.1:{port}{path}"),
        None,
        timeout,
    )
    .await
    .map(|(st, _)| st)
}

fn tail(log: &Path) -> String {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Names the mistake behind a log: a container path on a projected volume
/// that is not there.
fn explain(plan: &Plan, log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || "\"'`:,()".contains(c)) {
        if word.starts_with('/')
            && let Some(m) = missing(&plan.mounts, word)
            && !out.contains(&m)
        {
            out.push(m);
        }
    }
    out.join("\n")
}

/// What a running pod answered.
struct Report {
    ready_after: Duration,
    series: f64,
    endpoints: Vec<String>,
    /// The targets the pod scrapes (its `/targets`).
    instances: Vec<String>,
}

/// Runs the planned pod against the world and checks it as a cluster would.
async fn run(plan: &Plan, bundle: &Bundle, world: &World, dir: &Path) -> Result<Report, String> {
    let what = &plan.what;
    let log = dir.join("container.log");
    let mut child = start(plan, &log);
    let started = Instant::now();
    let result = observe(plan, bundle, world, &mut child, &log, started).await;
    // The kubelet's SIGTERM, then the grace period.
    if child.try_wait().unwrap().is_none() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let end = Instant::now() + Duration::from_secs(plan.grace);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let report = result?;
    match status {
        Some(st) if st.success() => Ok(report),
        Some(st) => Err(format!(
            "{what}: after SIGTERM the container exited with {st}:\n{}",
            tail(&log)
        )),
        None => Err(format!(
            "{what}: still running {} s after SIGTERM (terminationGracePeriodSeconds): killed",
            plan.grace
        )),
    }
}

async fn observe(
    plan: &Plan,
    bundle: &Bundle,
    world: &World,
    child: &mut Child,
    log: &Path,
    started: Instant,
) -> Result<Report, String> {
    let what = &plan.what;
    let c = &plan.container;
    let exited = |child: &mut Child| -> Option<String> {
        child.try_wait().unwrap().map(|st| {
            let why = explain(plan, log);
            format!(
                "{what}: the container exited ({st}) before it was ready{}\n{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!("; the mistake:\n{why}")
                },
                tail(log)
            )
        })
    };
    // Readiness within initialDelaySeconds + failureThreshold x periodSeconds;
    // liveness (every periodSeconds) never failing failureThreshold times.
    let rp = &c["readinessProbe"];
    let lp = &c["livenessProbe"];
    if rp.is_null() || lp.is_null() {
        return Err(format!("{what}: needs a readiness and a liveness probe"));
    }
    let window = Duration::from_secs(
        int(&rp["initialDelaySeconds"], 0)
            + int(&rp["failureThreshold"], 3) * int(&rp["periodSeconds"], 10),
    );
    let live_period = Duration::from_secs(int(&lp["periodSeconds"], 10));
    let live_threshold = int(&lp["failureThreshold"], 3);
    let live_start = started + Duration::from_secs(int(&lp["initialDelaySeconds"], 0));
    let (mut next_live, mut live_failures) = (live_start, 0);
    let ready_after = loop {
        if let Some(e) = exited(child) {
            return Err(e);
        }
        let now = Instant::now();
        if now >= next_live {
            next_live += live_period;
            match probe_get(plan, lp).await {
                Ok(st) if (200..400).contains(&st) => live_failures = 0,
                other => {
                    live_failures += 1;
                    if live_failures >= live_threshold {
                        return Err(format!(
                            "{what}: liveness probe failed {live_failures} times ({other:?}): the kubelet restarts the container\n{}",
                            tail(log)
                        ));
                    }
                }
            }
        }
        let ready = probe_get(plan, rp).await;
        if matches!(ready, Ok(st) if (200..400).contains(&st)) {
            break started.elapsed();
        }
        if started.elapsed() > window {
            return Err(format!(
                "{what}: not ready within {} s (readinessProbe {}): last answer {ready:?}\n{}",
                window.as_secs(),
                rp["httpGet"],
                tail(log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Samples in Prometheus, for every target the pod says it scrapes (a
    // shard scrapes its share; `simulate` checks the shares cover the config).
    let port = container_port(
        c["ports"].as_array().map(Vec::as_slice).unwrap_or_default(),
        &c["readinessProbe"]["httpGet"]["port"],
    )?;
    let (_, body) = get_with(
        &format!("http://127.0.0.1:{port}/targets?format=json"),
        None,
    )
    .await?;
    let listed: Value =
        serde_json::from_str(&body).map_err(|e| format!("{what}: /targets: {e}: {body}"))?;
    let instances: Vec<String> = listed
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| s(&t["instance"]).to_string())
        .collect();
    let mut series = 0.0;
    for t in &instances {
        let q = format!("count({{instance=\"{t}\"}})");
        let mut got = Vec::new();
        for _ in 0..120 {
            got = query(
                &world.prometheus,
                &format!("{q} and on() (up{{instance=\"{t}\"}} == 1)"),
            )
            .await;
            if !got.is_empty() {
                break;
            }
            if let Some(e) = exited(child) {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let n = got.first().map(|g| g.1).ok_or(format!(
            "{what}: no samples of target {t} with up == 1 in Prometheus after 60 s\n{}",
            tail(log)
        ))?;
        series += n;
    }

    // Every ServiceMonitor endpoint, through the Service that selects the pod.
    let mut endpoints = Vec::new();
    let ports = c["ports"].as_array().cloned().unwrap_or_default();
    let selects = |selector: &Value, labels: &Value| {
        selector
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
    };
    let services: Vec<&Value> = bundle
        .docs
        .iter()
        .filter(|d| d["kind"] == "Service" && selects(&d["spec"]["selector"], &plan.pod_labels))
        .collect();
    for sm in bundle.docs.iter().filter(|d| d["kind"] == "ServiceMonitor") {
        let sm_name = s(&sm["metadata"]["name"]);
        let svc = services
            .iter()
            .find(|svc| {
                selects(
                    &sm["spec"]["selector"]["matchLabels"],
                    &svc["metadata"]["labels"],
                )
            })
            .ok_or(format!(
                "{what}: ServiceMonitor {sm_name} selects no Service that selects the pod"
            ))?;
        for ep in sm["spec"]["endpoints"].as_array().into_iter().flatten() {
            let pname = s(&ep["port"]);
            let sp = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == pname)
                .ok_or(format!(
                    "{what}: ServiceMonitor {sm_name}: endpoint port {pname:?} names no port of Service {}",
                    svc["metadata"]["name"]
                ))?;
            let target_port = if sp["targetPort"].is_null() {
                sp["port"].clone()
            } else {
                sp["targetPort"].clone()
            };
            let port = container_port(&ports, &target_port).map_err(|e| {
                format!(
                    "{what}: Service {} port {pname}: targetPort: {e}",
                    svc["metadata"]["name"]
                )
            })?;
            let scheme = ep["scheme"].as_str().unwrap_or("http");
            let path = ep["path"].as_str().unwrap_or("/metrics");
            let url = format!("{scheme}://127.0.0.1:{port}{path}");
            let auth = &ep["authorization"];
            let header = if auth.is_null() {
                None
            } else {
                let cred = &auth["credentials"];
                let obj = bundle
                    .docs
                    .iter()
                    .chain(world.user_secrets.iter())
                    .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == cred["name"])
                    .ok_or(format!(
                        "{what}: ServiceMonitor {sm_name} {path}: Secret {} not found",
                        cred["name"]
                    ))?;
                let token = contents(obj)?.remove(s(&cred["key"])).ok_or(format!(
                    "{what}: ServiceMonitor {sm_name} {path}: Secret {} has no key {}",
                    cred["name"], cred["key"]
                ))?;
                Some(format!(
                    "{} {}",
                    auth["type"].as_str().unwrap_or("Bearer"),
                    String::from_utf8_lossy(&token).trim()
                ))
            };
            let (status, body) = get_with(&url, header.as_deref()).await?;
            let samples = body
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count();
            if status != 200 || samples == 0 {
                return Err(format!(
                    "{what}: ServiceMonitor {sm_name} scrapes {url} and gets {status} with {samples} samples"
                ));
            }
            if header.is_some() {
                let (anon, _) = get_with(&url, None).await?;
                if anon != 401 && anon != 403 {
                    return Err(format!(
                        "{what}: {url} answers {anon} without the ServiceMonitor's credentials"
                    ));
                }
            }
            endpoints.push(format!(
                "{path} ({samples} samples{})",
                if header.is_some() { ", token" } else { "" }
            ));
        }
    }
    if endpoints.is_empty() {
        return Err(format!(
            "{what}: no ServiceMonitor endpoint reaches the pod"
        ));
    }
    // Still alive, after all that.
    match probe_get(plan, lp).await {
        Ok(200) => {}
        other => return Err(format!("{what}: liveness at the end: {other:?}")),
    }
    Ok(Report {
        ready_after,
        series,
        endpoints,
        instances,
    })
}

/// GET with an optional Authorization header; (status, body).
async fn get_with(url: &str, authorization: Option<&str>) -> Result<(u16, String), String> {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    http_request_with(
        hyper::Method::GET,
        url,
        None,
        &headers,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| format!("{url}: {e}"))
}

/// Plans and runs every workload of `bundle`.
async fn simulate(bundle: &Bundle, world: &World) -> Result<Vec<Report>, String> {
    let ws = workloads(bundle);
    if ws.is_empty() {
        return Err(format!("{}: no workload", bundle.name));
    }
    let mut out = Vec::new();
    for w in &ws {
        // A StatefulSet's pods are named by ordinal (a sharded agent takes
        // its shard from that name); each runs, one after the other.
        let name = s(&w["metadata"]["name"]);
        let pods: Vec<String> = if w["kind"] == "StatefulSet" {
            (0..int(&w["spec"]["replicas"], 1))
                .map(|i| format!("{name}-{i}"))
                .collect()
        } else {
            vec![POD_NAME.to_string()]
        };
        let mut scraped = std::collections::BTreeSet::new();
        let mut expected = std::collections::BTreeSet::new();
        for pod in &pods {
            let dir = tempfile::tempdir().unwrap();
            let plan = plan(bundle, w, &world.user_secrets, dir.path(), pod)?;
            for sc in &plan.config.scrape_configs {
                expected.extend(sc.static_configs.iter().flat_map(|s| s.targets.clone()));
                // The kubeconfigs of the Secret the README has the user create
                // all point at the (stand-in) SLB.
                if !sc.kubeconfig_sd_configs.is_empty() {
                    expected.insert(format!("{SLB_IP}:6443"));
                }
            }
            let r = run(&plan, bundle, world, dir.path()).await?;
            scraped.extend(r.instances.iter().cloned());
            out.push(r);
        }
        if let Some(t) = expected.difference(&scraped).next() {
            return Err(format!(
                "{}: {} {name}: no pod scrapes target {t} (pods {pods:?} scrape {scraped:?})",
                bundle.name, w["kind"]
            ));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_workload_runs_as_a_kubelet_would_run_it() {
    let _one = ONE_POD.lock().await;
    let world = World::start().await;
    let bundles = shipped(&world);
    assert!(bundles.len() >= 3, "deploy/, an overlay, render");
    for b in &bundles {
        let reports = simulate(b, &world).await.unwrap_or_else(|e| panic!("{e}"));
        for r in reports {
            println!(
                "{}: ready after {:.1} s, {} series of its targets in Prometheus, ServiceMonitor endpoints: {}",
                b.name,
                r.ready_after.as_secs_f64(),
                r.series,
                r.endpoints.join(", ")
            );
        }
    }
    world.stop().await;
}

/// The first workload of the `deploy/` bundle, changed by `f`, planned.
fn broken(
    world: &World,
    f: impl FnOnce(&mut Bundle),
) -> Result<(Bundle, Value, tempfile::TempDir, Plan), String> {
    let mut b = kustomized(&root().join("deploy"), world);
    f(&mut b);
    let w = workloads(&b).remove(0);
    let dir = tempfile::tempdir().unwrap();
    let p = plan(&b, &w, &world.user_secrets, dir.path(), POD_NAME)?;
    Ok((b, w, dir, p))
}

fn container(b: &mut Bundle) -> &mut Value {
    let w = b
        .docs
        .iter_mut()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    &mut w["spec"]["template"]["spec"]["containers"][0]
}

fn expect_err(r: Result<impl Sized, String>, words: &[&str]) {
    match r {
        Ok(_) => panic!("a broken manifest passed; expected an error naming {words:?}"),
        Err(e) => {
            for w in words {
                assert!(e.contains(w), "the error should name {w:?}:\n{e}");
            }
            println!("refused as expected: {}", e.lines().next().unwrap_or(""));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifests_fail_naming_the_mistake() {
    let _one = ONE_POD.lock().await;
    let world = World::start().await;

    // An image the kustomization did not rewrite.
    expect_err(
        broken(&world, |b| container(b)["image"] = json!("metrics-relay")).map(|_| ()),
        &["image \"metrics-relay\" was not rewritten"],
    );
    // A mount inside another.
    expect_err(
        broken(&world, |b| {
            for m in container(b)["volumeMounts"].as_array_mut().unwrap() {
                if m["name"] == "tls" {
                    m["mountPath"] = json!("/etc/metrics-relay/config/tls");
                }
            }
        })
        .map(|_| ()),
        &[
            "/etc/metrics-relay/config/tls",
            "nested inside mount /etc/metrics-relay/config",
        ],
    );
    // Probes on a port the container does not have.
    expect_err(
        broken(&world, |b| {
            container(b)["readinessProbe"]["httpGet"]["port"] = json!("metrics")
        })
        .map(|_| ()),
        &[
            "readinessProbe",
            "\"metrics\" names no container port",
            "http-metrics=9464",
        ],
    );
    expect_err(
        broken(&world, |b| {
            container(b)["livenessProbe"]["httpGet"]["port"] = json!(9465)
        })
        .map(|_| ()),
        &[
            "livenessProbe",
            "port 9465 is not a port the container declares",
        ],
    );
    // The Secret's volume asks for a key the Secret does not have.
    expect_err(
        broken(&world, |b| {
            let w = b
                .docs
                .iter_mut()
                .find(|d| d["kind"] == "Deployment")
                .unwrap();
            for v in w["spec"]["template"]["spec"]["volumes"]
                .as_array_mut()
                .unwrap()
            {
                if v["name"] == "tls" {
                    v["secret"]["items"] = json!([{"key": "ca.crt", "path": "ca.crt"}]);
                }
            }
        })
        .map(|_| ()),
        &[
            "Secret metrics-relay-tls",
            "no key \"ca.crt\"",
            "kubeconfig",
        ],
    );
    // The config reads keys the Secret does not have (the crash loop:
    // tls/ca.crt, tls/tls.crt, tls/tls.key next to a Secret keyed kubeconfig):
    // the pod starts, the agent exits, and the mistake is named.
    let (b, _w, dir, plan) = broken(&world, |b| {
        let cm = b.docs.iter_mut().find(|d| d["kind"] == "ConfigMap" && !d["data"]["config.yml"].is_null()).unwrap();
        let text = s(&cm["data"]["config.yml"]).replace(
            "kubeconfig: /etc/metrics-relay/tls/kubeconfig",
            "ca_file: /etc/metrics-relay/tls/ca.crt\n      cert_file: /etc/metrics-relay/tls/tls.crt\n      key_file: /etc/metrics-relay/tls/tls.key",
        );
        assert!(text.contains("tls/ca.crt"));
        cm["data"]["config.yml"] = json!(text);
    })
    .unwrap();
    expect_err(
        run(&plan, &b, &world, dir.path()).await,
        &[
            "exited",
            "Secret metrics-relay-tls (volume tls), mounted at /etc/metrics-relay/tls, has no key",
            "[\"kubeconfig\"]",
        ],
    );
    // A ServiceMonitor endpoint on a port the Service does not have: the pod
    // runs, but Prometheus would never reach it.
    let (b, _w, dir, plan) = broken(&world, |b| {
        let sm = b
            .docs
            .iter_mut()
            .find(|d| d["kind"] == "ServiceMonitor")
            .unwrap();
        sm["spec"]["endpoints"][0]["port"] = json!("metrics");
    })
    .unwrap();
    expect_err(
        run(&plan, &b, &world, dir.path()).await,
        &[
            "ServiceMonitor metrics-relay",
            "endpoint port \"metrics\" names no port of Service",
        ],
    );
    world.stop().await;
}
