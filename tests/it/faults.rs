//! Faults and hostile input (issue 12), each injected for real against the
//! binary: a reload that cannot open its queue, two agents on one queue
//! directory, bytes flipped in a queue segment, a receiver that accepts and
//! never answers, credentials in a remote-write URL, the lifecycle endpoint.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    MtlsTarget, Pki, Receiver, RelayProc, http_get, http_post, memory_kib, relay_bin, wait_for,
};

fn tls(pki: &Pki) -> String {
    format!(
        "{{ca_file: {}, cert_file: {}, key_file: {}, server_name: localhost}}",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    )
}

fn config(pki: &Pki, targets: &[&MtlsTarget], interval: &str, remote: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{}\"", t.addr)).collect();
    format!(
        r#"
global: {{scrape_interval: {interval}, scrape_timeout: {interval}}}
scrape_configs:
  - job_name: cp
    scheme: https
    tls_config: {tls}
    static_configs: [{{targets: [{list}]}}]
remote_write:
{remote}
"#,
        tls = tls(pki),
        list = list.join(", "),
    )
}

/// A temporary directory, certificates in it, and a target whose
/// `fault_counter` counts its scrapes (1, 2, 3, ...).
async fn counter_target() -> (tempfile::TempDir, Pki, MtlsTarget) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let t = MtlsTarget::start(&pki, String::new()).await;
    t.behavior.lock().unwrap().counter = Some("fault_counter".into());
    (dir, pki, t)
}

fn counter_values(rx: &Receiver, name: &str) -> Vec<u64> {
    let mut v: Vec<u64> = rx
        .accepted()
        .into_iter()
        .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == name))
        .map(|(_, v, _)| v as u64)
        .collect();
    v.sort_unstable();
    v
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// Row 1: a reload whose new queue cannot be created is refused and changes
/// nothing; SIGTERM afterwards still exits within the grace period; a later
/// good reload that changes the destination takes its queue over without
/// opening it twice (no duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reload_changes_nothing_and_sigterm_still_exits() {
    let (dir, pki, a) = counter_target().await;
    let b = MtlsTarget::start(&pki, "from_b 1\n".into()).await;
    let rx = Receiver::start().await;
    let rw = format!(
        "  - url: {}\n    queue_config: {{batch_send_deadline: 100ms}}\n",
        rx.url()
    );
    let mut relay = RelayProc::start(dir.path(), &config(&pki, &[&a], "300ms", &rw)).await;
    wait_for(Duration::from_secs(10), || {
        (!counter_values(&rx, "fault_counter").is_empty()).then_some(())
    })
    .await
    .expect("first samples");

    // A regular file where a directory is needed: not creatable, even as root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let bad = format!(
        "{rw}    headers: {{X-Changed: yes}}\n  - url: {}\n    name: second\n    queue: {{path: {}}}\n",
        rx.url(),
        blocker.join("queue").display()
    );
    std::fs::write(
        dir.path().join("relay.yml"),
        config(&pki, &[&a, &b], "300ms", &bad),
    )
    .unwrap();
    let (code, body) = http_post(&format!("{}/-/reload", relay.admin))
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("remote_write[1].queue"), "{body}");
    let m = relay.metrics().await;
    assert!(
        m.contains("metrics_relay_config_last_reload_successful 0"),
        "{m}"
    );
    // Nothing changed: the old destination still delivers (five more
    // scrapes of the old target), and meanwhile the new target is not
    // scraped.
    let before = counter_values(&rx, "fault_counter").len();
    let delivered = wait_for(Duration::from_secs(15), || {
        (counter_values(&rx, "fault_counter").len() >= before + 5).then_some(())
    })
    .await;
    assert!(delivered.is_some(), "old destination stopped");
    assert!(
        b.requests.lock().unwrap().is_empty(),
        "new target started by a failed reload"
    );

    // A good reload that changes the destination (new header): its queue is
    // handed over, not opened a second time.
    let good = format!("{rw}    headers: {{X-Changed: yes}}\n");
    std::fs::write(
        dir.path().join("relay.yml"),
        config(&pki, &[&a, &b], "300ms", &good),
    )
    .unwrap();
    let (code, body) = http_post(&format!("{}/-/reload", relay.admin))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}\n{}", relay.log());
    wait_for(Duration::from_secs(10), || {
        rx.received
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.headers.contains_key("x-changed"))
            .then_some(())
    })
    .await
    .expect("the changed destination sends");

    let t0 = Instant::now();
    let code = relay.terminate();
    assert_eq!(code, Some(0), "no clean exit; log:\n{}", relay.log());
    eprintln!(
        "SIGTERM after a failed and a good reload: exit 0 in {:?}",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    // Every sample arrived once.
    let mut seen = std::collections::HashSet::new();
    for (l, _, ts) in rx.accepted() {
        assert!(seen.insert((l.clone(), ts)), "duplicate sample {l:?} @{ts}");
    }
}

