//! One attempt of a request: the body in the destination's negotiated wire
//! format, and what the answer means, including a receiver that does not
//! take the format (the next one is tried at once, see
//! [`crate::remote_write::wire`]). The request itself goes through a
//! [`Transport`]: [`HttpTransport`] (headers, credentials, the POST with its
//! timeout) in production, an in-process receiver in the sender's tests,
//! which run its workers, leases and retries on a paused clock.

use std::future::Future;
use std::pin::Pin;

use http::header::{AUTHORIZATION, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::Full;

use super::{Encoded, REPLY_KEEP, Sender, SenderError};
use crate::config::{RemoteWriteConfig, Secret};
use crate::failure::Failure;
use crate::http::Chunks;
use crate::http::HttpClient;
use crate::remote_write::queue::Batch;
use crate::remote_write::retry::{Outcome, classify};
use crate::remote_write::wire::{EncodeError, WireFormat};
use crate::tls::describe_error;

/// Remote write 2.0's count of samples the receiver wrote.
const SAMPLES_WRITTEN: &str = "x-prometheus-remote-write-samples-written";

/// Carries one request to the destination: its outcome, and 2.0's
/// samples-written header if the answer had one.
pub(crate) trait Transport: Send + Sync {
    fn post(
        &self,
        format: WireFormat,
        body: Chunks,
    ) -> Pin<Box<dyn Future<Output = (Outcome, Option<String>)> + Send + '_>>;
}

/// The HTTP(S) transport: the configured headers and credentials (files
/// re-read on every request), the format's headers, `remote_timeout`.
pub(crate) struct HttpTransport {
    /// Follows certificate rotation ([`crate::http::watched_client`]).
    pub(crate) client: tokio::sync::watch::Receiver<HttpClient>,
    pub(crate) url: Uri,
    pub(crate) cfg: RemoteWriteConfig,
}

impl Transport for HttpTransport {
    fn post(
        &self,
        format: WireFormat,
        body: Chunks,
    ) -> Pin<Box<dyn Future<Output = (Outcome, Option<String>)> + Send + '_>> {
        Box::pin(self.send(format, body))
    }
}

impl HttpTransport {
    fn auth_header(&self) -> Result<Option<HeaderValue>, SenderError> {
        fn from_file(p: &std::path::Path) -> Result<Secret, SenderError> {
            crate::fsread::read_text(p, crate::fsread::MAX_SECRET)
                .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
                .map_err(SenderError::CredentialsFile)
        }
        let value = if let Some(b) = &self.cfg.basic_auth {
            let pw = match (&b.password, &b.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => from_file(f)?,
                (None, None) => Secret::new(""),
            };
            let raw = format!("{}:{}", b.username, pw.expose());
            format!("Basic {}", crate::kubeconfig::base64_encode(raw.as_bytes()))
        } else if let Some(a) = &self.cfg.authorization {
            let cred = match (&a.credentials, &a.credentials_file) {
                (Some(c), _) => c.clone(),
                (None, Some(f)) => from_file(f)?,
                (None, None) => Secret::new(""),
            };
            format!("{} {}", a.kind, cred.expose())
        } else {
            return Ok(None);
        };
        let mut v =
            HeaderValue::from_str(&value).map_err(|_| SenderError::CredentialsCharacters)?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    fn request(
        &self,
        format: WireFormat,
        body: Chunks,
    ) -> Result<Request<Full<Chunks>>, SenderError> {
        let mut req = Request::post(self.url.clone())
            .header(USER_AGENT, crate::http::USER_AGENT)
            .body(Full::new(body))?;
        let h: &mut HeaderMap = req.headers_mut();
        for (k, v) in format.headers() {
            h.insert(*k, HeaderValue::from_static(v));
        }
        for (k, v) in &self.cfg.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.insert(k, v);
            }
        }
        if let Some(a) = self.auth_header()? {
            h.insert(AUTHORIZATION, a);
        }
        Ok(req)
    }

    /// One request in `format`: its outcome and the samples-written header.
    async fn send(&self, format: WireFormat, body: Chunks) -> (Outcome, Option<String>) {
        let req = match self.request(format, body) {
            Ok(r) => r,
            Err(e) => {
                return (
                    Outcome::Retry {
                        failure: Failure::Credentials,
                        message: e.to_string(),
                        after: None,
                    },
                    None,
                );
            }
        };
        let timeout = self.cfg.remote_timeout.0;
        let client = self.client.borrow().clone();
        let resp = match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => {
                return (
                    Outcome::Retry {
                        failure: Failure::Timeout,
                        message: format!(
                            "request timed out after {}",
                            crate::units::format_duration(timeout)
                        ),
                        after: None,
                    },
                    None,
                );
            }
            Ok(Err(e)) => {
                return (
                    Outcome::Retry {
                        failure: crate::failure::classify(&e),
                        message: describe_error(&e),
                        after: None,
                    },
                    None,
                );
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let retry_after = resp.headers().get(RETRY_AFTER).cloned();
        let written = resp
            .headers()
            .get(SAMPLES_WRITTEN)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string());
        // The start of the body carries the receiver's reason; the rest is
        // not read (a receiver's 256 MiB answer costs us 1 KiB).
        let body = tokio::time::timeout(
            timeout,
            crate::http::read_body_prefix(resp.into_body(), REPLY_KEEP),
        )
        .await
        .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        (
            classify(
                status,
                retry_after.as_ref(),
                self.cfg.queue_config.retry_on_http_429,
                &text,
            ),
            written,
        )
    }
}

