//! A stand-in for the ACK One metrics aggregator, for the demo and for trying
//! the agent by hand: an HTTPS server on loopback that requires a client
//! certificate and serves a realistic control-plane `/metrics?hosting=true`
//! page whose counters move every scrape.
//!
//! ```sh
//! cargo run --example aggregator -- DIR [ADDR] [EXTRA_SERIES]
//! ```
//! writes `ca.crt`, `client.crt`, `client.key` (and the server's pair) and a
//! `kubeconfig` holding them (as a cluster's kubeconfig does) into DIR,
//! listens on ADDR (default 127.0.0.1:16443) and runs until killed.
//! EXTRA_SERIES adds that many `apiserver_watch_events_total` series (for
//! load and memory measurements).

#[path = "../tests/common/payload.rs"]
mod payload;
#[path = "../tests/common/servers.rs"]
mod servers;

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: aggregator DIR [ADDR]");
        std::process::exit(2);
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:16443".into());
    let extra: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let page = move |round: u64| {
        let mut text = payload::control_plane(round).text;
        for i in 0..extra {
            text.push_str(&format!(
                "apiserver_watch_events_total{{group=\"g{}\",kind=\"Kind{i}\",version=\"v1\"}} {}\n",
                i % 97,
                i as u64 + round
            ));
        }
        text
    };
    let pki = servers::Pki::new(std::path::Path::new(&dir));
    let target = match tokio::net::TcpListener::bind(&addr).await {
        // Free: let the target take it.
        Ok(probe) => {
            drop(probe);
            servers::MtlsTarget::start_on(&pki, page(0), &addr).await
        }
        Err(e) => {
            eprintln!("aggregator: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let kubeconfig = pki.kubeconfig(
        std::path::Path::new(&dir),
        &format!("https://{}", target.addr),
    );
    println!(
        "aggregator listening on https://{}/metrics?hosting=true (client certificate required)",
        target.addr
    );
    println!(
        "kubeconfig={} (ca_file={} cert_file={} key_file={})",
        kubeconfig.display(),
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let mut round = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        round += 1;
        target.set_body(page(round));
    }
}
