//! A zero-copy parser for the Prometheus text exposition format (0.0.4).
//!
//! The reference for what is accepted and what is rejected is Prometheus 2.x's
//! own `model/textparse/promlex.l` + `promparse.go`; the rules we mirror:
//!
//! - `# HELP name text` and `# TYPE name type` (type one of `counter`, `gauge`,
//!   `histogram`, `summary`, `untyped`; anything else fails); any other line
//!   starting with `#` is a comment. Blank lines and leading blanks are fine.
//! - A sample is `name{labels} value [timestamp]\n`. Metric names are
//!   `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names `[a-zA-Z_][a-zA-Z0-9_]*`. Inside
//!   braces blanks are allowed, a trailing comma is allowed and (as in
//!   Prometheus) so are labels separated by blanks only. Label values are
//!   double-quoted; `\"`, `\\` and `\n` are unescaped, any other escape stays
//!   as written, and values must be valid UTF-8.
//! - Values are Go `ParseFloat` numbers without `p`, `P` or `_`; `NaN`,
//!   `+Inf`, `-Inf` (any case) are accepted, out-of-range numbers are not.
//!   Every NaN becomes Prometheus's normal NaN (`0x7ff8000000000001`), so a
//!   target can never inject a staleness marker.
//! - Timestamps are unsigned decimal milliseconds.
//! - Every line, the last one included, ends with `\n`.
//!
//! The parser never allocates on the hot path: a [`Sample`] borrows the
//! series text (`name{labels}` exactly as exposed), the name and the raw
//! label text from the input, and the parser records where each label's name
//! and value sit ([`Parser::label_spans`]) so the series encoder never scans
//! the text again. [`Sample::labels`] unescapes values into `String`s for the
//! general (slow) path.
//!
//! Layout: this file holds the API (the parser, samples, label spans, the
//! format) and the line dispatcher; `lexer` the text-format scanning,
//! `openmetrics` what OpenMetrics adds, `float` the value parser, `escape`
//! label value escapes.

use std::borrow::Cow;
use std::fmt;

mod canonical;
mod escape;
mod float;
mod lexer;
mod openmetrics;

pub(crate) use canonical::{Rewrite, canonical_float_label};
pub(crate) use escape::{InvalidUtf8, unescape, unescape_into};
pub(crate) use float::parse_float;
pub(crate) use lexer::MASKS;
use lexer::is_blank;

use crate::labels::{
    CLASS, LABEL_CHAR, NAME_CHAR, is_label_char, is_label_start, is_name_char, is_name_start,
    span_end,
};

/// Prometheus's normal NaN; every NaN read from an exposition becomes this.
pub(crate) const NORMAL_NAN: u64 = 0x7ff8_0000_0000_0001;

/// A parse failure, with the 1-based line where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One sample as exposed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// `name{labels}` exactly as exposed.
    pub series: &'a [u8],
    /// The metric name (ASCII by the grammar).
    pub name: &'a [u8],
    /// The raw text between the braces (empty without braces).
    pub raw_labels: &'a [u8],
    pub value: f64,
    pub timestamp: Option<i64>,
    /// Byte offset of the line, for error messages.
    pub offset: usize,
    /// The label whose value Prometheus 3 stores in float form for this
    /// sample (`le` under a histogram `# TYPE`, `quantile` under a summary),
    /// when the parser was asked to ([`Parser::float_label_values`]).
    pub float_label: Option<&'static [u8]>,
    /// Some label value of this sample is stored other than as written
    /// (its [`LabelSpan::rewrite`] is set).
    pub rewrites: bool,
}

/// Where one label of the last parsed sample sits in the body (absolute
/// byte offsets); the series encoder reads labels from these without
/// scanning the text a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelSpan {
    pub name_start: usize,
    pub name_end: usize,
    /// The value between the quotes, still escaped.
    pub value_start: usize,
    pub value_end: usize,
    /// The value contains a backslash (needs unescaping).
    pub escaped: bool,
    /// The value is stored in another form ([`canonical_float_label`]).
    pub rewrite: Rewrite,
}

