//! Property tests over what the network and the disk hand the agent: the
//! exposition parser and the series encoder behind it, gzip, X.509 facts,
//! `Retry-After`, and the disk queue's recovery. Inputs are random or
//! randomly damaged (seeded, so a failure names the case that reproduces
//! it); the properties: no panic, the bounds hold, and where a round trip
//! exists it gives back what went in.

use crate::exposition::{Format, Parser};
use crate::remote_write::samples::EncodedSamples;
use crate::series::{SeriesCache, TargetContext};

/// A generator seeded per case, so each case reproduces alone.
fn rng(seed: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed)
}

/// `b` damaged once: a flipped bit, a byte changed, a range deleted or
/// duplicated, random bytes inserted, or the end cut.
fn damage(r: &mut fastrand::Rng, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.push(r.u8(..));
        return;
    }
    let at = r.usize(..b.len());
    match r.u8(..6) {
        0 => b[at] ^= 1 << r.u8(..8),
        1 => b[at] = r.u8(..),
        2 => {
            let end = (at + r.usize(1..64)).min(b.len());
            b.drain(at..end);
        }
        3 => {
            let end = (at + r.usize(1..64)).min(b.len());
            let copy = b[at..end].to_vec();
            b.splice(at..at, copy);
        }
        4 => {
            let junk: Vec<u8> = (0..r.usize(1..16))
                .map(|_| *r.choice(b"{}\",=\\\n #\0\xff").unwrap_or(&b'x'))
                .collect();
            b.splice(at..at, junk);
        }
        _ => b.truncate(at),
    }
}

