//! Remote write 2.0 (`io.prometheus.write.v2.Request`): the transcoder from
//! the queue's 1.0 `WriteRequest` bytes, and prost messages to decode a 2.0
//! request (tests, the compliance check).
//!
//! A 2.0 request interns every label name and value in a per-request symbol
//! table (`symbols`, `""` first), and each series names its labels by
//! reference (`labels_refs`: name, value, name, value, ...). The queue keeps
//! 1.0 bytes (the scrape path writes nothing else); at send time
//! [`transcode`] walks them once: each series' labels are interned, its
//! samples (encoded the same way in both versions) copied as they are, and
//! a joined request is re-symbolised as a whole, so a symbol appears once
//! per request however many scrapes it carries. Metadata from the
//! exposition's `TYPE`/`HELP`/`UNIT` lines reaches the queue as 1.0
//! `metadata` entries once per `send_interval` per target; the destination's
//! [`MetaCache`] remembers them by family, so every series of a family gets
//! its metadata in every 2.0 request (after a restart, from the first
//! scrape whose metadata is sent again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::proto::{put_varint, read_varint, varint_len};

/// `io.prometheus.write.v2.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeries>,
}

/// `io.prometheus.write.v2.TimeSeries` (no histograms or exemplars: the
/// agent scrapes the text formats, which carry neither).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, optional, tag = "5")]
    pub metadata: Option<Metadata>,
}

/// `io.prometheus.write.v2.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    #[prost(int64, tag = "3")]
    pub start_timestamp: i64,
}

/// `io.prometheus.write.v2.Metadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "3")]
    pub help_ref: u32,
    #[prost(uint32, tag = "4")]
    pub unit_ref: u32,
}

impl Request {
    /// A series' labels as (name, value) pairs, resolved through the symbol
    /// table; `None` if a reference is out of range or the count is odd.
    pub fn labels(&self, ts: &TimeSeries) -> Option<Vec<(String, String)>> {
        if !ts.labels_refs.len().is_multiple_of(2) {
            return None;
        }
        ts.labels_refs
            .chunks(2)
            .map(|p| {
                Some((
                    self.symbols.get(p[0] as usize)?.clone(),
                    self.symbols.get(p[1] as usize)?.clone(),
                ))
            })
            .collect()
    }
}

/// Why 1.0 bytes could not be transcoded (they are the queue's own: this
/// means damage that slipped past the record CRC).
#[derive(Debug, thiserror::Error)]
#[error("remote write 2.0: the queued 1.0 request does not parse at byte {at}")]
pub struct TranscodeError {
    at: usize,
}

/// Metric metadata by family name, as the 1.0 `metadata` entries of a
/// record give it: (type, help, unit), the type as 2.0's enum.
pub(crate) type MetadataTable<'a> = HashMap<&'a [u8], (i32, &'a [u8], &'a [u8])>;

/// Metadata by family name, owned: (type, help, unit).
pub(crate) type Families = HashMap<Box<[u8]>, (i32, Box<[u8]>, Box<[u8]>)>;

/// A destination's metadata by family, shared by its workers: a snapshot
/// each request reads, replaced when a record brings something new.
/// Bounded: families past [`MAX_FAMILIES`] are not remembered.
#[derive(Default)]
pub struct MetaCache(Mutex<Arc<Families>>);

/// The most families a [`MetaCache`] remembers.
pub(crate) const MAX_FAMILIES: usize = 100_000;

impl MetaCache {
    /// The cache with `table` merged in.
    pub(crate) fn merge(&self, table: &MetadataTable<'_>) -> Arc<Families> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let changed = table.iter().any(|(name, (ty, help, unit))| {
            guard
                .get(*name)
                .is_none_or(|(t, h, u)| t != ty || &h[..] != *help || &u[..] != *unit)
        });
        if changed {
            let mut next: Families = (**guard).clone();
            for (name, (ty, help, unit)) in table {
                if next.len() < MAX_FAMILIES || next.contains_key(*name) {
                    next.insert((*name).into(), (*ty, (*help).into(), (*unit).into()));
                }
            }
            *guard = Arc::new(next);
        }
        guard.clone()
    }
}

/// A 1.0 `MetricType` (as in `MetricMetadata`) as 2.0's `MetricType`: the
/// two enums list the same types in the same order.
fn v2_type(v1: u64) -> i32 {
    if v1 <= 7 { v1 as i32 } else { 0 }
}

/// Reusable buffers of [`transcode`].
#[derive(Default)]
pub(crate) struct Transcoder {
    series: Vec<u8>,
    refs: Vec<u32>,
}

