//! Wire formats and their negotiation, per destination.
//!
//! A [`WireFormat`] turns the queue's stored batches (1.0 `WriteRequest`
//! bytes under a storage [`Codec`]) into a request body, names its headers,
//! and reads the receiver's answer:
//!
//! | format | body | headers |
//! |---|---|---|
//! | [`WireFormat::V2`] | `io.prometheus.write.v2.Request`, snappy | `Content-Type: application/x-protobuf;proto=io.prometheus.write.v2.Request`, `X-Prometheus-Remote-Write-Version: 2.0.0` |
//! | [`WireFormat::V1Zstd`] | `prometheus.WriteRequest`, zstd (VictoriaMetrics' protocol) | `Content-Encoding: zstd`, `X-VictoriaMetrics-Remote-Write-Version: 1` |
//! | [`WireFormat::V1`] | `prometheus.WriteRequest`, snappy | `X-Prometheus-Remote-Write-Version: 0.1.0` |
//!
//! [`Negotiation`] holds a destination's chain (from
//! `remote_write[].protobuf_message`) and the format in use. A receiver
//! that answers 415, or 400 to the first request of a format, or (2.0) a
//! 2xx without the `X-Prometheus-Remote-Write-*-Written` headers (a 1.x
//! receiver that read nothing it knew), does not speak the format: the
//! destination moves to the next format for the rest of the process and the
//! same batch is sent again in it (nothing lost, nothing twice: the refused
//! request stored nothing).
//!
//! Joining: snappy-stored parts on 1.0 + snappy are joined as they are
//! (their element streams concatenated under one length, nothing
//! decompressed); a single stored part in the wire's compression is posted
//! as it is. Everything else is decompressed once and encoded as one
//! request: a 2.0 request re-symbolised as a whole, a joined zstd request
//! compressed again at [`WIRE_ZSTD_LEVEL`] (measured at the harness's null
//! sink, 50 × 2,000 at 5 s, same session: posting the scrapes' frames one
//! after the other cost 1.14 times the snappy path's CPU for 13.95 bytes per
//! sample; recompressing at level 1, 1.37 times for 11.0; at level 3, 1.63
//! times for 9.62, where vmagent sends 10.17).

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::codec::{Codec, CodecError, Compressor, Decompressor};
use super::v2::{MetaCache, TranscodeError, Transcoder};
use crate::config::ProtobufMessage;
use crate::http::Chunks;

/// One queued batch as stored.
#[derive(Clone, Debug)]
pub struct Stored {
    pub codec: Codec,
    pub data: Bytes,
}

/// What a destination sends; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    V2,
    V1Zstd,
    V1,
}

impl WireFormat {
    /// The `protobuf_message` label of the format metric.
    pub(crate) fn message(self) -> &'static str {
        match self {
            WireFormat::V2 => "io.prometheus.write.v2.Request",
            WireFormat::V1Zstd | WireFormat::V1 => "prometheus.WriteRequest",
        }
    }

    /// The `compression` label of the format metric (`Content-Encoding`).
    pub(crate) fn compression(self) -> &'static str {
        match self {
            WireFormat::V1Zstd => "zstd",
            WireFormat::V2 | WireFormat::V1 => "snappy",
        }
    }

    /// The storage codec that lets a batch go out as stored.
    pub(crate) fn storage_codec(self) -> Codec {
        match self {
            WireFormat::V1Zstd => Codec::Zstd,
            WireFormat::V2 | WireFormat::V1 => Codec::Snappy,
        }
    }

    /// The request headers that name the format.
    pub(crate) fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            WireFormat::V2 => &[
                ("content-encoding", "snappy"),
                (
                    "content-type",
                    "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                ),
                ("x-prometheus-remote-write-version", "2.0.0"),
            ],
            WireFormat::V1Zstd => &[
                ("content-encoding", "zstd"),
                ("content-type", "application/x-protobuf"),
                ("x-prometheus-remote-write-version", "0.1.0"),
                ("x-victoriametrics-remote-write-version", "1"),
            ],
            WireFormat::V1 => &[
                ("content-encoding", "snappy"),
                ("content-type", "application/x-protobuf"),
                ("x-prometheus-remote-write-version", "0.1.0"),
            ],
        }
    }

    /// Whether the receiver's 2xx answer shows it read this format; see
    /// the module docs. `written` is the samples-written header, if any.
    pub(crate) fn understood(self, written: Option<&str>) -> bool {
        match self {
            WireFormat::V2 => written.is_some(),
            WireFormat::V1Zstd | WireFormat::V1 => true,
        }
    }
}