/// Two agents on one queue directory: the second is refused at start with a
/// message that says why; the first is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_queue_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "x 1\n".into()).await;
    let rx = Receiver::start().await;
    let rw = format!("  - url: {}\n", rx.url());
    let cfg = config(&pki, &[&a], "1s", &rw);
    let first = RelayProc::start(dir.path(), &cfg).await;
    let out = Command::new(relay_bin())
        .args(["run", "--config"])
        .arg(dir.path().join("relay.yml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-address", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another metrics-relay"), "{err}");
    assert!(matches!(
        http_get(&format!("{}/healthz", first.admin)).await,
        Ok((200, _))
    ));
}

/// The record layout of `src/remote_write/disk.rs`: (offset, length) of each
/// record in a segment.
fn records(seg: &[u8]) -> Vec<(usize, usize)> {
    assert_eq!(&seg[..8], b"MRQSEG3\n", "segment header (version 3)");
    let mut out = Vec::new();
    let mut off = 8;
    while off + 12 <= seg.len() {
        let len = u32::from_le_bytes(seg[off + 4..off + 8].try_into().unwrap()) as usize;
        out.push((off, 12 + len));
        off += 12 + len;
    }
    out
}

fn segments(queue: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(queue)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Row 4: four bytes flipped in the middle of a queue segment cost the one
/// damaged scrape, counted under a reason of its own; every other queued
/// scrape is delivered after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_in_the_queue_cost_only_the_damaged_record() {
    let (dir, pki, a) = counter_target().await;
    let rx = Receiver::start().await;
    // The receiver is "down" (429 with Retry-After) while scrapes queue up.
    *rx.throttle_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3600));
    let rw = format!(
        "  - url: {}\n    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}\n",
        rx.url()
    );
    let cfg = config(&pki, &[&a], "200ms", &rw);
    let mut relay = RelayProc::start(dir.path(), &cfg).await;
    let queue = dir.path().join("data/queue/rw0");
    wait_for(Duration::from_secs(20), || {
        let s = segments(&queue);
        let n = s.last().map(|p| records(&std::fs::read(p).unwrap()).len());
        n.is_some_and(|n| n >= 20).then_some(())
    })
    .await
    .expect("20 queued scrapes");
    // kill -9: nothing acknowledged, everything stays on disk.
    let _ = relay.child.kill();
    let _ = relay.child.wait();
    let served = a.requests.lock().unwrap().len() as u64;
    let seg = segments(&queue).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let recs = records(&data);
    let (off, len) = recs[10];
    let at = off + len / 2;
    for byte in &mut data[at..at + 4] {
        *byte ^= 0xa5;
    }
    std::fs::write(&seg, &data).unwrap();
    // Which counter value that record held (one scrape per record).
    let queued = recs.len() as u64;

    *rx.throttle_until.lock().unwrap() = None;
    let relay = RelayProc::start(dir.path(), &cfg).await;
    let values = wait_for(Duration::from_secs(30), || {
        let v = counter_values(&rx, "fault_counter");
        v.iter().any(|&x| x > served + 2).then_some(v)
    })
    .await
    .unwrap_or_else(|| panic!("no delivery after restart; log:\n{}", relay.log()));
    let missing: Vec<u64> = (1..=served).filter(|n| !values.contains(n)).collect();
    eprintln!("flipped bytes: lost scrapes {missing:?} of {queued} queued");
    assert_eq!(
        missing.len(),
        1,
        "lost {missing:?} of {queued} queued scrapes"
    );
    let m = relay.metrics().await;
    let lost = m
        .lines()
        .find(|l| {
            l.starts_with("metrics_relay_remote_write_samples_dropped_total{")
                && l.contains("reason=\"corrupt_record\"")
        })
        .unwrap_or_else(|| panic!("no corrupt_record count:\n{m}"));
    // The counter and the five synthetic series of that scrape.
    assert!(lost.ends_with(" 6"), "{lost}");
    assert!(
        !m.contains("reason=\"torn_tail\"} 1"),
        "taken for a torn tail:\n{m}"
    );
}

