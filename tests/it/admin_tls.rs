//! The admin server behind TLS with client certificates (issue 12, row 8's
//! "nobody let in"): tried as an outsider would try to get in, without a
//! certificate, with a certificate of another CA, over plain HTTP; the
//! probes still answer a kubelet that has no certificate; rotating the
//! server certificate needs no restart.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{MtlsTarget, Pki, Receiver, relay_bin, wait_for};
use metrics_relay::config::TlsConfig;

/// GET over HTTPS as a client with this CA and (maybe) this certificate:
/// Ok(status, body) or Err(the connection failed).
async fn get(url: &str, ca: &Path, cert: Option<(&Path, &Path)>) -> Result<(u16, String), String> {
    request(hyper::Method::GET, url, ca, cert).await
}

async fn request(
    method: hyper::Method,
    url: &str,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> Result<(u16, String), String> {
    let tls = TlsConfig {
        ca_file: Some(ca.to_path_buf()),
        cert_file: cert.map(|c| c.0.to_path_buf()),
        key_file: cert.map(|c| c.1.to_path_buf()),
        server_name: Some("localhost".into()),
        ..Default::default()
    };
    common::http_request(method, url, Some(&tls), Duration::from_secs(5)).await
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_server_lets_in_only_verified_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    // The server's own files, so that they can be rotated.
    let srv = dir.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    std::fs::copy(&pki.server_cert, srv.join("tls.crt")).unwrap();
    std::fs::copy(&pki.server_key, srv.join("tls.key")).unwrap();
    let target = MtlsTarget::start(&pki, "secret_metric 42\n".into()).await;
    let rx = Receiver::start().await;
    let cfg = format!(
        r#"
global: {{scrape_interval: 300ms, scrape_timeout: 300ms}}
scrape_configs:
  - job_name: cp
    scheme: https
    tls_config: {{ca_file: {ca}, cert_file: {cc}, key_file: {ck}, server_name: localhost}}
    static_configs: [{{targets: ["{t}"]}}]
remote_write:
  - url: {rw}
server:
  tls_server_config:
    cert_file: {srv}/tls.crt
    key_file: {srv}/tls.key
    client_ca_file: {ca}
    client_auth_type: VerifyClientCertIfGiven
  relay_metrics: true
"#,
        ca = pki.ca.display(),
        cc = pki.client_cert.display(),
        ck = pki.client_key.display(),
        t = target.addr,
        rw = rx.url(),
        srv = srv.display(),
    );
    let cfg_path = dir.path().join("relay.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let log = dir.path().join("relay.log");
    let mut relay = Proc(
        Command::new(relay_bin())
            .args(["run", "--config"])
            .arg(&cfg_path)
            .args([
                "--listen-address",
                "127.0.0.1:0",
                "--tls-reload-interval",
                "500ms",
                "--web.enable-lifecycle",
            ])
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = common::bound_address(&log, &mut relay.0, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&log).unwrap_or_default()));
    let base = format!("https://{addr}");
    let me = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let stranger = Some((
        pki.other_client_cert.as_path(),
        pki.other_client_key.as_path(),
    ));
    let mut ready = false;
    for _ in 0..100 {
        if let Ok((200, body)) = get(&format!("{base}/relay/metrics"), &pki.ca, me).await
            && body.contains("secret_metric")
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "a verified client reads /relay/metrics; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // A kubelet probe has no certificate: the probes answer, nothing else.
    for path in ["/healthz", "/readyz"] {
        let (code, _) = get(&format!("{base}{path}"), &pki.ca, None).await.unwrap();
        assert_eq!(code, 200, "{path}");
    }
    for path in [
        "/relay/metrics",
        "/metrics",
        "/targets",
        "/targets?format=json",
    ] {
        let (code, body) = get(&format!("{base}{path}"), &pki.ca, None).await.unwrap();
        assert_eq!(code, 403, "{path}: {body}");
        assert!(!body.contains("secret_metric"));
    }
    // A certificate from another CA does not get through the handshake.
    let e = get(&format!("{base}/relay/metrics"), &pki.ca, stranger).await;
    assert!(e.is_err(), "a stranger's certificate was accepted: {e:?}");
    // Plain HTTP gets nothing.
    let plain = common::http_get(&format!("http://{addr}/relay/metrics")).await;
    assert!(
        !matches!(&plain, Ok((200, b)) if b.contains("secret_metric")),
        "{plain:?}"
    );
    // Reload over the network: not without a certificate, even with the
    // lifecycle API on.
    let (code, _) = request(
        hyper::Method::POST,
        &format!("{base}/-/reload"),
        &pki.ca,
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 403);

    // Rotation: a new server certificate from a new CA, swapped in place.
    let new = Pki::new(&dir.path().join("pki2"));
    std::fs::copy(&new.server_cert, srv.join("tls.crt.tmp")).unwrap();
    std::fs::copy(&new.server_key, srv.join("tls.key")).unwrap();
    std::fs::rename(srv.join("tls.crt.tmp"), srv.join("tls.crt")).unwrap();
    let rotated = wait_for(Duration::from_secs(10), || {
        let h = tokio::runtime::Handle::current();
        let url = format!("{base}/healthz");
        let ca = new.ca.clone();
        std::thread::spawn(move || h.block_on(get(&url, &ca, None)))
            .join()
            .unwrap()
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .await;
    assert!(
        rotated.is_some(),
        "the new server certificate is served without a restart"
    );
    assert!(
        get(&format!("{base}/healthz"), &pki.ca, None)
            .await
            .is_err(),
        "the old certificate is gone"
    );
}
