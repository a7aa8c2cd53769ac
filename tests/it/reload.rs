//! Config reload (SIGHUP and `POST /-/reload`): removed targets get staleness
//! markers, kept targets keep their series (no false staleness), new targets
//! start, and a bad config is rejected while the old one keeps running.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{MtlsTarget, Pki, Receiver, RelayProc, http_post, wait_for};

const STALE: u64 = 0x7ff0_0000_0000_0002;

fn config(pki: &Pki, targets: &[&MtlsTarget], rw: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{}\"", t.addr)).collect();
    format!(
        r#"
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: cp
    scheme: https
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: localhost}}
    static_configs: [{{targets: [{list}]}}]
remote_write:
  - url: {rw}
    queue_config: {{batch_send_deadline: 100ms}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        list = list.join(", "),
    )
}

fn values(rx: &Receiver, name: &str, instance: &str) -> Vec<u64> {
    rx.accepted()
        .into_iter()
        .filter(|(l, _, _)| {
            l.iter().any(|(k, v)| k == "__name__" && v == name)
                && l.iter().any(|(k, v)| k == "instance" && v == instance)
        })
        .map(|(_, v, _)| v.to_bits())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removes_keeps_and_adds_targets() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "from_a 1\n".into()).await;
    let b = MtlsTarget::start(&pki, "from_b 2\n".into()).await;
    let c = MtlsTarget::start(&pki, "from_c 3\n".into()).await;
    let rx = Receiver::start().await;
    let relay = RelayProc::start(dir.path(), &config(&pki, &[&a, &b], &rx.url())).await;
    let (ia, ib, ic) = (a.addr.to_string(), b.addr.to_string(), c.addr.to_string());
    wait_for(Duration::from_secs(10), || {
        (!values(&rx, "from_a", &ia).is_empty() && !values(&rx, "from_b", &ib).is_empty())
            .then_some(())
    })
    .await
    .expect("both targets scraped");

    // Remove b, keep a, add c.
    std::fs::write(
        dir.path().join("relay.yml"),
        config(&pki, &[&a, &c], &rx.url()),
    )
    .unwrap();
    let (code, body) = http_post(&format!("{}/-/reload", relay.admin))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    wait_for(Duration::from_secs(10), || {
        values(&rx, "from_b", &ib).contains(&STALE).then_some(())
    })
    .await
    .expect("staleness marker for the removed target's series");
    wait_for(Duration::from_secs(10), || {
        (!values(&rx, "from_c", &ic).is_empty()).then_some(())
    })
    .await
    .expect("the new target is scraped");
    let before = values(&rx, "from_a", &ia).len();
    wait_for(Duration::from_secs(10), || {
        (values(&rx, "from_a", &ia).len() > before + 1).then_some(())
    })
    .await
    .expect("the kept target keeps being scraped");
    assert!(
        !values(&rx, "from_a", &ia).contains(&STALE),
        "no false staleness for a kept target"
    );
    let t = relay.targets().await;
    let urls: Vec<String> = t
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["instance"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(urls, vec![ia.clone(), ic.clone()]);
    let m = relay.metrics().await;
    assert!(m.contains("metrics_relay_config_last_reload_successful 1"));
    // The removed target leaves no series on /metrics; the others keep theirs.
    let of = |instance: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("metrics_relay_") && l.contains(&format!("instance=\"{instance}\""))
            })
            .count()
    };
    assert_eq!(of(&ib), 0, "series of the removed target b:\n{m}");
    assert!(of(&ia) >= 5 && of(&ic) >= 5, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_rejected_and_the_old_one_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "from_a 1\n".into()).await;
    let rx = Receiver::start().await;
    let relay = RelayProc::start(dir.path(), &config(&pki, &[&a], &rx.url())).await;
    let ia = a.addr.to_string();
    wait_for(Duration::from_secs(10), || {
        (!values(&rx, "from_a", &ia).is_empty()).then_some(())
    })
    .await
    .expect("scraped");

    std::fs::write(
        dir.path().join("relay.yml"),
        "scrape_configs: [{job_name: x, scrape_timeout: 5m}]\n",
    )
    .unwrap();
    let (code, body) = http_post(&format!("{}/-/reload", relay.admin))
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("scrape_configs[0].scrape_timeout"), "{body}");
    // A TLS file that does not load is rejected too.
    std::fs::write(
        dir.path().join("relay.yml"),
        config(&pki, &[&a], &rx.url()).replace("client.key", "missing.key"),
    )
    .unwrap();
    let (code, body) = http_post(&format!("{}/-/reload", relay.admin))
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("missing.key"), "{body}");
    assert!(
        relay
            .metrics()
            .await
            .contains("metrics_relay_config_last_reload_successful 0")
    );

    let before = values(&rx, "from_a", &ia).len();
    wait_for(Duration::from_secs(10), || {
        (values(&rx, "from_a", &ia).len() > before + 1).then_some(())
    })
    .await
    .expect("the old config keeps running");
    assert!(!values(&rx, "from_a", &ia).contains(&STALE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "from_a 1\n".into()).await;
    let b = MtlsTarget::start(&pki, "from_b 2\n".into()).await;
    let rx = Receiver::start().await;
    let relay = RelayProc::start(dir.path(), &config(&pki, &[&a], &rx.url())).await;
    std::fs::write(
        dir.path().join("relay.yml"),
        config(&pki, &[&a, &b], &rx.url()),
    )
    .unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &relay.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let ib = b.addr.to_string();
    wait_for(Duration::from_secs(10), || {
        (!values(&rx, "from_b", &ib).is_empty()).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("SIGHUP added the target; log:\n{}", relay.log()));
}
