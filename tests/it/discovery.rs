//! Discovery under a running agent: `file_sd_configs` and
//! `kubeconfig_sd_configs` files added, changed, broken and removed (a
//! kubeconfig Secret volume updated by `..data` swaps, as the kubelet does),
//! with no restart and no staleness marker for a target that stays.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{MtlsTarget, Pki, Receiver, RelayProc, metric_value, wait_for};

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Samples of `up` for the target whose `label` is `value`: (value, is stale).
fn up_samples(rx: &Receiver, label: &str, value: &str) -> Vec<(f64, bool)> {
    rx.accepted()
        .into_iter()
        .filter(|(l, _, _)| {
            l.iter().any(|(k, v)| k == "__name__" && v == "up")
                && l.iter().any(|(k, v)| k == label && v == value)
        })
        .map(|(_, v, _)| (v, v.to_bits() == STALE_NAN))
        .collect()
}

/// Staleness markers of any series of the target whose `label` is `value`.
fn stale_markers(rx: &Receiver, label: &str, value: &str) -> usize {
    rx.accepted()
        .into_iter()
        .filter(|(l, v, _)| {
            v.to_bits() == STALE_NAN && l.iter().any(|(k, lv)| k == label && lv == value)
        })
        .count()
}

/// Waits until `up` of that target was 1 at least `n` times more than `from`.
async fn wait_up(rx: &Receiver, label: &str, value: &str, n: usize, why: &str) -> usize {
    let from = up_samples(rx, label, value).len();
    wait_for(Duration::from_secs(20), || {
        let s = up_samples(rx, label, value);
        (s.len() >= from + n && s.last().is_some_and(|(v, _)| *v == 1.0)).then_some(s.len())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{why}: {label}={value} not up; samples {:?}",
            up_samples(rx, label, value)
        )
    })
}

fn body(name: &str) -> String {
    format!("# TYPE {name} gauge\n{name} 1\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_follows_files_added_changed_broken_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let t1 = MtlsTarget::start(&pki, body("one")).await;
    let t2 = MtlsTarget::start(&pki, body("two")).await;
    let t3 = MtlsTarget::start(&pki, body("three")).await;
    let rx = Receiver::start().await;
    let sd = dir.path().join("sd");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(
        sd.join("a.json"),
        format!(
            r#"[{{"targets": ["{}"], "labels": {{"env": "a"}}}}]"#,
            t1.addr
        ),
    )
    .unwrap();
    // Relative file patterns are relative to the config file.
    let config = format!(
        r#"
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: fleet
    scheme: https
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}
    file_sd_configs:
      - files: ["sd/*.json", "sd/*.yml"]
    relabel_configs:
      - source_labels: [__meta_filepath]
        regex: '.*/(.*)'
        target_label: sd_file
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 200ms}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        url = rx.url()
    );
    let relay = RelayProc::start(dir.path(), &config).await;
    let pid = relay.child.id();
    let i1 = t1.addr.to_string();
    let i2 = t2.addr.to_string();
    let i3 = t3.addr.to_string();
    wait_up(&rx, "instance", &i1, 2, "the first file's target").await;
    let first = &rx
        .accepted()
        .into_iter()
        .find(|(l, _, _)| l.iter().any(|(k, v)| k == "instance" && *v == i1))
        .unwrap()
        .0;
    assert!(first.contains(&("env".into(), "a".into())), "{first:?}");
    assert!(
        first.contains(&("sd_file".into(), "a.json".into())),
        "{first:?}"
    );
    assert!(
        !first.iter().any(|(k, _)| k.starts_with("__meta")),
        "meta labels must not reach the receiver: {first:?}"
    );

    // A new YAML file: its target starts.
    std::fs::write(
        sd.join("b.yml"),
        format!("- targets: ['{i2}']\n  labels:\n    env: b\n"),
    )
    .unwrap();
    wait_up(&rx, "instance", &i2, 2, "a file added").await;

    // A changed file: its new target starts, the one that stays goes on.
    std::fs::write(
        sd.join("a.json"),
        format!(r#"[{{"targets": ["{i1}", "{i3}"], "labels": {{"env": "a"}}}}]"#),
    )
    .unwrap();
    wait_up(&rx, "instance", &i3, 2, "a file changed").await;

    // A broken file keeps its last good targets and is reported.
    std::fs::write(sd.join("b.yml"), "- targets: ['half-written").unwrap();
    let failing = "metrics_relay_sd_files_failing{job=\"fleet\",mechanism=\"file\"}";
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = relay.metrics().await;
        if metric_value(&metrics, failing) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric_value(&metrics, failing), Some(1.0), "{metrics}");
    assert!(
        relay.log().contains("discovery file not used"),
        "{}",
        relay.log()
    );
    wait_up(&rx, "instance", &i2, 2, "a broken file's last good targets").await;
    assert_eq!(stale_markers(&rx, "instance", &i2), 0);

    // A removed file: its target ends with staleness markers.
    std::fs::remove_file(sd.join("b.yml")).unwrap();
    wait_for(Duration::from_secs(10), || {
        up_samples(&rx, "instance", &i2)
            .last()
            .is_some_and(|(_, stale)| *stale)
            .then_some(())
    })
    .await
    .expect("the removed file's target got no staleness marker");
    let targets = relay.targets().await;
    let listed: Vec<&str> = targets
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["instance"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{targets}");
    assert!(listed.contains(&i1.as_str()) && listed.contains(&i3.as_str()));
    assert!(
        targets[0]["discovered_from"]
            .as_str()
            .unwrap()
            .ends_with("sd/a.json"),
        "{targets}"
    );

    // The target in the file from the start never went stale, and nothing
    // restarted.
    wait_up(&rx, "instance", &i1, 1, "the target that stayed").await;
    assert_eq!(stale_markers(&rx, "instance", &i1), 0, "false staleness");
    assert_eq!(relay.child.id(), pid);
    assert!(!relay.log().contains("config reloaded"));
}

