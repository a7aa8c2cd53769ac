//! The Kubernetes side: manifests valid against the Prometheus-Operator CRDs,
//! `render`, `probe`, alert rules that name real metrics, per-node configs.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::schema::{config_arg, crd_schema, documents, kustomize, quantity, validate};
use common::{MtlsTarget, Pki, Receiver, RelayProc, relay_bin, wait_for};

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(relay_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file of `deploy/`, as text.
fn deploy_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The documents `render --mode agent` prints for a test kubeconfig.
fn render_agent() -> Vec<serde_json::Value> {
    render_mode("agent", &[])
}

/// `render --mode MODE` of a test kubeconfig (server 192.168.0.10:6443,
/// context c1, cluster k), with `extra` arguments.
fn render_mode(mode: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let kc = pki.kubeconfig(dir.path(), "https://192.168.0.10:6443");
    let mut args = vec![
        "render",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--mode",
        mode,
    ];
    args.extend(extra);
    let (code, out, err) = run(&args, &[]);
    assert_eq!(code, 0, "{err}");
    documents(&out)
}

/// What the README's "Memory" section promises: the agent's own memory
/// plus, per concurrently scraped page, about 2.5 times the largest body it
/// accepts (the body, its encoded samples, what they compress to).
const BASE_MEMORY: u64 = 32 << 20;

/// A workload's name and the config it ships with (the DaemonSet's
/// downward-API values filled in as the agent would).
fn workload_config(
    workload: &serde_json::Value,
    config: &str,
) -> (String, metrics_relay::config::Config) {
    let name = workload["metadata"]["name"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let config = config
        .replace("${NODE_IP}", "127.0.0.1")
        .replace("${NODE_NAME}", "node")
        .replace("${CLUSTER}", "c1");
    (
        name,
        metrics_relay::config::Config::from_yaml(&config).unwrap(),
    )
}

/// The shipped workload's limits fit the config it ships with: memory for
/// `body_size_limit`, the data volume for every `queue.max_size`.
fn check_limits(workload: &serde_json::Value, config: &str) {
    let (name, cfg) = workload_config(workload, config);
    let pod = &workload["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mem = quantity(&c["resources"]["limits"]["memory"]);
    let body = cfg
        .scrape_configs
        .iter()
        .map(|sc| {
            sc.body_limit()
                .unwrap_or_else(|| panic!("{name}: job {} has no body_size_limit", sc.job_name))
        })
        .max()
        .unwrap_or(0);
    let need = BASE_MEMORY + body * 5 / 2;
    assert!(
        mem >= need,
        "{name}: memory limit {mem} is below {need} (32 MiB + 2.5 x body_size_limit {body})"
    );
    let data_mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/metrics-relay")
        .unwrap_or_else(|| panic!("{name}: no data volume"));
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == data_mount["name"])
        .unwrap();
    let disk = quantity(&vol["emptyDir"]["sizeLimit"]);
    let queues: u64 = cfg
        .remote_write
        .iter()
        .map(|rw| rw.queue.max_size.0 + (1 << 20))
        .sum();
    assert!(
        disk >= queues,
        "{name}: emptyDir sizeLimit {disk} is below the queues' max_size (+1 MiB each): {queues}"
    );
}

#[test]
fn shipped_limits_fit_the_shipped_configs() {
    let read = deploy_file;
    let dep = documents(&read("base/deployment.yaml"));
    check_limits(&dep[0], &read("base/ack-one.yml"));
    let ds = documents(&read("overlays/daemonset/daemonset.yaml"));
    check_limits(&ds[0], &read("overlays/daemonset/node-local.yml"));
    // And the agent `render` writes.
    let docs = render_agent();
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && !d["data"]["config.yml"].is_null())
        .unwrap();
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    check_limits(dep, cm["data"]["config.yml"].as_str().unwrap());
    // A mismatch is caught.
    let broken = read("overlays/daemonset/node-local.yml")
        .replace("body_size_limit: 16MiB", "body_size_limit: 256MiB");
    let r = std::panic::catch_unwind(|| check_limits(&ds[0], &broken));
    assert!(
        r.is_err(),
        "a 256 MiB body limit under a 128Mi memory limit passed"
    );
}

fn check_against_crds(text: &str) -> usize {
    let mut checked = 0;
    for doc in documents(text) {
        let file = match doc["kind"].as_str() {
            Some("ServiceMonitor") => "monitoring.coreos.com_servicemonitors.yaml",
            Some("PrometheusRule") => "monitoring.coreos.com_prometheusrules.yaml",
            Some("PodMonitor") => "monitoring.coreos.com_podmonitors.yaml",
            _ => continue,
        };
        let schema = crd_schema(file);
        let mut errs = Vec::new();
        validate(&doc, &schema, "", &mut errs);
        assert!(
            errs.is_empty(),
            "{} invalid against {file}:\n{}",
            doc["metadata"]["name"],
            errs.join("\n")
        );
        checked += 1;
    }
    checked
}

#[test]
fn deploy_manifests_are_valid_against_the_crds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base");
    let mut n = 0;
    for f in ["servicemonitor.yaml", "prometheusrule.yaml"] {
        n += check_against_crds(&std::fs::read_to_string(dir.join(f)).unwrap());
    }
    assert_eq!(n, 2);
    // The schema check can fail: a wrong field is caught.
    let schema = crd_schema("monitoring.coreos.com_servicemonitors.yaml");
    let bad = documents(
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  endpoints:\n    - port: http\n      honor_labels: true\n",
    );
    let mut errs = Vec::new();
    validate(&bad[0], &schema, "", &mut errs);
    assert!(
        errs.iter()
            .any(|e| e.contains("honor_labels: unknown field")),
        "{errs:?}"
    );
}

