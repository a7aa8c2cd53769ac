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

pub(crate) mod admin;
pub(crate) mod clock;
pub mod config;
pub(crate) mod discovery;
pub(crate) mod events;
pub(crate) mod explain;
pub(crate) mod exposition;
pub(crate) mod failure;
pub(crate) mod fsread;
pub(crate) mod glob;
pub(crate) mod gzip;
pub(crate) mod http;
pub(crate) mod kubeconfig;
pub(crate) mod labels;
pub(crate) mod metric_labels;
pub(crate) mod probe;
#[cfg(test)]
mod proptests;
pub(crate) mod relabel;
pub(crate) mod relay;
pub(crate) mod remote_write;
pub(crate) mod render;
pub(crate) mod scrape;
pub(crate) mod series;
pub(crate) mod shard;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod units;
pub(crate) mod web_tls;
pub(crate) mod x509;
pub(crate) mod yaml;

// The public surface: what the binary (`main.rs`), the integration tests and
// the benches use. `config` is public as a whole (the configuration schema
// is the input every user writes); everything else is reached through the
// names below, and `unreachable_pub` keeps the rest crate-private.
pub use admin::raise_open_file_limit;
pub use explain::{ExplainError, explain_config};
pub use exposition::Parser;
pub use gzip::inflate as gzip_inflate;
pub use http::{HttpClient, client as http_client};
pub use kubeconfig::{
    Credentials, KubeconfigError, base64_decode, base64_encode, load as load_kubeconfig,
};
pub use labels::is_valid_label_name;
pub use probe::probe;
pub use relabel::RelabelConfig;
pub use relay::{Checked, RelayError, RunOptions, check, run};
pub use remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
// The storage codecs and wire formats, for the bytes and codec benchmarks.
pub use exposition::Format as ExpositionFormat;
pub use remote_write::codec::{Codec, CodecError, Compressor};
pub use remote_write::snappy::CompressError as SnappyError;
pub use remote_write::v2::{MetaCache, TranscodeError};
pub use remote_write::v2::{
    Metadata as V2Metadata, Request as V2Request, Sample as V2Sample, TimeSeries as V2TimeSeries,
};
pub use remote_write::wire::{EncodeError, Encoder as WireEncoder, Stored, WireFormat};
pub use series::encode_metadata;
// The encoder's entry format, for the fuzz example's round-trip check.
pub use remote_write::samples::{EncodedSamples, encode_labels, split_entry};
pub use render::{
    ACK_ONE_CLUSTER, ACK_ONE_REMOTE_WRITE, ACK_ONE_SERVER_NAME, ACK_ONE_TARGET, Mode, RenderError,
    RenderOptions, render,
};
pub use series::{FamilyBudget, SeriesCache, TargetContext};
pub use shard::Sharding;
pub use tls::{TlsError, describe_error};
pub use units::{UnitError, parse_duration};
