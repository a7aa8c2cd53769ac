//! metrics-relay: scrape Prometheus metrics over mutual TLS and remote-write
//! them to a Prometheus-compatible receiver.
//!
//! The data path, module by module:
//! [`scrape`] fetches a target ([`gzip`] inflates into a reused buffer) →
//! [`exposition`] parses the body without copying → [`series`] encodes each
//! sample's final labels straight from the text into remote-write bytes
//! ([`remote_write::samples`]) and tracks series for staleness →
//! [`remote_write::queue`] batches and snappy-compresses (on disk:
//! [`remote_write::disk`]) → [`remote_write::sender`] ships with retries.
//! [`labels`] is the leaf every module shares (label sets and the name
//! grammar); [`config`] holds the Prometheus-shaped configuration, [`tls`]
//! and [`http`] the client side, [`admin`] and [`telemetry`] the agent's own
//! endpoints and metrics ([`web_tls`]: the admin server's TLS), [`relay`]
//! wires it all together.
//!
//! `ARCHITECTURE.md` in the repository has the layering, each module's
//! invariants and the hot path; `tests/it/architecture.rs` keeps the layering
//! free of import cycles.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod admin;
pub(crate) mod clock;
pub mod config;
pub(crate) mod discovery;
pub(crate) mod events;
pub mod exposition;
pub(crate) mod failure;
pub mod fsread;
pub(crate) mod glob;
pub mod gzip;
pub mod http;
pub mod kubeconfig;
pub mod labels;
pub mod probe;
#[cfg(test)]
mod proptests;
pub mod relabel;
pub mod relay;
pub mod remote_write;
pub mod render;
pub(crate) mod scrape;
pub mod series;
pub mod shard;
pub(crate) mod telemetry;
pub mod tls;
pub mod units;
pub(crate) mod web_tls;
pub(crate) mod x509;
pub mod yaml;
