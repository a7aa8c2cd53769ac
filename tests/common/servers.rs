//! Servers for tests and the demo: certificates made at test time (rcgen),
//! an mTLS target and a decoding remote-write receiver.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_relay::{V2Request, WriteRequest};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// A CA, a server certificate (localhost, kubernetes, 127.0.0.1), a client
/// certificate, and a second, unrelated CA; all written as PEM files.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).expect("ca cert");
    (cert, Issuer::new(p, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![eku];
    let cert = p.signed_by(&key, issuer).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let (ca_cert, issuer) = ca("metrics-relay test CA");
        let (other_cert, other_issuer) = ca("some other CA");
        let (server_cert, server_key) = leaf(
            &issuer,
            "kube-apiserver",
            &["localhost", "kubernetes", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &issuer,
            "metrics-relay-client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (oc_cert, oc_key) = leaf(
            &other_issuer,
            "stranger",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let w = |name: &str, data: &str| {
            let p = dir.join(name);
            std::fs::write(&p, data).expect("write pem");
            p
        };
        Pki {
            dir: dir.to_path_buf(),
            ca: w("ca.crt", &ca_cert.pem()),
            server_cert: w("server.crt", &server_cert),
            server_key: w("server.key", &server_key),
            client_cert: w("client.crt", &client_cert),
            client_key: w("client.key", &client_key),
            other_ca: w("other-ca.crt", &other_cert.pem()),
            other_client_cert: w("other-client.crt", &oc_cert),
            other_client_key: w("other-client.key", &oc_key),
        }
    }

    /// A kubeconfig of one context (`c1`) for `server`, with this CA and
    /// client certificate inline, written as `dir/kubeconfig`.
    /// A scrape config's `tls_config` with this CA and the client pair, as
    /// YAML flow: `{ca_file: ..., cert_file: ..., key_file: ..., server_name: NAME}`.
    pub fn tls_yaml(&self, server_name: &str) -> String {
        format!(
            "{{ca_file: {}, cert_file: {}, key_file: {}, server_name: {server_name}}}",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }

    pub fn kubeconfig(&self, dir: &Path, server: &str) -> PathBuf {
        let b = |p: &Path| metrics_relay::base64_encode(&std::fs::read(p).unwrap());
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c1\nclusters:\n- name: k\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: c1\n  context: {{cluster: k, user: u}}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                b(&self.ca),
                b(&self.client_cert),
                b(&self.client_key)
            ),
        )
        .unwrap();
        p
    }

    /// A rustls server config that requires a client certificate from our CA.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).expect("ca") {
            roots.add(c.expect("ca pem")).expect("add ca");
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .expect("verifier");
        let chain = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("server cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("server pem");
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("server key");
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg
    }
}

/// What the mTLS target serves; change it between scrapes.
#[derive(Clone)]
pub struct TargetBehavior {
    pub body: String,
    pub status: u16,
    pub delay: Duration,
    pub gzip: bool,
    /// When set, serve `body` and then `NAME N`, where N counts the
    /// requests (1, 2, 3, ...).
    pub counter: Option<String>,
    /// When set, served as is with `Content-Encoding: gzip` (a gzip bomb).
    pub gzipped: Option<Bytes>,
    /// The `Content-Type` (default: the text format's).
    pub content_type: Option<String>,
}

/// An HTTPS target that requires a client certificate.
pub struct MtlsTarget {
    pub addr: SocketAddr,
    pub behavior: Arc<Mutex<TargetBehavior>>,
    /// Path and query of every request served.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// `X-Prometheus-Scrape-Timeout-Seconds` of every request ("" if none).
    pub timeout_headers: Arc<Mutex<Vec<String>>>,
    /// Handshakes that failed (e.g. no client certificate).
    pub tls_failures: Arc<Mutex<Vec<String>>>,
    /// The accept loop (it owns the listener).
    accept: tokio::task::JoinHandle<()>,
}

impl MtlsTarget {
    pub async fn start(pki: &Pki, body: String) -> MtlsTarget {
        Self::start_on(pki, body, "127.0.0.1:0").await
    }

    pub async fn start_on(pki: &Pki, body: String, addr: &str) -> MtlsTarget {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind target {addr}: {e}"));
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()));
        let behavior = Arc::new(Mutex::new(TargetBehavior {
            body,
            status: 200,
            delay: Duration::ZERO,
            gzip: false,
            counter: None,
            gzipped: None,
            content_type: None,
        }));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let timeout_headers = Arc::new(Mutex::new(Vec::new()));
        let tls_failures = Arc::new(Mutex::new(Vec::new()));
        let (b, r, f) = (behavior.clone(), requests.clone(), tls_failures.clone());
        let th = timeout_headers.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, b, r, f) = (acceptor.clone(), b.clone(), r.clone(), f.clone());
                let th = th.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            f.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (b, r) = (b.clone(), r.clone());
                        th.lock().unwrap().push(
                            req.headers()
                                .get("x-prometheus-scrape-timeout-seconds")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string(),
                        );
                        async move {
                            let pq = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let n = {
                                let mut r = r.lock().unwrap();
                                r.push(pq);
                                r.len()
                            };
                            let mut beh = b.lock().unwrap().clone();
                            if let Some(name) = &beh.counter {
                                beh.body = format!("{}{name} {n}\n", beh.body);
                            }
                            if !beh.delay.is_zero() {
                                tokio::time::sleep(beh.delay).await;
                            }
                            let wants_gzip = req
                                .headers()
                                .get("accept-encoding")
                                .is_some_and(|v| v.to_str().unwrap_or("").contains("gzip"));
                            let mut resp = if let Some(g) = beh.gzipped.clone() {
                                let mut r = Response::new(Full::new(g));
                                r.headers_mut()
                                    .insert("content-encoding", "gzip".parse().unwrap());
                                r
                            } else if beh.gzip && wants_gzip {
                                use std::io::Write;
                                let mut enc = flate2::write::GzEncoder::new(
                                    Vec::new(),
                                    flate2::Compression::fast(),
                                );
                                enc.write_all(beh.body.as_bytes()).unwrap();
                                let mut r =
                                    Response::new(Full::new(Bytes::from(enc.finish().unwrap())));
                                r.headers_mut()
                                    .insert("content-encoding", "gzip".parse().unwrap());
                                r
                            } else {
                                Response::new(Full::new(Bytes::from(beh.body)))
                            };
                            *resp.status_mut() = StatusCode::from_u16(beh.status).unwrap();
                            resp.headers_mut().insert(
                                "content-type",
                                beh.content_type
                                    .as_deref()
                                    .unwrap_or("text/plain; version=0.0.4")
                                    .parse()
                                    .unwrap(),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        MtlsTarget {
            addr,
            behavior,
            requests,
            timeout_headers,
            tls_failures,
            accept,
        }
    }

    /// Stops accepting and closes the listener before returning (a test on a
    /// fixed address hands it to the next test this way: a runtime's tasks
    /// are dropped only after its test has ended).
    pub async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
    }

    pub fn set_body(&self, body: String) {
        self.behavior.lock().unwrap().body = body;
    }

    /// A target serving `name N`, N the number of the request (1, 2, 3, ...).
    pub async fn counter(pki: &Pki, name: &str) -> MtlsTarget {
        let t = Self::start(pki, String::new()).await;
        t.behavior.lock().unwrap().counter = Some(name.into());
        t
    }

    /// Requests served so far (scrapes).
    pub fn scrapes(&self) -> f64 {
        self.requests.lock().unwrap().len() as f64
    }
}

