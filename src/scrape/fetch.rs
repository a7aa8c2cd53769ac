//! One HTTP GET of a target: Prometheus's `Accept` and timeout headers,
//! gzip, the body size limit applied while reading and inflating.

use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, HeaderName, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::http::{BodyError, HttpClient, read_body_limited};
use crate::tls::describe_error;

use super::{ScrapeError, Target};

/// Sent with every scrape, as Prometheus does.
const SCRAPE_TIMEOUT_HEADER: HeaderName =
    HeaderName::from_static("x-prometheus-scrape-timeout-seconds");

/// What [`fetch`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// Bytes received on the wire.
    pub wire: usize,
    /// The body came gzip-compressed; the compressed bytes are left in the
    /// scratch buffer.
    pub gzip: bool,
    /// What its `Content-Type` says it is.
    pub format: crate::exposition::Format,
}

/// The `Accept` header of a scrape: OpenMetrics first, then the text
/// format, as Prometheus 2.x asks.
pub(crate) const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// GETs a target into `body` (decompressed; `scratch` is reused for gzip,
/// and holds the compressed bytes afterwards).
pub(crate) async fn fetch(
    client: &HttpClient,
    t: &Target,
    body: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<Fetched, ScrapeError> {
    let f = fetch_wire(client, t, body).await?;
    if f.gzip {
        inflate_body(t, body, scratch)?;
    }
    Ok(f)
}

/// GETs a target into `body` as received (gzip-compressed or not).
pub(crate) async fn fetch_wire(
    client: &HttpClient,
    t: &Target,
    body: &mut Vec<u8>,
) -> Result<Fetched, ScrapeError> {
    let mut req = Request::get(t.url.clone())
        .header(ACCEPT, ACCEPT_HEADER)
        .header(ACCEPT_ENCODING, "gzip")
        .header(USER_AGENT, crate::http::USER_AGENT)
        .body(Full::default())
        .map_err(|e| ScrapeError::Internal(format!("building the request: {e}")))?;
    if let Some(v) = &t.timeout_header {
        req.headers_mut().insert(SCRAPE_TIMEOUT_HEADER, v.clone());
    }
    let resp = client
        .request(req)
        .await
        .map_err(|e| ScrapeError::Transport {
            kind: crate::failure::classify(&e),
            message: describe_error(&e),
        })?;
    if resp.status() != StatusCode::OK {
        return Err(ScrapeError::Status(resp.status()));
    }
    let gzip = resp
        .headers()
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let format = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map_or(crate::exposition::Format::Text, |v| {
            crate::exposition::Format::from_content_type(v.as_bytes())
        });
    read_body_limited(resp.into_body(), t.body_limit, body).await?;
    Ok(Fetched {
        wire: body.len(),
        gzip,
        format,
    })
}

/// Inflates the gzip `body` in place (through `scratch`, which is left
/// holding the compressed bytes), within the target's body size limit.
pub(crate) fn inflate_body(
    t: &Target,
    body: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), ScrapeError> {
    let limit = t.body_limit.unwrap_or(u64::MAX);
    crate::gzip::inflate(body, scratch, limit).map_err(|e| match e {
        crate::gzip::GzipError::TooLarge(limit) => ScrapeError::Body(BodyError::TooLarge { limit }),
        e => ScrapeError::Gzip(e.to_string()),
    })?;
    std::mem::swap(body, scratch);
    Ok(())
}
