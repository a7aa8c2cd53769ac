//! Parallel sending (`queue_config.max_shards`): a receiver 300 ms away that
//! refuses every fifth request with a 503. With many targets, requests of
//! different targets travel at once, and each series still arrives in
//! timestamp order (a target's requests go one at a time, a refused one is
//! retried, after a backoff longer than the scrape interval, before that
//! target's next); with `max_shards: 1`, one at a time.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{MtlsTarget, Pki, Receiver, RelayProc};

async fn run(max_shards: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut targets = Vec::new();
    for i in 0..8 {
        let t = MtlsTarget::start(&pki, String::new()).await;
        // Every scrape a new value: `n{target} <request count>`.
        t.behavior.lock().unwrap().counter = Some(format!("n_{i}"));
        targets.push(t);
    }
    let rx = Receiver::start().await;
    *rx.delay.lock().unwrap() = Duration::from_millis(300);
    {
        let mut script = rx.script.lock().unwrap();
        for _ in 0..200 {
            script.push_back((503, None));
            for _ in 0..4 {
                script.push_back((204, None));
            }
        }
    }
    let list: Vec<String> = targets.iter().map(|t| format!("'{}'", t.addr)).collect();
    let config = format!(
        r#"
global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}
scrape_configs:
  - job_name: many
    scheme: https
    tls_config: {{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}
    static_configs: [{{targets: [{list}]}}]
remote_write:
  - url: {url}
    queue_config: {{max_shards: {max_shards}, batch_send_deadline: 100ms, min_backoff: 1s, max_backoff: 1s}}
"#,
        ca = pki.ca.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
        list = list.join(", "),
        url = rx.url()
    );
    let relay = RelayProc::start(dir.path(), &config).await;
    // Until refusals were retried and every target's counter has arrived
    // several times (each a retried stream included).
    let enough = common::wait_for(Duration::from_secs(60), || {
        let accepted = rx.accepted();
        let per_target = (0..8).all(|i| {
            let name = format!("n_{i}");
            accepted
                .iter()
                .filter(|(l, _, _)| l.iter().any(|(k, v)| k == "__name__" && *v == name))
                .count()
                >= 6
        });
        let refused = rx
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 503)
            .count();
        // With several shards, until several requests were in flight at
        // once (targets' scrapes fall due at different moments).
        let parallel = rx.max_in_flight.load(SeqCst) >= 3.min(max_shards);
        (per_target && refused >= 3 && parallel).then_some(())
    })
    .await;
    assert!(enough.is_some(), "{}", relay.log());
    drop(relay);

    // Per series, in the order the receiver accepted them: increasing
    // timestamps, no gap in the counter (nothing lost, nothing reordered).
    let mut last: HashMap<Vec<(String, String)>, (i64, f64)> = HashMap::new();
    let mut samples = 0;
    for (labels, value, ts) in rx.accepted() {
        let name = &labels.iter().find(|(k, _)| k == "__name__").unwrap().1;
        if let Some((pts, pv)) = last.get(&labels) {
            assert!(ts > *pts, "{labels:?}: timestamp {ts} after {pts}");
            if name.starts_with("n_") {
                assert!(value > *pv, "{labels:?}: value {value} after {pv}");
            }
        }
        last.insert(labels, (ts, value));
        samples += 1;
    }
    assert!(rx.has_status(503), "the refusals were exercised");
    (rx.max_in_flight.load(SeqCst), samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_sent_in_parallel_each_series_in_order() {
    let (parallel, samples) = run(8).await;
    assert!(parallel >= 3, "at most {parallel} requests at once");
    assert!(samples > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_shards_one_sends_one_request_at_a_time() {
    let (parallel, samples) = run(1).await;
    assert_eq!(parallel, 1);
    assert!(samples > 0);
}