#[test]
fn render_direct_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let kc = pki.kubeconfig(dir.path(), "https://192.168.0.10:6443");
    let (code, out, err) = run(&["render", "--kubeconfig", kc.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    let docs = documents(&out);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Secret", "Service", "Endpoints", "ServiceMonitor"]);
    assert_eq!(
        docs[0]["data"]["tls.crt"],
        metrics_relay::base64_encode(&std::fs::read(&pki.client_cert).unwrap())
    );
    assert_eq!(docs[2]["subsets"][0]["addresses"][0]["ip"], "192.168.0.10");
    assert_eq!(docs[1]["spec"]["clusterIP"], "None");
    let ep = &docs[3]["spec"]["endpoints"][0];
    assert_eq!(ep["params"]["hosting"][0], "true");
    assert_eq!(ep["tlsConfig"]["keySecret"]["key"], "tls.key");
    assert_eq!(check_against_crds(&out), 1);

    let (code, out, err) = run(
        &[
            "render",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--slb-ip",
            "10.9.8.7",
            "--mode",
            "agent",
            "--namespace",
            "obs",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let docs = documents(&out);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Secret",
            "ConfigMap",
            "Deployment",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
            "PodDisruptionBudget"
        ]
    );
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "obs"));
    check_against_crds(&out);
    // The ConfigMap's config is one metrics-relay accepts, every
    // placeholder filled, the cluster named as the kubeconfig names it.
    let cfg = docs[1]["data"]["config.yml"].as_str().unwrap();
    assert!(cfg.contains("10.9.8.7:6443"), "{cfg}");
    assert!(
        !cfg.contains("192.168.0.10") && !cfg.contains("Replace"),
        "{cfg}"
    );
    assert!(cfg.contains("cluster: \"k\""), "{cfg}");
    assert!(
        cfg.contains("http://prometheus-operated.obs.svc:9090/api/v1/write"),
        "{cfg}"
    );
    metrics_relay::config::Config::from_yaml(cfg).unwrap();
    // Named by its content, as kustomize's generator names it: a changed
    // config is a new name, and the Deployment rolls.
    let cm = docs[1]["metadata"]["name"].as_str().unwrap();
    assert!(
        cm.starts_with("metrics-relay-config-") && cm.len() > 22,
        "{cm}"
    );
    assert_eq!(
        docs[2]["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap()["configMap"]["name"],
        cm
    );

    // A server given by host name: the agent takes it; the vendor's
    // Endpoints cannot.
    let kc2 = dir.path().join("kc2");
    std::fs::write(
        &kc2,
        std::fs::read_to_string(&kc).unwrap().replace(
            "https://192.168.0.10:6443",
            "https://api.example.internal:6443",
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["render", "--kubeconfig", kc2.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--slb-ip"), "{err}");
    let (code, out, err) = run(
        &[
            "render",
            "--kubeconfig",
            kc2.to_str().unwrap(),
            "--mode",
            "agent",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("api.example.internal:6443"), "{out}");
    // Options that do not apply, and names Kubernetes refuses, are errors.
    for (args, want) in [
        (
            vec!["--namespace", "Bad_NS"],
            "not a Kubernetes namespace name",
        ),
        (vec!["--image", "x/y:1"], "--image"),
        (
            vec!["--mode", "agent", "--pull-token-file", "/tmp/t"],
            "--pull-token-file",
        ),
        (
            vec!["--mode", "pull", "--remote-write-url", "http://x/w"],
            "--remote-write-url",
        ),
    ] {
        let mut a = vec!["render", "--kubeconfig", kc.to_str().unwrap()];
        a.extend(args);
        let (code, _, err) = run(&a, &[]);
        assert_eq!(code, 1, "{a:?}");
        assert!(err.contains(want), "{a:?}: {err}");
    }
}

/// `render` writes what `kubectl apply -k` installs: for each object both
/// have, the same object, but for what render is for (the namespace, the
/// image, the ConfigMap's name, which carries a hash of its content either
/// way).
#[test]
fn render_equals_kustomize_where_they_overlap() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for (mode, dir) in [
        ("agent", root.clone()),
        ("pull", root.join("overlays/pull")),
    ] {
        let rendered = render_mode(mode, &[]);
        let built = documents(&kustomize(&dir));
        let normal = |d: &serde_json::Value| {
            let mut text = d.to_string();
            text = regex_like_replace(&text, "metrics-relay-config-", "metrics-relay-config-HASH");
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            v
        };
        let mut compared = 0;
        for kind in [
            "Deployment",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
            "PodDisruptionBudget",
        ] {
            let r = rendered
                .iter()
                .find(|d| d["kind"] == kind)
                .unwrap_or_else(|| panic!("render --mode {mode} has no {kind}"));
            let k = built
                .iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == "metrics-relay")
                .unwrap_or_else(|| panic!("kustomize {} has no {kind}", dir.display()));
            let diffs = differences("", &normal(r), &normal(k));
            assert!(
                diffs.is_empty(),
                "render --mode {mode} and kustomize build {} differ in their {kind} (render / kustomize):\n{}",
                dir.display(),
                diffs.join("\n")
            );
            compared += 1;
        }
        assert_eq!(compared, 5);
        // The config too: the shipped one with the cluster's values filled.
        let config = |docs: &[serde_json::Value]| {
            docs.iter()
                .find(|d| d["kind"] == "ConfigMap" && d["data"]["config.yml"].is_string())
                .unwrap()["data"]["config.yml"]
                .as_str()
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let back = config(&rendered)
            .replace("cluster: \"k\"", metrics_relay::ACK_ONE_CLUSTER)
            .replace(
                "server_name: \"kubernetes\"",
                metrics_relay::ACK_ONE_SERVER_NAME,
            )
            .replace("\"192.168.0.10:6443\"", metrics_relay::ACK_ONE_TARGET)
            .replace(
                "url: \"http://prometheus-operated.monitoring.svc:9090/api/v1/write\"",
                metrics_relay::ACK_ONE_REMOTE_WRITE,
            );
        assert_eq!(back, config(&built), "render --mode {mode}'s config");
    }
}

/// Where two JSON values differ: one line per path.
fn differences(at: &str, a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    differences(
                        &format!("{at}.{k}"),
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    )
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (p, q))| differences(&format!("{at}[{i}]"), p, q))
            .collect(),
        _ if a == b => Vec::new(),
        _ => vec![format!("  {at}: {a} / {b}")],
    }
}