/// Scripted answers of the receiver: (status, Retry-After).
pub type Script = Arc<Mutex<VecDeque<(u16, Option<String>)>>>;
/// One accepted sample: (sorted labels, value, timestamp).
pub type AcceptedSample = (Vec<(String, String)>, f64, i64);

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: http::HeaderMap,
    pub raw: Bytes,
    /// The request as 1.0 (a 2.0 request's series converted to it).
    pub request: WriteRequest,
    /// The 2.0 request as sent, when it was one and the receiver speaks 2.0.
    pub v2: Option<V2Request>,
    pub status: u16,
    pub at: Instant,
}

/// A remote-write receiver that decodes everything and answers as scripted.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    /// Scripted answers (status, Retry-After), used first; then 204.
    pub script: Script,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Until then, every request gets 429 with `Retry-After: 2`.
    pub throttle_until: Arc<Mutex<Option<Instant>>>,
    /// Added before every answer (a distant receiver).
    pub delay: Arc<Mutex<Duration>>,
    /// Requests being answered now, and the most at once.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    pub max_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// What it reads besides 1.0 + snappy (see [`Speaks`]).
    pub speaks: Arc<Mutex<Speaks>>,
}

/// The formats a [`Receiver`] reads besides remote write 1.0 with snappy.
/// By default neither: it answers 2.0 as a 1.x receiver does (decoded as
/// 1.0, nothing in it, a 2xx without the written-count headers) and zstd
/// with 415, as Prometheus does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Speaks {
    /// Remote write 2.0: decoded, answered with the written-count headers.
    pub v2: bool,
    /// 1.0 with `Content-Encoding: zstd` (VictoriaMetrics' protocol).
    pub zstd: bool,
}

