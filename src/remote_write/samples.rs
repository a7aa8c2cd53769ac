//! One scrape's samples as remote-write wire bytes: [`EncodedSamples`]
//! holds `TimeSeries` fields of a `WriteRequest` back to back, with the end
//! of each, so the queue can cut batches anywhere and the pull path and
//! write relabeling can read entries back ([`split_entry`]). The series
//! cache writes into it; everything downstream consumes it.

use super::proto::{encode_label, read_varint, write_series};

/// The largest buffer a pool keeps between uses (scrape bodies, encoded
/// samples, compression scratch): one huge scrape does not pin its memory.
pub(crate) const POOL_KEEP_MAX: usize = 16 << 20;

/// Encodes sorted labels as the `repeated Label labels = 1` bytes of a TimeSeries.
pub fn encode_labels(lbls: &[(String, String)]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(lbls.iter().map(|(n, v)| n.len() + v.len() + 6).sum());
    encode_into(lbls, &mut out);
    out.into_boxed_slice()
}

/// Appends sorted labels, encoded as in [`encode_labels`], to `out`.
pub(crate) fn encode_into(lbls: &[(String, String)], out: &mut Vec<u8>) {
    for (n, v) in lbls {
        encode_label(out, n, v);
    }
}

/// Encoded samples of one scrape: concatenated `TimeSeries` fields of a
/// `WriteRequest`, with the end offset of each so batches can be cut anywhere.
#[derive(Debug, Clone)]
pub struct EncodedSamples {
    pub buf: Vec<u8>,
    pub ends: Vec<u32>,
    /// When the scrape that produced these samples started (ms); the queue's
    /// `max_age` measures from it (exposed timestamps do not count).
    pub scraped_at_ms: i64,
    /// Where the samples come from (a fixed hash of their target): samples
    /// of one stream are sent in order, different streams may be sent in
    /// parallel. 0: unknown, sent alone. Kept by [`EncodedSamples::clear`].
    pub stream: u64,
}

impl Default for EncodedSamples {
    fn default() -> Self {
        EncodedSamples {
            buf: Vec::new(),
            ends: Vec::new(),
            scraped_at_ms: i64::MAX,
            stream: 0,
        }
    }
}

impl EncodedSamples {
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.scraped_at_ms = i64::MAX;
    }

    /// Bytes the buffers hold on to (capacity).
    pub fn retained_bytes(&self) -> usize {
        self.buf.capacity() + self.ends.capacity() * std::mem::size_of::<u32>()
    }
    #[inline]
    pub fn push(&mut self, labels: &[u8], value: f64, ts: i64) {
        write_series(&mut self.buf, labels, value, ts);
        self.ends.push(self.buf.len() as u32);
    }
    /// The bytes of samples `from..to`.
    pub fn slice(&self, from: usize, to: usize) -> &[u8] {
        let start = if from == 0 {
            0
        } else {
            self.ends[from - 1] as usize
        };
        let end = if to == 0 {
            0
        } else {
            self.ends[to - 1] as usize
        };
        &self.buf[start..end]
    }
}

/// Splits one encoded `TimeSeries` entry (as [`EncodedSamples`] holds it)
/// into its label bytes, value and timestamp.
pub fn split_entry(entry: &[u8]) -> Option<(&[u8], f64, i64)> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let (v, n) = read_varint(b.get(*i..)?)?;
        *i += n;
        Some(v)
    }
    let mut i = 0;
    if *entry.first()? != 0x0a {
        return None;
    }
    i += 1;
    let len = varint(entry, &mut i)? as usize;
    let body = entry.get(i..i + len)?;
    let mut j = 0;
    while j < body.len() && body[j] == 0x0a {
        j += 1;
        let l = varint(body, &mut j)? as usize;
        j += l;
    }
    let labels = body.get(..j)?;
    if *body.get(j)? != 0x12 {
        return None;
    }
    j += 1;
    let _sample_len = varint(body, &mut j)?;
    if *body.get(j)? != 0x09 {
        return None;
    }
    let value = f64::from_le_bytes(body.get(j + 1..j + 9)?.try_into().ok()?);
    j += 9;
    if *body.get(j)? != 0x10 {
        return None;
    }
    j += 1;
    let ts = varint(body, &mut j)? as i64;
    Some((labels, value, ts))
}

