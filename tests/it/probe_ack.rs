//! `probe` knows ACK's pitfalls (issue 25): an API server port that never
//! answers a connection (the SLB's access control list), a server
//! certificate from another cluster's CA of the same name, and two API
//! server replicas behind one address (counters that go backwards). Each is
//! made for real on loopback and the probe's words are checked.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{MtlsTarget, Pki, relay_bin};

fn probe(dir: &Path, scrape: &str) -> (i32, String) {
    let cfg = dir.join("probe.yml");
    std::fs::write(&cfg, format!("scrape_configs:\n  - {scrape}\n")).unwrap();
    let out = Command::new(relay_bin())
        .args(["probe", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn tls(ca: &Path, pki: &Pki) -> String {
    format!(
        "tls_config: {{ca_file: {}, cert_file: {}, key_file: {}, server_name: kubernetes}}",
        ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_says_another_clusters_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    // Another cluster: a CA of the same name, another key.
    let other = Pki::new(&dir.path().join("other"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let scrape = format!(
        "{{job_name: ack, scheme: https, {}, static_configs: [{{targets: ['{}']}}]}}",
        tls(&other.ca, &pki),
        target.addr
    );
    let d = dir.path().to_path_buf();
    let (code, out) = tokio::task::spawn_blocking(move || probe(&d, &scrape))
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("TLS handshake: FAILED"), "{out}");
    assert!(out.contains("this is another cluster's CA"), "{out}");
    assert!(
        out.contains("wrong SLB IP, or another cluster's kubeconfig"),
        "{out}"
    );
}

/// An SLB drops the SYNs of an address its access control list does not
/// allow: made here with a listener whose accept queue is full (Linux then
/// drops new SYNs), on the API server's port.
#[test]
fn probe_points_at_the_slb_access_control_list_when_6443_never_answers() {
    use rustix::net::{AddressFamily, SocketType, bind, ipproto, listen, socket};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 7), 6443);
    let fd = socket(AddressFamily::INET, SocketType::STREAM, Some(ipproto::TCP)).unwrap();
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true).unwrap();
    bind(&fd, &addr).unwrap();
    listen(&fd, 0).unwrap();
    // Fill the accept queue until a connection attempt goes unanswered.
    let mut held = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr.into(), Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                full = true;
                break;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    assert!(
        full,
        "the accept queue never filled ({} connections)",
        held.len()
    );
    let (code, out) = probe(
        dir.path(),
        &format!(
            "{{job_name: ack, scheme: https, scrape_timeout: 1s, scrape_interval: 5s, {}, static_configs: [{{targets: ['{addr}']}}]}}",
            tls(&pki.ca, &pki)
        ),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no TCP connection to 127.0.0.7:6443 within 1s"),
        "{out}"
    );
    assert!(out.contains("access control list"), "{out}");
    drop(held);
    drop(fd);
}

/// Two API servers behind one address: a TCP balancer on loopback that
/// sends each new connection to the next of two targets, whose counters
/// differ (two processes, each counting its own requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_detects_two_api_servers_behind_one_address() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let page = |n: u64| {
        format!(
            "# TYPE apiserver_request_total counter\napiserver_request_total{{code=\"200\",verb=\"GET\"}} {n}\n# TYPE go_goroutines gauge\ngo_goroutines 100\n"
        )
    };
    let a = MtlsTarget::start(&pki, page(5000)).await;
    let b = MtlsTarget::start(&pki, page(4000)).await;
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb_addr = lb.local_addr().unwrap();
    let backends = [a.addr, b.addr];
    let next = Arc::new(AtomicUsize::new(0));
    let balancer = tokio::spawn(async move {
        while let Ok((mut conn, _)) = lb.accept().await {
            let to = backends[next.fetch_add(1, Ordering::Relaxed) % 2];
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                }
            });
        }
    });
    let scrape = format!(
        "{{job_name: ack, scheme: https, {}, static_configs: [{{targets: ['{lb_addr}']}}]}}",
        tls(&pki.ca, &pki)
    );
    let d = dir.path().to_path_buf();
    let s = scrape.clone();
    let (code, out) = tokio::task::spawn_blocking(move || probe(&d, &s))
        .await
        .unwrap();
    assert!(
        out.contains("replicas: WARNING: counters went backwards"),
        "{out}"
    );
    assert!(
        out.contains("apiserver_request_total{code=\"200\",verb=\"GET\"} 5000 -> 4000"),
        "{out}"
    );
    assert!(
        out.contains("kubectl get endpoints kubernetes -n default"),
        "{out}"
    );
    assert_eq!(code, 0, "a warning, not a failure: {out}");
    // One process behind the address: no warning.
    let scrape = format!(
        "{{job_name: ack, scheme: https, {}, static_configs: [{{targets: ['{}']}}]}}",
        tls(&pki.ca, &pki),
        a.addr
    );
    let d = dir.path().to_path_buf();
    let (code, out) = tokio::task::spawn_blocking(move || probe(&d, &scrape))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("replicas"), "{out}");
    balancer.abort();
}
