//! Trust under fire, round 3: what a hostile neighbour, target or receiver
//! does to the newer surfaces (discovery files, duplicated targets, the
//! admin server behind client certificates, a receiver's reply), each tried
//! against the real binary the way the audit tried it, and each shown fixed.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{MtlsTarget, Pki, Receiver, RelayProc, memory_kib, metric_value, relay_bin, wait_for};

fn tls(pki: &Pki) -> String {
    format!(
        "{{ca_file: {}, cert_file: {}, key_file: {}, server_name: localhost}}",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    )
}

/// A 506-byte YAML "billion laughs": nine aliases of nine, eight deep.
fn billion_laughs() -> String {
    let mut doc = String::from(
        "- &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let (prev, name) = (w[0], w[1]);
        doc.push_str(&format!(
            "- &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    doc
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Waits for the process to exit; its exit code, or None after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Rows "billion laughs", "FIFO", "unbounded reads" and "skipped silently":
/// a watched directory gets every hostile file the audit used, one of them
/// (a FIFO) there from the start. The agent stays live and ready, keeps
/// scraping, reports every bad file (a warning, `sd_files_failing`), reads
/// none of them unbounded, and still stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_discovery_files_never_stop_freeze_or_bloat_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "good 1\n".into()).await;
    let rx = Receiver::start().await;
    let sd = dir.path().join("sd");
    let kc = dir.path().join("kc");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::create_dir_all(&kc).unwrap();
    // There before the agent starts: a FIFO whose open would block.
    let fifo = sd.join("pipe.json");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(
        sd.join("good.json"),
        format!(r#"[{{"targets": ["{}"]}}]"#, target.addr),
    )
    .unwrap();
    let cfg = format!(
        r#"
global: {{scrape_interval: 500ms, scrape_timeout: 500ms}}
scrape_configs:
  - job_name: files
    scheme: https
    tls_config: {tls}
    file_sd_configs: [{{files: ["sd/*.json", "sd/*.yml"]}}]
  - job_name: clusters
    tls_config: {{server_name: localhost}}
    kubeconfig_sd_configs: [{{files: ["kc/*"]}}]
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 100ms}}
"#,
        tls = tls(&pki),
        url = rx.url()
    );
    let mut relay = RelayProc::start(dir.path(), &cfg).await;
    let pid = relay.child.id();
    let ok = common::wait_async(Duration::from_secs(10), || async {
        matches!(
            common::http_get(&format!("{}/readyz", relay.admin)).await,
            Ok((200, _))
        )
    })
    .await;
    assert!(
        ok,
        "not ready with a FIFO in the watched directory:\n{}",
        relay.log()
    );

    // The rest arrive while it runs.
    std::fs::write(sd.join("laughs.yml"), billion_laughs()).unwrap();
    std::os::unix::fs::symlink(sd.join("loop-b.json"), sd.join("loop-a.json")).unwrap();
    std::os::unix::fs::symlink(sd.join("loop-a.json"), sd.join("loop-b.json")).unwrap();
    std::os::unix::fs::symlink(sd.join("nowhere"), sd.join("dangling.json")).unwrap();
    std::fs::create_dir(sd.join("dir.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", kc.join("zero")).unwrap();
    std::fs::write(
        kc.join("key-is-zero"),
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster: {{server: 'https://{}'}}\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\nusers:\n- name: u\n  user: {{client-certificate: {}, client-key: /dev/zero}}\n",
            target.addr,
            pki.client_cert.display()
        ),
    )
    .unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(kc.join("huge")).unwrap();
        let line = format!("# {}\n", "x".repeat(1021));
        for _ in 0..48 * 1024 {
            f.write_all(line.as_bytes()).unwrap();
        }
    }

    // Seven bad files reported (five file_sd, three kubeconfig_sd: the
    // FIFO, laughs, a loop pair, a dangling link, a directory; /dev/zero,
    // a key of /dev/zero, 48 MiB).
    let want_files = "metrics_relay_sd_files_failing{job=\"files\",mechanism=\"file\"} 6";
    let want_kc = "metrics_relay_sd_files_failing{job=\"clusters\",mechanism=\"kubeconfig\"} 3";
    let mut m = String::new();
    for _ in 0..100 {
        m = relay.metrics().await;
        if m.contains(want_files) && m.contains(want_kc) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(m.contains(want_files), "{m}\n{}", relay.log());
    assert!(m.contains(want_kc), "{m}\n{}", relay.log());
    let log = relay.log();
    for said in [
        "FIFO (named pipe), not a regular file",
        "excessive aliasing",
        "symbolic link loop",
        "dangling symbolic link",
        "is a directory, not a regular file",
        "is a character device, not a regular file",
        "larger than 16777216 bytes",
    ] {
        assert!(log.contains(said), "{said:?} not in the log:\n{log}");
    }

    // Still scraping, still live, and small: nothing was read unbounded.
    let before = rx
        .accepted()
        .iter()
        .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == "good"))
        .count();
    let more = wait_for(Duration::from_secs(10), || {
        let now = rx
            .accepted()
            .iter()
            .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == "good"))
            .count();
        (now >= before + 3).then_some(())
    })
    .await;
    assert!(more.is_some(), "scraping stopped:\n{}", relay.log());
    assert!(matches!(
        common::http_get(&format!("{}/healthz", relay.admin)).await,
        Ok((200, _))
    ));
    let (peak, _) = memory_kib(pid);
    assert!(
        peak < 200 << 10,
        "peak {} MiB: something was read unbounded",
        peak >> 10
    );

    // And SIGTERM still stops it.
    signal(pid, "TERM");
    assert_eq!(
        wait_exit(&mut relay.child, Duration::from_secs(10)),
        Some(0),
        "{}",
        relay.log()
    );
}

