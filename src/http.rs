//! The outgoing HTTP client shared by scraping and remote write.
//!
//! hyper 1 with a pooled connector, rustls for `https` (plain TCP for
//! `http`), HTTP/1.1, TCP_NODELAY, a connect timeout, and no proxy: nothing is
//! read from `HTTP_PROXY`/`HTTPS_PROXY`, an agent beside the API server must
//! not be rerouted by its environment.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::TlsConfig;
use tokio::sync::watch;

use crate::metric_labels::TlsScope;
use crate::telemetry::{Metrics, TlsLabels};
use crate::tls::{self, Material, TlsError};

/// The client type used everywhere.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Chunks>>;

/// A request body of byte chunks, written out in order without being copied
/// into one buffer first: a joined remote-write request is several queued
/// snappy blocks, and hyper hands them to the socket as one vectored write
/// (over TLS, rustls copies them into records in any case). Empty for a GET
/// (`Full::default()`).
#[derive(Clone, Debug, Default)]
pub struct Chunks {
    /// The chunk being written; empty only when every chunk is written.
    head: Bytes,
    rest: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunks {
    /// Bytes left to write.
    pub fn len(&self) -> usize {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Appends a chunk (empty ones are skipped).
    pub fn push(&mut self, b: Bytes) {
        if b.is_empty() {
            return;
        }
        self.remaining += b.len();
        if self.head.is_empty() {
            self.head = b;
        } else {
            self.rest.push_back(b);
        }
    }

    /// The bytes left, as one contiguous copy.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.remaining);
        v.extend_from_slice(&self.head);
        for b in &self.rest {
            v.extend_from_slice(b);
        }
        v
    }
}

impl From<Bytes> for Chunks {
    fn from(b: Bytes) -> Self {
        let mut c = Chunks::default();
        c.push(b);
        c
    }
}

impl bytes::Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        &self.head
    }

    fn advance(&mut self, cnt: usize) {
        let mut cnt = cnt.min(self.remaining);
        self.remaining -= cnt;
        while cnt >= self.head.len() && !self.head.is_empty() {
            cnt -= self.head.len();
            self.head = self.rest.pop_front().unwrap_or_default();
        }
        self.head.advance(cnt.min(self.head.len()));
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        if self.head.is_empty() {
            return 0;
        }
        let parts = std::iter::once(&self.head).chain(&self.rest);
        let mut n = 0;
        for (d, b) in dst.iter_mut().zip(parts) {
            *d = std::io::IoSlice::new(b);
            n += 1;
        }
        n
    }
}

/// `User-Agent` we send.
pub(crate) const USER_AGENT: &str = concat!("metrics-relay/", env!("CARGO_PKG_VERSION"));

/// Builds a client for one `tls_config` (or none).
pub fn client(
    tls_cfg: Option<&TlsConfig>,
    connect_timeout: Duration,
) -> Result<HttpClient, TlsError> {
    client_from(&Material::load(tls_cfg)?, connect_timeout)
}

/// Builds a client from loaded TLS material.
pub(crate) fn client_from(m: &Material, connect_timeout: Duration) -> Result<HttpClient, TlsError> {
    let rustls_cfg = tls::client_config_from(m)?;
    let server_name = tls::server_name_of(m.server_name.as_deref())?;
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

/// How often TLS files (or the kubeconfig) are checked for new content.
pub(crate) const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A client that follows certificate rotation: the TLS material is read
/// again every `every`; when its content changed (a Kubernetes Secret volume
/// swaps its `..data` symlink, so content is compared, never inodes) the new
/// material is validated (parses, key matches certificate, not expired) and a
/// new client replaces the old one for the next scrapes; the old client, and
/// with it its pooled connections, goes away once the last user drops it. A
/// bad new set keeps the old client and is reported. Also exports the client
/// certificate's expiry. The watcher ends when every receiver is gone.
pub(crate) fn watched_client(
    tls_cfg: Option<&TlsConfig>,
    connect_timeout: Duration,
    metrics: Metrics,
    scope: TlsScope,
    name: &str,
    every: Duration,
) -> Result<watch::Receiver<HttpClient>, TlsError> {
    let material = Material::load(tls_cfg)?;
    let client = client_from(&material, connect_timeout)?;
    let labels = TlsLabels {
        scope,
        name: name.to_string(),
    };
    let export_expiry = |m: &Material| {
        if let Some(info) = m.client_cert_info() {
            metrics
                .tls_cert_expiry
                .get_or_create(&labels)
                .set(info.not_after as f64);
        }
    };
    export_expiry(&material);
    let (tx, rx) = watch::channel(client);
    let Some(tls_cfg) = tls_cfg.cloned() else {
        return Ok(rx);
    };
    let metrics2 = metrics.clone();
    let labels2 = labels.clone();
    tls::spawn_reloader(
        tx,
        material.fingerprint(),
        every,
        labels,
        metrics,
        move |fingerprint| {
            let m = Material::load(Some(&tls_cfg))?;
            if m.fingerprint() == *fingerprint {
                return Ok(None);
            }
            let c = client_from(&m, connect_timeout)?;
            if let Some(info) = m.client_cert_info() {
                metrics2
                    .tls_cert_expiry
                    .get_or_create(&labels2)
                    .set(info.not_after as f64);
            }
            Ok(Some((m.fingerprint(), c)))
        },
    );
    Ok(rx)
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("body size limit of {limit} bytes exceeded")]
    TooLarge { limit: u64 },
    #[error("reading body: {0}")]
    Read(String),
}