/// The formats a `protobuf_message` setting allows, best first.
pub(crate) fn chain(setting: ProtobufMessage) -> &'static [WireFormat] {
    match setting {
        ProtobufMessage::Auto => &[WireFormat::V2, WireFormat::V1Zstd, WireFormat::V1],
        ProtobufMessage::V2 => &[WireFormat::V2, WireFormat::V1],
        ProtobufMessage::V1 => &[WireFormat::V1],
    }
}

/// A destination's format in use; see the module docs.
pub(crate) struct Negotiation {
    chain: &'static [WireFormat],
    at: AtomicUsize,
    /// Requests of the current format that were answered (any status).
    answered: AtomicUsize,
}

impl Negotiation {
    pub(crate) fn new(setting: ProtobufMessage) -> Self {
        Negotiation {
            chain: chain(setting),
            at: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
        }
    }

    pub(crate) fn current(&self) -> WireFormat {
        self.chain[self.at.load(Ordering::Acquire).min(self.chain.len() - 1)]
    }

    /// Every format the destination may still use, current first, then
    /// the ones it left (for the format metric).
    pub(crate) fn all(&self) -> &'static [WireFormat] {
        self.chain
    }

    /// Whether no request in the current format has been answered yet.
    pub(crate) fn first_request(&self) -> bool {
        self.answered.load(Ordering::Acquire) == 0
    }

    pub(crate) fn answered(&self) {
        self.answered.fetch_add(1, Ordering::AcqRel);
    }

    /// Leaves `from` for the next format, if `from` is still current and a
    /// next one exists; returns it. Sticky: never back.
    pub(crate) fn fall_back(&self, from: WireFormat) -> Option<WireFormat> {
        let i = self.chain.iter().position(|f| *f == from)?;
        if i + 1 >= self.chain.len() {
            return None;
        }
        match self
            .at
            .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.answered.store(0, Ordering::Release);
                Some(self.chain[i + 1])
            }
            // Another worker moved already.
            Err(now) => Some(self.chain[now.min(self.chain.len() - 1)]),
        }
    }
}

