//! The user's path, round 3: what a newcomer and an SRE hit between
//! `git clone` and a dashboard, each row of the issue tried as they tried
//! it: messages in words (another cluster's CA, a key where a kubeconfig
//! goes, plain HTTP to a TLS port, a file in place of the data directory),
//! paths relative to the config file, `--help` that documents every flag,
//! a config that rolls out by itself, logs that say an outage once and its
//! end once, and `probe` within one timeout.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{MtlsTarget, Pki, Receiver, RelayProc, relay_bin, wait_for};

fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(relay_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scrape_config(pki_ca: &Path, pki: &Pki, target: &MtlsTarget, scheme: &str, rw: &str) -> String {
    format!(
        r#"
global: {{scrape_interval: 500ms, scrape_timeout: 500ms}}
scrape_configs:
  - job_name: cp
    scheme: {scheme}
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: kubernetes}}
    static_configs: [{{targets: ["{addr}"]}}]
remote_write:
  - url: {rw}
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 20ms, max_backoff: 100ms}}
"#,
        ca = pki_ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        addr = target.addr,
    )
}

/// Waits until target 0's `last_error` contains `want`; returns it.
async fn error_saying(relay: &RelayProc, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = relay.last_error(0).await;
        if last.contains(want) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no error saying {want:?}; last: {last:?}\n{}", relay.log());
}

/// Rows "a server certificate from another CA with the same name" and
/// "`scheme: http` against a TLS port": errors in words that name the
/// mistake, on `/targets`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_ca_and_plain_http_to_tls_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    // Another cluster: a CA of the same name, another key (every cluster CA
    // is CN=kubernetes; here both are "metrics-relay test CA").
    let other = Pki::new(&dir.path().join("other"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let rx = Receiver::start().await;
    let relay = RelayProc::start(
        &dir.path().join("a"),
        &scrape_config(&other.ca, &pki, &target, "https", &rx.url()),
    )
    .await;
    let e = error_saying(&relay, "another cluster").await;
    assert!(!e.contains("BadSignature"), "{e}");
    assert!(e.contains("wrong SLB IP"), "{e}");
    drop(relay);
    let relay = RelayProc::start(
        &dir.path().join("b"),
        &scrape_config(&pki.ca, &pki, &target, "http", &rx.url()),
    )
    .await;
    let e = error_saying(&relay, "set scheme: https").await;
    assert!(e.contains("not HTTP"), "{e}");
}

/// Row "private keys are printed": a key given where a kubeconfig goes is
/// named as a PEM file, and never quoted, by `render`, `check` and `run`.
#[test]
fn a_key_in_place_of_a_kubeconfig_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let key = std::fs::read_to_string(&pki.client_key).unwrap();
    let secret_part = key.lines().nth(1).unwrap().to_string();
    let cfg = dir.path().join("c.yml");
    std::fs::write(
        &cfg,
        format!(
            "scrape_configs: [{{job_name: a, scheme: https, tls_config: {{kubeconfig: {}}}, static_configs: [{{targets: ['127.0.0.1:1']}}]}}]\n",
            pki.client_key.display()
        ),
    )
    .unwrap();
    let key_path = pki.client_key.to_str().unwrap();
    let cfg_path = cfg.to_str().unwrap();
    for args in [
        vec!["render", "--kubeconfig", key_path],
        vec!["check", "--config", cfg_path],
        vec![
            "run",
            "--config",
            cfg_path,
            "--listen-address",
            "127.0.0.1:0",
        ],
    ] {
        let (code, out, err) = run_in(dir.path(), &args);
        assert_eq!(code, 1, "{args:?}");
        let all = format!("{out}{err}");
        assert!(
            !all.contains("PRIVATE KEY"),
            "{args:?} printed the key: {all}"
        );
        assert!(
            !all.contains(&secret_part[..20]),
            "{args:?} printed the key: {all}"
        );
        assert!(all.contains("is a PEM file"), "{args:?}: {all}");
    }
    // A wrong value elsewhere in a kubeconfig is not quoted either.
    let kc = dir.path().join("kc");
    std::fs::write(
        &kc,
        format!("apiVersion: v1\nclusters: \"{}\"\n", secret_part),
    )
    .unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &["render", "--kubeconfig", kc.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(!format!("{out}{err}").contains(&secret_part[..20]), "{err}");
}

/// Row "relative paths": TLS files, like discovery files, are relative to
/// the config file's directory (as in Prometheus), wherever `check` and
/// `run` are started from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let pki = Pki::new(&site.join("pki"));
    let target = MtlsTarget::start(&pki, "rel 1\n".into()).await;
    let rx = Receiver::start().await;
    let kc = pki.kubeconfig(&site, &format!("https://{}", target.addr));
    assert_eq!(kc, site.join("kubeconfig"));
    let cfg = format!(
        "global: {{scrape_interval: 500ms, scrape_timeout: 500ms}}\nscrape_configs:\n  - job_name: rel\n    scheme: https\n    tls_config: {{kubeconfig: kubeconfig, server_name: localhost}}\n    static_configs: [{{targets: ['{}']}}]\n  - job_name: files\n    scheme: https\n    tls_config: {{ca_file: pki/ca.crt, cert_file: pki/client.crt, key_file: pki/client.key, server_name: localhost}}\n    static_configs: [{{targets: ['{}']}}]\nremote_write: [{{url: '{}'}}]\n",
        target.addr,
        target.addr,
        rx.url()
    );
    std::fs::write(site.join("relay.yml"), &cfg).unwrap();
    // From elsewhere: the walk-through's `./ack-kubeconfig` works from any
    // directory.
    let (code, out, err) = run_in(dir.path(), &["check", "--config", "site/relay.yml"]);
    assert_eq!(code, 0, "{out}{err}");
    let elsewhere = dir.path().to_path_buf();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_in(&elsewhere, &["probe", "--config", "site/relay.yml"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("HTTP: 200 OK").count(), 2, "{out}");
}

/// Row "`--data-dir` naming a file": said in words.
#[test]
fn a_file_in_place_of_the_data_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(
        &cfg,
        "scrape_configs: [{job_name: a, static_configs: [{targets: ['127.0.0.1:1']}]}]\n",
    )
    .unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            file.to_str().unwrap(),
            "--listen-address",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("a file is in the way"), "{err}");
    assert!(!err.contains("File exists (os error 17)"), "{err}");
}

