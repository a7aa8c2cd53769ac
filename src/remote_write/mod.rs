//! Remote write 1.0: the wire messages ([`proto`]), the per-destination
//! batcher and queue ([`queue`]) and the sender with its retry policy
//! ([`sender`]).

pub mod disk;
pub mod proto;
pub mod queue;
pub mod sender;
