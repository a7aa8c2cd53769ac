//! Remote-write 1.0 protobuf messages (see `proto/remote.proto`).
//!
//! Two halves: prost message structs for decoding (tests, tools, the test
//! receivers) and a hand-written encoder for the hot path. The encoder writes
//! a `TimeSeries` field from label bytes encoded once per sample, so a
//! sample costs a memcpy plus a few bytes of framing.

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

impl TimeSeries {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }
}

#[inline]
pub(crate) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// A protobuf-style varint at the start of `b`: (value, bytes used).
pub(crate) fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &c) in b.iter().take(10).enumerate() {
        v |= u64::from(c & 0x7f) << (7 * i);
        if c < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends one `Label` as field 1 of a `TimeSeries` (tag, length, message).
pub(crate) fn encode_label(out: &mut Vec<u8>, name: &str, value: &str) {
    encode_label_bytes(out, name.as_bytes(), value.as_bytes());
}

/// [`encode_label`] for names and values known to be UTF-8.
#[inline]
pub(crate) fn encode_label_bytes(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let (n, v) = (name.len(), value.len());
    if n + v + 4 < 0x80 {
        // Every length fits in one byte: fixed-size header writes.
        out.reserve(n + v + 6);
        out.extend_from_slice(&[0x0a, (n + v + 4) as u8, 0x0a, n as u8]);
        out.extend_from_slice(name);
        out.extend_from_slice(&[0x12, v as u8]);
        out.extend_from_slice(value);
        return;
    }
    let msg_len = 1
        + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(value.len() as u64)
        + value.len();
    out.reserve(msg_len + 3);
    out.push(0x0a);
    put_varint(out, msg_len as u64);
    out.push(0x0a);
    put_varint(out, name.len() as u64);
    out.extend_from_slice(name);
    out.push(0x12);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Appends one `TimeSeries` with a single sample as field 1 of a
/// `WriteRequest`. `labels` are the encoded `repeated Label` bytes.
#[inline]
pub(crate) fn write_series(out: &mut Vec<u8>, labels: &[u8], value: f64, ts: i64) {
    // Sample: 0x09 + 8-byte double, then 0x10 + varint timestamp.
    let sample_len = 9 + 1 + varint_len(ts as u64);
    let series_len = labels.len() + 1 + varint_len(sample_len as u64) + sample_len;
    out.reserve(1 + varint_len(series_len as u64) + series_len);
    out.push(0x0a);
    put_varint(out, series_len as u64);
    out.extend_from_slice(labels);
    out.push(0x12);
    put_varint(out, sample_len as u64);
    out.push(0x09);
    out.extend_from_slice(&value.to_le_bytes());
    out.push(0x10);
    put_varint(out, ts as u64);
}

/// Starts a `TimeSeries` whose labels the caller appends next: the field
/// tag and a two-byte placeholder for its length. Returns where it starts,
/// for [`finish_series`].
#[inline]
pub(crate) fn start_series(out: &mut Vec<u8>) -> usize {
    let entry = out.len();
    out.extend_from_slice(&[0x0a, 0, 0]);
    entry
}

/// Ends the `TimeSeries` begun at `entry` by [`start_series`] with one
/// sample, and writes its length (moving the labels when the length does
/// not take exactly two bytes). The result is [`write_series`]'s.
#[inline]
pub(crate) fn finish_series(out: &mut Vec<u8>, entry: usize, value: f64, ts: i64) {
    finish_series_with(out, entry, value, &SampleTail::new(ts));
}

/// The `Sample` field of a `TimeSeries` for one timestamp, its value to be
/// filled in: built once per scrape, since its samples share the timestamp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SampleTail {
    /// `0x12 len 0x09 <8 value bytes> 0x10 <timestamp varint>`, zero-padded.
    bytes: [u8; 32],
    len: usize,
}

impl SampleTail {
    /// (No allocation: built once per scrape on the hot path.)
    pub(crate) fn new(ts: i64) -> SampleTail {
        let mut bytes = [0u8; 32];
        let sample_len = 9 + 1 + varint_len(ts as u64);
        // The sample message is at most 20 bytes: its length is one byte.
        bytes[0] = 0x12;
        bytes[1] = sample_len as u8;
        bytes[2] = 0x09;
        bytes[11] = 0x10;
        let mut len = 12;
        let mut v = ts as u64;
        loop {
            if v < 0x80 {
                bytes[len] = v as u8;
                len += 1;
                break;
            }
            bytes[len] = (v as u8) | 0x80;
            v >>= 7;
            len += 1;
        }
        SampleTail { bytes, len }
    }
}

/// [`finish_series`] with the sample's timestamp in `tail`.
#[inline]
pub(crate) fn finish_series_with(out: &mut Vec<u8>, entry: usize, value: f64, tail: &SampleTail) {
    let mut b = tail.bytes;
    b[3..11].copy_from_slice(&value.to_le_bytes());
    let at = out.len();
    // A fixed-size copy, cut to length.
    out.extend_from_slice(&b);
    out.truncate(at + tail.len);
    let series_len = out.len() - entry - 3;
    let n = varint_len(series_len as u64);
    if n == 2 {
        out[entry + 1] = (series_len as u8) | 0x80;
        out[entry + 2] = (series_len >> 7) as u8;
        return;
    }
    let end = out.len();
    if n == 1 {
        out.copy_within(entry + 3..end, entry + 2);
        out.truncate(end - 1);
    } else {
        out.resize(end + n - 2, 0);
        out.copy_within(entry + 3..end, entry + 1 + n);
    }
    let mut v = series_len as u64;
    for b in &mut out[entry + 1..entry + 1 + n] {
        *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn hand_encoder_matches_prost() {
        let mut labels = Vec::new();
        encode_label(&mut labels, "__name__", "apiserver_request_total");
        encode_label(&mut labels, "code", "200");
        encode_label(&mut labels, "long", &"x".repeat(300));
        let mut ours = Vec::new();
        for (v, ts) in [
            (1.5, 1_700_000_000_000i64),
            (0.0, 0),
            (-2.0, -5),
            (f64::NAN, 1),
        ] {
            write_series(&mut ours, &labels, v, ts);
        }
        let decoded = WriteRequest::decode(ours.as_slice()).unwrap();
        let mk = |v: f64, ts: i64| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "apiserver_request_total".into(),
                },
                Label {
                    name: "code".into(),
                    value: "200".into(),
                },
                Label {
                    name: "long".into(),
                    value: "x".repeat(300),
                },
            ],
            samples: vec![Sample {
                value: v,
                timestamp: ts,
            }],
        };
        assert_eq!(decoded.timeseries.len(), 4);
        assert_eq!(decoded.timeseries[0], mk(1.5, 1_700_000_000_000));
        assert_eq!(decoded.timeseries[1], mk(0.0, 0));
        assert_eq!(decoded.timeseries[2], mk(-2.0, -5));
        assert!(decoded.timeseries[3].samples[0].value.is_nan());
        // And prost's own encoding of the same request decodes the same.
        let theirs = WriteRequest {
            timeseries: vec![mk(1.5, 1_700_000_000_000)],
            metadata: vec![],
        }
        .encode_to_vec();
        assert_eq!(
            WriteRequest::decode(theirs.as_slice()).unwrap().timeseries[0],
            decoded.timeseries[0]
        );
    }

    #[test]
    fn series_written_in_place_equals_write_series() {
        // Label lengths around the one-, two- and three-byte length varints.
        for value_len in [
            0usize, 1, 90, 100, 113, 114, 115, 116, 200, 16_300, 16_360, 16_370, 16_400, 70_000,
        ] {
            let mut labels = Vec::new();
            encode_label(&mut labels, "__name__", "m");
            if value_len > 0 {
                encode_label(&mut labels, "v", &"x".repeat(value_len));
            }
            for ts in [0i64, 1_700_000_000_000, -1] {
                let mut expected = b"prefix".to_vec();
                write_series(&mut expected, &labels, 2.5, ts);
                let mut ours = b"prefix".to_vec();
                let entry = start_series(&mut ours);
                ours.extend_from_slice(&labels);
                finish_series(&mut ours, entry, 2.5, ts);
                assert_eq!(ours, expected, "value length {value_len}, ts {ts}");
            }
        }
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
        }
    }
}