/// Row "`--help`": `-c/--config` documented in `check` and `probe`,
/// `render --namespace` too, every render option in its help; log flags
/// belong to `run` and are refused where they would be ignored.
#[test]
fn help_documents_every_flag_and_log_flags_are_run_s() {
    let help = |args: &[&str]| {
        let (code, out, _) = run_in(Path::new("."), args);
        assert_eq!(code, 0, "{args:?}");
        out
    };
    for sub in ["check", "probe"] {
        let h = help(&[sub, "--help"]);
        assert!(h.contains("-c, --config"), "{sub}: no -c/--config:\n{h}");
        assert!(
            h.contains("Configuration file"),
            "{sub}: --config undocumented:\n{h}"
        );
        assert!(!h.contains("--log-level"), "{sub}: {h}");
    }
    let h = help(&["render", "--help"]);
    for flag in [
        "--namespace",
        "--context",
        "--remote-write-url",
        "--image",
        "--pull-token-file",
        "--mode",
    ] {
        let i = h
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing:\n{h}"));
        let doc = &h[i..].lines().take(2).collect::<Vec<_>>().join(" ");
        assert!(doc.len() > flag.len() + 20, "{flag} undocumented: {doc}");
    }
    let h = help(&["run", "--help"]);
    for flag in [
        "--log-level",
        "--log-format",
        "--config.auto-reload-interval",
    ] {
        assert!(h.contains(flag), "{flag} missing from run --help");
    }
    let (code, _, err) = run_in(
        Path::new("."),
        &["check", "--config", "x.yml", "--log-level", "debug"],
    );
    assert_eq!(code, 2, "check accepted --log-level: {err}");
}

