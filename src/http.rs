//! The outgoing HTTP client shared by scraping and remote write.
//!
//! hyper 1 with a pooled connector, rustls for `https` (plain TCP for
//! `http`), HTTP/1.1, TCP_NODELAY, a connect timeout, and no proxy: nothing is
//! read from `HTTP_PROXY`/`HTTPS_PROXY`, an agent beside the API server must
//! not be rerouted by its environment.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::TlsConfig;
use crate::tls::{self, TlsError};

/// The client type used everywhere.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// `User-Agent` we send.
pub const USER_AGENT: &str = concat!("metrics-relay/", env!("CARGO_PKG_VERSION"));

/// Builds a client for one `tls_config` (or none).
pub fn client(
    tls_cfg: Option<&TlsConfig>,
    connect_timeout: Duration,
) -> Result<HttpClient, TlsError> {
    let rustls_cfg = tls::client_config(tls_cfg)?;
    let server_name = tls::server_name_override(tls_cfg)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls_cfg)
        .https_or_http();
    let b = match server_name {
        Some(n) => b.with_server_name_resolver(FixedServerNameResolver::new(n)),
        None => b,
    };
    let connector = b.enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(4)
        .build(connector))
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body size limit of {limit} bytes exceeded")]
    TooLarge { limit: u64 },
    #[error("reading body: {0}")]
    Read(String),
}

/// Reads a body into `out` (cleared first, its capacity reused), failing as
/// soon as it passes `limit` bytes.
pub async fn read_body_limited(
    mut body: hyper::body::Incoming,
    limit: Option<u64>,
    out: &mut Vec<u8>,
) -> Result<(), BodyError> {
    out.clear();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(tls::describe_error(&e)))?;
        if let Ok(data) = frame.into_data() {
            if let Some(l) = limit {
                if (out.len() + data.len()) as u64 > l {
                    return Err(BodyError::TooLarge { limit: l });
                }
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(())
}

/// Builds (and discards) the TLS configuration: loads and validates every
/// referenced file, for `metrics-relay check`.
pub fn client_config_check(tls_cfg: Option<&TlsConfig>) -> Result<(), TlsError> {
    tls::client_config(tls_cfg)?;
    tls::server_name_override(tls_cfg)?;
    Ok(())
}
