//! Replicas against a real VictoriaMetrics (Debian's `victoria-metrics`, with
//! `-dedup.minScrapeInterval`): agents that split the targets
//! (`--shard-count 3 --replication-factor 2` over 30 targets) and agents
//! that each scrape everything (2 of 2), one of them killed with SIGKILL
//! mid-run. Each target must be scraped by exactly `rf` agents, the
//! deduplicated series must be those of one agent, and no series may have a
//! gap through the kill.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use common::vm::{self, Victoria};
use common::{MtlsTarget, Pki, http_get, metric_value, relay_bin, wait_for};

const INTERVAL_S: u64 = 2;

async fn start_victoria(dir: &Path) -> Victoria {
    // Samples of one series closer than the scrape interval are one.
    vm::start(
        &vm::current_bin(),
        dir,
        &[format!("-dedup.minScrapeInterval={INTERVAL_S}s")],
    )
    .await
}

struct Agent {
    child: Child,
    admin: String,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(dir: &Path, config: &Path, count: u32, index: u32, rf: u32) -> Agent {
    let log = dir.join(format!("agent-{index}.log"));
    let mut child = Command::new(relay_bin())
        .args(["run", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join(format!("data-{index}")))
        .args([
            "--listen-address",
            "127.0.0.1:0",
            "--shard-count",
            &count.to_string(),
            "--replication-factor",
            &rf.to_string(),
        ])
        // The index the way a StatefulSet pod gets it: from its name.
        .arg("--shard-index-from-hostname")
        .env("HOSTNAME", format!("metrics-relay-{index}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn metrics-relay");
    let Some(addr) = common::bound_address(&log, &mut child, Duration::from_secs(30)) else {
        let _ = child.kill();
        panic!(
            "agent {index} did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    Agent {
        child,
        admin: format!("http://{addr}"),
        log,
    }
}

async fn wait_async_bool<F, Fut>(limit: Duration, f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_async(limit, f).await
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Raw samples of `fleet_value` per instance, from VictoriaMetrics's export
/// (deduplicated as its queries are).
async fn exported(vm: &Victoria, start: f64, end: f64) -> HashMap<String, Vec<i64>> {
    let url = format!(
        "{}/api/v1/export?match%5B%5D=fleet_value&start={start:.3}&end={end:.3}",
        vm.url
    );
    let (status, body) = http_get(&url).await.expect("export");
    assert_eq!(status, 200, "{body}");
    let mut out = HashMap::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let inst = v["metric"]["instance"].as_str().unwrap().to_string();
        let ts: Vec<i64> = v["timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        out.entry(inst).or_insert_with(Vec::new).extend(ts);
    }
    for ts in out.values_mut() {
        ts.sort_unstable();
    }
    out
}

async fn vm_query(v: &Victoria, q: &str) -> f64 {
    vm::query(v, q)
        .await
        .unwrap_or_else(|| panic!("{q}: no result"))
}

/// `count` agents with replication factor `rf` over `n` targets; agent
/// `kill` is killed with SIGKILL halfway.
async fn replicas(count: u32, rf: u32, n: usize, kill: u32) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let vm = start_victoria(dir.path()).await;
    let mut targets = Vec::new();
    for i in 0..n {
        targets.push(
            MtlsTarget::start(&pki, format!("# TYPE fleet_value gauge\nfleet_value {i}\n")).await,
        );
    }
    let list: Vec<String> = targets.iter().map(|t| format!("'{}'", t.addr)).collect();
    let config = dir.path().join("relay.yml");
    std::fs::write(
        &config,
        format!(
            r#"
global: {{scrape_interval: {INTERVAL_S}s}}
scrape_configs:
  - job_name: fleet
    scheme: https
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}
    static_configs: [{{targets: [{list}]}}]
remote_write:
  - url: {vm}/api/v1/write
    queue_config: {{batch_send_deadline: 200ms}}
"#,
            ca = pki.ca.display(),
            cert = pki.client_cert.display(),
            key = pki.client_key.display(),
            list = list.join(", "),
            vm = vm.url,
        ),
    )
    .unwrap();
    let mut agents: Vec<Agent> = (0..count)
        .map(|i| start_agent(dir.path(), &config, count, i, rf))
        .collect();
    let t0 = now_s();

    // Each target is on the /targets of exactly rf agents, and each agent
    // says what it owns.
    let mut owners: HashMap<String, Vec<u32>> = HashMap::new();
    for (i, a) in agents.iter().enumerate() {
        let mut body = None;
        for _ in 0..100 {
            if let Ok((200, b)) = http_get(&format!("{}/targets?format=json", a.admin)).await {
                body = Some(b);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let body = body.unwrap_or_else(|| {
            panic!(
                "agent {i}: {}",
                std::fs::read_to_string(&a.log).unwrap_or_default()
            )
        });
        let ts: serde_json::Value = serde_json::from_str(&body).unwrap();
        for t in ts.as_array().unwrap() {
            owners
                .entry(t["instance"].as_str().unwrap().to_string())
                .or_default()
                .push(i as u32);
            {
                let shards: Vec<u64> = t["shards"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_u64().unwrap())
                    .collect();
                assert!(shards.contains(&(i as u64)) && shards.len() == rf as usize);
            }
        }
        let (_, m) = http_get(&format!("{}/metrics", a.admin)).await.unwrap();
        let owned = metric_value(&m, "metrics_relay_shard_targets{owned=\"true\"}").unwrap();
        let others = metric_value(&m, "metrics_relay_shard_targets{owned=\"false\"}").unwrap();
        assert_eq!(owned + others, n as f64, "{m}");
        assert_eq!(owned as usize, ts.as_array().unwrap().len());
        assert!(m.contains(&format!(
            "metrics_relay_shard_info{{shard_index=\"{i}\",shard_count=\"{count}\",replication_factor=\"{rf}\"}} 1"
        )));
    }
    assert_eq!(owners.len(), n, "some target has no owner: {owners:?}");
    for (inst, o) in &owners {
        assert_eq!(o.len(), rf as usize, "{inst} is scraped by {o:?}");
    }

    // Five scrape intervals of every target before the kill, five after:
    // counted in scrapes the targets served (each served by rf agents).
    let served = |targets: &[MtlsTarget]| -> Vec<usize> {
        targets
            .iter()
            .map(|t| t.requests.lock().unwrap().len())
            .collect()
    };
    let rounds = |from: &[usize], per_target: usize| {
        let now = served(&targets);
        now.iter().zip(from).all(|(n, f)| *n >= f + per_target)
    };
    let start = served(&targets);
    wait_for(Duration::from_secs(30 * INTERVAL_S), || {
        rounds(&start, 5 * rf as usize).then_some(())
    })
    .await
    .expect("five intervals of scrapes before the kill");
    let t_kill = now_s();
    let victim = &mut agents[kill as usize];
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    // After the kill, a target the victim shared has the survivors only.
    let after = served(&targets);
    wait_for(Duration::from_secs(30 * INTERVAL_S), || {
        rounds(&after, 5 * (rf as usize - 1).max(1)).then_some(())
    })
    .await
    .expect("five intervals of scrapes after the kill");
    let t_end = now_s() - 1.0;
    // What was sent has arrived: every survivor's queue is empty.
    for (i, a) in agents.iter().enumerate() {
        if i as u32 == kill {
            continue;
        }
        let drained = wait_async_bool(Duration::from_secs(20), || async {
            let Ok((_, m)) = http_get(&format!("{}/metrics", a.admin)).await else {
                return false;
            };
            metric_value(&m, "metrics_relay_remote_write_queue_samples{") == Some(0.0)
        })
        .await;
        assert!(drained, "agent {i} did not drain its queue");
    }

    // From the first full interval on, every target's series has a sample
    // in every interval, through the kill, and about one per interval after
    // deduplication (two agents' samples of one interval are one).
    let start = t0 + 2.0 * INTERVAL_S as f64;
    let iv = INTERVAL_S as i64 * 1000;
    // What VictoriaMetrics accepted becomes searchable a moment later: wait
    // (with a deadline) until every series reaches the end of the window, or
    // give up and let the gap check say what is missing.
    let caught_up = |got: &HashMap<String, Vec<i64>>| {
        got.len() == n
            && got.values().all(|ts| {
                ts.last()
                    .is_some_and(|&l| l >= (t_end * 1000.0) as i64 - 2 * iv)
            })
    };
    common::wait_async(Duration::from_secs(10), || async {
        caught_up(&exported(&vm, start, t_end).await)
    })
    .await;
    let got = exported(&vm, start, t_end).await;
    assert_eq!(got.len(), n, "series of fleet_value: {:?}", got.keys());
    for (inst, ts) in &got {
        let mut edges = vec![(start * 1000.0) as i64];
        edges.extend(ts.iter().copied());
        edges.push((t_end * 1000.0) as i64);
        let gap = edges.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(
            gap <= 2 * iv,
            "{inst}: a gap of {gap} ms (kill at {:.1} s into the run): {ts:?}",
            t_kill - t0
        );
        let span = (t_end - start) * 1000.0;
        assert!(
            (ts.len() as f64) <= span / iv as f64 + 2.0,
            "{inst}: {} samples in {span} ms: not deduplicated",
            ts.len()
        );
    }
    // The deduplicated series are one agent's: each target's own plus its
    // five synthetic series, no more.
    let series = vm_query(&vm, "count(last_over_time({job=\"fleet\"}[1m]))").await;
    assert_eq!(series as usize, n * 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_with_two_replicas_cover_thirty_targets_through_a_kill() {
    replicas(3, 2, 30, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_full_replicas_deduplicated_by_victoria_metrics_through_a_kill() {
    replicas(2, 2, 5, 0).await;
}
