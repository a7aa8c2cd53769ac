//! The label values of the agent's own metrics, as closed sets: every
//! `reason`, `cause`, `scope`, `result` and `mechanism` a self-metric can
//! carry is a variant here, encoded through prometheus-client's
//! `EncodeLabelValue`. A new kind of failure is a new variant, so the text
//! on `/metrics`, the log field and the list a target's series are removed
//! by ([`ScrapeReason::all`]) cannot drift apart.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// `Display` and `EncodeLabelValue` through the type's `as_str`.
macro_rules! label_text {
    ($($name:ident),+) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, e: &mut LabelValueEncoder) -> fmt::Result {
                fmt::Write::write_str(e, self.as_str())
            }
        }
    )+};
}

/// Declares a field-less enum with its label text per variant: `as_str`,
/// `ALL`, and through [`label_text`], `Display` and `EncodeLabelValue`.
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code)]
            $vis const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label text.
            $vis fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        label_text!($name);
    };
}

label_values! {
    /// A transport or HTTP failure, as a `reason` (scrapes and sends; see
    /// [`crate::failure::Failure`]).
    pub(crate) enum FailureKind {
        Dns => "dns",
        ConnectionRefused => "connection_refused",
        Connection => "connection",
        ServerCertificate => "server_certificate",
        ClientCertificate => "client_certificate",
        TlsHandshake => "tls_handshake",
        Timeout => "timeout",
        Http429 => "http_429",
        Http4xx => "http_4xx",
        Http5xx => "http_5xx",
        Credentials => "credentials",
    }
}

label_values! {
    /// A scrape that got an answer it could not use.
    pub(crate) enum ScrapeFault {
        /// A bug on our side (a task that panicked).
        Internal => "internal",
        BodySizeLimit => "body_size_limit",
        ReadBody => "read_body",
        Gzip => "gzip",
        Parse => "parse",
        DuplicateLabel => "duplicate_label",
        InvalidLabel => "invalid_label",
        LabelLimit => "label_limit",
        SampleLimit => "sample_limit",
    }
}

/// The `reason` of `metrics_relay_scrape_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ScrapeReason {
    Failure(FailureKind),
    Fault(ScrapeFault),
}

impl ScrapeReason {
    /// Every value (a target going away removes its series under each).
    pub(crate) fn all() -> impl Iterator<Item = ScrapeReason> {
        FailureKind::ALL
            .iter()
            .map(|k| ScrapeReason::Failure(*k))
            .chain(ScrapeFault::ALL.iter().map(|f| ScrapeReason::Fault(*f)))
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ScrapeReason::Failure(k) => k.as_str(),
            ScrapeReason::Fault(f) => f.as_str(),
        }
    }
}

label_values! {
    /// Why samples were given up on (the `reason` of the drop counters).
    pub(crate) enum DropReason {
        /// The receiver refused them for good (a 4xx).
        Rejected => "rejected",
        /// Older than `queue.max_age`.
        MaxAge => "max_age",
        /// To keep the disk queue within `queue.max_size`.
        MaxSize => "max_size",
        /// To make room on a full disk.
        DiskFull => "disk_full",
        /// The disk queue could not be written.
        DiskError => "disk_error",
        /// A record read back damaged.
        Corrupt => "corrupt",
        /// Damaged records skipped when the disk queue was opened.
        CorruptRecord => "corrupt_record",
        /// The memory queue was full (`capacity * max_shards`).
        QueueFull => "queue_full",
        /// Compressing a batch failed.
        Compression => "compression",
        /// Still queued in memory when the shutdown grace period ended.
        Shutdown => "shutdown",
    }
}

label_values! {
    /// Damage found in the disk queue when it was opened.
    pub(crate) enum Corruption {
        /// A record cut short at a segment's end (a crash mid-write).
        TornTail => "torn_tail",
        /// A record whose checksum does not match.
        CorruptRecord => "corrupt_record",
    }
}

/// The `reason` of the per-destination counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RemoteReason {
    Failure(FailureKind),
    Drop(DropReason),
    Corruption(Corruption),
}

impl RemoteReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RemoteReason::Failure(k) => k.as_str(),
            RemoteReason::Drop(d) => d.as_str(),
            RemoteReason::Corruption(c) => c.as_str(),
        }
    }
}

label_values! {
    /// The kind of a receiver's refusal (the `cause` label; classified by
    /// `Rejection::from_response` from the status and the receiver's body).
    pub(crate) enum Rejection {
        OutOfBounds => "out_of_bounds",
        TooOld => "too_old",
        OutOfOrder => "out_of_order",
        Duplicate => "duplicate",
        TooLarge => "too_large",
        Unauthorized => "unauthorized",
        Other => "other",
    }
}

label_values! {
    /// Whose TLS material (the `scope` label).
    pub(crate) enum TlsScope {
        /// A scrape job's client certificate.
        Scrape => "scrape",
        /// A remote-write destination's client certificate.
        RemoteWrite => "remote_write",
        /// The admin server's own certificate.
        Server => "server",
    }
}

label_values! {
    /// How a reload of TLS material ended.
    pub(crate) enum TlsResult {
        Success => "success",
        Failure => "failure",
    }
}

label_values! {
    /// The kind of discovery file (the `mechanism` label).
    pub(crate) enum SdMechanism {
        /// `file_sd_configs`: target lists.
        File => "file",
        /// `kubeconfig_sd_configs`: kubeconfigs.
        Kubeconfig => "kubeconfig",
    }
}

label_text!(ScrapeReason, RemoteReason);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn label_texts_are_distinct_within_each_label() {
        let scrape: Vec<_> = ScrapeReason::all().map(ScrapeReason::as_str).collect();
        assert_eq!(scrape.iter().collect::<HashSet<_>>().len(), scrape.len());
        assert_eq!(
            scrape.len(),
            FailureKind::ALL.len() + ScrapeFault::ALL.len()
        );
        let mut remote: Vec<_> = FailureKind::ALL
            .iter()
            .map(|k| RemoteReason::Failure(*k))
            .chain(DropReason::ALL.iter().map(|d| RemoteReason::Drop(*d)))
            .map(RemoteReason::as_str)
            .collect();
        let n = remote.len();
        remote.sort_unstable();
        remote.dedup();
        assert_eq!(remote.len(), n);
        for text in scrape.iter().chain(&remote) {
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{text}"
            );
        }
    }

    #[test]
    fn encodes_as_its_text() {
        use prometheus_client::encoding::EncodeLabelSet;
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct L {
            reason: RemoteReason,
            scope: TlsScope,
        }
        let f = prometheus_client::metrics::family::Family::<
            L,
            prometheus_client::metrics::counter::Counter,
        >::default();
        f.get_or_create(&L {
            reason: RemoteReason::Drop(DropReason::DiskFull),
            scope: TlsScope::RemoteWrite,
        })
        .inc();
        let mut r = prometheus_client::registry::Registry::default();
        r.register("t", "t", f);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(
            out.contains("t_total{reason=\"disk_full\",scope=\"remote_write\"} 1"),
            "{out}"
        );
    }
}