/// Why stored batches could not be made into a request body (damage that
/// passed the record CRC, or a request past a codec's limits): the batch
/// is dropped and counted.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("a queued batch cannot be decompressed: {0}")]
    Stored(#[source] CodecError),
    #[error("the request cannot be compressed: {0}")]
    Compress(#[source] CodecError),
    #[error(transparent)]
    Transcode(#[from] TranscodeError),
}

/// State reused between requests of one sender worker.
#[derive(Default)]
pub struct Encoder {
    compressor: Compressor,
    /// For joined zstd requests, at [`WIRE_ZSTD_LEVEL`].
    wire_zstd: Option<Compressor>,
    decompressor: Decompressor,
    transcoder: Transcoder,
    plain: Vec<u8>,
    v2: Vec<u8>,
}

/// The zstd level of a joined 1.0 + zstd request (see the module docs).
pub(crate) const WIRE_ZSTD_LEVEL: i32 = 3;

/// Plain request bytes past this are not kept between requests.
const KEEP: usize = 4 << 20;

impl Encoder {
    /// The request body for `parts` in `format`; a 2.0 body takes the
    /// destination's metadata from `meta`.
    pub fn body(
        &mut self,
        format: WireFormat,
        parts: &[Stored],
        meta: &MetaCache,
    ) -> Result<Chunks, EncodeError> {
        let all = |c: Codec| parts.iter().all(|p| p.codec == c);
        if format == WireFormat::V1 && all(Codec::Snappy) {
            return Ok(match join_snappy(parts) {
                Some(chunks) => chunks,
                None => self.recompress(format, parts, meta)?,
            });
        }
        if format == WireFormat::V1Zstd && parts.len() == 1 && all(Codec::Zstd) {
            return Ok(Chunks::from(parts[0].data.clone()));
        }
        self.recompress(format, parts, meta)
    }

    fn recompress(
        &mut self,
        format: WireFormat,
        parts: &[Stored],
        meta: &MetaCache,
    ) -> Result<Chunks, EncodeError> {
        self.plain.clear();
        for p in parts {
            self.decompressor
                .decompress(p.codec, &p.data, &mut self.plain)
                .map_err(EncodeError::Stored)?;
        }
        let mut out = Vec::new();
        let result = match format {
            WireFormat::V2 => {
                self.v2.clear();
                super::v2::transcode(&mut self.transcoder, &self.plain, meta, &mut self.v2)?;
                self.compressor.compress(Codec::Snappy, &self.v2, &mut out)
            }
            WireFormat::V1Zstd => self
                .wire_zstd
                .get_or_insert_with(|| Compressor::new(WIRE_ZSTD_LEVEL))
                .compress(Codec::Zstd, &self.plain, &mut out),
            WireFormat::V1 => self
                .compressor
                .compress(Codec::Snappy, &self.plain, &mut out),
        };
        for b in [&mut self.plain, &mut self.v2] {
            if b.capacity() > KEEP {
                *b = Vec::new();
            }
        }
        result.map_err(EncodeError::Compress)?;
        Ok(Chunks::from(Bytes::from(out)))
    }
}

/// Joins snappy block-format messages into one whose decompressed bytes are
/// theirs, in order: a block is its uncompressed length (varint) and then
/// literal and copy elements whose offsets point back into its own output, so
/// the element streams can follow each other under the summed length. Joined
/// `WriteRequest`s are one `WriteRequest` (its fields repeat). Nothing is
/// copied: the new length header, then each block's elements. `None` if a
/// header does not parse or the total passes snappy's 4 GiB limit.
pub(crate) fn join_snappy(parts: &[Stored]) -> Option<Chunks> {
    if parts.len() == 1 {
        return Some(Chunks::from(parts[0].data.clone()));
    }
    let mut total: u64 = 0;
    let mut bodies = Vec::with_capacity(parts.len());
    for p in parts {
        let (len, header) = super::proto::read_varint(&p.data)?;
        total += len;
        bodies.push(p.data.slice(header..));
    }
    if total > u64::from(u32::MAX) {
        return None;
    }
    let mut head = Vec::with_capacity(10);
    super::proto::put_varint(&mut head, total);
    let mut c = Chunks::from(Bytes::from(head));
    for b in bodies {
        c.push(b);
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::WriteRequest;
    use crate::remote_write::samples::{EncodedSamples, encode_labels};
    use prost::Message;

    fn scrape(n: usize, base: i64) -> Vec<u8> {
        let mut e = EncodedSamples::default();
        for i in 0..n {
            let l = encode_labels(&[
                ("__name__".into(), "m".into()),
                ("i".into(), (i % 50).to_string()),
            ]);
            e.push(&l, i as f64, base + i as i64);
        }
        e.buf
    }

    fn stored(codec: Codec, plain: &[u8]) -> Stored {
        let mut out = Vec::new();
        Compressor::default()
            .compress(codec, plain, &mut out)
            .unwrap();
        Stored {
            codec,
            data: out.into(),
        }
    }

    /// A request's series as (labels, first timestamp).
    fn series(wr: &WriteRequest) -> Vec<(Vec<(String, String)>, i64)> {
        wr.timeseries
            .iter()
            .map(|t| {
                let labels = t
                    .labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                (labels, t.samples[0].timestamp)
            })
            .collect()
    }

    fn plain_of(format: WireFormat, body: &[u8]) -> Vec<u8> {
        let codec = if format == WireFormat::V1Zstd {
            Codec::Zstd
        } else {
            Codec::Snappy
        };
        let mut out = Vec::new();
        Decompressor::default()
            .decompress(codec, body, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_format_carries_every_sample_of_every_part_in_order() {
        let (a, b) = (scrape(300, 0), scrape(200, 10_000));
        let want = WriteRequest::decode([&a[..], &b[..]].concat().as_slice()).unwrap();
        let mut enc = Encoder::default();
        for format in [WireFormat::V1, WireFormat::V1Zstd, WireFormat::V2] {
            for codecs in [
                [Codec::Snappy, Codec::Snappy],
                [Codec::Zstd, Codec::Zstd],
                [Codec::Snappy, Codec::Zstd],
            ] {
                let parts = [stored(codecs[0], &a), stored(codecs[1], &b)];
                let body = enc
                    .body(format, &parts, &MetaCache::default())
                    .unwrap()
                    .to_vec();
                let plain = plain_of(format, &body);
                let got = if format == WireFormat::V2 {
                    let r = super::super::v2::Request::decode(plain.as_slice()).unwrap();
                    r.timeseries
                        .iter()
                        .map(|t| (r.labels(t).unwrap(), t.samples[0].timestamp))
                        .collect()
                } else {
                    series(&WriteRequest::decode(plain.as_slice()).unwrap())
                };
                assert_eq!(got, series(&want), "{format:?} from {codecs:?}");
            }
        }
    }

    #[test]
    fn snappy_parts_on_v1_are_joined_without_decompressing() {
        let parts = [
            stored(Codec::Snappy, &scrape(10, 0)),
            stored(Codec::Snappy, &scrape(10, 100)),
        ];
        let body = Encoder::default()
            .body(WireFormat::V1, &parts, &MetaCache::default())
            .unwrap();
        // A new length header, then the two element streams as stored.
        let (la, ha) = crate::remote_write::proto::read_varint(&parts[0].data).unwrap();
        let (lb, hb) = crate::remote_write::proto::read_varint(&parts[1].data).unwrap();
        let mut want = Vec::new();
        crate::remote_write::proto::put_varint(&mut want, la + lb);
        want.extend_from_slice(&parts[0].data[ha..]);
        want.extend_from_slice(&parts[1].data[hb..]);
        assert_eq!(body.to_vec(), want);
        assert!(
            join_snappy(&[
                Stored {
                    codec: Codec::Snappy,
                    data: Bytes::from_static(&[0xff; 11]),
                },
                parts[0].clone()
            ])
            .is_none()
        );
    }

    #[test]
    fn negotiation_falls_back_once_per_format_and_sticks() {
        let n = Negotiation::new(ProtobufMessage::Auto);
        assert_eq!(n.current(), WireFormat::V2);
        assert!(n.first_request());
        assert_eq!(n.fall_back(WireFormat::V2), Some(WireFormat::V1Zstd));
        // A second worker that saw the same refusal moves nothing further.
        assert_eq!(n.fall_back(WireFormat::V2), Some(WireFormat::V1Zstd));
        n.answered();
        assert!(!n.first_request());
        assert_eq!(n.fall_back(WireFormat::V1Zstd), Some(WireFormat::V1));
        assert!(n.first_request(), "a new format starts over");
        assert_eq!(
            n.fall_back(WireFormat::V1),
            None,
            "nothing after 1.0 + snappy"
        );
        assert_eq!(n.current(), WireFormat::V1);
        let only = Negotiation::new(ProtobufMessage::V1);
        assert_eq!(only.fall_back(WireFormat::V1), None);
        assert!(WireFormat::V1.understood(None));
        assert!(!WireFormat::V2.understood(None));
    }
}