impl LabelSpan {
    #[inline]
    pub fn name<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        &body[self.name_start..self.name_end]
    }
    #[inline]
    pub fn raw_value<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        &body[self.value_start..self.value_end]
    }

    /// The value as stored: unescaped and in float form where flagged
    /// (then written to `tmp`), else the bytes between the quotes.
    #[inline]
    pub fn stored_value<'a>(&self, body: &'a [u8], tmp: &'a mut Vec<u8>) -> &'a [u8] {
        let raw = self.raw_value(body);
        if !self.escaped && self.rewrite == Rewrite::No {
            return raw;
        }
        tmp.clear();
        if self.escaped {
            unescape_into(raw, tmp);
            if self.rewrite != Rewrite::No {
                let value = std::mem::take(tmp);
                if !canonical_float_label(&value, tmp) {
                    *tmp = value;
                }
            }
            return tmp;
        }
        match self.rewrite {
            Rewrite::Integer => {
                tmp.extend_from_slice(raw);
                tmp.extend_from_slice(b".0");
            }
            _ => {
                if !canonical_float_label(raw, tmp) {
                    tmp.extend_from_slice(raw);
                }
            }
        }
        tmp
    }
}

/// Iterates over the samples of a text-format body.
pub struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    /// Labels of the sample returned last.
    spans: Vec<LabelSpan>,
    /// Labels of the sample before it: consecutive samples mostly share
    /// their names, which are then compared as words instead of scanned.
    prev: Vec<LabelSpan>,
    /// Where the previous sample's metric name sits (start, length).
    prev_name: (usize, usize),
    /// The last sample's label names are the previous one's, in order.
    same_names: bool,
    /// OpenMetrics text (see [`Format`]).
    om: bool,
    /// OpenMetrics: `# EOF` was read.
    eof: bool,
    /// Prometheus 3's `le`/`quantile` forms are wanted.
    float_labels: bool,
    /// The label in float form under the last `# TYPE` (see
    /// [`Sample::float_label`]).
    float_label: Option<&'static [u8]>,
    /// The sample being parsed rewrites a label value.
    rewrites: bool,
    /// The metric name and type of the last `# TYPE` line (start, end,
    /// type), for [`Parser::family`].
    typed: (usize, usize, MetricType),
    /// Scratch for the float form of a value.
    canon: Vec<u8>,
    /// Values already decided (see [`canonical::Decisions`]).
    decisions: canonical::Decisions,
}

/// The type a `# TYPE` line gives a metric family (OpenMetrics' names; the
/// text format's `untyped` is `Unknown`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    #[default]
    Unknown,
}

impl MetricType {
    fn from_text(t: &[u8]) -> MetricType {
        match t {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"gaugehistogram" => MetricType::GaugeHistogram,
            b"summary" => MetricType::Summary,
            b"info" => MetricType::Info,
            b"stateset" => MetricType::StateSet,
            _ => MetricType::Unknown,
        }
    }

    /// The suffixes a sample name may add to its family's name.
    fn suffixes(self) -> &'static [&'static [u8]] {
        match self {
            MetricType::Counter => &[b"_total", b"_created"],
            MetricType::Histogram => &[b"_bucket", b"_sum", b"_count", b"_created"],
            MetricType::GaugeHistogram => &[b"_bucket", b"_gsum", b"_gcount"],
            MetricType::Summary => &[b"_sum", b"_count", b"_created"],
            MetricType::Info => &[b"_info"],
            _ => &[],
        }
    }
}

/// The metric family a sample belongs to ([`Parser::family`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Where the family's name sits in the body (start, end).
    pub name: (usize, usize),
    /// The family's type (`Unknown` without a `# TYPE` line for it).
    pub kind: MetricType,
    /// The sample is a classic histogram bucket (`<family>_bucket`).
    pub bucket: bool,
}

