//! Remote write 1.0: the wire messages ([`proto`]), one scrape's samples as
//! wire bytes ([`samples`]), `write_relabel_configs` on them
//! ([`write_relabel`]), the per-destination batcher and queue ([`queue`],
//! on disk: [`disk`]), the sender ([`sender`]) and its retry policy
//! ([`retry`]).

pub(crate) mod disk;
pub(crate) mod proto;
pub(crate) mod queue;
pub(crate) mod retry;
pub(crate) mod samples;
pub(crate) mod sender;
pub(crate) mod snappy;
pub(crate) mod write_relabel;

pub(crate) use sender::SenderError;