const PAGE: &str = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
http_requests_total{method=\"GET\",code=\"200\"} 1027 1700000000000\n\
http_requests_total{method=\"POST\",code=\"500\",path=\"a\\\"b\\\\c\\nd\"} 3\n\
# TYPE rpc histogram\nrpc_bucket{le=\"0.1\"} 1\nrpc_bucket{le=\"1\"} 2\nrpc_bucket{le=\"1e3\"} 2\n\
rpc_bucket{le=\"+Inf\"} 3\nrpc_sum 1.5e-3\nrpc_count 3\n\
# TYPE q summary\nq{quantile=\"0.5\"} NaN\nq{quantile=\"1\"} -Inf\nq_sum 0\nq_count 0\n\
unicode{u=\"東京 ✓\"} +Inf\nempty{a=\"\"} 1\n";

/// Damaged pages never panic the parser or the series encoder behind it
/// (both formats, both Prometheus forms), and a failure is an error with a
/// line, not a crash; the cache stays usable for the next good page.
#[test]
fn damaged_pages_give_errors_not_panics() {
    let fixture = include_bytes!("../tests/data/prometheus-server.237mfs.prom.txt");
    let seeds: Vec<&[u8]> = vec![PAGE.as_bytes(), &fixture[..6000]];
    for (k, base) in seeds.iter().enumerate() {
        for case in 0..800u64 {
            let seed = (k as u64) << 32 | case;
            let mut r = rng(seed);
            let mut page = base.to_vec();
            for _ in 0..r.usize(1..4) {
                damage(&mut r, &mut page);
            }
            for format in [Format::Text, Format::OpenMetrics] {
                for v3 in [false, true] {
                    let ctx = TargetContext {
                        float_label_values: v3,
                        ..Default::default()
                    };
                    for s in Parser::new(&page)
                        .with_format(format)
                        .float_label_values(v3)
                    {
                        if let Err(e) = s {
                            assert!(e.line >= 1, "seed {seed}: {e}");
                        }
                    }
                    let mut cache = SeriesCache::new();
                    let mut out = EncodedSamples::default();
                    let _ = cache.ingest_format(&ctx, &page, format, 1, &mut out, 0);
                    cache.end(&ctx, 1, &mut out, &page, false);
                    out.clear();
                    cache
                        .ingest(&ctx, PAGE.as_bytes(), 2, &mut out, 0)
                        .unwrap_or_else(|e| panic!("seed {seed}: the good page after: {e}"));
                }
            }
        }
    }
}

/// Random series written as exposition text read back as written: names,
/// label values with every escape and non-ASCII text, values of every
/// kind, timestamps.
#[test]
fn written_series_read_back() {
    let name_start = b"abcxyzABCXYZ_:";
    let name_rest = b"abcxyzABCXYZ_:0189";
    let value_chars = [
        'a', 'Z', '0', ' ', '"', '\\', '\n', 'ü', '東', '✓', '{', '}', ',', '=',
    ];
    for seed in 0..3000u64 {
        let mut r = rng(seed);
        let word = |r: &mut fastrand::Rng, first: &[u8], rest: &[u8]| -> String {
            let mut s = String::from(*r.choice(first).unwrap() as char);
            for _ in 0..r.usize(0..12) {
                s.push(*r.choice(rest).unwrap() as char);
            }
            s
        };
        let name = word(&mut r, name_start, name_rest);
        let mut labels: Vec<(String, String)> = Vec::new();
        for _ in 0..r.usize(0..5) {
            let n = word(&mut r, b"abcxyz_", b"abcxyz_019");
            if n.starts_with("__") || labels.iter().any(|(x, _)| *x == n) {
                continue;
            }
            let v: String = (0..r.usize(0..10))
                .map(|_| *r.choice(&value_chars).unwrap())
                .collect();
            labels.push((n, v));
        }
        let value = match r.u8(..6) {
            0 => f64::INFINITY,
            1 => f64::NEG_INFINITY,
            2 => f64::NAN,
            3 => f64::from_bits(r.u64(..)),
            4 => r.i64(..) as f64,
            _ => r.f64() * 10f64.powi(r.i32(-30..30)),
        };
        let value = if value.is_nan() { f64::NAN } else { value };
        let ts = r.bool().then(|| r.i64(0..i64::MAX));
        let mut line = name.clone();
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(n, v)| {
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    format!("{n}=\"{v}\"")
                })
                .collect();
            line += &format!("{{{}}}", inner.join(","));
        }
        let text = if r.bool() {
            format!("{value:e}")
        } else {
            format!("{value}")
        };
        line += &format!(" {text}");
        if let Some(t) = ts {
            line += &format!(" {t}");
        }
        line.push('\n');
        let got: Vec<_> = Parser::new(line.as_bytes()).collect();
        assert_eq!(got.len(), 1, "seed {seed}: {line:?}");
        let s = got[0]
            .clone()
            .unwrap_or_else(|e| panic!("seed {seed}: {line:?}: {e}"));
        assert_eq!(s.name, name.as_bytes(), "seed {seed}");
        let read: Vec<(String, String)> = s
            .labels()
            .map(|l| l.map(|(n, v)| (n.to_string(), v.into_owned())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, labels, "seed {seed}: {line:?}");
        if value.is_nan() {
            assert_eq!(
                s.value.to_bits(),
                crate::exposition::NORMAL_NAN,
                "seed {seed}"
            );
        } else {
            assert_eq!(s.value.to_bits(), value.to_bits(), "seed {seed}: {text}");
        }
        assert_eq!(s.timestamp, ts, "seed {seed}");
    }
}

/// Gzip: what was compressed inflates back; a damaged stream is an error or
/// a shorter output, never more than the limit, never a panic.
#[test]
fn gzip_round_trips_and_damage_stays_bounded() {
    use std::io::Write;
    for seed in 0..400u64 {
        let mut r = rng(seed);
        let len = r.usize(0..20_000);
        let plain: Vec<u8> = if r.bool() {
            (0..len).map(|_| r.u8(..)).collect()
        } else {
            PAGE.bytes().cycle().take(len).collect()
        };
        let mut e =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(r.u32(0..10)));
        e.write_all(&plain).unwrap();
        let mut wire = e.finish().unwrap();
        let mut out = Vec::new();
        crate::gzip::inflate(&wire, &mut out, plain.len() as u64 + 1).unwrap();
        assert_eq!(out, plain, "seed {seed}");
        let limit = r.u64(0..(plain.len() as u64 + 10));
        if crate::gzip::inflate(&wire, &mut out, limit).is_ok() {
            assert!(out.len() as u64 <= limit, "seed {seed}");
        }
        for _ in 0..r.usize(1..4) {
            damage(&mut r, &mut wire);
        }
        if crate::gzip::inflate(&wire, &mut out, limit).is_ok() {
            assert!(
                out.len() as u64 <= limit,
                "seed {seed}: {} > {limit}",
                out.len()
            );
        }
    }
}