/// Row 6: a receiver that accepts and never answers, `queue.max_size:
/// 1MiB`: the queue directory stays within the budget, the oldest data is
/// dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_keeps_the_queue_within_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    // 20,000 series with changing values: ~100 KiB per scrape on disk.
    let body: String = (0..20_000)
        .map(|i| format!("hang_series{{i=\"{i}\"}} {}\n", i * 7919 % 100_003))
        .collect();
    let a = MtlsTarget::start(&pki, body).await;
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = sink.accept().await {
            h.lock().unwrap().push(s);
        }
    });
    let rw = format!(
        "  - url: http://{sink_addr}/api/v1/write\n    remote_timeout: 1s\n    queue: {{max_size: 1MiB}}\n"
    );
    let relay = RelayProc::start(dir.path(), &config(&pki, &[&a], "100ms", &rw)).await;
    let queue = dir.path().join("data/queue/rw0");
    let mut peak = 0;
    let end = Instant::now() + Duration::from_secs(12);
    while Instant::now() < end {
        peak = peak.max(dir_bytes(&queue));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = relay.metrics().await;
    let dropped = common::metric_value(
        &m,
        "metrics_relay_remote_write_samples_dropped_total{remote_name=\"rw0\"",
    );
    assert!(
        m.lines()
            .any(|l| l.contains("samples_dropped_total") && l.contains("max_size")),
        "nothing dropped for max_size (was enough written?):\n{m}"
    );
    assert!(dropped.unwrap_or(0.0) > 0.0, "{m}");
    // The budget plus one record at most (ack and lock files are tiny).
    eprintln!(
        "hanging receiver, max_size 1MiB: queue directory peak {peak} bytes; dropped for max_size: {dropped:?} samples"
    );
    assert!(
        peak <= (1 << 20) + (200 << 10),
        "queue directory reached {peak} bytes"
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "the receiver was never reached"
    );
}