/// Scrapes per second of `target` over `window`: a measurement, the window
/// is the point (not a wait for something to happen).
async fn scrape_rate(target: &MtlsTarget, window: Duration) -> f64 {
    let n0 = target.requests.lock().unwrap().len();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    (target.requests.lock().unwrap().len() - n0) as f64 / t0.elapsed().as_secs_f64()
}

/// Row "the same target listed twice": twice in `static_configs`, and in
/// two file_sd files, then through reloads. Each target is scraped at its
/// interval, once (Prometheus merges identical targets); ten reloads add
/// no loop; when the files are emptied the discovered target stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_listed_twice_is_scraped_once_through_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let stat = MtlsTarget::start(&pki, "s 1\n".into()).await;
    let disc = MtlsTarget::start(&pki, "d 1\n".into()).await;
    let rx = Receiver::start().await;
    let sd = dir.path().join("sd");
    std::fs::create_dir_all(&sd).unwrap();
    for f in ["one.json", "two.json"] {
        std::fs::write(sd.join(f), format!(r#"[{{"targets": ["{}"]}}]"#, disc.addr)).unwrap();
    }
    let cfg = format!(
        r#"
global: {{scrape_interval: 250ms, scrape_timeout: 250ms}}
scrape_configs:
  - job_name: twice
    scheme: https
    tls_config: {tls}
    static_configs: [{{targets: ["{s}", "{s}"]}}, {{targets: ["{s}"]}}]
    file_sd_configs: [{{files: ["sd/*.json"]}}]
remote_write:
  - url: {url}
"#,
        tls = tls(&pki),
        s = stat.addr,
        url = rx.url()
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    let pid = relay.child.id();
    let started = wait_for(Duration::from_secs(10), || {
        (stat.requests.lock().unwrap().len() >= 4 && disc.requests.lock().unwrap().len() >= 4)
            .then_some(())
    })
    .await;
    assert!(started.is_some(), "{}", relay.log());
    // Four scrapes a second each (250 ms), once: two loops would be eight.
    let window = Duration::from_secs(4);
    let (rs, rd) = tokio::join!(scrape_rate(&stat, window), scrape_rate(&disc, window));
    assert!(
        (3.0..=5.5).contains(&rs),
        "static target: {rs:.2} scrapes/s"
    );
    assert!(
        (3.0..=5.5).contains(&rd),
        "discovered target: {rd:.2} scrapes/s"
    );

    // Ten reloads: still one loop each.
    for i in 1..=10 {
        signal(pid, "HUP");
        let reloaded = wait_for(Duration::from_secs(10), || {
            (relay.log().matches("config reloaded").count() >= i).then_some(())
        })
        .await;
        assert!(reloaded.is_some(), "reload {i}:\n{}", relay.log());
    }
    let (rs, rd) = tokio::join!(scrape_rate(&stat, window), scrape_rate(&disc, window));
    assert!(
        (3.0..=5.5).contains(&rs),
        "after reloads, static: {rs:.2} scrapes/s"
    );
    assert!(
        (3.0..=5.5).contains(&rd),
        "after reloads, discovered: {rd:.2} scrapes/s"
    );

    // The files emptied: the discovered target is gone, and its loop too.
    for f in ["one.json", "two.json"] {
        std::fs::write(sd.join(f), "[]").unwrap();
    }
    let gone = wait_for(Duration::from_secs(10), || {
        relay.log().contains("target removed").then_some(())
    })
    .await;
    assert!(gone.is_some(), "{}", relay.log());
    // The loop logs its removal after its last scrape: from then on,
    // nothing (watched for three seconds, twelve intervals).
    let after = disc.requests.lock().unwrap().len();
    let quiet = wait_for(Duration::from_secs(3), || {
        (disc.requests.lock().unwrap().len() > after).then_some(())
    })
    .await;
    assert!(
        quiet.is_none(),
        "a removed target is still scraped (an orphaned loop)"
    );
}

/// Starts the agent with an admin server behind TLS (so [`RelayProc`]'s
/// plain health check cannot be used); waits until it answers a client
/// with a certificate.
async fn start_tls_admin(dir: &Path, pki: &Pki, config: &str) -> (common::Reaped, String) {
    let cfg = dir.join("relay.yml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join("relay.log");
    let child = Command::new(relay_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--listen-address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = common::Reaped::new(child);
    let addr = common::bound_address(&log, child.child(), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&log).unwrap_or_default()));
    let url = format!("https://{addr}");
    let ok = wait_for_async(Duration::from_secs(10), || {
        let url = format!("{url}/healthz");
        async move { matches!(authenticated_get(&url, pki).await, Ok((200, _))) }
    })
    .await;
    assert!(ok, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    (child, url)
}

async fn wait_for_async<F, Fut>(limit: Duration, f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_async(limit, f).await
}

/// A GET with the client certificate of the test CA.
async fn authenticated_get(url: &str, pki: &Pki) -> Result<(u16, String), String> {
    let tls = metrics_relay::config::TlsConfig {
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        server_name: Some("localhost".into()),
        ..Default::default()
    };
    common::http_request(hyper::Method::GET, url, Some(&tls), Duration::from_secs(5)).await
}

/// Row "admin TLS, max_connections 16, 48 silent TCP connections": ten
/// times `max_connections` silent sockets are held open while a scraper
/// with a client certificate asks again and again; it gets every answer
/// (a connection counts only once its handshake is done, and silent ones
/// make room for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_clients_are_never_shut_out_by_silent_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let cfg = format!(
        r#"
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: cp
    scheme: https
    tls_config: {tls}
    static_configs: [{{targets: ["{t}"]}}]
server:
  max_connections: 16
  tls_server_config:
    cert_file: {cert}
    key_file: {key}
    client_ca_file: {ca}
    client_auth_type: RequireAndVerifyClientCert
"#,
        tls = tls(&pki),
        t = target.addr,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        ca = pki.ca.display(),
    );
    let (_relay, url) = start_tls_admin(dir.path(), &pki, &cfg).await;
    let addr = url.trim_start_matches("https://").to_string();
    let mut silent = Vec::new();
    for _ in 0..160 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let mut answered = 0;
    for i in 0..28 {
        match authenticated_get(&format!("{url}/metrics"), &pki).await {
            Ok((200, body)) if body.contains("metrics_relay_build_info") => answered += 1,
            other => panic!("request {i} with 160 silent sockets open: {other:?}"),
        }
    }
    assert_eq!(answered, 28);
    // And without a certificate, nothing but the refusal.
    let no_cert = metrics_relay::config::TlsConfig {
        ca_file: Some(pki.ca.clone()),
        server_name: Some("localhost".into()),
        ..Default::default()
    };
    let r = common::http_request(
        hyper::Method::GET,
        &format!("{url}/metrics"),
        Some(&no_cert),
        Duration::from_secs(5),
    )
    .await;
    assert!(r.is_err() || matches!(r, Ok((403, _))), "{r:?}");
    drop(silent);
}

/// A receiver that answers every write with 200 and a body of `size`
/// bytes, sent as fast as the agent reads it; counts the requests.
async fn chatty_receiver(size: u64) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let c = c.clone();
            tokio::spawn(async move {
                loop {
                    // The request: headers, then Content-Length bytes.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tcp.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if tcp.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
                    if tcp.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'z'; 1 << 20];
                    let mut left = size;
                    while left > 0 {
                        let n = left.min(chunk.len() as u64) as usize;
                        if tcp.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/api/v1/write"), count)
}

/// Row "receiver answers 200 with a 256 MiB body": the agent reads at most
/// a KiB of any answer and drops the rest, so delivery goes on and its
/// memory does not follow the receiver's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_reply_costs_the_agent_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let (url, count) = chatty_receiver(256 << 20).await;
    let cfg = format!(
        r#"
global: {{scrape_interval: 300ms, scrape_timeout: 300ms}}
scrape_configs:
  - job_name: cp
    scheme: https
    tls_config: {tls}
    static_configs: [{{targets: ["{t}"]}}]
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 100ms}}
"#,
        tls = tls(&pki),
        t = target.addr,
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    let sent = wait_for(Duration::from_secs(20), || {
        (count.load(std::sync::atomic::Ordering::SeqCst) >= 5).then_some(())
    })
    .await;
    assert!(sent.is_some(), "{}", relay.log());
    let m = relay.metrics().await;
    assert!(
        metric_value(&m, "metrics_relay_remote_write_samples_sent_total{").unwrap_or(0.0) >= 5.0,
        "{m}"
    );
    let (peak, _) = memory_kib(relay.child.id());
    assert!(
        peak < 100 << 10,
        "peak {} MiB after five 256 MiB replies",
        peak >> 10
    );
}

/// Row "wall clock jumps +3 h and back": the agent runs under libfaketime,
/// its wall clock stepped three hours ahead while batches wait for a
/// receiver that is down, then back. `/healthz` never fails and no batch is
/// dropped as too old: liveness and ages run on the monotonic clock, which
/// the step does not touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_changes_no_age_and_fails_no_probe() {
    let lib = Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1");
    assert!(
        lib.exists(),
        "libfaketime is missing: apt-get install faketime (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let rx = Receiver::start().await;
    // Down (429, retried) until told otherwise.
    *rx.throttle_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3600));
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let cfg = format!(
        r#"
global: {{scrape_interval: 500ms, scrape_timeout: 500ms}}
scrape_configs:
  - job_name: cp
    scheme: https
    tls_config: {tls}
    static_configs: [{{targets: ["{t}"]}}]
remote_write:
  - url: {url}
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}
    queue: {{max_age: 1h}}
