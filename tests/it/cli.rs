//! The command-line contract: `run`, `check`, `version`, `--help`.

use crate::common;

use std::process::Command;

use common::{Pki, relay_bin};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(relay_bin())
        .args(args)
        .output()
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = run(&["version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("metrics-relay {}", env!("CARGO_PKG_VERSION"))
    );
    for sub in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["version", "--help"],
    ] {
        let (code, out, _) = run(sub);
        assert_eq!(code, 0, "{sub:?}");
        assert!(out.contains("Usage"), "{sub:?}: {out}");
    }
    let (_, out, _) = run(&["run", "--help"]);
    for flag in ["--config", "--data-dir", "--listen-address"] {
        assert!(out.contains(flag), "{flag} in run --help");
    }
}

#[test]
fn check_accepts_a_good_config_with_loadable_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cfg = dir.path().join("c.yml");
    std::fs::write(
        &cfg,
        format!(
            "scrape_configs:\n  - job_name: cp\n    scheme: https\n    tls_config: {{ca_file: {}, cert_file: {}, key_file: {}}}\n    static_configs: [{{targets: ['127.0.0.1:6443']}}]\nremote_write:\n  - url: http://127.0.0.1:9090/api/v1/write\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    )
    .unwrap();
    let (code, out, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("OK (1 scrape config(s), 1 target(s), 1 remote_write"),
        "{out}"
    );
}

#[test]
fn check_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cases = [
        (
            "scrape_configs: [{job_name: a, scrape_timeout: 2m}]\n",
            "scrape_configs[0].scrape_timeout",
        ),
        (
            "scrape_configs: [{job_name: a, unknown_key: 1}]\n",
            "unknown_key",
        ),
        (
            "scrape_configs: [{job_name: a, tls_config: {ca_file: /nonexistent/ca.crt}}]\n",
            "ca_file: reading /nonexistent/ca.crt",
        ),
        (
            &format!(
                "scrape_configs: [{{job_name: a, tls_config: {{cert_file: {}, key_file: {}}}}}]\n",
                pki.client_cert.display(),
                pki.other_client_key.display()
            ),
            "private key does not match",
        ),
        (
            &format!(
                "remote_write: [{{url: 'http://x/w', tls_config: {{ca_file: {}}}}}]\n",
                pki.client_key.display()
            ),
            "remote_write[0].tls_config: ca_file",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("bad{i}.yml"));
        std::fs::write(&cfg, yaml).unwrap();
        let (code, out, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{yaml}: {out}{err}");
        assert!(err.contains(want), "{yaml}: expected {want:?} in {err:?}");
    }
    let (code, _, err) = run(&["check", "--config", "/nonexistent.yml"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn run_with_a_bad_config_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(&cfg, "global: {scrape_interval: fast}\n").unwrap();
    let (code, _, err) = run(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--listen-address",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("duration"), "{err}");
}

#[test]
fn a_bad_log_level_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(&cfg, "scrape_configs: []\n").unwrap();
    for level in ["bogus", "info,verbose", "x=[", "debug,metrics_relay=loud"] {
        let (code, _, err) = run(&[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--log-level",
            level,
        ]);
        assert_eq!(code, 1, "{level}: {err}");
        assert!(err.contains("not a valid log filter"), "{level}: {err}");
    }
}

#[test]
fn each_cause_is_said_once_and_logs_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(
        &cfg,
        "scrape_configs:\n  - job_name: x\n    scheme: https\n    tls_config: {ca_file: /nonexistent/ca.crt}\n    static_configs: [{targets: ['127.0.0.1:1']}]\n",
    )
    .unwrap();
    for args in [&["check"][..], &["run"]] {
        let mut a = args.to_vec();
        a.extend(["--config", cfg.to_str().unwrap()]);
        let (code, _, err) = run(&a);
        assert_eq!(code, 1, "{err}");
        // stderr is a pipe here, not a terminal: no ANSI escapes.
        assert!(!err.contains('\u{1b}'), "colour codes in {err:?}");
        assert_eq!(
            err.matches("file not found").count(),
            1,
            "the cause said more (or less) than once: {err}"
        );
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    }
}

/// `check` is `run` without the running: every admin-TLS mistake and every
/// out-of-range number `run` refuses at start, `check` refuses with the
/// same message (it passed `check` before, then `run` exited 1 or panicked).
#[test]
fn check_refuses_what_run_refuses_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let server = |cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path| {
        format!(
            "server:\n  tls_server_config:\n    cert_file: {}\n    key_file: {}\n    client_ca_file: {}\n    client_auth_type: RequireAndVerifyClientCert\n",
            cert.display(),
            key.display(),
            ca.display()
        )
    };
    let (sc, sk, ca) = (&pki.server_cert, &pki.server_key, &pki.ca);
    let missing = std::path::Path::new("/nonexistent/tls.crt");
    let cases = [
        (
            "key and certificate that do not match",
            server(sc, &pki.client_key, ca),
            "server.tls_server_config",
        ),
        ("a missing file", server(missing, sk, ca), "file not found"),
        ("a directory", server(sc, dir.path(), ca), "a directory"),
        (
            "an empty file",
            server(&empty, sk, ca),
            "server.tls_server_config.cert_file",
        ),
        (
            "the key as the certificate",
            server(sk, sk, ca),
            "server.tls_server_config.cert_file",
        ),
        (
            "the key as the CA",
            server(sc, sk, sk),
            "server.tls_server_config.client_ca_file",
        ),
        (
            "max_connections past any descriptor limit",
            "server: {max_connections: 18446744073709551615}\n".to_string(),
            "server.max_connections",
        ),
    ];
    for (i, (what, yaml, want)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("c{i}.yml"));
        std::fs::write(
            &cfg,
            format!("scrape_configs: [{{job_name: a, static_configs: [{{targets: ['127.0.0.1:1']}}]}}]\n{yaml}"),
        )
        .unwrap();
        let (code, out, check_err) = run(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: check passed: {out}");
        assert!(check_err.contains(want), "{what}: {check_err}");
        let (code, _, run_err) = run(&[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--listen-address",
            "127.0.0.1:0",
        ]);
        assert_eq!(code, 1, "{what}: {run_err}");
        assert!(!run_err.contains("panicked"), "{what}: {run_err}");
        let message = check_err.trim().trim_start_matches("error: ");
        assert!(
            run_err.contains(message),
            "{what}: run said\n{run_err}\ncheck said\n{message}"
        );
    }
    // A config that is a "billion laughs": refused before it is expanded.
    let laughs = dir.path().join("laughs.yml");
    let mut doc = String::from(
        "x: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (p, n) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        doc.push_str(&format!(
            "{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        ));
    }
    std::fs::write(&laughs, doc).unwrap();
    for cmd in ["check", "run"] {
        let (code, _, err) = run(&[
            cmd,
            "--config",
            laughs.to_str().unwrap(),
            "--listen-address",
            "127.0.0.1:0",
        ][..if cmd == "check" { 3 } else { 5 }]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains("excessive aliasing"), "{cmd}: {err}");
    }
    // Out-of-range flags: a clear refusal, never an allocation of the size.
    let cfg = dir.path().join("c0.yml");
    let (code, _, err) = run(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--shard-count",
        "4294967295",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than 1024"), "{err}");
}

/// What `run` would retry forever or run empty, `check` refuses: a
/// credentials file that is not there, an empty config, a discovery pattern
/// that matches nothing.
#[test]
fn check_refuses_what_run_would_retry_forever_or_run_empty() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in [
        (
            "scrape_configs: [{job_name: a, static_configs: [{targets: ['127.0.0.1:1']}]}]\nremote_write: [{url: 'http://127.0.0.1:1/w', basic_auth: {username: u, password_file: /nonexistent/pw}}]\n",
            "remote_write[0].basic_auth.password_file",
        ),
        ("", "the file is empty"),
        (
            "scrape_configs: [{job_name: fleet, kubeconfig_sd_configs: [{files: ['/nonexistent/*']}]}]\n",
            "matches no file",
        ),
    ] {
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let (code, out, err) = run(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{yaml}: {out}");
        assert!(err.contains(want), "{yaml}: {err}");
    }
}