/// The body of a request as the receiver reads it: (1.0 request, the 2.0
/// one if it was one), or the status and message it answers instead.
fn read_body(
    headers: &http::HeaderMap,
    raw: &[u8],
    speaks: Speaks,
) -> Result<(WriteRequest, Option<V2Request>), (u16, &'static str)> {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let plain = match h("content-encoding") {
        "zstd" if speaks.zstd => {
            zstd::stream::decode_all(raw).map_err(|_| (400, "cannot decode zstd\n"))?
        }
        "zstd" => return Err((415, "unsupported Content-Encoding zstd\n")),
        _ => snap::raw::Decoder::new()
            .decompress_vec(raw)
            .map_err(|_| (400, "cannot decode snappy protobuf\n"))?,
    };
    if speaks.v2 && h("content-type").contains("proto=io.prometheus.write.v2.Request") {
        let v2 = V2Request::decode(plain.as_slice()).map_err(|_| (400, "cannot decode 2.0\n"))?;
        let mut v1 = WriteRequest::default();
        for ts in &v2.timeseries {
            let labels = v2.labels(ts).ok_or((400, "bad symbol reference\n"))?;
            v1.timeseries.push(metrics_relay::TimeSeries {
                labels: labels
                    .into_iter()
                    .map(|(name, value)| metrics_relay::Label { name, value })
                    .collect(),
                samples: ts
                    .samples
                    .iter()
                    .map(|s| metrics_relay::Sample {
                        value: s.value,
                        timestamp: s.timestamp,
                    })
                    .collect(),
            });
        }
        return Ok((v1, Some(v2)));
    }
    WriteRequest::decode(plain.as_slice())
        .map(|r| (r, None))
        .map_err(|_| (400, "cannot decode snappy protobuf\n"))
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let script: Script = Arc::new(Mutex::new(VecDeque::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let throttle_until: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let max_in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let speaks: Arc<Mutex<Speaks>> = Arc::default();
        let sp = speaks.clone();
        let (s, rc, th) = (script.clone(), received.clone(), throttle_until.clone());
        let (dl, inf, maxf) = (delay.clone(), in_flight.clone(), max_in_flight.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (s, rc, th) = (s.clone(), rc.clone(), th.clone());
                let (dl, inf, maxf) = (dl.clone(), inf.clone(), maxf.clone());
                let sp = sp.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, rc, t429) = (s.clone(), rc.clone(), th.clone());
                        let (dl, inf, maxf) = (dl.clone(), inf.clone(), maxf.clone());
                        let speaks = *sp.lock().unwrap();
                        async move {
                            use std::sync::atomic::Ordering::SeqCst;
                            let now = inf.fetch_add(1, SeqCst) + 1;
                            maxf.fetch_max(now, SeqCst);
                            let headers = req.headers().clone();
                            let raw = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let decoded = read_body(&headers, &raw, speaks);
                            let throttled = t429
                                .lock()
                                .unwrap()
                                .is_some_and(|until: Instant| Instant::now() < until);
                            let (status, retry_after) = if decoded.is_err() {
                                (0, None)
                            } else if throttled {
                                (429, Some("2".to_string()))
                            } else {
                                s.lock().unwrap().pop_front().unwrap_or((204, None))
                            };
                            let mut written = None;
                            let (status, msg) = match decoded {
                                Ok((request, v2)) => {
                                    if v2.is_some() && status < 300 {
                                        written = Some(
                                            request
                                                .timeseries
                                                .iter()
                                                .map(|t| t.samples.len())
                                                .sum::<usize>(),
                                        );
                                    }
                                    rc.lock().unwrap().push(Received {
                                        headers,
                                        raw: raw.clone(),
                                        request,
                                        v2,
                                        status,
                                        at: Instant::now(),
                                    });
                                    (
                                        status,
                                        if status >= 400 {
                                            "scripted failure\n"
                                        } else {
                                            ""
                                        },
                                    )
                                }
                                Err((status, msg)) => (status, msg),
                            };
                            let wait = *dl.lock().unwrap();
                            if !wait.is_zero() {
                                tokio::time::sleep(wait).await;
                            }
                            inf.fetch_sub(1, SeqCst);
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(msg.as_bytes())));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            if let Some(ra) = retry_after {
                                resp.headers_mut()
                                    .insert("retry-after", ra.parse().unwrap());
                            }
                            if let Some(n) = written {
                                let h = resp.headers_mut();
                                h.insert("x-prometheus-remote-write-samples-written", n.into());
                                h.insert("x-prometheus-remote-write-histograms-written", 0.into());
                                h.insert("x-prometheus-remote-write-exemplars-written", 0.into());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            script,
            received,
            throttle_until,
            delay,
            in_flight,
            max_in_flight,
            speaks,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Whether some request was answered with `status`.
    pub fn has_status(&self, status: u16) -> bool {
        self.received
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.status == status)
    }

    /// Every accepted (2xx) time series sample: (labels, value, timestamp).
    pub fn accepted(&self) -> Vec<AcceptedSample> {
        let mut out = Vec::new();
        for r in self
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status < 300)
        {
            for ts in &r.request.timeseries {
                let l = ts
                    .labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect::<Vec<_>>();
                for s in &ts.samples {
                    out.push((l.clone(), s.value, s.timestamp));
                }
            }
        }
        out
    }

    /// Latest accepted value of the series with `name` and these labels.
    pub fn latest(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.accepted()
            .into_iter()
            .filter(|(l, _, _)| {
                l.iter().any(|(k, v)| k == "__name__" && v == name)
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .max_by_key(|(_, _, ts)| *ts)
            .map(|(_, v, _)| v)
    }
}