/// X.509: any damage to a real certificate gives facts or nothing, never a
/// panic (the parser reads what a server presents, before any trust).
#[test]
fn damaged_certificates_never_panic() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(vec!["kubernetes".to_string(), "10.0.0.1".to_string()])
            .unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    let der = p.self_signed(&key).unwrap().der().to_vec();
    let info = crate::x509::CertInfo::parse(&der.clone().into()).expect("an intact certificate");
    assert!(info.subject.contains("kube-apiserver"), "{}", info.subject);
    for seed in 0..3000u64 {
        let mut r = rng(seed);
        let mut d = der.clone();
        for _ in 0..r.usize(1..6) {
            damage(&mut r, &mut d);
        }
        let _ = crate::x509::CertInfo::parse(&d.into());
    }
}

/// `Retry-After`: seconds and dates in every form read back; anything else
/// is no answer, a far future included, never a panic or an overflow.
#[test]
fn retry_after_reads_what_servers_send() {
    use std::time::{Duration, SystemTime};
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for seed in 0..3000u64 {
        let mut r = rng(seed);
        let secs = r.u64(0..400_000_000_000);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(r.u64(0..253_402_300_799));
        let text = match r.u8(..4) {
            0 => secs.to_string(),
            1 => httpdate::fmt_http_date(at),
            2 => (0..r.usize(0..40)).map(|_| r.u8(32..127) as char).collect(),
            _ => {
                let mut b = httpdate::fmt_http_date(at).into_bytes();
                damage(&mut r, &mut b);
                String::from_utf8_lossy(&b).into_owned()
            }
        };
        let Ok(v) = http::HeaderValue::from_str(&text) else {
            continue;
        };
        let got = crate::remote_write::retry::parse_retry_after_at(&v, now);
        if text == secs.to_string() {
            assert_eq!(got, Some(Duration::from_secs(secs)), "seed {seed}");
        } else if text == httpdate::fmt_http_date(at) {
            let want = at.duration_since(now).unwrap_or(Duration::ZERO);
            assert_eq!(got, Some(want), "seed {seed}: {text}");
        }
    }
}

/// The disk queue after random damage to its files: it opens, and what it
/// gives back is an in-order selection of the batches written, each intact.
#[test]
fn damaged_queue_files_recover_to_intact_batches_in_order() {
    use crate::remote_write::disk::SegmentLog;
    for seed in 0..120u64 {
        let mut r = rng(seed);
        let d = tempfile::tempdir().unwrap();
        let written: Vec<Vec<u8>> = (0..r.usize(1..40))
            .map(|i| {
                let n = r.usize(1..400);
                let mut b = format!("batch-{i}-").into_bytes();
                b.extend((0..n).map(|_| r.u8(..)));
                b
            })
            .collect();
        {
            let (mut log, _) = SegmentLog::open(d.path(), 2048, 1 << 30).unwrap();
            for (i, b) in written.iter().enumerate() {
                log.append(b, crate::remote_write::codec::Codec::Zstd, 1, i as i64, 0)
                    .unwrap();
            }
        }
        let mut files: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        files.sort();
        for _ in 0..r.usize(1..5) {
            let f = &files[r.usize(..files.len())];
            let mut bytes = std::fs::read(f).unwrap();
            damage(&mut r, &mut bytes);
            std::fs::write(f, bytes).unwrap();
        }
        let (mut log, rec) = SegmentLog::open(d.path(), 2048, 1 << 30)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let mut next = 0;
        let mut read = 0;
        while let Some(m) = log.front() {
            let got = log.read(&m).unwrap().data.to_vec();
            let at = written[next..]
                .iter()
                .position(|w| *w == got)
                .unwrap_or_else(|| {
                    panic!("seed {seed}: a batch that was never written, or out of order")
                });
            next += at + 1;
            read += 1;
            log.ack(m.seq).unwrap();
        }
        assert_eq!(read, rec.records, "seed {seed}");
    }
}