"#,
        tls = tls(&pki),
        t = target.addr,
        url = rx.url(),
    );
    let relay = RelayProc::start_with_env(
        dir.path(),
        &cfg,
        true,
        &[
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await;
    let queued =
        |m: &str| metric_value(m, "metrics_relay_remote_write_queue_samples{").unwrap_or(0.0);
    let mut m = String::new();
    for _ in 0..100 {
        m = relay.metrics().await;
        if queued(&m) >= 6.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(queued(&m) >= 6.0, "{m}");
    // The step: three hours ahead.
    std::fs::write(&offset, "+3h\n").unwrap();
    let step = Instant::now();
    while step.elapsed() < Duration::from_secs(4) {
        let h = common::http_get(&format!("{}/healthz", relay.admin)).await;
        assert!(matches!(h, Ok((200, _))), "{h:?} after the step");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m = relay.metrics().await;
    assert!(
        !m.contains("reason=\"max_age\""),
        "a fresh batch dropped as old:\n{m}"
    );
    // And back; the receiver returns: everything queued arrives.
    std::fs::write(&offset, "+0\n").unwrap();
    *rx.throttle_until.lock().unwrap() = None;
    let drained = wait_for(Duration::from_secs(20), || {
        (rx.accepted()
            .iter()
            .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == "m"))
            .count()
            >= 6)
            .then_some(())
    })
    .await;
    let m = relay.metrics().await;
    assert!(drained.is_some(), "{m}\n{}", relay.log());
    assert!(!m.contains("reason=\"max_age\""), "{m}");
}

/// Plain-HTTP targets on `n` ports of their own, all serving `page`;
/// returns their addresses and a count of requests per target.
async fn page_targets(
    n: usize,
    page: bytes::Bytes,
) -> (
    Vec<String>,
    std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>>,
) {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let counts: std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>> =
        std::sync::Arc::new((0..n).map(|_| Default::default()).collect());
    let mut addrs = Vec::new();
    for i in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap().to_string());
        let (page, counts) = (page.clone(), counts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (page, counts) = (page.clone(), counts.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        counts[i].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let page = page.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(page)))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    }
    (addrs, counts)
}

