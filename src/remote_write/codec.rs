//! The storage codec: how a queued batch (remote-write 1.0 `WriteRequest`
//! bytes) is compressed while it waits, separate from the wire compression a
//! destination negotiates ([`crate::remote_write::wire`]).
//!
//! - [`Codec::Snappy`]: what a remote-write 1.0 (and every disk record
//!   written before the codec tag existed) is compressed with: a sender on
//!   1.0 + snappy posts such batches as they are (joined without
//!   decompressing, see `wire`).
//! - [`Codec::Zstd`]: at [`ZSTD_LEVEL`], 1.6 to 2.2 times smaller than
//!   snappy on exposition-shaped data, so the same `queue.max_size` holds
//!   that much longer an outage; posted as is in VictoriaMetrics' zstd
//!   protocol, recompressed for a snappy destination.
//!
//! `queue.codec: auto` (the default) stores each batch in the compression
//! its destination's wire format uses at the time, so that steady sending
//! never recompresses; each batch keeps the codec it was stored with.
//!
//! Both compress into a growing output (no worst-case buffer: a 200 MiB
//! page never costs a second 200 MiB) with encoders reused across batches;
//! decompression is bounded ([`MAX_PLAIN`]).

use std::io;

use zstd::stream::raw::{Decoder as ZDecoder, Encoder as ZEncoder, InBuffer, Operation, OutBuffer};

/// The zstd level of stored batches. Measured on batches of 2,000 samples
/// (`examples/wire_bytes`, `benches/hot_path` `zstd-*`): level 1 stores
/// 13.6 bytes per sample of the peer harness's page (snappy 29.4), 14.7 of
/// the Prometheus fixture (snappy 23.4); level 3 saves at most 4 % more,
/// and on the harness page nothing, at 1.8 times level 1's CPU.
pub(crate) const ZSTD_LEVEL: i32 = 1;

/// The most a stored batch may decompress to: a batch is at most
/// `max_samples_per_send` samples of at most the scrape body limit, and
/// snappy cannot describe more than 4 GiB anyway.
pub(crate) const MAX_PLAIN: usize = u32::MAX as usize;

/// Output grows this much at a time while (de)compressing.
const STEP: usize = 64 << 10;

/// How a stored batch is compressed; the disk records' tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Snappy,
    Zstd,
}

impl Codec {
    /// The tag byte in a disk record.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Codec::Snappy => 1,
            Codec::Zstd => 2,
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<Codec> {
        match tag {
            1 => Some(Codec::Snappy),
            2 => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Codec::Snappy => "snappy",
            Codec::Zstd => "zstd",
        }
    }
}

