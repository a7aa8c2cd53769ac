//! Per-family budgets and the control-plane profile (issue 25): a family
//! over its budget is dropped from the scrape as a whole while `up` stays 1
//! and every other family arrives in a real Prometheus with its values; the
//! shipped profile thins the ACK fixture by the share the README quotes.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::prom::{query, receiving_prometheus};
use common::{MtlsTarget, Pki, RelayProc, metric_value, payload, wait_async};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped ACK One config with its opt-in lines turned on.
pub(crate) fn ack_config_with_profile() -> String {
    let shipped = std::fs::read_to_string(root().join("config/ack-one.yml")).unwrap();
    let mut cfg = shipped;
    for line in ["profile: control-plane", "series_per_family_limit: 20000"] {
        let commented = format!("# {line}");
        assert!(
            cfg.contains(&commented),
            "config/ack-one.yml has no {commented:?}"
        );
        cfg = cfg.replace(&commented, line);
    }
    cfg
}

/// [`ack_config_with_profile`] scraping every second with `kubeconfig`,
/// the target list `targets` (YAML flow, inside the brackets) and `more`
/// replacements besides.
pub(crate) fn ack_config_for_test(
    kubeconfig: &std::path::Path,
    targets: &str,
    more: &[(&str, String)],
) -> String {
    let mut pairs = vec![
        ("scrape_interval: 30s", "scrape_interval: 1s".to_string()),
        ("scrape_timeout: 10s", "scrape_timeout: 1s".to_string()),
        (
            "kubeconfig: /etc/metrics-relay/tls/kubeconfig",
            format!("kubeconfig: {}", kubeconfig.display()),
        ),
        (
            "targets: [\"192.168.0.10:6443\"]",
            format!("targets: [{targets}]"),
        ),
    ];
    pairs.extend(more.iter().cloned());
    common::replace_all(&ack_config_with_profile(), &pairs, "config/ack-one.yml")
}

/// Series the ACK fixture's page leaves after a job's metric relabeling.
fn series_after(sc: &metrics_relay::config::ScrapeConfig, page: &str) -> u64 {
    let ctx = metrics_relay::TargetContext {
        target_labels: vec![("job".into(), sc.job_name.clone())],
        honor_timestamps: true,
        metric_relabel: sc.effective_metric_relabel().into(),
        family_budget: metrics_relay::FamilyBudget {
            series: sc.series_per_family_limit,
            buckets: sc.buckets_per_histogram_limit,
        },
        float_label_values: true,
        ..Default::default()
    };
    let mut cache = metrics_relay::SeriesCache::new();
    let mut out = metrics_relay::EncodedSamples::default();
    let n = cache
        .ingest(&ctx, page.as_bytes(), 1000, &mut out, 0)
        .unwrap();
    assert_eq!(n.kept, out.len() as u64);
    n.kept
}

#[test]
fn the_control_plane_profile_thins_the_ack_fixture_by_more_than_30_percent() {
    let page = payload::control_plane(1).text;
    let off = metrics_relay::config::Config::from_yaml(
        &std::fs::read_to_string(root().join("config/ack-one.yml")).unwrap(),
    )
    .unwrap();
    let on = metrics_relay::config::Config::from_yaml(&ack_config_with_profile()).unwrap();
    let before = series_after(&off.scrape_configs[0], &page);
    let after = series_after(&on.scrape_configs[0], &page);
    let cut = 1.0 - after as f64 / before as f64;
    println!(
        "ACK fixture: {before} series without the profile, {after} with it ({:.1}% fewer)",
        cut * 100.0
    );
    assert!(cut >= 0.30, "{before} → {after}: {:.1}%", cut * 100.0);
}