/// Row 9: credentials in the URL are sent as basic auth and appear on no
/// surface: not in `/metrics`, `/targets`, the log, `check` or `probe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_credentials_are_used_and_never_shown() {
    const CANARY: &str = "Canary-Pw-7f3a";
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "x 1\n".into()).await;
    let rx = Receiver::start().await;
    let url = format!("http://relay-user:{CANARY}@{}/api/v1/write", rx.addr);
    let rw = format!("  - url: {url}\n    queue_config: {{batch_send_deadline: 100ms}}\n");
    let relay = RelayProc::start(dir.path(), &config(&pki, &[&a], "300ms", &rw)).await;
    let auth = wait_for(Duration::from_secs(10), || {
        rx.received
            .lock()
            .unwrap()
            .first()
            .and_then(|r| r.headers.get("authorization").cloned())
    })
    .await
    .expect("a request with Authorization");
    let want = format!(
        "Basic {}",
        metrics_relay::base64_encode(format!("relay-user:{CANARY}").as_bytes())
    );
    assert_eq!(auth.to_str().unwrap(), want);
    let mut surfaces = vec![
        ("/metrics", relay.metrics().await),
        ("/targets", relay.targets().await.to_string()),
        ("log", relay.log()),
    ];
    let cfg = dir.path().join("relay.yml");
    for cmd in ["check", "probe"] {
        let out = Command::new(relay_bin())
            .args([cmd, "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        surfaces.push((
            cmd,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    for (name, text) in &surfaces {
        assert!(!text.contains(CANARY), "{name} shows the password:\n{text}");
        assert!(!text.is_empty(), "{name} is empty");
    }
    assert!(
        surfaces[0]
            .1
            .contains(&format!("url=\"http://{}/api/v1/write\"", rx.addr))
    );
}

/// Row 8: `POST /-/reload` is refused unless `--web.enable-lifecycle`; SIGHUP
/// reloads either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_over_http_needs_the_lifecycle_flag() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "x 1\n".into()).await;
    let b = MtlsTarget::start(&pki, "y 1\n".into()).await;
    let rx = Receiver::start().await;
    let rw = format!("  - url: {}\n", rx.url());
    let cfg = dir.path().join("relay.yml");
    std::fs::write(&cfg, config(&pki, &[&a], "300ms", &rw)).unwrap();
    let log = dir.path().join("relay.log");
    let mut child = common::Reaped::new(
        Command::new(relay_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--listen-address", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let admin = format!(
        "http://{}",
        common::bound_address(&log, child.child(), Duration::from_secs(10)).expect("started")
    );
    let mut up = false;
    for _ in 0..100 {
        if matches!(http_get(&format!("{admin}/healthz")).await, Ok((200, _))) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up);
    std::fs::write(&cfg, config(&pki, &[&a, &b], "300ms", &rw)).unwrap();
    let mut refused = 0;
    for _ in 0..20 {
        let (code, body) = http_post(&format!("{admin}/-/reload")).await.unwrap();
        assert_eq!(code, 403, "{body}");
        refused += 1;
    }
    assert_eq!(refused, 20);
    eprintln!("POST /-/reload without --web.enable-lifecycle: 403 for {refused} of 20");
    // Three more scrapes of the old target, and none of the new one.
    let seen = a.requests.lock().unwrap().len();
    wait_for(Duration::from_secs(10), || {
        (a.requests.lock().unwrap().len() >= seen + 3).then_some(())
    })
    .await
    .expect("the old target is scraped");
    assert!(b.requests.lock().unwrap().is_empty(), "reloaded over HTTP");
    signal(child.child().id(), "-HUP");
    wait_for(Duration::from_secs(10), || {
        (!b.requests.lock().unwrap().is_empty()).then_some(())
    })
    .await
    .expect("SIGHUP reloads");
    signal(child.child().id(), "-TERM");
    assert!(wait_exit(child.child(), Duration::from_secs(15)).is_some());
}

/// `n` gzip members of 16 MiB of zeros each (RFC 1952 allows members in a
/// row): a bomb of n × 16 MiB from a few hundred KiB, made in a blink.
fn gzip_bomb(members: usize) -> bytes::Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..16 {
        enc.write_all(&zeros).unwrap();
    }
    let one = enc.finish().unwrap();
    bytes::Bytes::from(one.repeat(members))
}

/// Row 2: a gzip bomb costs memory in proportion to `body_size_limit`
/// (checked while inflating, never by doubling past it), and the memory is
/// given back after the scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_bounded_by_the_limit_and_memory_is_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "normal 1\n".into()).await;
    // 1 GiB of zeros in ~1 MiB.
    a.behavior.lock().unwrap().gzipped = Some(gzip_bomb(64));
    let rx = Receiver::start().await;
    let rw = format!(
        "  - url: {}\n    queue_config: {{batch_send_deadline: 100ms}}\n",
        rx.url()
    );
    let cfg = config(&pki, &[&a], "500ms", &rw).replace(
        "    static_configs:",
        "    body_size_limit: 64MiB\n    static_configs:",
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    let pid = relay.child.id();
    wait_for(Duration::from_secs(20), || {
        (a.requests.lock().unwrap().len() >= 3).then_some(())
    })
    .await
    .expect("scraped");
    let msg = relay.last_error(0).await;
    assert!(msg.contains("limit"), "{msg}");
    let (peak, _) = memory_kib(pid);
    // Back to a normal page: the buffers the bomb grew are given back.
    a.behavior.lock().unwrap().gzipped = None;
    let seen = a.requests.lock().unwrap().len();
    wait_for(Duration::from_secs(10), || {
        (a.requests.lock().unwrap().len() >= seen + 3).then_some(())
    })
    .await
    .unwrap();
    let (_, after) = memory_kib(pid);
    eprintln!(
        "gzip bomb (1 GiB, limit 64 MiB): peak {} MiB, after {} MiB",
        peak >> 10,
        after >> 10
    );
    // About one limit on top of the agent's own ~15 MiB (was 247 MiB with
    // this limit, 1015 MiB with the default).
    assert!(peak < 110 << 10, "bomb peak {peak} KiB");
    assert!(after < 40 << 10, "kept {after} KiB after the bomb");
    let m = relay.metrics().await;
    assert!(m.contains("reason=\"body_size_limit\""), "{m}");
}

/// Row 3: one 200 MiB line, under the default limit, is accepted; the memory
/// it needed is given back afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_line_is_accepted_and_memory_is_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "normal 1\n".into()).await;
    let rx = Receiver::start().await;
    let rw = format!(
        "  - url: {}\n    queue_config: {{batch_send_deadline: 100ms}}\n",
        rx.url()
    );
    let relay = RelayProc::start(dir.path(), &config(&pki, &[&a], "3s", &rw)).await;
    let pid = relay.child.id();
    let (base, _) = memory_kib(pid);
    let line = 200usize << 20;
    a.set_body(format!("huge{{v=\"{}\"}} 1\n", "x".repeat(line)));
    let accepted = wait_for(Duration::from_secs(60), || {
        rx.accepted()
            .iter()
            .any(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == "huge"))
            .then_some(())
    })
    .await;
    assert!(
        accepted.is_some(),
        "the huge line was not delivered: {}",
        relay.last_error(0).await
    );
    let (peak, _) = memory_kib(pid);
    a.set_body("normal 1\n".into());
    let seen = a.requests.lock().unwrap().len();
    wait_for(Duration::from_secs(20), || {
        (a.requests.lock().unwrap().len() >= seen + 2).then_some(())
    })
    .await
    .unwrap();
    // The buffers are given back at the end of the scrape that follows.
    // What may stay: glibc raises its mmap threshold to the size of a freed
    // mmapped block (at most 32 MiB), so up to that much freed memory can
    // sit in its arenas afterwards; anything of the 200 MiB page would be
    // far above it.
    let keep_max = (base + (32 << 10)).max(40 << 10);
    let after = wait_for(Duration::from_secs(10), || {
        let now = memory_kib(pid).1;
        (now < keep_max).then_some(now)
    })
    .await
    .unwrap_or_else(|| memory_kib(pid).1);
    eprintln!(
        "200 MiB line (default limit 256 MiB): base {} MiB, peak {} MiB, after {} MiB",
        base >> 10,
        peak >> 10,
        after >> 10
    );
    // The body and its encoded sample, both needed at once, and what the
    // line compresses to (the kept page): never a worst-case compression
    // buffer (was 868 MiB, then 659 MiB peak: 3.3 x).
    let growth = (peak - base) as usize;
    assert!(
        growth <= (2 * line + (16 << 20)) >> 10,
        "a {} MiB line grew the agent by {} MiB: more than twice its size",
        line >> 20,
        growth >> 10
    );
    assert!(
        after < keep_max,
        "kept {after} KiB after the huge line (base {base} KiB)"
    );
}

