//! Wire formats and their negotiation (`remote_write[].protobuf_message`),
//! against real receivers and against the spec:
//!
//! - Prometheus 3 takes remote write 2.0; Prometheus 3 told to accept only
//!   1.0 answers 2.0 and zstd with 415; Debian's Prometheus 2.42 answers
//!   2.0 as a 1.x receiver (a 2xx without the written-count headers) and
//!   zstd with 400; the current VictoriaMetrics takes 1.0 with zstd;
//!   Debian's VictoriaMetrics 1.79 does not. In every case the agent ends on
//!   the best format the receiver takes, and every scrape arrives, the ones
//!   that were refused in a format included (a counter target: the values
//!   1, 2, 3, ... with no gap).
//! - The 2.0 request's shape against the spec (symbols, references,
//!   headers), read by the test receiver.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::prom::{query, spawn_prometheus};
use common::servers::Speaks;
use common::vm;
use common::{MtlsTarget, Pki, Receiver, RelayProc, http_get, metric_value, wait_async};

/// A target that serves `formats_seq N`, N counting its scrapes, with its
/// HELP and TYPE.
async fn counter_target(pki: &Pki) -> MtlsTarget {
    let t = MtlsTarget::start(
        pki,
        format!("# HELP formats_seq {HELP}\n# TYPE formats_seq counter\n"),
    )
    .await;
    t.behavior.lock().unwrap().counter = Some("formats_seq".into());
    t
}

const HELP: &str = "Scrapes served, one by one.";

fn relay_config(pki: &Pki, target: &MtlsTarget, url: &str, setting: &str) -> String {
    relay_config_with(pki, target, url, setting, "")
}

/// [`relay_config`] with `extra` keys for the destination (indented).
fn relay_config_with(
    pki: &Pki,
    target: &MtlsTarget,
    url: &str,
    setting: &str,
    extra: &str,
) -> String {
    format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: formats
    scheme: https
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: localhost}}
    static_configs: [{{targets: ["{addr}"]}}]
remote_write:
  - url: {url}
    name: dest
    protobuf_message: {setting}
    queue_config: {{batch_send_deadline: 200ms, min_backoff: 50ms, max_backoff: 200ms}}
{extra}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        addr = target.addr,
    )
}

/// The format the agent reports in use: (protobuf_message, compression).
async fn format_in_use(relay: &RelayProc) -> Option<(String, String)> {
    let text = relay.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("metrics_relay_remote_write_format{") && l.ends_with(" 1"))
        .find_map(|l| {
            let get = |k: &str| {
                let at = l.find(&format!("{k}=\""))? + k.len() + 2;
                Some(l[at..].split('"').next()?.to_string())
            };
            Some((get("protobuf_message")?, get("compression")?))
        })
}