/// `n` series of a family that grows (a CRD per series, as a new operator
/// brings).
fn explosion(n: usize, round: u64) -> String {
    let mut s = String::from(
        "# HELP apiserver_crd_objects Objects per custom resource.\n# TYPE apiserver_crd_objects gauge\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "apiserver_crd_objects{{crd=\"crd{i}.example.com\"}} {}\n",
            round + i as u64
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_over_budget_costs_no_other_family_and_up_stays_1() {
    let dir = tempfile::tempdir().unwrap();
    let prom = receiving_prometheus(dir.path()).await;
    let pki = Pki::new(&dir.path().join("pki"));
    // Within budget first: 30 series of the growing family.
    let target = MtlsTarget::start(&pki, payload::control_plane(1).text + &explosion(30, 1)).await;
    let cfg = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: cp
    scheme: https
    tls_config: {tls}
    static_configs: [{{targets: ["{addr}"]}}]
    series_per_family_limit: 200
remote_write:
  - url: {url}/api/v1/write
    queue_config: {{batch_send_deadline: 200ms}}
"#,
        tls = pki.tls_yaml("kubernetes"),
        addr = target.addr,
        url = prom.url,
    );
    let relay = RelayProc::start(&dir.path().join("relay"), &cfg).await;
    let arrived = wait_async(Duration::from_secs(30), || async {
        query(&prom, "count(apiserver_crd_objects)")
            .await
            .first()
            .map(|s| s.1)
            == Some(30.0)
    })
    .await;
    assert!(
        arrived,
        "the family within budget never arrived: {}",
        relay.log()
    );

    // The family grows past its budget of 200 series (the largest other
    // family, the API server's latency histogram, has 168).
    let page = payload::control_plane(2);
    target.set_body(page.text.clone() + &explosion(250, 2));
    let dropped = wait_async(Duration::from_secs(30), || async {
        let m = relay.metrics().await;
        metric_value(&m, "metrics_relay_scrape_families_over_budget{") == Some(1.0)
    })
    .await;
    assert!(dropped, "the family was not dropped: {}", relay.log());
    // Its series go stale in Prometheus (markers for the 30 it had).
    let gone = wait_async(Duration::from_secs(30), || async {
        query(&prom, "count(apiserver_crd_objects)")
            .await
            .is_empty()
    })
    .await;
    assert!(gone, "the over-budget family's series did not go stale");
    // Let more scrapes happen, then: every other family, with this page's values.
    let scrapes = |m: &str| metric_value(m, "metrics_relay_scrapes_total{").unwrap_or(0.0);
    let at = scrapes(&relay.metrics().await);
    assert!(
        wait_async(Duration::from_secs(20), || async {
            scrapes(&relay.metrics().await) >= at + 3.0
        })
        .await
    );
    let stored = query(&prom, "{job=\"cp\",__name__!~\"up|scrape_.*\"}").await;
    assert_eq!(stored.len(), page.series.len(), "series count");
    for s in &page.series {
        let got = stored
            .iter()
            .find(|(l, _)| s.labels.iter().all(|(k, v)| l.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{:?} missing", s.labels));
        assert_eq!(got.1, s.value, "{:?}", s.labels);
    }
    // up never left 1; the synthetic count says what was kept.
    let up = query(&prom, "min_over_time(up{job=\"cp\"}[1h])").await;
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1, 1.0, "up went to 0");
    let kept = query(&prom, "scrape_samples_post_metric_relabeling{job=\"cp\"}").await;
    assert_eq!(kept[0].1, page.series.len() as f64);
    // Counted per family, shown on /targets, logged once.
    let m = relay.metrics().await;
    let per_family = metric_value(
        &m,
        "metrics_relay_scrape_family_budget_dropped_samples_total{job=\"cp\",instance=",
    );
    assert!(per_family.is_some_and(|v| v >= 250.0), "{m}");
    assert!(m.contains("family=\"apiserver_crd_objects\""), "{m}");
    let t = relay.targets().await;
    let t = &t.as_array().unwrap()[0];
    assert_eq!(t["health"], "up");
    assert_eq!(t["over_budget_total"], 1);
    assert_eq!(t["over_budget"][0]["family"], "apiserver_crd_objects");
    assert_eq!(t["over_budget"][0]["limit"], 200);
    let html = common::http_get(&format!("{}/targets", relay.admin))
        .await
        .unwrap()
        .1;
    assert!(
        html.contains("apiserver_crd_objects: over 200 series"),
        "{html}"
    );
    let log = relay.log();
    assert_eq!(
        log.matches("metric families over their budget").count(),
        1,
        "logged once per change:\n{log}"
    );

    // Back within budget: the family flows again, and that is said once.
    target.set_body(payload::control_plane(3).text + &explosion(40, 3));
    let back = wait_async(Duration::from_secs(30), || async {
        query(&prom, "count(apiserver_crd_objects)")
            .await
            .first()
            .map(|s| s.1)
            == Some(40.0)
    })
    .await;
    assert!(back, "the family did not come back: {}", relay.log());
    assert_eq!(relay.log().matches("back within their budget").count(), 1);
    let t = relay.targets().await;
    assert_eq!(t[0]["over_budget_total"], 0);
}