/// Every `PREFIX` followed by a run of [a-z0-9] becomes `TO`.
fn regex_like_replace(text: &str, prefix: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i]);
        out.push_str(to);
        rest = rest[i + prefix.len()..]
            .trim_start_matches(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_and_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(
        &pki,
        "apiserver_request_total{code=\"200\"} 5\nbad{ 1\n".into(),
    )
    .await;
    let rx = Receiver::start().await;
    let kc = pki.kubeconfig(dir.path(), &format!("https://{}", target.addr));
    let cfg = dir.path().join("c.yml");
    let write = |ca_override: &str, url: &str| {
        std::fs::write(
            &cfg,
            format!(
                "scrape_configs:\n  - job_name: ack\n    scheme: https\n    params: {{hosting: ['true']}}\n    tls_config: {{kubeconfig: {}, server_name: kubernetes{ca_override}}}\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - url: {url}\n",
                kc.display(),
                target.addr
            ),
        )
        .unwrap();
    };
    write("", &rx.url());
    let c = cfg.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || run(&["probe", "--config", &c], &[]))
        .await
        .unwrap();
    let (code, stdout, stderr) = out;
    assert!(stdout.contains("TLS handshake: ok"), "{stdout}{stderr}");
    assert!(
        stdout.contains("server certificate: CN=kube-apiserver"),
        "{stdout}"
    );
    assert!(
        stdout.contains("client certificate: CN=metrics-relay-client"),
        "{stdout}"
    );
    assert!(stdout.contains("HTTP: 200 OK"), "{stdout}");
    assert!(stdout.contains("samples: 1"), "{stdout}");
    assert!(stdout.contains("parse: FAILED: line 2"), "{stdout}");
    assert!(
        stdout.contains("remote_write rw0") && stdout.contains("ok (1 test sample"),
        "{stdout}"
    );
    assert_eq!(code, 1, "a parse error fails the probe");
    assert_eq!(rx.latest("metrics_relay_probe", &[]), Some(1.0));

    target.set_body("apiserver_request_total{code=\"200\"} 5\n".into());
    let c = cfg.to_str().unwrap().to_string();
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || run(&["probe", "--config", &c], &[]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.trim_end().ends_with("probe: OK"), "{stdout}");

    write(
        &format!(", ca_file: {}", pki.other_ca.display()),
        "http://127.0.0.1:9/api/v1/write",
    );
    let c = cfg.to_str().unwrap().to_string();
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || run(&["probe", "--config", &c], &[]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    assert!(
        stdout.contains("TLS handshake: FAILED: x509: certificate signed by unknown authority"),
        "{stdout}"
    );
    assert!(
        stdout.contains("remote_write rw0 http://127.0.0.1:9/api/v1/write: FAILED"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_name_metrics_the_agent_exports() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let rx = Receiver::start().await;
    rx.script.lock().unwrap().push_back((400, None)); // so a drop counter exists
    let cfg = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: ack\n    scheme: https\n    tls_config: {{ca_file: {}, cert_file: {}, key_file: {}, server_name: localhost}}\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 100ms}}\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
        target.addr,
        rx.url()
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    wait_for(Duration::from_secs(10), || {
        (rx.received.lock().unwrap().len() >= 2).then_some(())
    })
    .await
    .expect("sent");
    let exported = relay.metrics().await;
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/prometheusrule.yaml"),
    )
    .unwrap();
    let mut names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("metrics_relay_"))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 6, "{names:?}");
    for n in names {
        assert!(
            exported.lines().any(|l| l.starts_with(n)),
            "alert rule uses {n}, which /metrics does not export:\n{exported}"
        );
    }
}