/// Reads a body into `out` (cleared first, its capacity reused), failing as
/// soon as it passes `limit` bytes.
pub(crate) async fn read_body_limited(
    mut body: hyper::body::Incoming,
    limit: Option<u64>,
    out: &mut Vec<u8>,
) -> Result<(), BodyError> {
    out.clear();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(tls::describe_error(&e)))?;
        if let Ok(data) = frame.into_data() {
            let need = out.len() + data.len();
            if let Some(l) = limit
                && need as u64 > l
            {
                return Err(BodyError::TooLarge { limit: l });
            }
            if need > out.capacity() {
                // Double, but never past the limit (`extend_from_slice`
                // alone may double past it).
                let cap = (out.capacity() * 2).max(need).max(64 << 10);
                let cap = limit.map_or(cap, |l| cap.min(usize::try_from(l).unwrap_or(usize::MAX)));
                out.reserve_exact(cap.max(need) - out.len());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(())
}

/// Reads at most `max` bytes of a body (the start of a peer's answer, for
/// the message it carries) and drops the rest unread, so that a huge reply
/// costs `max` bytes, never its size. A connection whose body was not read
/// to its end is closed by hyper, not reused. A frame larger than what is
/// left is cut.
pub(crate) async fn read_body_prefix(mut body: hyper::body::Incoming, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(max - out.len());
                    out.extend_from_slice(&data[..take]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    out
}

/// Builds (and discards) the TLS configuration: loads and validates every
/// referenced file, for `metrics-relay check`.
pub(crate) fn client_config_check(tls_cfg: Option<&TlsConfig>) -> Result<(), TlsError> {
    tls::client_config(tls_cfg)?;
    tls::server_name_override(tls_cfg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use std::io::IoSlice;

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        let mut c = Chunks::default();
        for p in parts {
            c.push(Bytes::from_static(p));
        }
        c
    }

    #[test]
    fn chunks_are_read_in_order_across_boundaries() {
        let whole = b"abcdefghij";
        // Every way of advancing through [abc][][defg][hij] reads `whole`.
        for step in 1..=whole.len() {
            let mut c = chunks(&[b"abc", b"", b"defg", b"hij"]);
            assert_eq!(c.remaining(), whole.len());
            let mut read = Vec::new();
            while c.has_remaining() {
                let n = step.min(c.chunk().len());
                assert!(n > 0, "an empty chunk while bytes remain");
                read.extend_from_slice(&c.chunk()[..n]);
                c.advance(n);
            }
            assert_eq!(read, whole, "step {step}");
            assert_eq!(c.chunk(), b"");
        }
        // Several chunks at once, as a vectored write takes them.
        let mut c = chunks(&[b"abc", b"defg", b"hij"]);
        c.advance(5);
        assert_eq!(c.to_vec(), b"fghij");
        c.advance(100);
        assert!(c.is_empty());
        assert_eq!(c.chunk(), b"");
        c.push(Bytes::from_static(b"k"));
        assert_eq!(c.to_vec(), b"k");
    }

    #[test]
    fn chunks_fill_io_slices() {
        let mut c = chunks(&[b"abc", b"defg", b"hij"]);
        c.advance(1);
        let mut io = [IoSlice::new(&[]); 2];
        assert_eq!(c.chunks_vectored(&mut io), 2);
        assert_eq!(&*io[0], b"bc");
        assert_eq!(&*io[1], b"defg");
        let mut io = [IoSlice::new(&[]); 8];
        assert_eq!(c.chunks_vectored(&mut io), 3);
        assert_eq!(&*io[2], b"hij");
        assert_eq!(Chunks::default().chunks_vectored(&mut io), 0);
    }
}
