//! Remote write: the 1.0 wire messages ([`proto`]), one scrape's samples as
//! wire bytes ([`samples`]), `write_relabel_configs` on them
//! ([`write_relabel`]), the per-destination batcher and queue ([`queue`],
//! on disk: [`disk`], compressed by a storage [`codec`]), the wire formats a
//! destination negotiates ([`wire`]: 1.0 with snappy or zstd, 2.0 through
//! [`v2`]), the sender ([`sender`]) and its retry policy ([`retry`]).

pub(crate) mod codec;
pub(crate) mod disk;
pub(crate) mod proto;
pub(crate) mod queue;
pub(crate) mod retry;
pub(crate) mod samples;
pub(crate) mod sender;
pub(crate) mod snappy;
pub(crate) mod v2;
pub(crate) mod wire;
pub(crate) mod write_relabel;

pub(crate) use sender::SenderError;
