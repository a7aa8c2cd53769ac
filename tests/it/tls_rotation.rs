//! Kubernetes-native TLS: credentials from a kubeconfig, and certificate
//! rotation under a running agent the way a Secret volume does it (the
//! kubelet swaps a `..data` symlink to a new timestamped directory).

use crate::common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{MtlsTarget, Pki, Receiver, RelayProc, wait_for};

fn b64(data: &[u8]) -> String {
    metrics_relay::base64_encode(data)
}

fn relay_config(tls: &str, target: &MtlsTarget, rw: &str) -> String {
    format!(
        r#"
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: ack
    scheme: https
    params: {{hosting: ["true"]}}
    tls_config: {{{tls}}}
    static_configs: [{{targets: ["{addr}"]}}]
remote_write:
  - url: {rw}
    queue_config: {{batch_send_deadline: 100ms}}
"#,
        addr = target.addr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "apiserver_up 1\n".into()).await;
    let kc = dir.path().join("kubeconfig");
    let read = |p: &Path| b64(&std::fs::read(p).unwrap());
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: kubernetes-admin-c1\nclusters:\n- name: kubernetes\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\ncontexts:\n- name: kubernetes-admin-c1\n  context: {{cluster: kubernetes, user: kubernetes-admin}}\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
            addr = target.addr,
            ca = read(&pki.ca),
            cert = read(&pki.client_cert),
            key = read(&pki.client_key),
        ),
    )
    .unwrap();
    let rx = Receiver::start().await;
    let cfg = relay_config(
        &format!("kubeconfig: {}, server_name: kubernetes", kc.display()),
        &target,
        &rx.url(),
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    let up = wait_for(Duration::from_secs(10), || rx.latest("up", &[])).await;
    assert_eq!(up, Some(1.0), "{}", relay.log());
    assert_eq!(rx.latest("apiserver_up", &[]), Some(1.0));
    let m = relay.metrics().await;
    let expiry = common::metric_value(
        &m,
        "metrics_relay_tls_client_cert_expiry_timestamp_seconds{scope=\"scrape\",name=\"ack\"}",
    )
    .expect(&m);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "expiry {expiry} is in the future");
}

/// A Secret volume: `dir/..data -> ..<ts>`, `dir/tls.crt -> ..data/tls.crt`.
fn secret_volume(dir: &Path, version: &str, files: &[(&str, &Path)]) {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&v).unwrap();
    for (name, src) in files {
        std::fs::copy(src, v.join(name)).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_through_a_secret_volume_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let secret: PathBuf = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    // Version 1: a client certificate the target does not trust.
    secret_volume(
        &secret,
        "2026_11_25_v1",
        &[
            ("ca.crt", &pki.ca),
            ("tls.crt", &pki.other_client_cert),
            ("tls.key", &pki.other_client_key),
        ],
    );
    let rx = Receiver::start().await;
    let tls = format!(
        "ca_file: {s}/ca.crt, cert_file: {s}/tls.crt, key_file: {s}/tls.key, server_name: kubernetes",
        s = secret.display()
    );
    let relay = RelayProc::start(dir.path(), &relay_config(&tls, &target, &rx.url())).await;
    assert_eq!(
        wait_for(Duration::from_secs(10), || rx.latest("up", &[])).await,
        Some(0.0)
    );

    // Version 2: the right certificate; no restart.
    secret_volume(
        &secret,
        "2026_11_25_v2",
        &[
            ("ca.crt", &pki.ca),
            ("tls.crt", &pki.client_cert),
            ("tls.key", &pki.client_key),
        ],
    );
    wait_for(Duration::from_secs(15), || {
        (rx.latest("up", &[]) == Some(1.0)).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("rotated certificate not picked up:\n{}", relay.log()));
    assert!(relay.log().contains("TLS material changed"));

    // Version 3: a key that does not match its certificate: rejected, v2 stays.
    secret_volume(
        &secret,
        "2026_11_25_v3",
        &[
            ("ca.crt", &pki.ca),
            ("tls.crt", &pki.client_cert),
            ("tls.key", &pki.other_client_key),
        ],
    );
    wait_for(Duration::from_secs(15), || {
        relay
            .log()
            .contains("new TLS material rejected")
            .then_some(())
    })
    .await
    .expect("bad material reported");
    let n = rx.received.lock().unwrap().len();
    wait_for(Duration::from_secs(10), || {
        (rx.received.lock().unwrap().len() > n + 1).then_some(())
    })
    .await
    .expect("still sending");
    assert_eq!(
        rx.latest("up", &[]),
        Some(1.0),
        "the previous certificate keeps working"
    );
    let m = relay.metrics().await;
    assert!(
        m.contains(
            "metrics_relay_tls_reloads_total{scope=\"scrape\",name=\"ack\",result=\"failure\"}"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "metrics_relay_tls_reloads_total{scope=\"scrape\",name=\"ack\",result=\"success\"} 1"
        ),
        "{m}"
    );
}