/// Row "re-applying a changed ConfigMap changes nothing until a restart":
/// with `--config.auto-reload-interval`, a changed file is loaded by itself
/// (no SIGHUP), and a broken one is refused with the running config kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_loaded_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let a = MtlsTarget::start(&pki, "a 1\n".into()).await;
    let b = MtlsTarget::start(&pki, "b 1\n".into()).await;
    let rx = Receiver::start().await;
    let cfg = |targets: &[&MtlsTarget]| {
        let t: Vec<String> = targets.iter().map(|t| format!("'{}'", t.addr)).collect();
        format!(
            "global: {{scrape_interval: 300ms, scrape_timeout: 300ms}}\nscrape_configs:\n  - job_name: cp\n    scheme: https\n    tls_config: {{ca_file: {}, cert_file: {}, key_file: {}, server_name: localhost}}\n    static_configs: [{{targets: [{}]}}]\nremote_write: [{{url: '{}'}}]\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display(),
            t.join(", "),
            rx.url()
        )
    };
    let path = dir.path().join("relay.yml");
    std::fs::write(&path, cfg(&[&a])).unwrap();
    let log = dir.path().join("relay.log");
    let child = Command::new(relay_bin())
        .args(["run", "--config"])
        .arg(&path)
        .args([
            "--listen-address",
            "127.0.0.1:0",
            "--config.auto-reload-interval",
            "300ms",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = common::Reaped::new(child);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        common::bound_address(&log, child.child(), Duration::from_secs(10)).is_some(),
        "{}",
        read()
    );
    std::fs::write(&path, cfg(&[&a, &b])).unwrap();
    let scraped = wait_for(Duration::from_secs(10), || {
        (!b.requests.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    assert!(
        scraped.is_some(),
        "the new target was not picked up:\n{}",
        read()
    );
    assert!(
        read().contains("config file changed; reloading"),
        "{}",
        read()
    );
    // A broken file: refused once, the running config stays.
    std::fs::write(
        &path,
        "scrape_configs: [{job_name: x, scrape_interval: fast}]\n",
    )
    .unwrap();
    let refused = wait_for(Duration::from_secs(10), || {
        read().contains("config reload rejected").then_some(())
    })
    .await;
    assert!(refused.is_some(), "{}", read());
    let before = b.requests.lock().unwrap().len();
    let still = wait_for(Duration::from_secs(5), || {
        (b.requests.lock().unwrap().len() > before + 2).then_some(())
    })
    .await;
    assert!(still.is_some(), "the running config stopped");
    assert_eq!(
        read().matches("config reload rejected").count(),
        1,
        "{}",
        read()
    );
}

/// Row "one WARN per retry, no recovered line, samples_failed counting
/// every attempt": a receiver down for a while is one WARN line, then one
/// line when it recovers (how long, how many retries); the attempts count
/// as retried, nothing as failed (nothing was given up on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_one_line_and_its_end_another() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let target = MtlsTarget::start(&pki, "m 1\n".into()).await;
    let rx = Receiver::start().await;
    rx.script
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n((503, None), 12));
    let relay = RelayProc::start(
        dir.path(),
        &scrape_config(&pki.ca, &pki, &target, "https", &rx.url())
            .replace("server_name: kubernetes", "server_name: localhost"),
    )
    .await;
    let recovered = wait_for(Duration::from_secs(20), || {
        relay.log().contains("remote write recovered").then_some(())
    })
    .await;
    let log = relay.log();
    assert!(recovered.is_some(), "{log}");
    let warns = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("remote write"))
        .count();
    assert_eq!(warns, 1, "one line for the outage:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("remote write recovered"))
        .unwrap();
    assert!(line.contains("retries=12"), "{line}");
    assert!(line.contains("failing_for="), "{line}");
    let m = relay.metrics().await;
    let value = |name: &str| {
        m.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(
        value("metrics_relay_remote_write_batches_retried_total{"),
        12.0,
        "{m}"
    );
    assert_eq!(
        value("metrics_relay_remote_write_samples_failed_total{"),
        0.0,
        "nothing was given up on: {m}"
    );
}

/// Row "`probe` on a hanging target takes twice its timeout": one
/// scrape_timeout for the handshake and the request together.
#[test]
fn probe_of_a_silent_target_takes_one_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    // Accepts connections and says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(
        &cfg,
        format!(
            "scrape_configs: [{{job_name: a, scheme: https, scrape_timeout: 1s, scrape_interval: 5s, tls_config: {{ca_file: {}, cert_file: {}, key_file: {}}}, static_configs: [{{targets: ['{addr}']}}]}}]\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    let (code, out, err) = run_in(dir.path(), &["probe", "--config", cfg.to_str().unwrap()]);
    let took = t.elapsed();
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("no TLS handshake within 1s"), "{out}");
    assert!(out.contains("HTTP: skipped"), "{out}");
    assert!(
        took < Duration::from_millis(1800),
        "probe took {took:?} for a 1 s timeout:\n{out}"
    );
    drop(silent);
}