/// Waits until the receiver holds `formats_seq` 1..=n for some n ≥ 5 with
/// no gap (count, min and max from `stats`), and the agent uses `want`.
async fn every_scrape_arrives<F, Fut>(
    relay: &RelayProc,
    want: (&str, &str),
    mut stats: F,
    what: &str,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<(f64, f64, f64)>>,
{
    let last = std::sync::Mutex::new(None);
    let ok = wait_async(Duration::from_secs(60), || {
        let s = stats();
        let last = &last;
        async move {
            let got = s.await;
            *last.lock().unwrap() = got;
            matches!(got, Some((count, min, max)) if count >= 5.0 && min == 1.0 && max == count)
        }
    })
    .await;
    let last = *last.lock().unwrap();
    assert!(
        ok,
        "{what}: (count, min, max) of formats_seq = {last:?}; log:\n{}",
        relay.log()
    );
    let used = format_in_use(relay).await;
    assert_eq!(
        used,
        Some((want.0.to_string(), want.1.to_string())),
        "{what}: log:\n{}",
        relay.log()
    );
}

async fn prometheus_stats(p: &common::prom::Prometheus) -> Option<(f64, f64, f64)> {
    let one = |q: String| async move { query(p, &q).await.first().map(|(_, v)| *v) };
    Some((
        one("count_over_time(formats_seq[1h])".into()).await?,
        one("min_over_time(formats_seq[1h])".into()).await?,
        one("max_over_time(formats_seq[1h])".into()).await?,
    ))
}

async fn victoria_stats(v: &vm::Victoria) -> Option<(f64, f64, f64)> {
    Some((
        vm::query(v, "count_over_time(formats_seq[1h])").await?,
        vm::query(v, "min_over_time(formats_seq[1h])").await?,
        vm::query(v, "max_over_time(formats_seq[1h])").await?,
    ))
}

async fn wait_ready(url: &str) {
    let ready = wait_async(Duration::from_secs(30), || async {
        matches!(http_get(&format!("{url}/-/ready")).await, Ok((200, _)))
    })
    .await;
    assert!(ready, "{url} did not become ready");
}

/// Against a real Prometheus `bin` started with `flags`, `auto` ends on
/// `want` and loses nothing (disk queue: zstd records transcoded). Returns
/// the Prometheus, still running, and its directory.
async fn against_prometheus(
    bin: &Path,
    flags: &[String],
    want: (&str, &str),
    what: &str,
) -> (common::prom::Prometheus, tempfile::TempDir) {
    against_prometheus_with(bin, flags, want, what, "").await
}

/// [`against_prometheus`] with `extra` destination keys.
async fn against_prometheus_with(
    bin: &Path,
    flags: &[String],
    want: (&str, &str),
    what: &str,
    extra: &str,
) -> (common::prom::Prometheus, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let prom = spawn_prometheus(
        bin,
        &dir.path().join("prom"),
        "global:\n  scrape_interval: 1h\n",
        0,
        flags,
    );
    wait_ready(&prom.url).await;
    let pki = Pki::new(&dir.path().join("pki"));
    let target = counter_target(&pki).await;
    let url = format!("{}/api/v1/write", prom.url);
    let cfg = relay_config_with(&pki, &target, &url, "auto", extra);
    let relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    every_scrape_arrives(&relay, want, || prometheus_stats(&prom), what).await;
    (prom, dir)
}

fn prometheus3() -> std::path::PathBuf {
    std::env::var_os("PROMETHEUS3_BIN")
        .map(Into::into)
        .expect("PROMETHEUS3_BIN: scripts/test.sh builds Prometheus 3 (scripts/peers.sh)")
}

fn prometheus2() -> std::path::PathBuf {
    std::env::var_os("PROMETHEUS2_BIN")
        .map(Into::into)
        .or_else(|| common::on_path("prometheus"))
        .expect("PROMETHEUS2_BIN: scripts/test.sh installs Debian's prometheus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_takes_remote_write_2_0_with_metadata() {
    // Prometheus 3's `/api/v1/metadata` lists only what its own scrape
    // targets expose (web/api/v1/api.go reads the scrape manager), so the
    // metadata a 2.0 request carries is read back through the type and
    // unit labels Prometheus adds from it (`type-and-unit-labels`), with
    // `metadata-wal-records` keeping it in the WAL.
    let (prom, _dir) = against_prometheus(
        &prometheus3(),
        &["--enable-feature=metadata-wal-records,type-and-unit-labels".into()],
        ("io.prometheus.write.v2.Request", "snappy"),
        "Prometheus 3",
    )
    .await;
    let typed = query(&prom, "formats_seq").await;
    assert_eq!(typed.len(), 1, "{typed:?}");
    assert_eq!(
        typed[0].0.get("__type__").map(String::as_str),
        Some("counter"),
        "the TYPE reached Prometheus: {typed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_3_on_1_0_only_refuses_2_0_and_zstd_and_the_agent_falls_back() {
    against_prometheus(
        &prometheus3(),
        &["--web.remote-write-receiver.accepted-protobuf-messages=prometheus.WriteRequest".into()],
        ("prometheus.WriteRequest", "snappy"),
        "Prometheus 3 accepting 1.0 only",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_2_42_reads_2_0_as_a_1_x_receiver_and_the_agent_falls_back() {
    // With `queue.codec: zstd`: the disk records are zstd, recompressed to
    // snappy for this receiver.
    let (_prom, dir) = against_prometheus_with(
        &prometheus2(),
        &[],
        ("prometheus.WriteRequest", "snappy"),
        "Prometheus 2.42",
        "    queue: {codec: zstd}",
    )
    .await;
    let queue = dir.path().join("relay/data/queue/dest");
    let mut tags = Vec::new();
    for e in std::fs::read_dir(&queue).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "seg") {
            tags.extend(record_codecs(&std::fs::read(&p).unwrap()));
        }
    }
    assert!(
        !tags.is_empty() && tags.iter().all(|&t| t == 2),
        "every record zstd (tag 2): {tags:?}"
    );
}

/// The codec tag of each record of a version 3 segment.
fn record_codecs(seg: &[u8]) -> Vec<u8> {
    assert_eq!(&seg[..8], b"MRQSEG3\n");
    let mut out = Vec::new();
    let mut off = 8;
    while off + 12 + 21 <= seg.len() {
        let len = u32::from_le_bytes(seg[off + 4..off + 8].try_into().unwrap()) as usize;
        out.push(seg[off + 12 + 20]);
        off += 12 + len;
    }
    out
}

/// Against a real VictoriaMetrics `bin`, `auto` ends on `want`; `durable`:
/// the disk queue (zstd records) or the memory queue (snappy).
async fn against_victoria(bin: &Path, want: (&str, &str), durable: bool, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let v = vm::start(bin, &dir.path().join("vm"), &[]).await;
    let pki = Pki::new(&dir.path().join("pki"));
    let target = counter_target(&pki).await;
    let cfg = relay_config(&pki, &target, &format!("{}/api/v1/write", v.url), "auto");
    let relay = RelayProc::start_with(&dir.path().join("relay"), &cfg, durable).await;
    every_scrape_arrives(&relay, want, || victoria_stats(&v), what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_victoriametrics_takes_zstd() {
    against_victoria(
        &vm::current_bin(),
        ("prometheus.WriteRequest", "zstd"),
        true,
        "VictoriaMetrics (current), disk queue",
    )
    .await;
    against_victoria(
        &vm::current_bin(),
        ("prometheus.WriteRequest", "zstd"),
        false,
        "VictoriaMetrics (current), memory queue",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoriametrics_1_79_gets_snappy() {
    against_victoria(
        &vm::debian_bin(),
        ("prometheus.WriteRequest", "snappy"),
        true,
        "VictoriaMetrics 1.79",
    )
    .await;
}

/// The test receiver speaking `speaks`; the agent set to `setting`.
async fn against_receiver(
    dir: &Path,
    speaks: Speaks,
    setting: &str,
) -> (Receiver, RelayProc, MtlsTarget) {
    let rx = Receiver::start().await;
    *rx.speaks.lock().unwrap() = speaks;
    let pki = Pki::new(&dir.join("pki"));
    let target = counter_target(&pki).await;
    let cfg = relay_config(&pki, &target, &rx.url(), setting);
    let relay = RelayProc::start(&dir.join("relay"), &cfg).await;
    (rx, relay, target)
}

/// `formats_seq` values the receiver accepted, sorted.
fn accepted_seq(rx: &Receiver) -> Vec<f64> {
    let mut v: Vec<f64> = rx
        .accepted()
        .into_iter()
        .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && v == "formats_seq"))
        .map(|(_, v, _)| v)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_0_request_has_the_shape_the_spec_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (rx, relay, _t) = against_receiver(
        dir.path(),
        Speaks {
            v2: true,
            zstd: false,
        },
        "io.prometheus.write.v2.Request",
    )
    .await;
    let got = common::wait_for(Duration::from_secs(30), || {
        let r = rx.received.lock().unwrap();
        (r.iter().filter(|r| r.v2.is_some()).count() >= 3).then(|| r.clone())
    })
    .await
    .unwrap_or_else(|| panic!("no 2.0 requests; log:\n{}", relay.log()));
    for r in got.iter().filter(|r| r.v2.is_some()) {
        let h = |k: &str| r.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(
            h("content-type"),
            "application/x-protobuf;proto=io.prometheus.write.v2.Request"
        );
        assert_eq!(h("content-encoding"), "snappy");
        assert_eq!(h("x-prometheus-remote-write-version"), "2.0.0");
        assert!(
            h("user-agent").starts_with("metrics-relay/"),
            "{}",
            h("user-agent")
        );
        let req = r.v2.as_ref().unwrap();
        assert_eq!(
            req.symbols.first().map(String::as_str),
            Some(""),
            "symbols[0] is \"\""
        );
        let mut uniq = req.symbols.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(
            uniq.len(),
            req.symbols.len(),
            "each symbol once per request"
        );
        assert!(!req.timeseries.is_empty());
        for ts in &req.timeseries {
            assert!(
                ts.labels_refs.len() % 2 == 0,
                "refs come in name/value pairs"
            );
            assert!(
                ts.labels_refs
                    .iter()
                    .all(|&r| (r as usize) < req.symbols.len()),
                "every reference is in the table"
            );
            let labels = req.labels(ts).unwrap();
            let names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "labels sorted by name");
            assert!(names.contains(&"__name__"));
            assert!(labels.iter().all(|(n, _)| !n.is_empty()), "no empty name");
            assert_eq!(ts.samples.len(), 1);
            assert!(ts.samples[0].timestamp > 1_600_000_000_000);
            let name = &labels.iter().find(|(n, _)| n == "__name__").unwrap().1;
            if name == "formats_seq" {
                // The family's TYPE and HELP, on every series of it.
                let m = ts.metadata.clone().expect("metadata");
                assert_eq!(m.r#type, 1, "counter");
                assert_eq!(req.symbols[m.help_ref as usize], HELP);
                assert_eq!(m.unit_ref, 0, "no unit: the empty symbol");
            } else {
                assert!(ts.metadata.is_none(), "{name} has no metadata");
            }
        }
    }
    // The written counts are read and exported; the format is reported.
    let ok = wait_async(Duration::from_secs(10), || async {
        let m = relay.metrics().await;
        metric_value(&m, "metrics_relay_remote_write_samples_written_total{")
            .is_some_and(|v| v > 0.0)
    })
    .await;
    assert!(ok, "{}", relay.metrics().await);
    assert_eq!(
        format_in_use(&relay).await,
        Some(("io.prometheus.write.v2.Request".into(), "snappy".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_against_a_1_x_receiver_ends_on_snappy_with_nothing_lost_or_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (rx, relay, _t) = against_receiver(dir.path(), Speaks::default(), "auto").await;
    let ok = wait_async(Duration::from_secs(30), || async {
        let seq = accepted_seq(&rx);
        seq.len() >= 5
    })
    .await;
    assert!(ok, "log:\n{}", relay.log());
    let seq = accepted_seq(&rx);
    let want: Vec<f64> = (1..=seq.len()).map(|i| i as f64).collect();
    assert_eq!(
        seq, want,
        "every scrape once, the first (refused twice) included"
    );
    // The 2.0 request was answered 2xx without the written headers (read as
    // 1.0: no series), the zstd one 415; then 1.0 + snappy for good.
    let r = rx.received.lock().unwrap().clone();
    assert!(
        r[0].headers["content-type"]
            .to_str()
            .unwrap()
            .contains("io.prometheus.write.v2.Request")
            && r[0].request.timeseries.is_empty()
    );
    assert!(
        r[1..]
            .iter()
            .all(|x| x.headers["content-encoding"] == "snappy"
                && x.headers["content-type"] == "application/x-protobuf"),
        "sticky: nothing but 1.0 + snappy after the fallback"
    );
    assert_eq!(
        format_in_use(&relay).await,
        Some(("prometheus.WriteRequest".into(), "snappy".into()))
    );
    let log = relay.log();
    assert_eq!(
        log.matches("does not take this remote-write format")
            .count(),
        2,
        "each format left is logged once:\n{log}"
    );
    assert!(
        !log.contains("refused a request (4xx)"),
        "a negotiation refusal is not a dropped request:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_against_a_zstd_receiver_stays_on_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let (rx, relay, _t) = against_receiver(
        dir.path(),
        Speaks {
            v2: false,
            zstd: true,
        },
        "auto",
    )
    .await;
    let ok = wait_async(Duration::from_secs(30), || async {
        accepted_seq(&rx).len() >= 4
    })
    .await;
    assert!(ok, "log:\n{}", relay.log());
    let seq = accepted_seq(&rx);
    let want: Vec<f64> = (1..=seq.len()).map(|i| i as f64).collect();
    assert_eq!(seq, want);
    let r = rx.received.lock().unwrap().clone();
    assert!(
        r[1..]
            .iter()
            .all(|x| x.headers["content-encoding"] == "zstd"
                && x.headers["x-victoriametrics-remote-write-version"] == "1")
    );
}
