//! `metrics-relay explain` and `/explain` (issue 25): what the explanation
//! says a series is sent as is what a real Prometheus stores, and the page
//! linked from `/targets` says what the command says.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::prom::{query, receiving_prometheus};
use common::{MtlsTarget, Pki, RelayProc, http_get, relay_bin, wait_async};

/// `{a="1", b="2"}` (explain's form) as a map.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = BTreeMap::new();
    for part in inner.split(", ") {
        let (k, v) = part.split_once('=').unwrap();
        out.insert(k.to_string(), serde_json::from_str::<String>(v).unwrap());
    }
    out
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_what_prometheus_stores() {
    let dir = tempfile::tempdir().unwrap();
    let prom = receiving_prometheus(dir.path()).await;
    let pki = Pki::new(&dir.path().join("pki"));
    let page = "# TYPE etcd_server_has_leader gauge\netcd_server_has_leader{job=\"etcd-0\"} 1\n\
# TYPE apiserver_request_duration_seconds histogram\n\
apiserver_request_duration_seconds_bucket{verb=\"GET\",le=\"0.4\"} 3\n\
apiserver_request_duration_seconds_bucket{verb=\"GET\",le=\"+Inf\"} 4\n\
apiserver_request_duration_seconds_sum{verb=\"GET\"} 1\n\
apiserver_request_duration_seconds_count{verb=\"GET\"} 4\n";
    let target = MtlsTarget::start(&pki, page.into()).await;
    let kubeconfig = pki.kubeconfig(dir.path(), "https://127.0.0.1:6443");
    // The shipped ACK config, profile on, aimed at this target and Prometheus.
    let cfg = crate::budgets::ack_config_for_test(
        &kubeconfig,
        &format!("\"{}\"", target.addr),
        &[
            (
                "http://prometheus-operated.monitoring.svc:9090/api/v1/write",
                format!("{}/api/v1/write", prom.url),
            ),
            (
                "listen_address: 0.0.0.0:9464",
                "listen_address: 127.0.0.1:0".to_string(),
            ),
        ],
    );
    let cfg_path = dir.path().join("ack.yml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let explain = |series: &str| {
        let out = Command::new(relay_bin())
            .args([
                "explain",
                "--config",
                cfg_path.to_str().unwrap(),
                "--target",
                "ack-control-plane",
                "--series",
                series,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let leader = explain("etcd_server_has_leader{job=\"etcd-0\"}");
    assert!(leader.contains("exported_job=\"etcd-0\""), "{leader}");
    assert!(
        leader.contains("job: \"ack-control-plane\" -> \"etcd\""),
        "{leader}"
    );
    let sent = leader
        .lines()
        .find_map(|l| l.trim().strip_prefix("=> sent as "))
        .unwrap_or_else(|| panic!("no 'sent as' in:\n{leader}"));
    let want = parse_labels(sent);
    let thinned = explain("apiserver_request_duration_seconds_bucket{verb=\"GET\",le=\"0.4\"}");
    assert!(
        thinned.contains("): DROPPED\n    => dropped by metric relabeling"),
        "{thinned}"
    );
    assert!(thinned.contains("profile control-plane rule"), "{thinned}");

    // The agent running that config: Prometheus stores exactly those labels.
    let relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    let arrived = wait_async(Duration::from_secs(30), || async {
        !query(&prom, "etcd_server_has_leader").await.is_empty()
    })
    .await;
    assert!(arrived, "nothing arrived: {}", relay.log());
    let stored = query(&prom, "etcd_server_has_leader").await;
    assert_eq!(stored[0].0, want, "explain said {sent}");
    // The thinned bucket never arrives; the +Inf one does.
    let buckets = query(&prom, "apiserver_request_duration_seconds_bucket").await;
    let les: Vec<&str> = buckets.iter().map(|(l, _)| l["le"].as_str()).collect();
    assert_eq!(les, ["+Inf"], "{buckets:?}");

    // The page says what the command says, and /targets links to it.
    let targets = http_get(&format!("{}/targets", relay.admin))
        .await
        .unwrap()
        .1;
    let href = targets
        .split("href=\"/explain?")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no explain link on /targets:\n{targets}"));
    let (code, by_link) = http_get(&format!("{}/explain?{href}", relay.admin))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        html_unescape(&by_link).contains("=> scraped as https://"),
        "{by_link}"
    );
    let q = format!(
        "target=ack-control-plane&series={}",
        "etcd_server_has_leader%7Bjob%3D%22etcd-0%22%7D"
    );
    let (_, page) = http_get(&format!("{}/explain?{q}", relay.admin))
        .await
        .unwrap();
    let shown = html_unescape(&page);
    for line in leader
        .lines()
        .filter(|l| l.contains("->") || l.contains("sent as"))
    {
        assert!(shown.contains(line), "the page lacks {line:?}:\n{shown}");
    }
    drop(relay);
}
