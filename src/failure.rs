//! Failure kinds: a transport or HTTP failure is classified once, here, and
//! the `reason` label, the log wording and the retry decision all derive
//! from the one [`Failure`] value (the way pingora's errors carry their
//! retry class), instead of each caller matching on message text.
//!
//! The classification walks the error chain ([`chain`]): a `rustls::Error`
//! tells a server certificate we refused from a client certificate the
//! server refused from any other handshake failure; an `io::Error` kind
//! tells a refused connection and a timeout; hyper-util's connector names a
//! failed DNS lookup only in its message (`dns error`), the one place a
//! message is read.

use std::error::Error;

use crate::metric_labels::FailureKind;

/// What went wrong, as far as a scrape or a send is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Failure {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens at the address (the connection was refused).
    ConnectionRefused,
    /// Any other connection failure: unreachable, reset, closed early.
    Connection,
    /// The server's certificate was not accepted: unknown CA, wrong name,
    /// expired.
    ServerCertificate,
    /// The server refused our client certificate, or wanted one we lack.
    ClientCertificate,
    /// Another TLS handshake failure (protocol version, cipher suites).
    TlsHandshake,
    /// No answer in time.
    Timeout,
    /// The server answered with this HTTP status (not a success).
    Status(u16),
    /// Our own credentials could not be read (a missing or unreadable
    /// `password_file`/`credentials_file`; it may appear later).
    Credentials,
}

impl Failure {
    /// The `reason` label value (statuses by class).
    pub(crate) fn kind(self) -> FailureKind {
        match self {
            Failure::Dns => FailureKind::Dns,
            Failure::ConnectionRefused => FailureKind::ConnectionRefused,
            Failure::Connection => FailureKind::Connection,
            Failure::ServerCertificate => FailureKind::ServerCertificate,
            Failure::ClientCertificate => FailureKind::ClientCertificate,
            Failure::TlsHandshake => FailureKind::TlsHandshake,
            Failure::Timeout => FailureKind::Timeout,
            Failure::Status(429) => FailureKind::Http429,
            Failure::Status(s) if s >= 500 => FailureKind::Http5xx,
            Failure::Status(_) => FailureKind::Http4xx,
            Failure::Credentials => FailureKind::Credentials,
        }
    }

    /// Whether sending again can succeed, as the remote-write spec says:
    /// transport failures and 5xx yes, 429 when configured so, any other
    /// status no.
    pub(crate) fn retryable(self, retry_on_429: bool) -> bool {
        match self {
            Failure::Status(429) => retry_on_429,
            Failure::Status(s) => s >= 500,
            _ => true,
        }
    }
}

/// The errors of a chain, outermost first, stepping into the error an
/// `io::Error` wraps (its `source()` skips it).
pub(crate) fn chain<'a>(
    e: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    let mut cur = Some(e);
    std::iter::from_fn(move || {
        let err = cur?;
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => err.source(),
        };
        Some(err)
    })
}

/// Classifies a failed request (connect, TLS, I/O) by its error chain.
pub(crate) fn classify(e: &(dyn Error + 'static)) -> Failure {
    use rustls::AlertDescription as A;
    let mut kind = Failure::Connection;
    for err in chain(e) {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return match r {
                rustls::Error::InvalidCertificate(_) => Failure::ServerCertificate,
                rustls::Error::AlertReceived(
                    A::CertificateRequired
                    | A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateUnknown
                    | A::CertificateExpired
                    | A::CertificateRevoked
                    | A::UnsupportedCertificate
                    | A::AccessDenied,
                ) => Failure::ClientCertificate,
                _ => Failure::TlsHandshake,
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Failure::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return Failure::Timeout,
                _ => {}
            }
        }
        // hyper-util's HttpConnector: "dns error" wraps the resolver's error.
        if err.to_string() == "dns error" {
            kind = Failure::Dns;
        }
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn Error + Send + Sync>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.1)
        }
    }

    fn io(kind: std::io::ErrorKind, inner: Option<rustls::Error>) -> std::io::Error {
        match inner {
            Some(r) => std::io::Error::new(kind, r),
            None => std::io::Error::from(kind),
        }
    }

    #[test]
    fn each_kind_is_found_in_the_chain() {
        use rustls::AlertDescription as A;
        use std::io::ErrorKind as K;
        let tls = |e: rustls::Error| io(K::InvalidData, Some(e));
        let cases = [
            (
                "tcp connect error",
                io(K::ConnectionRefused, None),
                Failure::ConnectionRefused,
            ),
            ("x", io(K::TimedOut, None), Failure::Timeout),
            ("dns error", io(K::Other, None), Failure::Dns),
            (
                "x",
                tls(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                Failure::ServerCertificate,
            ),
            (
                "x",
                tls(rustls::Error::AlertReceived(A::CertificateRequired)),
                Failure::ClientCertificate,
            ),
            (
                "x",
                tls(rustls::Error::AlertReceived(A::ProtocolVersion)),
                Failure::TlsHandshake,
            ),
            (
                "connection closed",
                io(K::ConnectionReset, None),
                Failure::Connection,
            ),
        ];
        for (msg, e, want) in cases {
            let shown = e.to_string();
            assert_eq!(classify(&Wrap(msg, Box::new(e))), want, "{msg}: {shown}");
        }
    }

    #[test]
    fn retry_and_reason_follow_the_kind() {
        assert!(Failure::Status(503).retryable(false));
        assert!(!Failure::Status(400).retryable(true));
        assert!(Failure::Status(429).retryable(true));
        assert!(!Failure::Status(429).retryable(false));
        assert!(Failure::ConnectionRefused.retryable(false));
        assert_eq!(Failure::Status(502).kind().as_str(), "http_5xx");
        assert_eq!(Failure::Status(404).kind().as_str(), "http_4xx");
        assert_eq!(
            Failure::ServerCertificate.kind().as_str(),
            "server_certificate"
        );
    }
}
