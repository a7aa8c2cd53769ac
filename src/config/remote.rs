//! The remote-write keys of the wire and the queue's bytes:
//! `protobuf_message` (which message, negotiated in `remote_write::wire`),
//! `metadata_config` (whether and how often metric metadata goes along) and
//! `queue.codec` (how queued batches are compressed).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::PromDuration;

/// `remote_write[].protobuf_message`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub enum ProtobufMessage {
    #[default]
    #[serde(rename = "prometheus.WriteRequest")]
    V1,
    #[serde(rename = "io.prometheus.write.v2.Request")]
    V2,
    #[serde(rename = "auto")]
    Auto,
}

/// `remote_write[].metadata_config`, as in Prometheus: each target's
/// metadata is sent once per `send_interval` (with its scrape's samples:
/// 1.0 `metadata` entries, which Mimir, Cortex and Thanos store; a 2.0
/// destination attaches it to every series of the family).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    #[serde(default = "super::yes")]
    pub send: bool,
    #[serde(default = "default_metadata_interval")]
    pub send_interval: PromDuration,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            send: true,
            send_interval: default_metadata_interval(),
        }
    }
}

fn default_metadata_interval() -> PromDuration {
    PromDuration(Duration::from_secs(60))
}

/// `remote_write[].queue.codec` (extension): how queued batches are
/// compressed. `auto` (the default) stores them in the wire's compression,
/// so that steady sending never recompresses: zstd once the destination
/// speaks VictoriaMetrics' zstd protocol, snappy otherwise. `zstd` trades
/// CPU (a recompression at send time for a snappy destination) for a disk
/// queue that holds about twice as long an outage; `snappy` is the old
/// format.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum QueueCodec {
    #[default]
    Auto,
    Snappy,
    Zstd,
}
