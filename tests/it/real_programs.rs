//! The differential test on real programs: etcd (Debian's `etcd-server`),
//! node_exporter (`prometheus-node-exporter`) and a Prometheus, each serving
//! its `/metrics` only to a client certificate of the test CA, scraped by a
//! Prometheus directly and by metrics-relay remote-writing into a second
//! one, with the same `scrape_configs`; once per Prometheus major version
//! given, the agent set to it (`global.prometheus_compatibility`).
//!
//! Live programs move between two scrapes, so values are compared where
//! they cannot have moved (build information, leadership, `up`); the series
//! themselves (names, label sets, the `le`/`quantile` forms) must be the
//! same on both sides once both have scraped a few times. Bit-identical
//! values on changing pages are `differential.rs`'s job.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::prom::{Prometheus, every_major_version, query, spawn_prometheus, start_prometheus};
use common::{Pki, Reaped, RelayProc};

const JOBS: [&str; 3] = ["etcd", "node", "prometheus"];

fn program(name: &str, package: &str) -> PathBuf {
    common::on_path(name).unwrap_or_else(|| {
        panic!("no `{name}`: scripts/test.sh installs Debian's {package} package")
    })
}

/// The `host:port` a process logged after `marker`, within `limit`.
fn logged_address(log: &Path, marker: &str, child: &mut Reaped, limit: Duration) -> String {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| {
            let rest = l.split(marker).nth(1)?;
            let addr = rest.trim_start().split([' ', ',', '"']).next()?;
            addr.contains(':').then(|| addr.to_string())
        }) {
            return addr;
        }
        if let Ok(Some(st)) = child.child().try_wait() {
            panic!("exited ({st}):\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no {marker:?} in {}:\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// etcd asking every client for a certificate of the test CA; its address.
fn start_etcd(dir: &Path, pki: &Pki) -> (Reaped, String) {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join("etcd.log");
    let child = Command::new(program("etcd", "etcd-server"))
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .args([
            "--name=t",
            "--listen-client-urls=https://127.0.0.1:0",
            "--advertise-client-urls=https://127.0.0.1:0",
            "--listen-peer-urls=http://127.0.0.1:0",
            "--initial-advertise-peer-urls=http://127.0.0.1:0",
            "--initial-cluster=t=http://127.0.0.1:0",
            "--client-cert-auth",
        ])
        .arg(format!("--trusted-ca-file={}", pki.ca.display()))
        .arg(format!("--cert-file={}", pki.server_cert.display()))
        .arg(format!("--key-file={}", pki.server_key.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start etcd");
    let mut child = Reaped::new(child);
    let addr = logged_address(
        &log,
        "serving client requests on",
        &mut child,
        Duration::from_secs(30),
    );
    (child, addr)
}

/// A `--web.config.file` for the exporter toolkit: TLS, and a client
/// certificate of the test CA required.
fn web_config(dir: &Path, pki: &Pki) -> PathBuf {
    let p = dir.join("web.yml");
    std::fs::write(
        &p,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    p
}

fn start_node_exporter(dir: &Path, pki: &Pki) -> (Reaped, String) {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join("node.log");
    let child = Command::new(program(
        "prometheus-node-exporter",
        "prometheus-node-exporter",
    ))
    .arg("--web.listen-address=127.0.0.1:0")
    .arg(format!(
        "--web.config.file={}",
        web_config(dir, pki).display()
    ))
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .expect("start node_exporter");
    let mut child = Reaped::new(child);
    let port = common::listening_port(child.child().id(), Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&log).unwrap_or_default()));
    (child, format!("127.0.0.1:{port}"))
}

fn scrape_configs(pki: &Pki, targets: &[(&str, &str)]) -> String {
    let mut s = String::from("scrape_configs:\n");
    for (job, addr) in targets {
        s += &format!(
            "  - job_name: {job}\n    scrape_interval: 2s\n    scrape_timeout: 2s\n    scheme: https\n    tls_config: {{ca_file: {}, cert_file: {}, key_file: {}, server_name: localhost}}\n    static_configs: [{{targets: [\"{addr}\"]}}]\n",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display(),
        );
    }
    s
}

type Series = BTreeSet<BTreeMap<String, String>>;

/// The label sets of every series of the three jobs.
async fn series(p: &Prometheus) -> Series {
    query(p, "{job=~\"etcd|node|prometheus\"}")
        .await
        .into_iter()
        .map(|(l, _)| l)
        .collect()
}

/// Values that cannot move between two scrapes of a running program.
const STEADY: &str = "{__name__=~\"up|go_info|etcd_server_version|etcd_server_has_leader|etcd_server_is_leader|node_exporter_build_info|prometheus_build_info|prometheus_config_last_reload_successful|node_cpu_scaling_governor\", job=~\"etcd|node|prometheus\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_node_exporter_and_prometheus_are_stored_as_prometheus_stores_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let (_etcd, etcd) = start_etcd(&dir.path().join("etcd"), &pki);
    let (_node, node) = start_node_exporter(&dir.path().join("node"), &pki);
    for (bin, major) in every_major_version() {
        let here = dir.path().join(format!("v{major}"));
        // The scraped Prometheus: this version, mTLS only.
        std::fs::create_dir_all(here.join("target")).unwrap();
        let web = web_config(&here.join("target"), &pki);
        let mut target = spawn_prometheus(
            &bin,
            &here.join("target"),
            "global:\n  scrape_interval: 1h\n",
            0,
            &[format!("--web.config.file={}", web.display())],
        );
        let prom_addr = target.url.trim_start_matches("http://").to_string();
        let scrape = scrape_configs(
            &pki,
            &[("etcd", &etcd), ("node", &node), ("prometheus", &prom_addr)],
        );
        let direct = start_prometheus(&bin, &here.join("direct"), &scrape).await;
        let receiver = start_prometheus(
            &bin,
            &here.join("receiver"),
            "global:\n  scrape_interval: 1h\n",
        )
        .await;
        let relay = RelayProc::start(
            &here.join("relay"),
            &format!(
                "global:\n  prometheus_compatibility: {major}\n{scrape}remote_write:\n  - url: {}/api/v1/write\n    queue_config: {{batch_send_deadline: 200ms}}\n",
                receiver.url
            ),
        )
        .await;
        let context = |what: &str| {
            format!(
                "Prometheus {major}: {what}\nrelay log:\n{}\ndirect log:\n{}",
                relay.log(),
                std::fs::read_to_string(&direct.log).unwrap_or_default()
            )
        };
        // Every job up and scraped three times on both sides.
        for p in [&direct, &receiver] {
            for job in JOBS {
                let q = format!(
                    "count_over_time(up{{job=\"{job}\"}}[1m]) >= 3 and up{{job=\"{job}\"}} == 1"
                );
                let seen = common::wait_async(Duration::from_secs(60), || async {
                    !query(p, &q).await.is_empty()
                })
                .await;
                assert!(
                    seen,
                    "{}",
                    context(&format!("{q} stayed empty on {}", p.url))
                );
            }
        }
        // The same series: a program may add one between the two sides'
        // scrapes, so equal within a few scrape intervals.
        let end = std::time::Instant::now() + Duration::from_secs(30);
        let mut last;
        let same = loop {
            last = (series(&direct).await, series(&receiver).await);
            if last.0 == last.1 || std::time::Instant::now() > end {
                break last.0 == last.1;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let (a, b) = &last;
        assert!(
            same,
            "{}",
            context(&format!(
                "series differ\nonly direct: {:?}\nonly relay: {:?}",
                a.difference(b).take(20).collect::<Vec<_>>(),
                b.difference(a).take(20).collect::<Vec<_>>()
            ))
        );
        for job in JOBS {
            let n = a
                .iter()
                .filter(|l| l.get("job").map(String::as_str) == Some(job))
                .count();
            assert!(n > 50, "{}", context(&format!("{job}: only {n} series")));
        }
        // Histograms and summaries of all three, in this version's forms.
        let les: BTreeSet<&str> = a
            .iter()
            .filter_map(|l| l.get("le").map(String::as_str))
            .collect();
        let one = if major == 3 { "1.0" } else { "1" };
        assert!(
            les.contains(one),
            "{}",
            context(&format!("no le={one} among {les:?}"))
        );
        assert!(
            a.iter().any(|l| l.contains_key("quantile")),
            "{}",
            context("no summary")
        );
        let steady = |p| async move {
            query(p, STEADY)
                .await
                .into_iter()
                .map(|(l, v)| (l, v.to_bits()))
                .collect::<BTreeMap<_, _>>()
        };
        let (sa, sb) = (steady(&direct).await, steady(&receiver).await);
        assert!(sa.len() >= 8, "{}", context(&format!("{sa:?}")));
        assert_eq!(sa, sb, "{}", context("steady values differ"));
        target.stop();
    }
}