/// The labels in encoded label bytes (as [`encode_labels`] writes them), in
/// order, borrowed: no decoding into `String`s. Ends early at anything
/// malformed ([`LabelPairs::is_complete`] tells).
pub(crate) fn label_pairs(labels: &[u8]) -> LabelPairs<'_> {
    LabelPairs {
        b: labels,
        i: 0,
        broken: false,
    }
}

/// See [`label_pairs`].
pub(crate) struct LabelPairs<'a> {
    b: &'a [u8],
    i: usize,
    broken: bool,
}

impl LabelPairs<'_> {
    /// Every label was read (nothing malformed cut the iteration short).
    pub(crate) fn is_complete(&self) -> bool {
        !self.broken && self.i >= self.b.len()
    }
}

impl<'a> Iterator for LabelPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.b.len() || self.broken {
            return None;
        }
        let pair = (|| {
            let b = self.b;
            let field = |i: &mut usize| -> Option<(u8, &'a [u8])> {
                let tag = *b.get(*i)?;
                let (len, n) = read_varint(b.get(*i + 1..)?)?;
                let start = *i + 1 + n;
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                *i = end;
                Some((tag, b.get(start..end)?))
            };
            let mut i = self.i;
            let (tag, msg) = field(&mut i)?;
            if tag != 0x0a {
                return None;
            }
            self.i = i;
            let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
            let mut j = 0;
            while j < msg.len() {
                let tag = msg[j];
                let (len, n) = read_varint(msg.get(j + 1..)?)?;
                let start = j + 1 + n;
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                let bytes = msg.get(start..end)?;
                match tag {
                    0x0a => name = bytes,
                    0x12 => value = bytes,
                    _ => return None,
                }
                j = end;
            }
            Some((name, value))
        })();
        if pair.is_none() {
            self.broken = true;
        }
        pair
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::STALE_NAN;
    use crate::remote_write::proto::WriteRequest;
    use prost::Message;

    #[test]
    fn label_pairs_read_back_what_encode_labels_wrote() {
        let long = "v".repeat(300);
        let l = encode_labels(&[
            ("__name__".into(), "m".into()),
            ("a".into(), long.clone()),
            ("b".into(), String::new()),
        ]);
        let mut it = label_pairs(&l);
        let got: Vec<(&[u8], &[u8])> = it.by_ref().collect();
        assert!(it.is_complete());
        assert_eq!(
            got,
            vec![
                (&b"__name__"[..], &b"m"[..]),
                (&b"a"[..], long.as_bytes()),
                (&b"b"[..], &b""[..]),
            ]
        );
        // A cut between labels reads the labels before it, completely; a cut
        // inside one stops there, incomplete.
        let boundaries = [15, 15 + 2 + 2 + 1 + 3 + 300 + 1];
        for cut in 1..l.len() {
            let mut it = label_pairs(&l[..cut]);
            let n = it.by_ref().count();
            assert!(n < 3, "cut at {cut}");
            assert_eq!(it.is_complete(), boundaries.contains(&cut), "cut at {cut}");
        }
        let mut it = label_pairs(&[0x12, 0x00]);
        assert_eq!(it.next(), None);
        assert!(!it.is_complete());
    }

    #[test]
    fn split_entry_reads_back_what_push_wrote() {
        let mut e = EncodedSamples::default();
        let l = encode_labels(&[
            ("__name__".into(), "m".into()),
            ("a".into(), "b".repeat(200)),
        ]);
        e.push(&l, -3.25, 1_700_000_000_123);
        e.push(&l, f64::from_bits(STALE_NAN), 0);
        let (lb, v, ts) = split_entry(e.slice(0, 1)).unwrap();
        assert_eq!((lb, v, ts), (&l[..], -3.25, 1_700_000_000_123));
        let (_, v, ts) = split_entry(e.slice(1, 2)).unwrap();
        assert_eq!((v.to_bits(), ts), (STALE_NAN, 0));
        assert!(split_entry(&[0x0a, 0x05, 0x0a]).is_none());
    }

    #[test]
    fn slices_cut_at_sample_boundaries() {
        let mut out = EncodedSamples::default();
        for i in 0..5 {
            out.push(
                &encode_labels(&[("__name__".into(), format!("m{i}"))]),
                i as f64,
                i,
            );
        }
        let part = WriteRequest::decode(out.slice(1, 3)).unwrap();
        assert_eq!(part.timeseries.len(), 2);
        assert_eq!(part.timeseries[0].samples[0].value, 1.0);
        assert_eq!(out.slice(0, 5), out.buf.as_slice());
    }
}