/// Why a batch could not be (de)compressed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Snappy(#[from] crate::remote_write::snappy::CompressError),
    #[error("snappy: {0}")]
    SnappyDecode(#[from] snap::Error),
    #[error("zstd: {0}")]
    Zstd(#[from] io::Error),
    #[error("a stored batch decompresses to more than {MAX_PLAIN} bytes")]
    TooLarge,
}

/// Compressors kept between batches (their state is reused, not
/// reallocated).
pub struct Compressor {
    snappy: snap::raw::Encoder,
    /// Snappy's output for one piece (see [`crate::remote_write::snappy`]).
    scratch: Vec<u8>,
    zstd: Option<ZEncoder<'static>>,
    zstd_level: i32,
}

impl Default for Compressor {
    fn default() -> Self {
        Compressor::new(ZSTD_LEVEL)
    }
}

impl Compressor {
    pub fn new(zstd_level: i32) -> Self {
        Compressor {
            snappy: snap::raw::Encoder::new(),
            scratch: Vec::new(),
            zstd: None,
            zstd_level,
        }
    }

    /// Compresses `input` onto the end of `out`.
    pub fn compress(
        &mut self,
        codec: Codec,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match codec {
            Codec::Snappy => Ok(crate::remote_write::snappy::compress_into(
                &mut self.snappy,
                &mut self.scratch,
                input,
                out,
            )?),
            Codec::Zstd => {
                let enc = match &mut self.zstd {
                    Some(e) => {
                        e.reinit()?;
                        e
                    }
                    None => self.zstd.insert(ZEncoder::new(self.zstd_level)?),
                };
                enc.set_pledged_src_size(Some(input.len() as u64))?;
                let mut inp = InBuffer::around(input);
                while inp.pos() < input.len() {
                    out.reserve(STEP);
                    let at = out.len();
                    let mut ob = OutBuffer::around_pos(out, at);
                    enc.run(&mut inp, &mut ob)?;
                }
                loop {
                    out.reserve(STEP);
                    let at = out.len();
                    let mut ob = OutBuffer::around_pos(out, at);
                    if enc.finish(&mut ob, true)? == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Decompressors kept between batches.
#[derive(Default)]
pub(crate) struct Decompressor {
    snappy: Option<snap::raw::Decoder>,
    zstd: Option<ZDecoder<'static>>,
}

impl Decompressor {
    /// Decompresses `data` onto the end of `out`, at most [`MAX_PLAIN`]
    /// bytes.
    pub(crate) fn decompress(
        &mut self,
        codec: Codec,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match codec {
            Codec::Snappy => {
                let n = snap::raw::decompress_len(data)?;
                if n > MAX_PLAIN {
                    return Err(CodecError::TooLarge);
                }
                let at = out.len();
                out.resize(at + n, 0);
                let dec = self.snappy.get_or_insert_with(snap::raw::Decoder::new);
                match dec.decompress(data, &mut out[at..]) {
                    Ok(w) => {
                        out.truncate(at + w);
                        Ok(())
                    }
                    Err(e) => {
                        out.truncate(at);
                        Err(e.into())
                    }
                }
            }
            Codec::Zstd => {
                let dec = match &mut self.zstd {
                    Some(d) => {
                        d.reinit()?;
                        d
                    }
                    None => self.zstd.insert(ZDecoder::new()?),
                };
                let start = out.len();
                let mut inp = InBuffer::around(data);
                loop {
                    if out.len() - start > MAX_PLAIN {
                        out.truncate(start);
                        return Err(CodecError::TooLarge);
                    }
                    out.reserve(STEP);
                    let at = out.len();
                    let mut ob = OutBuffer::around_pos(out, at);
                    let hint = dec.run(&mut inp, &mut ob)?;
                    let wrote = ob.pos() - at;
                    if hint == 0 {
                        // A frame ended; more frames may follow.
                        if inp.pos() == data.len() {
                            return Ok(());
                        }
                    } else if inp.pos() == data.len() && wrote == 0 {
                        out.truncate(start);
                        return Err(CodecError::Zstd(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "truncated zstd frame",
                        )));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let mut t = Vec::new();
        let mut i = 0u64;
        while t.len() < n {
            t.extend_from_slice(
                format!("series_{}{{a=\"{}\"}} {}\n", i % 97, i % 13, i).as_bytes(),
            );
            i += 1;
        }
        t
    }

    #[test]
    fn both_codecs_round_trip_with_reused_state() {
        let mut c = Compressor::default();
        let mut d = Decompressor::default();
        for codec in [Codec::Snappy, Codec::Zstd] {
            for n in [0, 1, 1000, 3 << 20] {
                let input = text(n);
                let mut packed = b"keep".to_vec();
                c.compress(codec, &input, &mut packed).unwrap();
                assert_eq!(&packed[..4], b"keep", "appended");
                let mut back = b"x".to_vec();
                d.decompress(codec, &packed[4..], &mut back).unwrap();
                assert_eq!(&back[1..], &input[..], "{codec:?} {n}");
            }
        }
    }

    #[test]
    fn zstd_is_far_smaller_than_snappy_here() {
        let input = text(1 << 20);
        let mut c = Compressor::default();
        let (mut s, mut z) = (Vec::new(), Vec::new());
        c.compress(Codec::Snappy, &input, &mut s).unwrap();
        c.compress(Codec::Zstd, &input, &mut z).unwrap();
        assert!(z.len() * 2 < s.len(), "zstd {} snappy {}", z.len(), s.len());
    }

    #[test]
    fn damaged_or_truncated_input_is_an_error_not_a_panic() {
        let input = text(100_000);
        let mut c = Compressor::default();
        let mut d = Decompressor::default();
        for codec in [Codec::Snappy, Codec::Zstd] {
            let mut packed = Vec::new();
            c.compress(codec, &input, &mut packed).unwrap();
            let mut out = Vec::new();
            assert!(
                d.decompress(codec, &packed[..packed.len() / 2], &mut out)
                    .is_err()
            );
            assert!(out.is_empty(), "nothing partial left");
            let mut bad = packed.clone();
            bad[0] ^= 0xff;
            let _ = d.decompress(codec, &bad, &mut Vec::new());
            // The state is usable after a failure.
            let mut ok = Vec::new();
            d.decompress(codec, &packed, &mut ok).unwrap();
            assert_eq!(ok, input);
        }
        assert!(Codec::from_tag(9).is_none());
        assert_eq!(Codec::from_tag(Codec::Zstd.tag()), Some(Codec::Zstd));
    }
}