/// Row 5: one target exposes a sample with a 1970 timestamp while four clean
/// targets share the requests with it, and a real Prometheus receives. By
/// default the sample is dropped and counted at scrape time, so no request
/// is refused and the clean targets lose nothing. With the window turned
/// off Prometheus refuses the requests that hold it; remote write forbids
/// sending them again, so the clean targets lose nothing only with the
/// opt-in `split_refused_requests` (the joined requests are sent again
/// part by part, and only the bad target's scrapes are lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_timestamp_costs_no_other_target_its_data() {
    let Some(bin) = common::prom::require_prometheus() else {
        return;
    };
    for window in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(&dir.path().join("pki"));
        let prom = common::prom::start_prometheus(
            &bin,
            &dir.path().join("prom"),
            "global:\n  scrape_interval: 1h\n",
        )
        .await;
        let mut clean = Vec::new();
        for _ in 0..4 {
            let t = MtlsTarget::start(&pki, String::new()).await;
            t.behavior.lock().unwrap().counter = Some("fault_counter".into());
            clean.push(t);
        }
        let bad = MtlsTarget::start(&pki, "fault_bad_ts 1 1000\n".into()).await;
        let mut all: Vec<&MtlsTarget> = clean.iter().collect();
        all.push(&bad);
        let rw = format!(
            "  - url: {}/api/v1/write\n    queue_config: {{batch_send_deadline: 2s}}\n    split_refused_requests: {}\n",
            prom.url, !window
        );
        let mut cfg = config(&pki, &all, "500ms", &rw);
        if !window {
            cfg = cfg.replace(
                "    static_configs:",
                "    explicit_timestamp_max_age: 0s\n    static_configs:",
            );
        }
        let relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
        // Every clean target: counter values 1..=n, none missing, n >= 8.
        let mut complete = false;
        let mut last = Vec::new();
        for _ in 0..150 {
            let counts = common::prom::query(&prom, "count_over_time(fault_counter[10m])").await;
            let maxes = common::prom::query(&prom, "max_over_time(fault_counter[10m])").await;
            last = counts.iter().zip(&maxes).map(|(c, m)| (c.1, m.1)).collect();
            if counts.len() == 4
                && maxes.len() == 4
                && counts.iter().all(|(l, c)| {
                    maxes
                        .iter()
                        .find(|(ml, _)| ml["instance"] == l["instance"])
                        .is_some_and(|(_, m)| m == c && *c >= 8.0)
                })
            {
                complete = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let m = relay.metrics().await;
        assert!(
            complete,
            "window {window}: clean targets lost data: (count, max) {last:?}\n{m}\n{}",
            relay.log()
        );
        let refused = m.lines().any(|l| {
            l.starts_with("metrics_relay_remote_write_rejections_total{")
                && l.contains("cause=\"out_of_bounds\"")
        });
        let dropped_at_scrape =
            common::metric_value(&m, "metrics_relay_scrape_samples_out_of_bounds_total{")
                .unwrap_or(0.0);
        if window {
            assert!(dropped_at_scrape >= 8.0, "{m}");
            assert!(!refused, "a request was refused: {m}");
        } else {
            assert_eq!(dropped_at_scrape, 0.0);
            assert!(refused, "{m}");
            let log = relay.log();
            assert!(log.contains("sending its parts one by one"), "{log}");
            assert!(
                log.contains("explicit_timestamp_max_age"),
                "the log names the cause: {log}"
            );
        }
    }
}

