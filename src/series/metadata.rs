//! Metric metadata of a target's exposition: the `# HELP`, `# TYPE` and (OpenMetrics)
//! `# UNIT` lines of each family, encoded as remote write 1.0
//! `MetricMetadata` entries (`WriteRequest` field 3), the form the queue
//! carries them in: a 1.0 receiver that stores metadata (Mimir, Cortex,
//! Thanos) reads them as they are, and the 2.0 transcoder
//! (`remote_write::v2`) attaches them to every series of their family.
//!
//! A separate pass over a body the parser has accepted, made only when
//! metadata is due (once per `metadata_config.send_interval` per target, as
//! Prometheus sends it): the per-sample parser stays as it is.

use std::collections::HashMap;

use crate::exposition::Format;
use crate::remote_write::proto::put_varint;

/// One family's metadata, borrowed from the body (help unescaped on
/// encoding).
#[derive(Default)]
struct Family<'a> {
    name: &'a [u8],
    kind: u8,
    help: Option<&'a [u8]>,
    unit: &'a [u8],
}

/// 1.0's `MetricType` for a `# TYPE` word.
fn kind(word: &[u8]) -> u8 {
    match word {
        b"counter" => 1,
        b"gauge" => 2,
        b"histogram" => 3,
        b"gaugehistogram" => 4,
        b"summary" => 5,
        b"info" => 6,
        b"stateset" => 7,
        _ => 0,
    }
}

/// Appends the metadata entries of `body` (a page the parser accepted) to
/// `out`, one per family with a `HELP`, `TYPE` or `UNIT` line, in order of
/// appearance. Returns how many.
pub fn encode_metadata(body: &[u8], format: Format, out: &mut Vec<u8>) -> usize {
    let om = format == Format::OpenMetrics;
    let mut families: Vec<Family<'_>> = Vec::new();
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    for line in body.split(|&c| c == b'\n') {
        let Some(rest) = line.strip_prefix(b"#") else {
            continue;
        };
        let rest = trim_start(rest);
        let (kw, rest) = split_word(rest);
        if !matches!(kw, b"HELP" | b"TYPE" | b"UNIT") {
            continue;
        }
        let rest = trim_start(rest);
        let (name, text) = split_word(rest);
        if name.is_empty() {
            continue;
        }
        // As the parser: exactly one character between the name and the text.
        let text = text.get(1..).unwrap_or_default();
        let i = *index.entry(name).or_insert_with(|| {
            families.push(Family {
                name,
                ..Family::default()
            });
            families.len() - 1
        });
        let f = &mut families[i];
        match kw {
            b"HELP" => f.help = Some(text),
            b"TYPE" => f.kind = kind(text),
            _ => f.unit = text,
        }
    }
    let mut help = Vec::new();
    let mut entry = Vec::new();
    for f in &families {
        help.clear();
        if let Some(h) = f.help {
            unescape_help(h, om, &mut help);
        }
        entry.clear();
        entry.push(0x08);
        put_varint(&mut entry, u64::from(f.kind));
        for (tag, bytes) in [(0x12u8, f.name), (0x22, &help[..]), (0x2a, f.unit)] {
            if !bytes.is_empty() {
                entry.push(tag);
                put_varint(&mut entry, bytes.len() as u64);
                entry.extend_from_slice(bytes);
            }
        }
        out.push(0x1a);
        put_varint(out, entry.len() as u64);
        out.extend_from_slice(&entry);
    }
    families.len()
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &b[n..]
}

/// The word at the start of `b` and what follows it.
fn split_word(b: &[u8]) -> (&[u8], &[u8]) {
    let n = b
        .iter()
        .position(|&c| c == b' ' || c == b'\t')
        .unwrap_or(b.len());
    b.split_at(n)
}

/// HELP text escapes: `\\` and `\n` (and, in OpenMetrics, `\"`); any other
/// escape stays as written, as Prometheus reads it.
fn unescape_help(h: &[u8], om: bool, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < h.len() {
        if h[i] == b'\\' && i + 1 < h.len() {
            match h[i + 1] {
                b'\\' => out.push(b'\\'),
                b'n' => out.push(b'\n'),
                b'"' if om => out.push(b'"'),
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(h[i]);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::WriteRequest;
    use prost::Message;

    #[test]
    fn help_type_and_unit_per_family_in_order() {
        let page =
            b"# HELP rpc_seconds RPC latency \\\\ in \\n seconds.\n# TYPE rpc_seconds histogram\n\
rpc_seconds_bucket{le=\"1\"} 1\n# TYPE up gauge\nup 1\n# a comment\n#   HELP  spaced Spaced help.\n\
# HELP only_help Only help.\nonly_help 2\n# TYPE requests counter\nrequests_total 3\n";
        let mut out = Vec::new();
        assert_eq!(encode_metadata(page, Format::Text, &mut out), 5);
        let req = WriteRequest::decode(out.as_slice()).unwrap();
        let got: Vec<(i32, &str, &str, &str)> = req
            .metadata
            .iter()
            .map(|m| {
                (
                    m.r#type,
                    m.metric_family_name.as_str(),
                    m.help.as_str(),
                    m.unit.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (3, "rpc_seconds", "RPC latency \\ in \n seconds.", ""),
                (2, "up", "", ""),
                (0, "spaced", "Spaced help.", ""),
                (0, "only_help", "Only help.", ""),
                (1, "requests", "", ""),
            ]
        );
        assert!(req.timeseries.is_empty());
    }

    #[test]
    fn openmetrics_units_and_types() {
        let page = b"# TYPE build info\n# HELP build Build \\\"facts\\\".\nbuild_info{v=\"1\"} 1\n\
# TYPE temp gauge\n# UNIT temp celsius\ntemp_celsius 20\n# TYPE state stateset\nstate{state=\"a\"} 1\n# EOF\n";
        let mut out = Vec::new();
        encode_metadata(page, Format::OpenMetrics, &mut out);
        let req = WriteRequest::decode(out.as_slice()).unwrap();
        let m = &req.metadata;
        assert_eq!((m[0].r#type, m[0].help.as_str()), (6, "Build \"facts\"."));
        assert_eq!((m[1].r#type, m[1].unit.as_str()), (2, "celsius"));
        assert_eq!(m[2].r#type, 7);
        // The text format keeps `\"` as written.
        let mut out = Vec::new();
        encode_metadata(b"# HELP x a \\\"b\\\"\nx 1\n", Format::Text, &mut out);
        let req = WriteRequest::decode(out.as_slice()).unwrap();
        assert_eq!(req.metadata[0].help, "a \\\"b\\\"");
    }
}