/// Interns symbols of one request; `""` is reference 0. Whole `Label`
/// messages are remembered too, so a label seen before costs one lookup.
struct Symbols<'a> {
    index: HashMap<&'a [u8], u32, foldhash::fast::FixedState>,
    pairs: HashMap<&'a [u8], (u32, u32), foldhash::fast::FixedState>,
    order: Vec<&'a [u8]>,
}

impl<'a> Symbols<'a> {
    fn new() -> Self {
        let mut s = Symbols {
            index: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            pairs: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            order: Vec::new(),
        };
        s.intern(b"");
        s
    }

    fn intern(&mut self, b: &'a [u8]) -> u32 {
        let next = self.order.len() as u32;
        *self.index.entry(b).or_insert_with(|| {
            self.order.push(b);
            next
        })
    }
}

/// One protobuf field at the start of `b`: (field number, wire type,
/// payload for length-delimited fields, bytes used).
fn field(b: &[u8]) -> Option<(u64, u8, &[u8], usize)> {
    let (key, n) = read_varint(b)?;
    let (num, wt) = (key >> 3, (key & 7) as u8);
    let rest = &b[n..];
    match wt {
        0 => {
            let (_, m) = read_varint(rest)?;
            Some((num, wt, &rest[..m], n + m))
        }
        1 => (rest.len() >= 8).then(|| (num, wt, &rest[..8], n + 8)),
        5 => (rest.len() >= 4).then(|| (num, wt, &rest[..4], n + 4)),
        2 => {
            let (len, m) = read_varint(rest)?;
            let len = usize::try_from(len).ok()?;
            let body = rest.get(m..m.checked_add(len)?)?;
            Some((num, wt, body, n + m + len))
        }
        _ => None,
    }
}

/// The metadata entries (field 3) of 1.0 request bytes.
pub(crate) fn metadata_of(v1: &[u8]) -> MetadataTable<'_> {
    let mut t = MetadataTable::new();
    let mut at = 0;
    while at < v1.len() {
        let Some((num, wt, body, used)) = field(&v1[at..]) else {
            break;
        };
        at += used;
        if num != 3 || wt != 2 {
            continue;
        }
        let (mut ty, mut name, mut help, mut unit) = (0u64, &b""[..], &b""[..], &b""[..]);
        let mut p = 0;
        while p < body.len() {
            let Some((n, w, v, u)) = field(&body[p..]) else {
                break;
            };
            p += u;
            match (n, w) {
                (1, 0) => ty = read_varint(v).map_or(0, |x| x.0),
                (2, 2) => name = v,
                (4, 2) => help = v,
                (5, 2) => unit = v,
                _ => {}
            }
        }
        if !name.is_empty() {
            t.insert(name, (v2_type(ty), help, unit));
        }
    }
    t
}

/// The family a series belongs to, for its metadata: its name, or the name
/// without the suffix a histogram, summary or counter sample carries.
fn family<'a>(name: &'a [u8], meta: &Families) -> Option<(i32, &'a [u8])> {
    if meta.is_empty() {
        return None;
    }
    if let Some(m) = meta.get(name) {
        return Some((m.0, name));
    }
    for suffix in [
        &b"_bucket"[..],
        b"_count",
        b"_sum",
        b"_total",
        b"_created",
        b"_info",
        b"_gcount",
        b"_gsum",
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(m) = meta.get(base)
        {
            return Some((m.0, base));
        }
    }
    None
}

