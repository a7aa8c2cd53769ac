//! Black-box tests of `metrics-relay run` over loopback: an mTLS target with
//! certificates made at test time, and a receiver that decodes what arrives.

use crate::common;

use std::time::Duration;

use common::{MtlsTarget, Pki, Receiver, RelayProc, payload, wait_for};

fn config(pki: &Pki, target: &MtlsTarget, rw_url: &str, tls_extra: &str) -> String {
    format!(
        r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  external_labels: {{cluster: ack-one-test}}
scrape_configs:
  - job_name: ack-control-plane
    scheme: https
    metrics_path: /metrics
    params: {{hosting: ["true"]}}
    tls_config:
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
      server_name: kubernetes
{tls_extra}
    static_configs:
      - targets: ["{addr}"]
        labels: {{env: test}}
remote_write:
  - url: {rw_url}
    name: local
    queue_config: {{batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 200ms}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        addr = target.addr,
    )
}

/// A temp dir, certificates, an mTLS target serving `body` and a receiver.
async fn setup(body: String) -> (tempfile::TempDir, Pki, MtlsTarget, Receiver) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, body).await;
    let rx = Receiver::start().await;
    (dir, pki, target, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_mtls_target_and_remote_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let page = payload::control_plane(1);
    let target = MtlsTarget::start(&pki, page.text.clone()).await;
    target.behavior.lock().unwrap().gzip = true;
    let rx = Receiver::start().await;
    let relay = RelayProc::start(dir.path(), &config(&pki, &target, &rx.url(), "")).await;

    let instance = target.addr.to_string();
    let up = wait_for(Duration::from_secs(10), || {
        rx.latest("up", &[("instance", instance.as_str())])
    })
    .await;
    assert_eq!(up, Some(1.0), "up; log:\n{}", relay.log());

    // The target saw hosting=true, over mTLS.
    assert!(
        target
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|r| r == "/metrics?hosting=true")
    );
    // And the scrape timeout, as Prometheus sends it.
    assert!(
        target
            .timeout_headers
            .lock()
            .unwrap()
            .iter()
            .all(|h| h == "1"),
        "{:?}",
        target.timeout_headers.lock().unwrap()
    );

    // Every exposed series arrived with its value and the target + external labels.
    let accepted = rx.accepted();
    for s in &page.series {
        let mut want: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        want.push(("cluster".into(), "ack-one-test".into()));
        want.push(("env".into(), "test".into()));
        want.push(("instance".into(), instance.clone()));
        want.push(("job".into(), "ack-control-plane".into()));
        want.sort();
        let got = accepted.iter().find(|(l, _, _)| *l == want);
        let (_, v, _) = got.unwrap_or_else(|| panic!("series {want:?} not received"));
        assert_eq!(*v, s.value, "value of {want:?}");
    }
    // Labels are sorted and never empty in everything we sent.
    for (l, _, _) in &accepted {
        assert!(
            l.windows(2).all(|w| w[0].0 < w[1].0),
            "unsorted or repeated: {l:?}"
        );
        assert!(l.iter().all(|(_, v)| !v.is_empty()));
        assert_eq!(l[0].0, "__name__");
    }
    // Synthetic series.
    let samples = rx
        .latest("scrape_samples_scraped", &[("job", "ack-control-plane")])
        .unwrap();
    assert_eq!(samples, page.series.len() as f64);
    assert!(
        rx.latest("scrape_duration_seconds", &[("job", "ack-control-plane")])
            .unwrap()
            > 0.0
    );

    // Headers of every write request.
    for r in rx.received.lock().unwrap().iter() {
        let h = &r.headers;
        assert_eq!(h["content-encoding"], "snappy");
        assert_eq!(h["content-type"], "application/x-protobuf");
        assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
        assert!(
            h["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("metrics-relay/")
        );
    }

    let (code, _) = common::http_get(&format!("{}/readyz", relay.admin))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let m = relay.metrics().await;
    assert!(
        common::metric_value(&m, "metrics_relay_remote_write_samples_sent_total").unwrap() > 0.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused_and_reported() {
    let (dir, pki, target, rx) = setup("m 1\n".into()).await;
    let cfg = config(&pki, &target, &rx.url(), "")
        .replace(
            &format!("      cert_file: {}\n", pki.client_cert.display()),
            "",
        )
        .replace(
            &format!("      key_file: {}\n", pki.client_key.display()),
            "",
        );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    let up = wait_for(Duration::from_secs(10), || rx.latest("up", &[])).await;
    assert_eq!(up, Some(0.0));
    assert!(
        rx.latest("m", &[]).is_none(),
        "no sample may pass without a client certificate"
    );
    assert!(
        !target.tls_failures.lock().unwrap().is_empty(),
        "the target refused the handshake"
    );
    let t = relay.targets().await;
    let err = t[0]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("certificate"), "{err}");
    let m = relay.metrics().await;
    assert!(m.contains("reason=\"client_certificate\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused() {
    let (dir, pki, target, rx) = setup("m 1\n".into()).await;
    let cfg = config(&pki, &target, &rx.url(), "")
        .replace(
            &pki.client_cert.display().to_string(),
            &pki.other_client_cert.display().to_string(),
        )
        .replace(
            &pki.client_key.display().to_string(),
            &pki.other_client_key.display().to_string(),
        );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    assert_eq!(
        wait_for(Duration::from_secs(10), || rx.latest("up", &[])).await,
        Some(0.0)
    );
    let t = relay.targets().await;
    assert_eq!(t[0]["health"], "down");
    let m = relay.metrics().await;
    assert!(m.contains("reason=\"client_certificate\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_gives_up_zero_with_an_error_that_says_so() {
    let (dir, pki, target, rx) = setup("m 1\n".into()).await;
    let cfg = config(&pki, &target, &rx.url(), "").replace(
        &format!("ca_file: {}", pki.ca.display()),
        &format!("ca_file: {}", pki.other_ca.display()),
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    assert_eq!(
        wait_for(Duration::from_secs(10), || rx.latest("up", &[])).await,
        Some(0.0)
    );
    let t = relay.targets().await;
    let err = t[0]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("unknown authority"), "{err}\n{}", relay.log());
    let m = relay.metrics().await;
    assert!(m.contains("reason=\"server_certificate\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_mismatch_is_explained() {
    let (dir, pki, target, rx) = setup("m 1\n".into()).await;
    let cfg = config(&pki, &target, &rx.url(), "")
        .replace("server_name: kubernetes", "server_name: not-in-the-cert");
    let relay = RelayProc::start(dir.path(), &cfg).await;
    assert_eq!(
        wait_for(Duration::from_secs(10), || rx.latest("up", &[])).await,
        Some(0.0)
    );
    let err = relay.last_error(0).await;
    assert!(err.contains("server_name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_page_fails_the_whole_scrape() {
    let (dir, pki, target, rx) = setup("good 1\nalso_good 2\n".into()).await;
    let relay = RelayProc::start(dir.path(), &config(&pki, &target, &rx.url(), "")).await;
    assert_eq!(
        wait_for(Duration::from_secs(10), || rx.latest("good", &[])).await,
        Some(1.0)
    );
    target.set_body("good 1\nbroken{ 3\n".into());
    let t0 = rx.received.lock().unwrap().len();
    wait_for(Duration::from_secs(10), || {
        (rx.received.lock().unwrap().len() > t0 && rx.latest("up", &[]) == Some(0.0)).then_some(())
    })
    .await
    .expect("up 0 after the bad page");
    // The failed scrape sent staleness markers for the last good series.
    let marker = rx
        .accepted()
        .into_iter()
        .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == "also_good"))
        .any(|(_, v, _)| v.to_bits() == 0x7ff0_0000_0000_0002);
    assert!(marker, "staleness marker for also_good");
    let err = relay.last_error(0).await;
    assert!(err.contains("line 2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_is_retried_and_delivered_once() {
    let (dir, pki, target, rx) = setup("m 1\n".into()).await;
    rx.script.lock().unwrap().extend([(500, None), (503, None)]);
    let relay = RelayProc::start(dir.path(), &config(&pki, &target, &rx.url(), "")).await;
    wait_for(Duration::from_secs(10), || rx.has_status(204).then_some(()))
        .await
        .expect("a batch accepted after the 5xx");
    let all = rx.received.lock().unwrap().clone();
    // The first accepted request is the exact batch that failed twice.
    assert_eq!(all[0].status, 500);
    assert_eq!(all[1].status, 503);
    assert_eq!(all[2].status, 204);
    assert_eq!(all[0].raw, all[1].raw);
    assert_eq!(all[1].raw, all[2].raw);
    // Delivered once: no accepted (series, timestamp) twice.
    let acc = rx.accepted();
    let mut keys: Vec<_> = acc.iter().map(|(l, _, t)| (l.clone(), *t)).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicates delivered");
    let m = relay.metrics().await;
    assert!(
        common::metric_value(&m, "metrics_relay_remote_write_batches_retried_total").unwrap()
            >= 2.0,
        "{m}"
    );
    assert!(m.contains("reason=\"http_5xx\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_400_is_not_retried() {
    let (dir, pki, target, rx) = setup("m 1\n".into()).await;
    rx.script.lock().unwrap().push_back((400, None));
    let relay = RelayProc::start(dir.path(), &config(&pki, &target, &rx.url(), "")).await;
    wait_for(Duration::from_secs(10), || {
        (rx.received.lock().unwrap().len() >= 3).then_some(())
    })
    .await
    .expect("more batches after the rejected one");
    let all = rx.received.lock().unwrap().clone();
    assert_eq!(all[0].status, 400);
    assert!(
        all[1..].iter().all(|r| r.raw != all[0].raw),
        "the rejected batch was sent again"
    );
    let m = relay.metrics().await;
    assert!(m.contains("reason=\"http_4xx\""), "{m}");
    assert!(
        m.contains("reason=\"rejected\""),
        "dropped as rejected: {m}"
    );
    assert!(
        relay.log().contains("scripted failure"),
        "the receiver's message is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_429_honours_retry_after() {
    let (dir, pki, target, rx) = setup("m 1\n".into()).await;
    rx.script.lock().unwrap().push_back((429, Some("2".into())));
    let _relay = RelayProc::start(dir.path(), &config(&pki, &target, &rx.url(), "")).await;
    wait_for(Duration::from_secs(15), || {
        (rx.received.lock().unwrap().len() >= 2).then_some(())
    })
    .await
    .expect("retried after 429");
    let all = rx.received.lock().unwrap().clone();
    assert_eq!(all[0].status, 429);
    assert_eq!(all[0].raw, all[1].raw, "the same batch is retried");
    let gap = all[1].at - all[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, before Retry-After"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_exits_zero() {
    let (dir, pki, target, rx) = setup("m 1\n".into()).await;
    // A memory queue with a long batch deadline: only the shutdown flush can
    // send the open batch.
    let cfg = config(&pki, &target, &rx.url(), "")
        .replace("batch_send_deadline: 200ms", "batch_send_deadline: 1h");
    let mut relay = RelayProc::start_with(dir.path(), &cfg, false).await;
    // Scraped and queued (the target answering is not enough: the scrape
    // may still be in flight when SIGTERM comes, and is then abandoned).
    let queued = common::wait_async(Duration::from_secs(10), || async {
        // The open batch counts as queued.
        common::metric_value(
            &relay.metrics().await,
            "metrics_relay_remote_write_queue_samples{",
        )
        .is_some_and(|v| v >= 6.0)
    })
    .await;
    assert!(queued, "nothing queued:\n{}", relay.log());
    assert!(
        rx.received.lock().unwrap().is_empty(),
        "nothing sent before shutdown"
    );
    let code = tokio::task::spawn_blocking(move || {
        let t = std::time::Instant::now();
        let c = relay.terminate();
        (c, relay.log(), t.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1);
    // The pending batch goes in milliseconds; shutdown ends then, not when
    // the grace period (3 s here) is over.
    assert!(
        code.2 < Duration::from_millis(1500),
        "shutdown took {:?} with nothing left to send:\n{}",
        code.2,
        code.1
    );
    assert_eq!(
        rx.latest("m", &[]),
        Some(1.0),
        "queued samples flushed at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_target_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    target.behavior.lock().unwrap().delay = Duration::from_secs(3);
    let rx = Receiver::start().await;
    let cfg =
        config(&pki, &target, &rx.url(), "").replace("scrape_timeout: 1s", "scrape_timeout: 300ms");
    let relay = RelayProc::start(dir.path(), &cfg).await;
    assert_eq!(
        wait_for(Duration::from_secs(10), || rx.latest("up", &[])).await,
        Some(0.0)
    );
    let err = relay.last_error(0).await;
    assert!(err.contains("timed out after 300ms"), "{err}");
    assert!(relay.metrics().await.contains("reason=\"timeout\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_fails_the_scrape_even_when_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    // 2 MiB of samples that gzip to a few KiB: the limit is on the decompressed size.
    let big: String = (0..40_000).map(|i| format!("metric_{i:06} 1\n")).collect();
    let target = MtlsTarget::start(&pki, big).await;
    target.behavior.lock().unwrap().gzip = true;
    let rx = Receiver::start().await;
    let cfg = config(&pki, &target, &rx.url(), "").replace(
        "    static_configs:",
        "    body_size_limit: 64KiB\n    static_configs:",
    );
    let relay = RelayProc::start(dir.path(), &cfg).await;
    assert_eq!(
        wait_for(Duration::from_secs(10), || rx.latest("up", &[])).await,
        Some(0.0)
    );
    let err = relay.last_error(0).await;
    assert!(
        err.contains("body size limit of 65536 bytes exceeded"),
        "{err}"
    );
    assert!(rx.latest("metric_000001", &[]).is_none());
}