/// The exposition format of a body, from its `Content-Type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    #[default]
    Text,
    /// OpenMetrics 1.0 text, as Prometheus 2.x reads it: the body must end
    /// with `# EOF` (nothing after it); timestamps are seconds (fractions
    /// allowed); an exemplar (`# {labels} value [timestamp]` after a sample)
    /// is checked for its shape and dropped (remote write 1.0 carries none
    /// here); `_created`, `_info` and state-set series are ordinary series, as
    /// Prometheus 2.x ingests them; `# UNIT` lines are read and ignored.
    OpenMetrics,
}

impl Format {
    /// The format a response's `Content-Type` names (text unless it is
    /// `application/openmetrics-text`).
    pub fn from_content_type(ct: &[u8]) -> Format {
        let media = ct.split(|&c| c == b';').next().unwrap_or_default();
        if media
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// Label span buffers a [`Parser`] reuses from scrape to scrape (and the
/// `le`/`quantile` decisions it has made, 2 KiB, with their scratch).
#[derive(Debug, Default)]
pub struct SpanBufs(
    Vec<LabelSpan>,
    Vec<LabelSpan>,
    canonical::Decisions,
    Vec<u8>,
);

/// Up to 64 bytes of `b`, quoted, for an error message.
fn show(b: &[u8]) -> String {
    let end = b.len().min(64);
    let s = String::from_utf8_lossy(&b[..end]);
    if b.len() > 64 {
        format!("{s:?}…")
    } else {
        format!("{s:?}")
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Sample<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.skip_blanks();
            let Some(&c) = self.b.get(self.i) else {
                if self.om && !self.eof {
                    // Once: the error, then the end.
                    self.eof = true;
                    return Some(Err(
                        self.err(self.b.len(), "data does not end with # EOF".into())
                    ));
                }
                return None;
            };
            match c {
                b'\n' => self.i += 1,
                // Prometheus's lexer ends the input at a NUL where a token starts.
                0 => {
                    self.i = self.b.len();
                    return None;
                }
                b'#' => {
                    if let Err(e) = self.comment() {
                        self.i = self.b.len();
                        return Some(Err(e));
                    }
                }
                c if is_name_start(c) => {
                    let r = self.sample();
                    if r.is_err() {
                        self.i = self.b.len();
                    }
                    return Some(r);
                }
                _ => {
                    let e = self.err(
                        self.i,
                        format!(
                            "expected a valid start token, got {}",
                            show(&self.b[self.i..(self.i + 1).min(self.b.len())])
                        ),
                    );
                    self.i = self.b.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<'a> Sample<'a> {
    /// The sample's labels (name, unescaped value), in exposition order.
    /// Validates UTF-8; allocates only for values containing a backslash.
    /// The value of [`Sample::float_label`] comes in the stored form.
    pub fn labels(&self) -> LabelIter<'a> {
        LabelIter {
            b: self.raw_labels,
            i: 0,
            float_label: self.float_label,
        }
    }
}

/// Iterator over a validated label block; see [`Sample::labels`].
pub struct LabelIter<'a> {
    b: &'a [u8],
    i: usize,
    float_label: Option<&'static [u8]>,
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = Result<(&'a str, Cow<'a, str>), InvalidUtf8>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.b;
        while self.i < b.len() && (is_blank(b[self.i]) || b[self.i] == b',') {
            self.i += 1;
        }
        if self.i >= b.len() {
            return None;
        }
        let ns = self.i;
        while self.i < b.len() && is_label_char(b[self.i]) {
            self.i += 1;
        }
        let name = std::str::from_utf8(&b[ns..self.i]).unwrap_or_default();
        // Skip blanks, '=', blanks, '"' (validated by the parser).
        while self.i < b.len() && b[self.i] != b'"' {
            self.i += 1;
        }
        self.i += 1;
        let vs = self.i;
        while self.i < b.len() && b[self.i] != b'"' {
            if b[self.i] == b'\\' {
                self.i += 1;
            }
            self.i += 1;
        }
        let raw = &b[vs..self.i.min(b.len())];
        self.i += 1;
        Some(unescape(raw).map(|v| {
            if self.float_label == Some(name.as_bytes()) {
                let mut out = Vec::new();
                if canonical_float_label(v.as_bytes(), &mut out) {
                    // Digits, signs, `.`, `e`, `Inf`, `NaN`: ASCII.
                    return (name, Cow::Owned(String::from_utf8_lossy(&out).into_owned()));
                }
            }
            (name, v)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::float::exact_decimal;
    use super::lexer::quote_or_backslash;
    use super::*;

    type Parsed = (String, Vec<(String, String)>, f64, Option<i64>);

    fn parse_all(s: &str) -> Result<Vec<Parsed>, ParseError> {
        parse_as(s, Format::Text)
    }

    fn parse_as(s: &str, format: Format) -> Result<Vec<Parsed>, ParseError> {
        let mut out = Vec::new();
        for r in Parser::new(s.as_bytes()).with_format(format) {
            let smp = r?;
            let labels = smp
                .labels()
                .map(|l| l.map(|(n, v)| (n.to_string(), v.into_owned())))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| ParseError {
                    line: 0,
                    message: m.to_string(),
                })?;
            out.push((
                String::from_utf8_lossy(smp.name).into_owned(),
                labels,
                smp.value,
                smp.timestamp,
            ));
        }
        Ok(out)
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn quote_search_finds_the_first_at_every_offset() {
        for len in 0..40 {
            for at in 0..=len {
                for c in [b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    // Bytes that are one bit away from the targets.
                    for (k, x) in b.iter_mut().enumerate() {
                        *x = [b'a', b'#', b'!', b']', 0x80, 0xe2][k % 6];
                    }
                    if at < len {
                        b[at] = c;
                    }
                    for from in 0..=len {
                        let want = if at >= from && at < len { at } else { len };
                        assert_eq!(quote_or_backslash(&b, from), want, "{len} {at} {from}");
                    }
                }
            }
        }
    }

    #[test]
    fn samples_know_their_family() {
        let page = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\nh_total 1\n\
# TYPE c counter\nc_total 1\nc_created 1\nc 1\nother 2\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\n";
        let mut p = Parser::new(page.as_bytes());
        let mut got = Vec::new();
        while let Some(s) = p.next() {
            let s = s.unwrap();
            let f = p.family(&s);
            let name = &page[f.name.0..f.name.1];
            got.push(format!(
                "{}:{name}:{:?}:{}",
                std::str::from_utf8(s.name).unwrap(),
                f.kind,
                f.bucket
            ));
        }
        assert_eq!(
            got,
            [
                "h_bucket:h:Histogram:true",
                "h_sum:h:Histogram:false",
                "h_count:h:Histogram:false",
                "h_total:h_total:Unknown:false",
                "c_total:c:Counter:false",
                "c_created:c:Counter:false",
                "c:c:Counter:false",
                "other:other:Unknown:false",
                "s:s:Summary:false",
                "s_sum:s:Summary:false",
            ]
        );
    }

    #[test]
    fn exact_decimals_equal_the_general_parser() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "+0",
            "1",
            "0.5",
            ".5",
            "5.",
            "-.5e-3",
            "1e22",
            "1e23",
            "1e-22",
            "1e-23",
            "9007199254740991",
            "9007199254740992",
            "9007199254740993",
            "2.805204e+06",
            "1.8446744073709552e+19",
            "1.70094587721e+09",
            "109213.52",
            "0.000137",
            "4.2e-05",
            "9.999999999999999e-06",
            "1e400",
            "1e-400",
            "00000000000000000000001.5",
            "1E5",
            "12345678901234567890",
            "1234567890123456789",
            "0.1234567890123456789",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Pseudo-random mantissas and exponents.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let m = x % 10u64.pow((x >> 60) as u32 % 17 + 1);
            let e = (x >> 32) as i32 % 30;
            let dot = (x >> 40) as usize % 20;
            let mut s = m.to_string();
            if dot < s.len() {
                s.insert(s.len() - dot, '.');
            }
            cases.push(format!("{s}e{e}"));
            cases.push(s);
        }
        let mut fast = 0;
        for c in &cases {
            if let Some(v) = exact_decimal(c.as_bytes()) {
                fast += 1;
                let want: f64 = c.parse().unwrap();
                assert_eq!(v.to_bits(), want.to_bits(), "{c}");
            }
        }
        assert!(fast > cases.len() / 2, "{fast} of {}", cases.len());
        for bad in [
            "", "-", ".", "e5", "1e", "1e+", "1.2.3", "1x", "--1", "0x10", "1_0",
        ] {
            assert_eq!(exact_decimal(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn names_compared_with_the_previous_sample_are_still_exact() {
        let body = "a 1\nab 2\na{x=\"1\"} 3\na{x=\"1\",xy=\"2\"} 4\na{x=\"1\",x_=\"2\"} 5\n\
                    a{x=\"2\",x_=\"3\"} 6\na{ x =\"2\",x_=\"3\"} 6\nb{x=\"2\"} 7\nb:c{xy=\"2\"} 8\n\
                    a_long_metric_name_of_more_than_32_bytes{a_label_longer_than_16=\"v\"} 9\n\
                    a_long_metric_name_of_more_than_32_bytes{a_label_longer_than_16=\"w\"} 9\n\
                    a_long_metric_name_of_more_than_32_byteS{a_label_longer_than_17=\"w\"} 9\n";
        let mut p = Parser::new(body.as_bytes());
        let mut got = Vec::new();
        while let Some(s) = p.next() {
            let s = s.unwrap();
            let names: Vec<String> = p
                .label_spans()
                .iter()
                .map(|l| String::from_utf8_lossy(l.name(body.as_bytes())).into_owned())
                .collect();
            got.push((
                String::from_utf8_lossy(s.name).into_owned(),
                names.join(","),
                p.same_label_names(),
            ));
        }
        let want = [
            ("a", "", false),
            ("ab", "", true),
            ("a", "x", false),
            ("a", "x,xy", false),
            ("a", "x,x_", false),
            ("a", "x,x_", true),
            ("a", "x,x_", true),
            ("b", "x", false),
            ("b:c", "xy", false),
            (
                "a_long_metric_name_of_more_than_32_bytes",
                "a_label_longer_than_16",
                false,
            ),
            (
                "a_long_metric_name_of_more_than_32_bytes",
                "a_label_longer_than_16",
                true,
            ),
            (
                "a_long_metric_name_of_more_than_32_byteS",
                "a_label_longer_than_17",
                false,
            ),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, l, s)| (n.to_string(), l.to_string(), *s))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn openmetrics_as_prometheus_reads_it() {
        let page = "# HELP rpc_seconds RPC latency.\n# TYPE rpc_seconds histogram\n# UNIT rpc_seconds seconds\n\
rpc_seconds_bucket{le=\"0.1\"} 5 # {trace_id=\"abc\"} 0.05 1520879607.789\n\
rpc_seconds_bucket{le=\"+Inf\"} 7 # {} 3\n\
rpc_seconds_count 7 1520879607.789\n\
rpc_seconds_sum 1.5 1520879607 # {span_id=\"x\",trace_id=\"y\"} 1.5\n\
rpc_seconds_created 1520879000.5\n\
# TYPE build info\nbuild_info{version=\"1\"} 1\n\
# TYPE state stateset\nstate{state=\"a\"} 1\n\
# EOF\n";
        let got = parse_as(page, Format::OpenMetrics).unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "rpc_seconds_bucket",
                "rpc_seconds_bucket",
                "rpc_seconds_count",
                "rpc_seconds_sum",
                "rpc_seconds_created",
                "build_info",
                "state"
            ],
            "exemplars dropped, _created kept as a series"
        );
        assert_eq!(
            got[0].1,
            l(&[("le", "0.1")]),
            "exemplar labels are not the sample's"
        );
        assert_eq!(got[2].3, Some(1_520_879_607_789), "seconds to milliseconds");
        assert_eq!(got[3].3, Some(1_520_879_607_000));
        assert_eq!(got[4].2, 1_520_879_000.5);
        // No trailing newline after # EOF is fine too.
        assert!(parse_as("a 1\n# EOF", Format::OpenMetrics).is_ok());
        for (bad, why) in [
            ("a 1\n", "does not end with # EOF"),
            ("a 1\n# EOF\nb 2\n", "after # EOF"),
            ("a 1 # trace 1\n# EOF\n", "exemplar labels"),
            ("a 1 # {x=\"y\"}\n# EOF\n", "exemplar"),
            ("a 1 # {x=\"y\"} 1 ts\n# EOF\n", "exemplar timestamp"),
            ("a 1 notatime\n# EOF\n", "invalid timestamp"),
            ("# TYPE a untyped\na 1\n# EOF\n", "invalid metric type"),
        ] {
            let e = parse_as(bad, Format::OpenMetrics).unwrap_err();
            assert!(e.message.contains(why), "{bad:?}: {e}");
        }
        // In the text format an exemplar is an error and # EOF a comment.
        assert!(parse_all("a 1 # {x=\"y\"} 1\n").is_err());
        assert_eq!(parse_all("a 1\n# EOF\n").unwrap().len(), 1);
        assert_eq!(
            Format::from_content_type(
                b"application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(b"text/plain; version=0.0.4"),
            Format::Text
        );
    }

    #[test]
    fn accepts_what_prometheus_accepts() {
        let input = "# HELP go_gc_duration_seconds A summary of the GC invocation durations.\n\
# \tTYPE go_gc_duration_seconds summary\n\
# TYPE go_gc_duration_seconds summary\n\
go_gc_duration_seconds{quantile=\"0\"} 4.9351e-05\n\
go_gc_duration_seconds{quantile=\"0.25\",} 7.424100000000001e-05\n\
go_gc_duration_seconds_count 99\n\
\n\
   some:aggregate:rate5m{a_b=\"c\"}\t1\n\
# comment\n\
#nospace comment\n\
# HELP nohelptext\n\
nan_metric NaN\n\
pinf +Inf\n\
ninf -Inf 1234\n\
ts_metric 1.5 1520879607789\n\
empty_label{a=\"\",b=\"x\"} 1\n\
spaced { a = \"1\" b=\"2\" , } 3 \n\
escaped{path=\"C:\\\\dir\\\\\",quote=\"say \\\"hi\\\"\",nl=\"a\\nb\",other=\"\\t\"} 1\n\
weird{v=\"a,b=c}d\"} 1\n\
utf8{v=\"ünïcödé ✓\"} 2\n";
        let got = parse_all(input).unwrap();
        assert_eq!(got.len(), 13);
        assert_eq!(
            got[0],
            (
                "go_gc_duration_seconds".into(),
                l(&[("quantile", "0")]),
                4.9351e-05,
                None
            )
        );
        assert_eq!(got[1].1, l(&[("quantile", "0.25")]));
        assert_eq!(got[2].2, 99.0);
        assert_eq!(got[3].0, "some:aggregate:rate5m");
        assert_eq!(got[4].2.to_bits(), NORMAL_NAN);
        assert_eq!(got[5].2, f64::INFINITY);
        assert_eq!((got[6].2, got[6].3), (f64::NEG_INFINITY, Some(1234)));
        assert_eq!(got[7].3, Some(1520879607789));
        assert_eq!(got[8].1, l(&[("a", ""), ("b", "x")]));
        assert_eq!(got[9].1, l(&[("a", "1"), ("b", "2")]));
        assert_eq!(
            got[10].1,
            l(&[
                ("path", "C:\\dir\\"),
                ("quote", "say \"hi\""),
                ("nl", "a\nb"),
                ("other", "\\t")
            ])
        );
        assert_eq!(got[11].1, l(&[("v", "a,b=c}d")]));
        assert_eq!(got[12].1, l(&[("v", "ünïcödé ✓")]));
    }

    #[test]
    fn series_key_is_the_exposed_text() {
        let s = Parser::new(b"a{b=\"c\"} 1\nd 2\n")
            .map(|r| r.unwrap())
            .collect::<Vec<_>>();
        assert_eq!(s[0].series, b"a{b=\"c\"}");
        assert_eq!(s[1].series, b"d");
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        let cases = [
            ("metric 1", "end of input"),
            ("metric{a=\"b\"} 1 2", "end of input"),
            ("metric\n", "expected value"),
            ("metric{a=\"b\"}\n", "expected value"),
            ("metric{1a=\"b\"} 1\n", "expected label name"),
            ("metric{a:b=\"c\"} 1\n", "expected equal"),
            ("metric{a=b} 1\n", "expected label value"),
            ("metric{a=\"b} 1\n", "unterminated"),
            ("metric 1 -2\n", "expected timestamp"),
            ("metric 1 1.5\n", "expected next entry"),
            ("metric 1 2 3\n", "expected next entry"),
            ("metric abc\n", "invalid syntax"),
            ("metric 0x1p3\n", "unsupported character"),
            ("metric 1_000\n", "unsupported character"),
            ("metric 1e400\n", "out of range"),
            ("metric +NaN\n", "invalid syntax"),
            ("metric 1 99999999999999999999\n", "out of range"),
            ("metric 1\r\n", "invalid syntax"),
            ("{a=\"b\"} 1\n", "valid start token"),
            ("9metric 1\n", "valid start token"),
            ("# TYPE m gaugee\n", "invalid metric type"),
            ("# TYPE m  gauge\n", "invalid metric type"),
            ("# TYPE 1m gauge\n", "expected metric name"),
            ("# HELP m text", "linebreak expected"),
            ("metric{a=\"b\"}{c=\"d\"} 1\n", "expected value"),
        ];
        for (input, want) in cases {
            let err = parse_all(input).expect_err(input);
            assert!(err.message.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn errors_carry_the_line_number() {
        let e = parse_all("a 1\nb 2\nc{ 3\n").unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn invalid_utf8_label_value_is_an_error() {
        let body = b"m{a=\"\xff\"} 1\n";
        let s = Parser::new(body).next().unwrap().unwrap();
        assert!(
            s.labels()
                .next()
                .unwrap()
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn nul_ends_the_input_like_prometheus() {
        assert_eq!(parse_all("a 1\n\0garbage").unwrap().len(), 1);
    }

    #[test]
    fn parser_stops_after_an_error() {
        let mut p = Parser::new(b"bad{ 1\ngood 1\n");
        assert!(p.next().unwrap().is_err());
        assert!(p.next().is_none());
    }

    #[test]
    fn fixture_round_trip() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/prometheus-server.237mfs.prom.txt"
        );
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let text = std::str::from_utf8(&body).unwrap();
        let samples = parse_all(text).expect("fixture parses");
        // Every non-comment, non-blank line is one sample.
        let expected = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count();
        assert_eq!(samples.len(), expected);
        assert!(expected > 1000, "fixture has {expected} samples");
        // Spot-check: re-rendering each sample and parsing again is stable.
        for (name, labels, value, ts) in &samples {
            let mut line = name.clone();
            if !labels.is_empty() {
                line.push('{');
                for (i, (n, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    let esc = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    line.push_str(&format!("{n}=\"{esc}\""));
                }
                line.push('}');
            }
            let v = if value.is_infinite() {
                if *value > 0.0 {
                    "+Inf".to_string()
                } else {
                    "-Inf".to_string()
                }
            } else {
                format!("{value:?}")
            };
            line.push_str(&format!(" {v}"));
            if let Some(t) = ts {
                line.push_str(&format!(" {t}"));
            }
            line.push('\n');
            let again = parse_all(&line).unwrap();
            assert_eq!(&again[0].1, labels);
            assert!(again[0].2 == *value || (value.is_nan() && again[0].2.is_nan()));
        }
    }
}