/// Row 10: a thousand idle connections to the admin server, with 1024 open
/// files allowed: `/healthz` keeps answering, accept failures are not a log
/// flood, and the agent keeps delivering (its queue and ack files open
/// fine). And a soft open-file limit below the hard one is raised at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_flood_leaves_health_and_delivery_working() {
    // The test itself needs the descriptors for its thousand connections.
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        },
    );
    let (dir, pki, a) = counter_target().await;
    let rx = Receiver::start().await;
    let rw = format!(
        "  - url: {}\n    queue_config: {{batch_send_deadline: 100ms}}\n",
        rx.url()
    );
    let cfg_path = dir.path().join("relay.yml");
    std::fs::write(&cfg_path, config(&pki, &[&a], "300ms", &rw)).unwrap();
    let log = dir.path().join("relay.log");
    let spawn = |soft: u32, hard: u32| {
        Command::new("prlimit")
            .arg(format!("--nofile={soft}:{hard}"))
            .arg(relay_bin())
            .args(["run", "--config"])
            .arg(&cfg_path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-address", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prlimit (util-linux)")
    };
    let up = |admin: String| async move {
        for _ in 0..100 {
            if matches!(http_get(&format!("{admin}/healthz")).await, Ok((200, _))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let started = |child: &mut common::Reaped| {
        let addr = common::bound_address(&log, child.child(), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&log).unwrap_or_default()));
        (
            addr.rsplit(':').next().unwrap().parse::<u16>().unwrap(),
            format!("http://{addr}"),
        )
    };

    // Soft 256, hard 4096: raised to 4096 at start.
    let mut child = common::Reaped::new(spawn(256, 4096));
    let (_, admin) = started(&mut child);
    assert!(up(admin.clone()).await);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.child().id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let nums: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.parse::<u64>().is_ok())
        .collect();
    assert_eq!(nums, ["4096", "4096"], "{line}");
    drop(child);

    // Soft = hard = 1024, a thousand idle connections.
    let mut child = common::Reaped::new(spawn(1024, 1024));
    let (port, admin) = started(&mut child);
    assert!(up(admin.clone()).await);
    let mut idle = Vec::new();
    for _ in 0..1000 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let before = counter_values(&rx, "fault_counter").len();
    let mut ok = 0;
    let mut failures = Vec::new();
    for _ in 0..5 {
        match http_get(&format!("{admin}/healthz")).await {
            Ok((200, _)) => ok += 1,
            other => failures.push(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        ok,
        5,
        "healthz under a connection flood: {failures:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let delivered = wait_for(Duration::from_secs(10), || {
        (counter_values(&rx, "fault_counter").len() > before + 3).then_some(())
    })
    .await;
    let after = counter_values(&rx, "fault_counter").len();
    assert!(delivered.is_some(), "delivery stalled: {before} -> {after}");
    // No scrape lost to the flood: the queue always had its descriptors.
    let (_, m) = http_get(&format!("{admin}/metrics")).await.unwrap();
    let dropped: Vec<&str> = m
        .lines()
        .filter(|l| {
            l.starts_with("metrics_relay_remote_write_samples_dropped_total{") && !l.ends_with(" 0")
        })
        .collect();
    assert!(
        dropped.is_empty(),
        "samples dropped under the flood: {dropped:?}"
    );
    drop(idle);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let accept_lines = text.matches("cannot accept").count();
    eprintln!(
        "1000 idle connections, 1024 files: healthz {ok}/5, {accept_lines} accept-failure lines, delivered {before} -> {after}"
    );
    assert!(
        accept_lines <= 2,
        "{accept_lines} accept-failure lines:\n{text}"
    );
    assert!(!text.contains("ack file"), "ack writes failed:\n{text}");
    signal(child.child().id(), "-TERM");
    assert!(wait_exit(child.child(), Duration::from_secs(15)).is_some());
}