/// Appends the 2.0 `Request` for the 1.0 `WriteRequest` bytes `v1` to
/// `out`: one symbol table for the whole request, series in the same order,
/// samples as they are, metadata from `cache` (with the record's own
/// metadata entries merged in first).
pub(crate) fn transcode(
    t: &mut Transcoder,
    v1: &[u8],
    cache: &MetaCache,
    out: &mut Vec<u8>,
) -> Result<(), TranscodeError> {
    let meta = cache.merge(&metadata_of(v1));
    let meta: &Families = &meta;
    let mut syms = Symbols::new();
    // The metadata message of the last family seen (its series are
    // adjacent): worked out once per family, not per series.
    let mut last_name: &[u8] = b"\xff";
    let mut meta_msg = [0u8; 32];
    let mut meta_len = 0;
    t.series.clear();
    let mut at = 0;
    while at < v1.len() {
        let (num, wt, ts, used) = field(&v1[at..]).ok_or(TranscodeError { at })?;
        let here = at;
        at += used;
        if num != 1 || wt != 2 {
            continue;
        }
        // The series' labels and samples.
        t.refs.clear();
        let mut samples: (usize, usize) = (0, 0);
        let mut name: &[u8] = b"";
        let mut p = 0;
        while p < ts.len() {
            let (n, w, body, u) = field(&ts[p..]).ok_or(TranscodeError { at: here })?;
            match (n, w) {
                (1, 2) => {
                    let (nr, vr) = match syms.pairs.get(body) {
                        Some(&pair) => pair,
                        None => {
                            // The label as `samples::label_pairs` reads it
                            // (the field with its tag and length).
                            let (ln, lv) = super::samples::label_pairs(&ts[p..p + u])
                                .next()
                                .ok_or(TranscodeError { at: here })?;
                            let pair = (syms.intern(ln), syms.intern(lv));
                            syms.pairs.insert(body, pair);
                            pair
                        }
                    };
                    if syms.order[nr as usize] == b"__name__" {
                        name = syms.order[vr as usize];
                    }
                    t.refs.push(nr);
                    t.refs.push(vr);
                }
                (2, 2) => {
                    // Samples follow the labels in our encoding; keep the
                    // span of them (a series has one).
                    if samples.1 == 0 {
                        samples.0 = p;
                    }
                    samples.1 = p + u;
                }
                _ => {}
            }
            p += u;
        }
        if name != last_name {
            last_name = name;
            meta_len = 0;
            if let Some((ty, fam)) = family(name, meta) {
                let (_, help, unit) = &meta[fam];
                let mut put = |v: u64| {
                    let mut v = v;
                    while v >= 0x80 {
                        meta_msg[meta_len] = (v as u8) | 0x80;
                        meta_len += 1;
                        v >>= 7;
                    }
                    meta_msg[meta_len] = v as u8;
                    meta_len += 1;
                };
                // Three fields of a tag and a varint of at most 5 bytes.
                if ty != 0 {
                    put(0x08);
                    put(ty as u64);
                }
                if !help.is_empty() {
                    put(0x18);
                    put(u64::from(syms.intern(help)));
                }
                if !unit.is_empty() {
                    put(0x20);
                    put(u64::from(syms.intern(unit)));
                }
            }
        }
        let refs_len: usize = t.refs.iter().map(|&r| varint_len(u64::from(r))).sum();
        let samples_bytes = &ts[samples.0..samples.1];
        let mut body_len = 0;
        if !t.refs.is_empty() {
            body_len += 1 + varint_len(refs_len as u64) + refs_len;
        }
        body_len += samples_bytes.len();
        if meta_len > 0 {
            body_len += 2 + meta_len;
        }
        let s = &mut t.series;
        s.push(0x2a);
        put_varint(s, body_len as u64);
        if !t.refs.is_empty() {
            s.push(0x0a);
            put_varint(s, refs_len as u64);
            for &r in &t.refs {
                put_varint(s, u64::from(r));
            }
        }
        s.extend_from_slice(samples_bytes);
        if meta_len > 0 {
            s.push(0x2a);
            s.push(meta_len as u8);
            s.extend_from_slice(&meta_msg[..meta_len]);
        }
    }
    let sym_bytes: usize = syms
        .order
        .iter()
        .map(|b| 1 + varint_len(b.len() as u64) + b.len())
        .sum();
    out.reserve(sym_bytes + t.series.len());
    for b in &syms.order {
        out.push(0x22);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&t.series);
    if t.series.capacity() > 4 << 20 {
        // Given back after a huge request.
        t.series = Vec::new();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::{self, WriteRequest};
    use crate::remote_write::samples::encode_labels;
    use prost::Message;

    type Series<'a> = (&'a [(&'a str, &'a str)], f64, i64);

    fn v1_request() -> Vec<u8> {
        let mut b = Vec::new();
        let series: &[Series] = &[
            (
                &[
                    ("__name__", "http_requests_total"),
                    ("code", "200"),
                    ("job", "api"),
                ],
                5.0,
                1_000,
            ),
            (
                &[
                    ("__name__", "http_requests_total"),
                    ("code", "500"),
                    ("job", "api"),
                ],
                f64::NAN,
                1_000,
            ),
            (
                &[("__name__", "rpc_seconds_bucket"), ("le", "+Inf")],
                3.0,
                -7,
            ),
            (&[("__name__", "up"), ("job", "api")], 1.0, 2_000),
        ];
        for (l, v, ts) in series {
            let owned: Vec<(String, String)> = l
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            proto::write_series(&mut b, &encode_labels(&owned), *v, *ts);
        }
        b
    }

    fn metadata_entry(b: &mut Vec<u8>, ty: u64, name: &str, help: &str, unit: &str) {
        let mut m = Vec::new();
        m.push(0x08);
        put_varint(&mut m, ty);
        for (tag, s) in [(0x12u8, name), (0x22, help), (0x2a, unit)] {
            if !s.is_empty() {
                m.push(tag);
                put_varint(&mut m, s.len() as u64);
                m.extend_from_slice(s.as_bytes());
            }
        }
        b.push(0x1a);
        put_varint(b, m.len() as u64);
        b.extend_from_slice(&m);
    }

    #[test]
    fn a_transcoded_request_holds_the_same_series_and_samples() {
        let v1 = v1_request();
        let mut out = Vec::new();
        transcode(
            &mut Transcoder::default(),
            &v1,
            &MetaCache::default(),
            &mut out,
        )
        .unwrap();
        let req = Request::decode(out.as_slice()).unwrap();
        let orig = WriteRequest::decode(v1.as_slice()).unwrap();
        assert_eq!(req.symbols[0], "", "the empty string is symbol 0");
        let mut uniq = req.symbols.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), req.symbols.len(), "each symbol once");
        assert_eq!(req.timeseries.len(), orig.timeseries.len());
        for (a, b) in req.timeseries.iter().zip(&orig.timeseries) {
            let labels = req.labels(a).unwrap();
            let want: Vec<_> = b
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            assert_eq!(labels, want);
            assert_eq!(a.samples.len(), 1);
            assert_eq!(a.samples[0].timestamp, b.samples[0].timestamp);
            assert_eq!(
                a.samples[0].value.to_bits(),
                b.samples[0].value.to_bits(),
                "bit for bit, staleness markers included"
            );
            assert!(a.metadata.is_none(), "no metadata in the record");
        }
        // "http_requests_total", "job", "api", "__name__" are shared.
        assert_eq!(req.symbols.len(), 12, "{:?}", req.symbols);
        assert!(out.len() < v1.len(), "{} vs {}", out.len(), v1.len());
    }

    #[test]
    fn metadata_entries_reach_every_series_of_their_family() {
        let mut v1 = v1_request();
        metadata_entry(&mut v1, 1, "http_requests", "Requests served.", "");
        metadata_entry(&mut v1, 3, "rpc_seconds", "RPC latency.", "seconds");
        let mut out = Vec::new();
        transcode(
            &mut Transcoder::default(),
            &v1,
            &MetaCache::default(),
            &mut out,
        )
        .unwrap();
        let req = Request::decode(out.as_slice()).unwrap();
        let m = |i: usize| req.timeseries[i].metadata.clone();
        let counter = m(0).unwrap();
        assert_eq!(counter.r#type, 1);
        assert_eq!(req.symbols[counter.help_ref as usize], "Requests served.");
        assert_eq!(counter.unit_ref, 0, "no unit: the empty symbol");
        assert_eq!(m(1), m(0), "one help symbol for both series");
        let hist = m(2).unwrap();
        assert_eq!(hist.r#type, 3);
        assert_eq!(req.symbols[hist.unit_ref as usize], "seconds");
        assert!(m(3).is_none(), "`up` has no metadata here");
    }

    #[test]
    fn the_cache_gives_metadata_to_later_requests_without_it() {
        let cache = MetaCache::default();
        let mut with = v1_request();
        metadata_entry(&mut with, 1, "http_requests", "Requests served.", "");
        let mut t = Transcoder::default();
        transcode(&mut t, &with, &cache, &mut Vec::new()).unwrap();
        let snapshot = cache.merge(&MetadataTable::new());
        // Nothing new: the same snapshot, not a copy.
        assert!(Arc::ptr_eq(&snapshot, &cache.merge(&metadata_of(&with))));
        let mut out = Vec::new();
        transcode(&mut t, &v1_request(), &cache, &mut out).unwrap();
        let req = Request::decode(out.as_slice()).unwrap();
        let m = req.timeseries[0].metadata.clone().unwrap();
        assert_eq!(
            (m.r#type, req.symbols[m.help_ref as usize].as_str()),
            (1, "Requests served.")
        );
    }

    #[test]
    fn damaged_input_is_an_error() {
        let v1 = v1_request();
        let mut t = Transcoder::default();
        let c = MetaCache::default();
        assert!(transcode(&mut t, &v1[..v1.len() - 3], &c, &mut Vec::new()).is_err());
        assert!(
            transcode(
                &mut t,
                &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
                &c,
                &mut Vec::new()
            )
            .is_err()
        );
        let mut out = Vec::new();
        transcode(&mut t, &[], &c, &mut out).unwrap();
        assert_eq!(
            Request::decode(out.as_slice()).unwrap().symbols,
            vec![String::new()]
        );
    }
}