/// A Secret volume as the kubelet's atomic writer lays it out: the files of
/// one version in `..<version>/`, `..data` pointing at it, and one symlink
/// per key through `..data`. `update` swaps `..data` in one rename.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(dir: &Path) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        }
    }

    fn update(&mut self, keys: &[(&str, &str)]) {
        self.version += 1;
        let v = format!("..2026_11_29_{:02}", self.version);
        let vdir = self.dir.join(&v);
        std::fs::create_dir(&vdir).unwrap();
        for (k, text) in keys {
            std::fs::write(vdir.join(k), text).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&v, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for (k, _) in keys {
            let link = self.dir.join(k);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{k}"), &link).unwrap();
            }
        }
        // Keys no longer in the Secret lose their symlink.
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("..") && !keys.iter().any(|(k, _)| *k == n) {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

/// A kubeconfig for `server` named cluster `name`, with this client pair.
fn kubeconfig(pki: &Pki, name: &str, server: &str, cert: &Path, key: &Path) -> String {
    let b = |p: &Path| metrics_relay::base64_encode(&std::fs::read(p).unwrap());
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {name}-admin\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: {name}-admin\n  context: {{cluster: {name}, user: admin}}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b(&pki.ca),
        b(cert),
        b(key)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_sd_follows_a_secret_volume_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let c1 = MtlsTarget::start(&pki, body("apiserver_one")).await;
    let c2 = MtlsTarget::start(&pki, body("apiserver_two")).await;
    let c3 = MtlsTarget::start(&pki, body("apiserver_three")).await;
    let rx = Receiver::start().await;
    let good = |name: &str, t: &MtlsTarget| {
        kubeconfig(
            &pki,
            name,
            &format!("https://{}", t.addr),
            &pki.client_cert,
            &pki.client_key,
        )
    };
    let token_user = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters:\n- name: tok\n  cluster: {{server: 'https://{}'}}\ncontexts:\n- name: x\n  context: {{cluster: tok, user: t}}\nusers:\n- name: t\n  user: {{token: not-a-certificate}}\n",
        c3.addr
    );
    let mut secret = SecretVolume::new(&dir.path().join("clusters"));
    let (k1, k2) = (good("prod-east", &c1), good("prod-west", &c2));
    secret.update(&[
        ("prod-east", &k1),
        ("prod-west", &k2),
        ("token-user", &token_user),
    ]);
    let config = format!(
        r#"
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: ack
    params: {{hosting: ["true"]}}
    kubeconfig_sd_configs:
      - files: ["{clusters}/*"]
    relabel_configs:
      - source_labels: [__meta_kubeconfig_cluster]
        target_label: cluster
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 200ms}}
"#,
        clusters = dir.path().join("clusters").display(),
        url = rx.url()
    );
    let relay = RelayProc::start(dir.path(), &config).await;
    let pid = relay.child.id();
    wait_up(&rx, "cluster", "prod-east", 2, "first cluster").await;
    wait_up(&rx, "cluster", "prod-west", 2, "second cluster").await;
    assert!(
        c1.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r == "/metrics?hosting=true"),
        "params and metrics_path come from the scrape config"
    );
    // The token kubeconfig is reported and skipped; it stopped nothing.
    assert!(up_samples(&rx, "instance", &c3.addr.to_string()).is_empty());
    let log = relay.log();
    assert!(
        log.contains("token-user") && log.contains("a bearer token"),
        "{log}"
    );
    let metrics = relay.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "metrics_relay_sd_files_failing{job=\"ack\",mechanism=\"kubeconfig\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let targets = relay.targets().await;
    let clusters: Vec<&str> = targets
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["labels"]["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(clusters, ["prod-east", "prod-west"], "{targets}");

    // The probe reaches every discovered cluster with its own credentials.
    let probe = std::process::Command::new(common::relay_bin())
        .args(["probe", "--config"])
        .arg(dir.path().join("relay.yml"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&probe.stdout);
    assert_eq!(
        report.matches("discovered from").count(),
        2,
        "{report}{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // Rotation by a `..data` swap: prod-east gets a certificate its API
    // server does not trust (the new one is in use: scrapes fail), then a
    // good one again (scrapes succeed). prod-west's file is swapped too,
    // with the same content: it must not notice.
    let bad = kubeconfig(
        &pki,
        "prod-east",
        &format!("https://{}", c1.addr),
        &pki.other_client_cert,
        &pki.other_client_key,
    );
    secret.update(&[
        ("prod-east", &bad),
        ("prod-west", &k2),
        ("token-user", &token_user),
    ]);
    wait_for(Duration::from_secs(15), || {
        up_samples(&rx, "cluster", "prod-east")
            .last()
            .is_some_and(|(v, _)| *v == 0.0)
            .then_some(())
    })
    .await
    .expect("the rotated (untrusted) certificate was not used");
    secret.update(&[
        ("prod-east", &k1),
        ("prod-west", &k2),
        ("token-user", &token_user),
    ]);
    wait_up(
        &rx,
        "cluster",
        "prod-east",
        2,
        "rotated back to a good certificate",
    )
    .await;

    // A cluster removed from the Secret ends with staleness markers; a new
    // one starts; the one that stayed never went stale.
    let k3 = good("staging", &c3);
    secret.update(&[("prod-east", &k1), ("staging", &k3)]);
    wait_up(&rx, "cluster", "staging", 2, "a cluster added").await;
    wait_for(Duration::from_secs(10), || {
        up_samples(&rx, "cluster", "prod-west")
            .last()
            .is_some_and(|(_, stale)| *stale)
            .then_some(())
    })
    .await
    .expect("the removed cluster got no staleness marker");
    let west = up_samples(&rx, "cluster", "prod-west");
    assert!(
        west[..west.len() - 1].iter().all(|(v, s)| *v == 1.0 && !s),
        "prod-west went stale or down before it was removed: {west:?}"
    );
    wait_up(&rx, "cluster", "prod-east", 1, "the cluster that stayed").await;
    assert_eq!(relay.child.id(), pid);
    let metrics = relay.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "metrics_relay_sd_files{job=\"ack\",mechanism=\"kubeconfig\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
}