impl Sender {
    /// `batch` in `format`, with an encoder from the sender's few.
    fn encode(&self, format: WireFormat, batch: &Batch) -> Result<Chunks, EncodeError> {
        let taken = self
            .encoders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut encoder = taken.unwrap_or_default();
        let body = encoder.body(format, &batch.parts, &self.metadata);
        let mut kept = self.encoders.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < super::ENCODERS_KEPT {
            kept.push(encoder);
        }
        body
    }

    /// One attempt to deliver `batch`, in the destination's format; when
    /// the receiver does not take that format, the next one (see
    /// [`crate::remote_write::wire`]) at once. `encoded` keeps the body
    /// between attempts of the same batch. An error: the batch cannot be
    /// encoded (damaged in store), to be dropped.
    pub(crate) async fn attempt(
        &self,
        batch: &Batch,
        encoded: &mut Encoded,
    ) -> Result<Outcome, EncodeError> {
        loop {
            let format = self.negotiation.current();
            let body = match encoded {
                Some((f, b)) if *f == format => b.clone(),
                _ => {
                    let b = self.encode(format, batch)?;
                    *encoded = Some((format, b.clone()));
                    b
                }
            };
            let (outcome, written) = self.transport.post(format, body).await;
            let unsupported = match &outcome {
                Outcome::Sent => !format.understood(written.as_deref()),
                Outcome::Reject { failure, .. } => {
                    *failure == Failure::Status(415)
                        || (*failure == Failure::Status(400) && self.negotiation.first_request())
                }
                Outcome::Retry { .. } => false,
            };
            if !unsupported {
                if !matches!(outcome, Outcome::Retry { .. }) {
                    self.negotiation.answered();
                }
                if let (Outcome::Sent, Some(n)) = (&outcome, written.and_then(|w| w.parse().ok())) {
                    self.metrics
                        .samples_written
                        .get_or_create(&self.labels)
                        .inc_by(n);
                }
                return Ok(outcome);
            }
            let why = match &outcome {
                Outcome::Sent => "a 2xx without the X-Prometheus-Remote-Write-Samples-Written header (a receiver of remote write 1.x, which read nothing of it)".to_string(),
                Outcome::Reject { message, .. } | Outcome::Retry { message, .. } => message.clone(),
            };
            match self.negotiation.fall_back(format) {
                Some(next) if next != format => {
                    // Once per format left, for the process.
                    tracing::warn!(
                        remote_name = %self.name,
                        from = %format!("{} + {}", format.message(), format.compression()),
                        to = %format!("{} + {}", next.message(), next.compression()),
                        answer = %why,
                        "the receiver does not take this remote-write format; using the next one from now on (the same batch is sent again in it)"
                    );
                    self.apply_format();
                }
                Some(_) => {}
                // Nothing left to try: the answer stands.
                None => return Ok(outcome),
            }
        }
    }
}
