//! A stand-in for the ACK One metrics aggregator, for the demo and for trying
//! the agent by hand: an HTTPS server on loopback that requires a client
//! certificate and serves a realistic control-plane `/metrics?hosting=true`
//! page whose counters move every scrape.
//!
//! ```sh
//! cargo run --example aggregator -- DIR [ADDR]
//! ```
//! writes `ca.crt`, `client.crt`, `client.key` (and the server's pair) into
//! DIR, listens on ADDR (default 127.0.0.1:16443) and runs until killed.

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
    let pki = servers::Pki::new(std::path::Path::new(&dir));
    let target = servers::MtlsTarget::start_on(&pki, payload::control_plane(0).text, &addr).await;
    println!(
        "aggregator listening on https://{}/metrics?hosting=true (client certificate required)",
        target.addr
    );
    println!(
        "ca_file={} cert_file={} key_file={}",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let mut round = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        round += 1;
        target.set_body(payload::control_plane(round).text);
    }
}