/// An 8 MiB tmpfs, mounted for the test (unmounted on drop). Root only; a
/// machine that cannot mount one fails the test with the reason.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs for the full-disk test (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Row 7: the data dir on an 8 MiB tmpfs. With a healthy receiver the disk
/// never fills with what was already delivered (no scrape is dropped); when
/// the receiver is down and the disk does fill, the oldest unsent data goes,
/// counted, the agent keeps running, and delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_the_oldest_unsent_data_never_delivered_data() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let data = dir.path().join("relay/data");
    let _fs = Tmpfs::mount(&data, "8m");
    let counter = MtlsTarget::start(&pki, String::new()).await;
    counter.behavior.lock().unwrap().counter = Some("fault_counter".into());
    // ~150 KB a scrape on disk from 2,000 samples (long label values that
    // compress badly), so that the receiver keeps up easily.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let filler: String = (0..2_000)
        .map(|i| {
            let noise: String = (0..6)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    format!("{x:016x}")
                })
                .collect();
            format!("fill_series{{i=\"{i}\",noise=\"{noise}\"}} {i}\n")
        })
        .collect();
    let big = MtlsTarget::start(&pki, filler).await;
    let rx = Receiver::start().await;
    let rw = format!(
        "  - url: {}\n    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}\n",
        rx.url()
    );
    let relay = RelayProc::start(
        &dir.path().join("relay"),
        &config(&pki, &[&counter, &big], "150ms", &rw),
    )
    .await;
    // Healthy receiver: well over 8 MiB goes through the queue.
    let mut m = String::new();
    for _ in 0..60 {
        m = relay.metrics().await;
        let sent =
            common::metric_value(&m, "metrics_relay_remote_write_bytes_sent_total{").unwrap_or(0.0);
        if sent > 12.0 * 1024.0 * 1024.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sent =
        common::metric_value(&m, "metrics_relay_remote_write_bytes_sent_total{").unwrap_or(0.0);
    assert!(sent > 12.0 * 1024.0 * 1024.0, "only {sent} bytes sent");
    for reason in ["disk_error", "disk_full"] {
        assert!(
            !m.lines()
                .any(|l| l.contains("samples_dropped_total") && l.contains(reason)),
            "dropped with a healthy receiver ({reason}):\n{m}\n{}",
            relay.log()
        );
    }
    let before_outage = counter_values(&rx, "fault_counter");
    let n = before_outage.len() as u64;
    assert!(
        n > 20 && before_outage == (1..=n).collect::<Vec<_>>(),
        "gaps: {before_outage:?}"
    );

    // The receiver goes away: unsent data fills the disk.
    *rx.throttle_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3600));
    let full = wait_for(Duration::from_secs(30), || {
        let m = futures_metrics(&relay);
        m.lines()
            .any(|l| l.contains("samples_dropped_total") && l.contains("disk_full"))
            .then_some(())
    })
    .await;
    assert!(
        full.is_some(),
        "the disk never filled? log:\n{}",
        relay.log()
    );
    assert!(matches!(
        http_get(&format!("{}/healthz", relay.admin)).await,
        Ok((200, _))
    ));
    // Back: delivery resumes with the newest data.
    *rx.throttle_until.lock().unwrap() = None;
    let served = counter.requests.lock().unwrap().len() as u64;
    let resumed = wait_for(Duration::from_secs(30), || {
        counter_values(&rx, "fault_counter")
            .last()
            .is_some_and(|&v| v > served)
            .then_some(())
    })
    .await;
    assert!(
        resumed.is_some(),
        "no delivery after the outage; log:\n{}",
        relay.log()
    );
    let m = relay.metrics().await;
    eprintln!(
        "8 MiB tmpfs: {} MiB delivered with no drop; then an outage: disk_full drops {:?} samples; delivery resumed",
        sent as u64 >> 20,
        m.lines()
            .find(|l| l.contains("samples_dropped_total") && l.contains("disk_full"))
            .and_then(|l| l.rsplit(' ').next())
    );
}

/// The agent's `/metrics`, from synchronous code (a blocking call on a
/// helper thread).
fn futures_metrics(relay: &RelayProc) -> String {
    let url = format!("{}/metrics", relay.admin);
    let h = tokio::runtime::Handle::current();
    std::thread::spawn(move || h.block_on(http_get(&url)))
        .join()
        .unwrap()
        .map(|(_, b)| b)
        .unwrap_or_default()
}