/// Row "500 targets × 10 MB pages, held for good": at hundreds of targets
/// with pages large enough to be kept compressed, the agent's memory between
/// scrapes follows the README's formula — a base, plus per target what its
/// last page compresses to and 12 bytes a series, plus the two scrape
/// buffer pools — and is not a worst-case compression buffer per target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_follows_the_formula_at_hundreds_of_targets() {
    // This process holds a listener and a connection per target.
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    );
    const TARGETS: usize = 200;
    // ~1.4 MiB a page, past the 1 MiB kept plain: each is kept compressed.
    // Few series with long label values (an annotation, a URL): the page's
    // bytes are what the formula is about, and a debug-built agent parses
    // 200 of them every interval without falling behind.
    let mut page = String::new();
    let mut series = 0;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    page.push_str("# TYPE kube_resource_info gauge\n");
    while page.len() < 1_450_000 {
        let mut desc = String::new();
        while desc.len() < 2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let words = [
                "pod",
                "node",
                "deployment",
                "replicaset",
                "namespace",
                "kube-system",
                "monitoring",
                "ready",
                "running",
            ];
            desc.push_str(words[(x % 9) as usize]);
            desc.push_str(&format!("-{} ", x % 1000));
        }
        page.push_str(&format!(
            "kube_resource_info{{uid=\"{:016x}\",description=\"{desc}\"}} 1\n",
            x
        ));
        series += 1;
    }
    let series_count = series;
    let page_len = page.len();
    let compressed = snap::raw::Encoder::new()
        .compress_vec(page.as_bytes())
        .unwrap()
        .len();
    let (addrs, counts) = page_targets(TARGETS, bytes::Bytes::from(page)).await;
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let targets: Vec<String> = addrs.iter().map(|a| format!("'{a}'")).collect();
    let cfg = format!(
        r#"
global: {{scrape_interval: 10s, scrape_timeout: 10s}}
scrape_configs:
  - job_name: wide
    static_configs: [{{targets: [{t}]}}]
remote_write:
  - url: {url}
"#,
        t = targets.join(", "),
        url = rx.url()
    );
    // The shipped image is static (musl), whose allocator returns every
    // large buffer to the system when it is freed; glibc, which this test
    // binary uses, does so only below a threshold it raises as it goes,
    // keeping freed buffers of one scrape resident. Fixed at musl's
    // threshold, RSS shows what the agent holds, as in the image.
    let relay = RelayProc::start_with_env(
        dir.path(),
        &cfg,
        false,
        &[("MALLOC_MMAP_THRESHOLD_", "131072")],
    )
    .await;
    let pid = relay.child.id();
    let (base, _) = memory_kib(pid);
    // Two rounds of every target: its last page is kept.
    let done = wait_for(Duration::from_secs(90), || {
        counts
            .iter()
            .all(|c| c.load(std::sync::atomic::Ordering::SeqCst) >= 2)
            .then_some(())
    })
    .await;
    assert!(done.is_some(), "{}", relay.log());
    // What the agent holds between scrapes: RSS less what the scrapes under
    // way at that moment hold (~2.5 pages each: the README's term for them,
    // with the agent's own gauge of how many there are), the least over a
    // few seconds.
    let in_flight_each = 5 * page_len / 2;
    let mut held = u64::MAX;
    let mut in_progress_seen = 0.0f64;
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(4) {
        let n = metric_value(&relay.metrics().await, "metrics_relay_scrapes_in_progress")
            .unwrap_or(0.0);
        let (_, rss) = memory_kib(pid);
        in_progress_seen = in_progress_seen.max(n);
        held = held.min(rss.saturating_sub((n as u64 * in_flight_each as u64) >> 10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss = held;
    let (peak, _) = memory_kib(pid);
    // The formula (README, "Memory"), in KiB: the base, per target its kept
    // page, 12 bytes a series and ~50 KiB of its own, the two buffer pools
    // (at most 32 MiB each).
    let kept = (TARGETS * (compressed + 12 * (series_count + 5) + (50 << 10))) >> 10;
    let pools = (2 * (32 << 20)) >> 10;
    let formula = base as usize + kept + pools;
    eprintln!(
        "{TARGETS} targets x {} KiB pages ({} KiB compressed, {series_count} series): base {} MiB, held {} MiB (up to {in_progress_seen} scrapes under way), peak {} MiB, formula {} MiB",
        page_len >> 10,
        compressed >> 10,
        base >> 10,
        rss >> 10,
        peak >> 10,
        formula >> 10
    );
    assert!(
        (rss as usize) <= formula + formula / 10,
        "held {} MiB, over the formula's {} MiB (+10%)",
        rss >> 10,
        formula >> 10
    );
    // Far below what the agent held before: every page kept whole (pages
    // under 8 MiB were), or a worst-case compression buffer per target (1.17
    // x the page, for pages over 8 MiB).
    let whole = base as usize + pools + ((TARGETS * page_len) >> 10);
    assert!(
        (rss as usize) < whole * 3 / 4,
        "held {} MiB: the pages are kept whole ({} MiB)",
        rss >> 10,
        whole >> 10
    );
}