#[test]
fn daemonset_config_expands_node_ip() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays/daemonset/node-local.yml");
    let (code, out, err) = run(
        &["check", "--config", path.to_str().unwrap()],
        &[
            ("NODE_IP", "10.1.2.3"),
            ("NODE_NAME", "node-a"),
            ("CLUSTER", "c1"),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run(
        &["check", "--config", path.to_str().unwrap()],
        &[("CLUSTER", "c1")],
    );
    assert_eq!(code, 1, "without NODE_IP the target is not an address");
    assert!(err.contains("NODE_IP"), "{err}");
    // Without CLUSTER the `cluster` label would be the text "${CLUSTER}".
    let (code, _, err) = run(
        &["check", "--config", path.to_str().unwrap()],
        &[("NODE_IP", "10.1.2.3"), ("NODE_NAME", "node-a")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CLUSTER") && err.contains("not set"), "{err}");
}

#[test]
fn kustomize_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let text = kustomize(&root);
    let docs = documents(&text);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in [
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "metrics-relay"
    );
    check_against_crds(&text);
    // The ConfigMap carries a config the agent accepts.
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && !d["data"]["config.yml"].is_null())
        .unwrap();
    metrics_relay::config::Config::from_yaml(cm["data"]["config.yml"].as_str().unwrap()).unwrap();

    let text = kustomize(&root.join("overlays/daemonset"));
    let kinds: Vec<String> = documents(&text)
        .iter()
        .filter_map(|d| d["kind"].as_str().map(String::from))
        .collect();
    assert!(
        kinds.contains(&"DaemonSet".to_string()) && !kinds.contains(&"Deployment".to_string()),
        "{kinds:?}"
    );
}

/// The pull path re-exposes control-plane metrics: wherever we ship it, the
/// agent asks for a token (`server.relay_auth`), the token file is a mounted
/// Secret, and the ServiceMonitor's `/relay/metrics` endpoint presents that
/// Secret.
fn check_pull_path_protected(
    workload: &serde_json::Value,
    config: &str,
    monitor: &serde_json::Value,
) {
    let (name, cfg) = workload_config(workload, config);
    let file = cfg
        .server
        .relay_auth
        .as_ref()
        .unwrap_or_else(|| {
            panic!("{name}: /relay/metrics ships unprotected (no server.relay_auth)")
        })
        .credentials_file
        .clone();
    let pod = &workload["spec"]["template"]["spec"];
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| file.starts_with(m["mountPath"].as_str().unwrap()) && m["mountPath"] != "/")
        .unwrap_or_else(|| panic!("{name}: {} is on no mounted volume", file.display()));
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let secret = vol["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: the token's volume is not a Secret"));
    let key = file.file_name().unwrap().to_str().unwrap();
    let ep = monitor["spec"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/relay/metrics")
        .unwrap_or_else(|| panic!("{name}: no /relay/metrics endpoint"));
    assert_eq!(ep["authorization"]["type"], "Bearer", "{name}: {ep}");
    assert_eq!(
        ep["authorization"]["credentials"]["name"], secret,
        "{name}: {ep}"
    );
    assert_eq!(
        ep["authorization"]["credentials"]["key"], key,
        "{name}: {ep}"
    );
}

