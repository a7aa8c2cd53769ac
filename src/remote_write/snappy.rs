//! Snappy block compression (the format remote write 1.0 sends) without a
//! worst-case output buffer.
//!
//! `snap`'s encoder wants an output buffer of `max_compress_len(input)`
//! (about 1.17 times the input), zero-filled and so resident, however small
//! the result: compressing a 200 MiB page costs 233 MiB on top of it. A
//! snappy block, though, is its uncompressed length and then elements that
//! refer back at most 64 KiB, and the encoder starts afresh every 64 KiB of
//! input; so compressing the input piece by piece (each piece a multiple of
//! 64 KiB) and writing the pieces' elements one after the other under the
//! whole length gives exactly the bytes of compressing it at once. Here the
//! output grows with what the result needs, and the scratch buffer is one
//! piece's worth.

/// Input bytes compressed at once (a multiple of snappy's 64 KiB block).
const PIECE: usize = 1 << 20;

/// Why a compression failed.
#[derive(Debug, thiserror::Error)]
#[error("snappy compression: {0}")]
pub struct CompressError(String);

/// Snappy-compresses `input` (block format) onto the end of `out`; `encoder`
/// and `scratch` are reused between calls (the scratch stays about
/// [`PIECE`] bytes).
pub(crate) fn compress_into(
    encoder: &mut snap::raw::Encoder,
    scratch: &mut Vec<u8>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    if input.len() > u32::MAX as usize {
        return Err(CompressError(format!(
            "{} bytes is past snappy's 4 GiB limit",
            input.len()
        )));
    }
    crate::remote_write::proto::put_varint(out, input.len() as u64);
    let max = snap::raw::max_compress_len(PIECE.min(input.len().max(1)));
    if scratch.len() < max {
        scratch.resize(max, 0);
    }
    for piece in input.chunks(PIECE) {
        let n = encoder
            .compress(piece, scratch)
            .map_err(|e| CompressError(e.to_string()))?;
        // Skip the piece's own length header: the whole one is written.
        let (_, header) = crate::remote_write::proto::read_varint(&scratch[..n])
            .ok_or_else(|| CompressError("the encoder wrote no length".into()))?;
        out.extend_from_slice(&scratch[header..n]);
    }
    Ok(())
}

/// [`compress_into`] a new vector of exactly the compressed size.
#[cfg(test)]
pub(crate) fn compress(input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut out = Vec::new();
    compress_into(
        &mut snap::raw::Encoder::new(),
        &mut Vec::new(),
        input,
        &mut out,
    )?;
    out.shrink_to_fit();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_give_the_bytes_of_one_compression() {
        let mut text = Vec::new();
        let mut i = 0u64;
        while text.len() < 3 * PIECE + 12_345 {
            text.extend_from_slice(format!("series_{} {}\n", i % 977, i * 31).as_bytes());
            i += 1;
        }
        for input in [
            &text[..0],
            &text[..100],
            &text[..PIECE],
            &text[..PIECE + 1],
            &text[..],
        ] {
            let whole = snap::raw::Encoder::new().compress_vec(input).unwrap();
            let pieces = compress(input).unwrap();
            assert_eq!(pieces, whole, "{} bytes", input.len());
            assert_eq!(pieces.capacity(), pieces.len());
            let back = snap::raw::Decoder::new().decompress_vec(&pieces).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn output_grows_only_as_needed() {
        // A hostile page of one repeated byte: tiny result, small scratch.
        let input = vec![b'x'; 8 * PIECE];
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        compress_into(
            &mut snap::raw::Encoder::new(),
            &mut scratch,
            &input,
            &mut out,
        )
        .unwrap();
        assert!(out.len() < input.len() / 20, "{}", out.len());
        assert!(scratch.len() <= snap::raw::max_compress_len(PIECE));
    }
}
