//! Gzip bodies inflated into a reused buffer.
//!
//! `flate2`'s `GzDecoder` allocates a 32 KiB read buffer and a fresh ~40 KiB
//! inflate state for every body, and `read_to_end` zeroes the output buffer
//! before each use; at 50 targets that is measurable. Here the gzip framing
//! (RFC 1952: header with its optional fields, deflate data, CRC-32 and size
//! trailer, several members in a row) is read directly, the raw-deflate state
//! is pooled and reset, and output goes into the spare capacity of the
//! caller's buffer. The CRC and the size of every member are checked, as Go's
//! `compress/gzip` (and so Prometheus) does.

use std::sync::Mutex;

use flate2::{Decompress, FlushDecompress, Status};

/// Why a body could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    #[error("not gzip data (bad magic bytes)")]
    Magic,
    #[error("unsupported gzip compression method {0}")]
    Method(u8),
    #[error("gzip data ends early")]
    Truncated,
    #[error("corrupt deflate stream: {0}")]
    Deflate(String),
    #[error("gzip checksum mismatch")]
    Checksum,
    #[error("inflated body is over the limit of {0} bytes")]
    TooLarge(u64),
}

/// Reset inflate states, shared by all scrapes.
static STATES: Mutex<Vec<Decompress>> = Mutex::new(Vec::new());

/// Inflates every gzip member of `wire` into `out` (cleared first), at most
/// `limit` bytes of output.
pub fn inflate(wire: &[u8], out: &mut Vec<u8>, limit: u64) -> Result<(), GzipError> {
    let mut state = STATES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| Decompress::new(false));
    out.clear();
    let mut rest = wire;
    let mut result = Ok(());
    // As Go's reader: one member at least, more may follow.
    let mut first = true;
    while result.is_ok() && (first || !rest.is_empty()) {
        first = false;
        state.reset(false);
        result = member(&mut state, rest, out, limit).map(|used| rest = &rest[used..]);
    }
    let mut states = STATES.lock().unwrap_or_else(|p| p.into_inner());
    if states.len() < 4 {
        states.push(state);
    }
    result
}

/// Inflates one member; returns the input bytes it took.
fn member(
    state: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    limit: u64,
) -> Result<usize, GzipError> {
    let header = header_len(input)?;
    let start = out.len();
    let mut pos = header;
    loop {
        if out.len() as u64 > limit {
            return Err(GzipError::TooLarge(limit));
        }
        if out.capacity() - out.len() < 16 * 1024 {
            // Grow by doubling, never past what the limit allows (+1 to see
            // it): `reserve_exact`, since `reserve` may double past it (a
            // gzip bomb then cost twice the limit).
            let room = limit.saturating_add(1).saturating_sub(out.len() as u64);
            let want = out
                .len()
                .max(64 * 1024)
                .min(usize::try_from(room).unwrap_or(usize::MAX));
            out.reserve_exact(want.max(1));
        }
        let (before_in, before_out) = (state.total_in(), out.len());
        let status = state
            .decompress_vec(&input[pos..], out, FlushDecompress::None)
            .map_err(|e| GzipError::Deflate(e.to_string()))?;
        pos += (state.total_in() - before_in) as usize;
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError => {
                let stalled = state.total_in() == before_in && out.len() == before_out;
                if (pos >= input.len() && out.capacity() > out.len()) || stalled {
                    return Err(GzipError::Truncated);
                }
            }
        }
    }
    if out.len() as u64 > limit {
        return Err(GzipError::TooLarge(limit));
    }
    let trailer = input.get(pos..pos + 8).ok_or(GzipError::Truncated)?;
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    let produced = &out[start..];
    if crc32fast::hash(produced) != crc || produced.len() as u32 != size {
        return Err(GzipError::Checksum);
    }
    Ok(pos + 8)
}

/// Length of a member's header (RFC 1952 section 2.3).
fn header_len(b: &[u8]) -> Result<usize, GzipError> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let fixed = b.get(..10).ok_or(GzipError::Truncated)?;
    if fixed[0] != 0x1f || fixed[1] != 0x8b {
        return Err(GzipError::Magic);
    }
    if fixed[2] != 8 {
        return Err(GzipError::Method(fixed[2]));
    }
    let flags = fixed[3];
    let mut i = 10;
    if flags & FEXTRA != 0 {
        let x = b.get(i..i + 2).ok_or(GzipError::Truncated)?;
        i += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for f in [FNAME, FCOMMENT] {
        if flags & f != 0 {
            let end = b
                .get(i..)
                .and_then(|r| r.iter().position(|&c| c == 0))
                .ok_or(GzipError::Truncated)?;
            i += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        i += 2;
    }
    if i > b.len() {
        return Err(GzipError::Truncated);
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn page() -> Vec<u8> {
        (0..20_000)
            .map(|i| format!("metric_{}{{code=\"{}\"}} {}\n", i % 97, i % 5, i))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn round_trips_and_reuses_the_buffer() {
        let text = page();
        let wire = gz(&text, 6);
        let mut out = Vec::new();
        inflate(&wire, &mut out, u64::MAX).unwrap();
        assert_eq!(out, text);
        let cap = out.capacity();
        inflate(&wire, &mut out, u64::MAX).unwrap();
        assert_eq!(out, text);
        assert_eq!(out.capacity(), cap, "no regrowth for the same page");
        // Empty body, empty member.
        inflate(&gz(b"", 6), &mut out, 10).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn several_members_are_one_body() {
        let mut wire = gz(b"a 1\n", 1);
        wire.extend(gz(b"b 2\n", 9));
        let mut out = Vec::new();
        inflate(&wire, &mut out, 100).unwrap();
        assert_eq!(out, b"a 1\nb 2\n");
    }

    #[test]
    fn header_fields_are_skipped() {
        let mut e = flate2::GzBuilder::new()
            .filename("metrics.txt")
            .comment("hello")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::default());
        e.write_all(b"x 1\n").unwrap();
        let wire = e.finish().unwrap();
        let mut out = Vec::new();
        inflate(&wire, &mut out, 100).unwrap();
        assert_eq!(out, b"x 1\n");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let wire = gz(&page(), 6);
        let mut out = Vec::new();
        assert_eq!(inflate(b"plain text", &mut out, 100), Err(GzipError::Magic));
        assert_eq!(
            inflate(&wire[..wire.len() / 2], &mut out, u64::MAX),
            Err(GzipError::Truncated)
        );
        assert_eq!(
            inflate(&wire[..wire.len() - 3], &mut out, u64::MAX),
            Err(GzipError::Truncated)
        );
        let mut bad_crc = wire.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        assert_eq!(
            inflate(&bad_crc, &mut out, u64::MAX),
            Err(GzipError::Checksum)
        );
        let mut bad_data = wire.clone();
        bad_data[20] ^= 0x55;
        assert!(inflate(&bad_data, &mut out, u64::MAX).is_err());
        // Every truncation point, every single-byte corruption of a small body.
        let small = gz(b"m{a=\"b\"} 1\n", 6);
        for cut in 0..small.len() {
            assert!(
                inflate(&small[..cut], &mut out, 1000).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..small.len() {
            let mut c = small.clone();
            c[i] ^= 0x01;
            let _ = inflate(&c, &mut out, 1000);
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = gz(&vec![0u8; 50 << 20], 9);
        let mut out = Vec::new();
        assert_eq!(
            inflate(&bomb, &mut out, 1 << 20),
            Err(GzipError::TooLarge(1 << 20))
        );
        assert!(out.capacity() < 4 << 20, "grew to {}", out.capacity());
    }
}