/// The pull path is its own overlay (and render mode), never on by default
/// beside remote write (one Prometheus would count every sample twice), and
/// wherever it ships, it is protected: the agent asks for a token, the token
/// is a mounted Secret, and the ServiceMonitor presents it.
#[test]
fn the_pull_path_ships_protected_and_alone() {
    let read = deploy_file;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    // The base (and every overlay but pull): remote write, no pull path.
    for dir in ["", "overlays/daemonset", "overlays/fleet", "overlays/ha"] {
        let docs = documents(&kustomize(&root.join(dir)));
        for d in &docs {
            if d["kind"] == "ServiceMonitor" {
                assert!(
                    !d.to_string().contains("/relay/metrics"),
                    "deploy/{dir} pulls /relay/metrics beside remote write: {d}"
                );
            }
            if let Some(cfg) = d["data"]["config.yml"].as_str() {
                let cfg = metrics_relay::config::expand_env(cfg, |k| {
                    Some(match k {
                        "NODE_IP" => "10.0.0.1".into(),
                        _ => "x".into(),
                    })
                });
                let c = metrics_relay::config::Config::from_yaml(&cfg).unwrap();
                assert!(!c.remote_write.is_empty(), "deploy/{dir}: no remote write");
                assert!(
                    !c.relay_metrics_enabled(),
                    "deploy/{dir}: the pull path is on"
                );
            }
        }
    }
    // The pull overlay: pull only, protected.
    let docs = documents(&kustomize(&root.join("overlays/pull")));
    let find = |docs: &[serde_json::Value], kind: &str| {
        docs.iter()
            .find(|d| {
                d["kind"] == kind && (kind != "ConfigMap" || d["data"]["config.yml"].is_string())
            })
            .unwrap()
            .clone()
    };
    let check = |docs: &[serde_json::Value]| {
        let cfg = find(docs, "ConfigMap")["data"]["config.yml"]
            .as_str()
            .unwrap()
            .to_string();
        let c = metrics_relay::config::Config::from_yaml(&cfg).unwrap();
        assert!(
            c.remote_write.is_empty(),
            "pull and remote write both: {cfg}"
        );
        check_pull_path_protected(
            &find(docs, "Deployment"),
            &cfg,
            &find(docs, "ServiceMonitor"),
        );
    };
    check(&docs);
    assert_eq!(
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ack-one.yml"))
            .unwrap(),
        read("base/ack-one.yml"),
        "config/ack-one.yml is the config deploy/ ships"
    );
    // The pull config scrapes as the base config does.
    let scrape = |text: &str| {
        let c = metrics_relay::config::Config::from_yaml(text).unwrap();
        (c.global.clone(), c.scrape_configs.clone())
    };
    assert_eq!(
        scrape(&read("overlays/pull/ack-one-pull.yml")),
        scrape(&read("base/ack-one.yml")),
        "the pull overlay's config scrapes otherwise than the base's"
    );
    // render --mode pull: the same, with a token of its own, made fresh
    // each time or kept from a file.
    let docs = render_mode("pull", &[]);
    check(&docs);
    let token = |docs: &[serde_json::Value]| {
        docs.iter()
            .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "metrics-relay-pull-token")
            .unwrap()["data"]["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = token(&docs);
    assert_ne!(a, token(&render_mode("pull", &[])));
    let raw = metrics_relay::base64_decode(&a).unwrap();
    assert_eq!(raw.len(), 64, "256 bits, hex");
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("token");
    std::fs::write(&kept, &raw).unwrap();
    let again = render_mode("pull", &["--pull-token-file", kept.to_str().unwrap()]);
    assert_eq!(token(&again), a, "--pull-token-file keeps the token");
    // And render --mode agent ships none of it.
    let agent = render_agent();
    assert!(
        !agent
            .iter()
            .any(|d| d.to_string().contains("/relay/metrics") && d["kind"] == "ServiceMonitor")
    );
    assert!(
        !agent
            .iter()
            .any(|d| d["metadata"]["name"] == "metrics-relay-pull-token")
    );
}

/// One ACK One config and one Secret layout (issue 13): the README's
/// walk-through creates the Secret `deploy/` mounts, under the key the
/// config reads; `render --mode agent` writes the shipped config itself with
/// only the cluster's values filled in, and a Secret of the same layout.
#[test]
fn walkthrough_deploy_and_render_agree() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("create secret generic") && l.contains("--from-file=kubeconfig="))
        .expect("the walk-through creates the kubeconfig Secret");
    let secret = line
        .split_whitespace()
        .skip_while(|w| *w != "generic")
        .nth(1)
        .unwrap()
        .to_string();
    let cfg = metrics_relay::config::Config::from_yaml(&deploy_file("base/ack-one.yml")).unwrap();
    let kc_path = cfg.scrape_configs[0]
        .tls_config
        .as_ref()
        .and_then(|t| t.kubeconfig.clone())
        .expect("the shipped config reads a kubeconfig");
    let check_workload = |w: &serde_json::Value, secret: &str| {
        let pod = &w["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let mounts = c["volumeMounts"].as_array().unwrap();
        let m = mounts
            .iter()
            .find(|m| kc_path.parent() == Some(Path::new(m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{} is on no mount: {mounts:?}", kc_path.display()));
        let v = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        assert_eq!(v["secret"]["secretName"], secret, "{v}");
        // No mount inside another (a read-only volume cannot hold a mount point).
        for a in mounts {
            for b in mounts {
                let (pa, pb) = (
                    a["mountPath"].as_str().unwrap(),
                    b["mountPath"].as_str().unwrap(),
                );
                assert!(
                    pa == pb || !Path::new(pb).starts_with(pa),
                    "{pb} is inside {pa}"
                );
            }
        }
        // The config file the args name is where the ConfigMap is mounted.
        let arg = config_arg(c);
        let cm = mounts.iter().find(|m| m["name"] == "config").unwrap();
        assert_eq!(
            Path::new(&arg).parent(),
            Some(Path::new(cm["mountPath"].as_str().unwrap())),
            "--config={arg}"
        );
    };
    check_workload(&documents(&deploy_file("base/deployment.yaml"))[0], &secret);
    // render --mode agent: the shipped text, four values replaced (its
    // opening comment, written for an editor, replaced by where it came
    // from).
    let docs = render_agent();
    let rendered = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["data"]["config.yml"]
        .as_str()
        .unwrap()
        .to_string();
    let body = |text: &str| {
        text.lines()
            .skip_while(|l| l.starts_with('#') || l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let back = rendered
        .replace("\"192.168.0.10:6443\"", metrics_relay::ACK_ONE_TARGET)
        .replace("cluster: \"k\"", metrics_relay::ACK_ONE_CLUSTER)
        .replace(
            "server_name: \"kubernetes\"",
            metrics_relay::ACK_ONE_SERVER_NAME,
        )
        .replace(
            "url: \"http://prometheus-operated.monitoring.svc:9090/api/v1/write\"",
            metrics_relay::ACK_ONE_REMOTE_WRITE,
        );
    assert_eq!(
        body(&back),
        body(&deploy_file("base/ack-one.yml")),
        "render writes the shipped config"
    );
    assert!(
        rendered.starts_with("# Rendered by metrics-relay"),
        "{rendered}"
    );
    assert!(
        rendered.contains("metric_relabel_configs"),
        "the job split is there"
    );
    check_workload(
        docs.iter().find(|d| d["kind"] == "Deployment").unwrap(),
        &secret,
    );
    // Its Secret holds a kubeconfig of one context that loads.
    let s = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == secret.as_str())
        .unwrap();
    let kc = metrics_relay::base64_decode(s["data"]["kubeconfig"].as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("kubeconfig");
    std::fs::write(&f, &kc).unwrap();
    let c = metrics_relay::load_kubeconfig(&f, None).unwrap();
    assert_eq!(c.context, "c1");
    assert_eq!(
        String::from_utf8_lossy(&kc).matches("- name:").count(),
        3,
        "one cluster, user, context"
    );
}

/// Every bundle the README names: its path under deploy/ and its name in
/// the README's Secrets table.
const BUNDLES: [(&str, &str); 5] = [
    ("", "`deploy/` (base)"),
    ("overlays/pull", "`deploy/overlays/pull`"),
    ("overlays/fleet", "`deploy/overlays/fleet`"),
    ("overlays/daemonset", "`deploy/overlays/daemonset`"),
    ("overlays/ha", "`deploy/overlays/ha`"),
];

/// The Kubernetes facts an SRE needs before `kubectl apply` (issue 21):
/// kube-prometheus-stack picks ServiceMonitors and PrometheusRules by its
/// `release` label (every shipped one has it); the README's table names
/// exactly the Secrets each bundle mounts and does not ship; a workload of
/// several replicas spreads them over nodes; a StatefulSet's serviceName is
/// a headless Service of its bundle; the receiver flag is on the page.
#[test]
fn the_kubernetes_facts_are_on_the_page_and_in_the_manifests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for needle in [
        "--web.enable-remote-write-receiver",
        "prometheus.prometheusSpec.enableRemoteWriteReceiver",
        "release: kube-prometheus-stack",
        "kubectl 1.27",
    ] {
        assert!(
            readme.contains(needle),
            "the README does not say {needle:?}"
        );
    }
    for (dir, name) in BUNDLES {
        let docs = documents(&kustomize(&root.join(dir)));
        for d in &docs {
            if matches!(
                d["kind"].as_str(),
                Some("ServiceMonitor" | "PrometheusRule")
            ) {
                assert!(
                    d["metadata"]["labels"]["release"].is_string(),
                    "{name}: {} {} has no release label: kube-prometheus-stack would ignore it",
                    d["kind"],
                    d["metadata"]["name"]
                );
            }
        }
        // Secrets the workloads mount that the bundle does not ship.
        let shipped: Vec<&str> = docs
            .iter()
            .filter(|d| d["kind"] == "Secret")
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        let mut needed: Vec<String> = Vec::new();
        for w in docs.iter().filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "DaemonSet")
            )
        }) {
            let pod = &w["spec"]["template"]["spec"];
            for v in pod["volumes"].as_array().into_iter().flatten() {
                if let Some(s) = v["secret"]["secretName"].as_str()
                    && !shipped.contains(&s)
                    && !needed.contains(&s.to_string())
                {
                    needed.push(s.to_string());
                }
            }
            let replicas = w["spec"]["replicas"].as_u64().unwrap_or(1);
            if replicas > 1 {
                let spread = pod["topologySpreadConstraints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["topologyKey"] == "kubernetes.io/hostname");
                assert!(spread, "{name}: {replicas} replicas not spread over nodes");
            }
            if w["kind"] == "StatefulSet" {
                let svc = w["spec"]["serviceName"].as_str().unwrap();
                let headless = docs.iter().any(|d| {
                    d["kind"] == "Service"
                        && d["metadata"]["name"] == svc
                        && d["spec"]["clusterIP"] == "None"
                });
                assert!(
                    headless,
                    "{name}: serviceName {svc} is not a headless Service of the bundle"
                );
            }
        }
        let row = readme
            .lines()
            .find(|l| l.starts_with('|') && l.contains(name))
            .unwrap_or_else(|| panic!("the README's Secrets table has no row for {name}"));
        for s in &needed {
            assert!(
                row.contains(&format!("`{s}`")),
                "{name} mounts Secret {s}; the README's row says: {row}"
            );
        }
        if needed.is_empty() {
            assert!(
                row.contains("none"),
                "{name} needs no Secret; the README's row says: {row}"
            );
        }
    }
}

/// The target-down alert names the target that is down: scraped through
/// the ServiceMonitor, its own job and instance are `exported_job` and
/// `exported_instance` (`dashboards::every_dashboard_query_returns_data`
/// has a real Prometheus fire it and reads what it says).
#[test]
fn the_target_down_alert_names_the_scraped_target() {
    let rules = documents(&deploy_file("base/prometheusrule.yaml"));
    let rule = rules[0]["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "MetricsRelayTargetDown")
        .unwrap()
        .clone();
    let summary = rule["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("$labels.exported_job") && summary.contains("$labels.exported_instance"),
        "{summary}"
    );
}
