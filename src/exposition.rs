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

use std::borrow::Cow;
use std::fmt;

use crate::labels::{
    CLASS, LABEL_CHAR, NAME_CHAR, is_label_char, is_label_start, is_name_char, is_name_start,
    span_end,
};

/// Prometheus's normal NaN; every NaN read from an exposition becomes this.
pub const NORMAL_NAN: u64 = 0x7ff8_0000_0000_0001;

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

/// Label span buffers a [`Parser`] reuses from scrape to scrape.
#[derive(Debug, Default)]
pub struct SpanBufs(Vec<LabelSpan>, Vec<LabelSpan>);

/// `MASKS[n]` keeps the first `n` bytes of a little-endian 16-byte word (a
/// table: variable 128-bit shifts are slow).
pub static MASKS: [u128; 17] = {
    let mut m = [0u128; 17];
    let mut n = 1;
    while n < 16 {
        m[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    m[16] = u128::MAX;
    m
};

/// The 16 bytes at `at`, if there are that many.
#[inline(always)]
fn word_at(b: &[u8], at: usize) -> Option<u128> {
    b.get(at..at + 16)
        .and_then(|w| <[u8; 16]>::try_from(w).ok())
        .map(u128::from_le_bytes)
}

/// Bytes `x..x + len` of `b` equal bytes `y..y + len` (`y < x`): one masked
/// 16-byte compare for a short name.
#[inline(always)]
fn same_bytes(b: &[u8], x: usize, y: usize, len: usize) -> bool {
    if len <= 16 {
        if let (Some(p), Some(q)) = (word_at(b, x), word_at(b, y)) {
            return (p ^ q) & MASKS[len] == 0;
        }
    } else if len <= 32 {
        // Metric names: mostly 17 to 32 bytes.
        if let (Some(p0), Some(q0), Some(p1), Some(q1)) = (
            word_at(b, x),
            word_at(b, y),
            word_at(b, x + 16),
            word_at(b, y + 16),
        ) {
            return p0 == q0 && (p1 ^ q1) & MASKS[len - 16] == 0;
        }
    }
    same_bytes_long(b, x, y, len)
}

fn same_bytes_long(b: &[u8], x: usize, y: usize, len: usize) -> bool {
    if x.saturating_add(len) > b.len() {
        return false;
    }
    let mut k = 0;
    while k + 16 <= len {
        match (word_at(b, x + k), word_at(b, y + k)) {
            (Some(p), Some(q)) if p == q => k += 16,
            _ => return false,
        }
    }
    let rest = len - k;
    match (word_at(b, x + k), word_at(b, y + k)) {
        (Some(p), Some(q)) => (p ^ q) & MASKS[rest] == 0,
        _ => b[x + k..x + len] == b[y + k..y + len],
    }
}

#[inline]
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// The index of the first `"` or `\\` at or after `i` (or the end): eight
/// bytes at a time (values are short, so this beats a SIMD search's set-up).
#[inline]
fn quote_or_backslash(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let q = w ^ (LO * u64::from(b'"'));
        let s = w ^ (LO * u64::from(b'\\'));
        // A zero byte in q or s is a match; the lowest flagged byte is exact.
        let hit = (q.wrapping_sub(LO) & !q & HI) | (s.wrapping_sub(LO) & !s & HI);
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i] != b'"' && b[i] != b'\\' {
        i += 1;
    }
    i.min(b.len())
}

fn show(b: &[u8]) -> String {
    let end = b.len().min(64);
    let s = String::from_utf8_lossy(&b[..end]);
    if b.len() > 64 {
        format!("{s:?}…")
    } else {
        format!("{s:?}")
    }
}

impl<'a> Parser<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self::with_spans(body, SpanBufs::default())
    }

    /// A parser that records label positions in `bufs` (cleared first),
    /// buffers reused across scrapes; [`Parser::into_spans`] gives them back.
    pub fn with_spans(body: &'a [u8], bufs: SpanBufs) -> Self {
        let SpanBufs(mut spans, mut prev) = bufs;
        spans.clear();
        prev.clear();
        Parser {
            b: body,
            i: 0,
            spans,
            prev,
            prev_name: (0, 0),
            same_names: false,
            om: false,
            eof: false,
        }
    }

    /// Reads `format` (the default is [`Format::Text`]).
    pub fn with_format(mut self, format: Format) -> Self {
        self.om = format == Format::OpenMetrics;
        self
    }

    /// The labels of the sample returned last, in exposition order.
    #[inline]
    pub fn label_spans(&self) -> &[LabelSpan] {
        &self.spans
    }

    /// Whether the sample returned last has the label names, in the same
    /// order, of the one before it (false for the first).
    #[inline]
    pub fn same_label_names(&self) -> bool {
        self.same_names
    }

    pub fn into_spans(self) -> SpanBufs {
        SpanBufs(self.spans, self.prev)
    }

    fn err(&self, at: usize, message: String) -> ParseError {
        let at = at.min(self.b.len());
        let line = 1 + self.b[..at].iter().filter(|&&c| c == b'\n').count();
        ParseError { line, message }
    }

    fn skip_blanks(&mut self) {
        while self.i < self.b.len() && is_blank(self.b[self.i]) {
            self.i += 1;
        }
    }

    fn rest_of_line(&self) -> &'a [u8] {
        let b = self.b;
        let end = b[self.i..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |p| self.i + p);
        &b[self.i..end]
    }

    /// Skips to just after the next newline; false if there is none.
    fn skip_line(&mut self) -> bool {
        match self.b[self.i..].iter().position(|&c| c == b'\n') {
            Some(p) => {
                self.i += p + 1;
                true
            }
            None => {
                self.i = self.b.len();
                false
            }
        }
    }

    /// Parses a `#` line starting at `self.i` (which is at the `#`).
    fn comment(&mut self) -> Result<(), ParseError> {
        let start = self.i;
        self.i += 1;
        let ws = self.i;
        self.skip_blanks();
        let kw = if self.i > ws {
            self.b[self.i..].get(..4)
        } else {
            None
        };
        if self.om && self.b[self.i..].starts_with(b"EOF") && self.i > ws {
            let after = self.i + 3;
            if self.b.get(after).is_none_or(|&c| c == b'\n') {
                self.i = (after + 1).min(self.b.len());
                if self.i < self.b.len() {
                    return Err(self.err(self.i, "unexpected data after # EOF".into()));
                }
                self.eof = true;
                return Ok(());
            }
        }
        let is_help = kw == Some(b"HELP");
        let is_type = kw == Some(b"TYPE");
        if !(is_help || is_type) || !self.b.get(self.i + 4).is_some_and(|&c| is_blank(c)) {
            self.skip_line();
            return Ok(());
        }
        self.i += 4;
        self.skip_blanks();
        let ns = self.i;
        if !self.b.get(self.i).is_some_and(|&c| is_name_start(c)) {
            let what = if is_help { "HELP" } else { "TYPE" };
            return Err(self.err(
                ns,
                format!(
                    "expected metric name after {what}, got {}",
                    show(self.rest_of_line())
                ),
            ));
        }
        while self.i < self.b.len() && is_name_char(self.b[self.i]) {
            self.i += 1;
        }
        let text = self.rest_of_line();
        // Prometheus drops exactly one character between the name and the text.
        let text = if text.is_empty() { text } else { &text[1..] };
        if is_type {
            match text {
                b"counter" | b"gauge" | b"histogram" | b"summary" | b"untyped" if !self.om => {}
                b"counter" | b"gauge" | b"histogram" | b"gaugehistogram" | b"summary" | b"info"
                | b"stateset" | b"unknown"
                    if self.om => {}
                _ => {
                    return Err(self.err(start, format!("invalid metric type {}", show(text))));
                }
            }
        } else if std::str::from_utf8(text).is_err() {
            return Err(self.err(
                start,
                format!("help text {} is not a valid utf8 string", show(text)),
            ));
        }
        if !self.skip_line() {
            return Err(self.err(
                self.b.len(),
                "linebreak expected after metadata, got end of input".into(),
            ));
        }
        Ok(())
    }

    /// Scans `{...}` starting at the `{`; returns the raw inside.
    fn label_block(&mut self, line: usize) -> Result<&'a [u8], ParseError> {
        let b = self.b;
        self.i += 1;
        let inner_start = self.i;
        loop {
            if b.get(self.i).is_some_and(|&c| is_blank(c)) {
                self.skip_blanks();
            }
            let name_start;
            match b.get(self.i) {
                Some(b'}') => {
                    let inner = &b[inner_start..self.i];
                    self.i += 1;
                    return Ok(inner);
                }
                Some(&c) if is_label_start(c) => {
                    name_start = self.i;
                    // The name the previous sample had here, when followed
                    // by a character no name has, is this one: no scan.
                    let hint = self.prev.get(self.spans.len()).and_then(|p| {
                        let len = p.name_end - p.name_start;
                        let end = name_start + len;
                        (same_bytes(b, name_start, p.name_start, len)
                            && b.get(end)
                                .is_none_or(|&c| CLASS[c as usize] & LABEL_CHAR == 0))
                        .then_some(end)
                    });
                    self.i = match hint {
                        Some(end) => end,
                        None => {
                            self.same_names = false;
                            span_end(b, self.i + 1, LABEL_CHAR)
                        }
                    };
                }
                _ => {
                    return Err(self.err(
                        self.i,
                        format!(
                            "expected label name, got {} while parsing {}",
                            show(&b[self.i..self.i.saturating_add(1).min(b.len())]),
                            show(&b[line..self.i.min(b.len())])
                        ),
                    ));
                }
            }
            let name_end = self.i;
            // Blanks are legal around `=` and `,` but rare: look first.
            if b.get(self.i) != Some(&b'=') {
                self.skip_blanks();
            }
            if b.get(self.i) != Some(&b'=') {
                return Err(self.err(
                    self.i,
                    format!(
                        "expected equal after label name while parsing {}",
                        show(&b[line..self.i.min(b.len())])
                    ),
                ));
            }
            self.i += 1;
            if b.get(self.i) != Some(&b'"') {
                self.skip_blanks();
            }
            if b.get(self.i) != Some(&b'"') {
                return Err(self.err(
                    self.i,
                    format!(
                        "expected label value while parsing {}",
                        show(&b[line..self.i.min(b.len())])
                    ),
                ));
            }
            self.i += 1;
            let value_start = self.i;
            let mut escaped = false;
            loop {
                self.i = quote_or_backslash(b, self.i);
                match b.get(self.i) {
                    None => {
                        return Err(self.err(
                            line,
                            format!(
                                "unterminated label value while parsing {}",
                                show(&b[line..])
                            ),
                        ));
                    }
                    Some(b'"') => {
                        self.spans.push(LabelSpan {
                            name_start,
                            name_end,
                            value_start,
                            value_end: self.i,
                            escaped,
                        });
                        self.i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        if self.i + 1 >= b.len() {
                            return Err(self.err(
                                line,
                                format!(
                                    "unterminated label value while parsing {}",
                                    show(&b[line..])
                                ),
                            ));
                        }
                        escaped = true;
                        self.i += 2;
                    }
                    Some(_) => self.i += 1,
                }
            }
            if !matches!(b.get(self.i), Some(b',' | b'}')) {
                self.skip_blanks();
            }
            if b.get(self.i) == Some(&b',') {
                self.i += 1;
            }
        }
    }

    fn sample(&mut self) -> Result<Sample<'a>, ParseError> {
        let b = self.b;
        let line = self.i;
        let start = self.i;
        // As for label names: the previous sample's name, if it is this one.
        let (ps, pl) = self.prev_name;
        self.i = if pl > 0
            && same_bytes(b, start, ps, pl)
            && b.get(start + pl)
                .is_none_or(|&c| CLASS[c as usize] & NAME_CHAR == 0)
        {
            start + pl
        } else {
            span_end(b, self.i, NAME_CHAR)
        };
        let name_end = self.i;
        self.prev_name = (start, name_end - start);
        let name = &b[start..name_end];
        let mut series = name;
        self.skip_blanks();
        let mut raw_labels: &[u8] = &[];
        std::mem::swap(&mut self.spans, &mut self.prev);
        self.spans.clear();
        // The first sample has none before it.
        self.same_names = pl > 0;
        if b.get(self.i) == Some(&b'{') {
            raw_labels = self.label_block(line)?;
            series = &b[start..self.i];
            self.skip_blanks();
        }
        if self.spans.len() != self.prev.len() {
            self.same_names = false;
        }
        let vs = self.i;
        // Plain integers (most counters and buckets) are converted while
        // they are scanned.
        let mut int = 0u64;
        while let Some(&c) = b.get(self.i).filter(|c| c.is_ascii_digit()) {
            int = int.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            self.i += 1;
        }
        let digits = self.i - vs;
        while self.i < b.len() && !matches!(b[self.i], b'{' | b' ' | b'\t' | b'\n') {
            self.i += 1;
        }
        if vs == self.i {
            return Err(self.err(
                vs,
                format!(
                    "expected value after metric, got {} while parsing {}",
                    show(&b[vs..(vs + 1).min(b.len())]),
                    show(&b[line..vs])
                ),
            ));
        }
        let value = if digits == self.i - vs && digits <= 15 {
            int as f64
        } else {
            parse_float(&b[vs..self.i]).map_err(|m| {
                self.err(vs, format!("{m} while parsing {}", show(&b[line..self.i])))
            })?
        };
        let value = if value.is_nan() {
            f64::from_bits(NORMAL_NAN)
        } else {
            value
        };
        self.skip_blanks();
        let mut timestamp = None;
        match b.get(self.i) {
            Some(b'\n') => self.i += 1,
            Some(_) if self.om => timestamp = self.om_suffix(line)?,
            Some(c) if c.is_ascii_digit() => {
                let ts = self.i;
                while self.i < b.len() && b[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&b[ts..self.i])
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| {
                        self.err(
                            ts,
                            format!(
                                "timestamp out of range while parsing {}",
                                show(&b[line..self.i])
                            ),
                        )
                    })?;
                timestamp = Some(t);
                self.skip_blanks();
                match b.get(self.i) {
                    Some(b'\n') => self.i += 1,
                    None => return Err(self.err(self.i, format!("expected next entry after timestamp, got end of input while parsing {}", show(&b[line..self.i])))),
                    Some(_) => return Err(self.err(self.i, format!("expected next entry after timestamp, got {} while parsing {}", show(&b[self.i..(self.i + 1).min(b.len())]), show(&b[line..self.i])))),
                }
            }
            None => {
                return Err(self.err(
                    self.i,
                    format!(
                        "expected timestamp or new record, got end of input while parsing {}",
                        show(&b[line..self.i])
                    ),
                ));
            }
            Some(_) => {
                return Err(self.err(
                    self.i,
                    format!(
                        "expected timestamp or new record, got {} while parsing {}",
                        show(&b[self.i..(self.i + 1).min(b.len())]),
                        show(&b[line..self.i])
                    ),
                ));
            }
        }
        Ok(Sample {
            series,
            name,
            raw_labels,
            value,
            timestamp,
            offset: line,
        })
    }
}

impl<'a> Parser<'a> {
    /// OpenMetrics: what follows a sample's value (at a non-newline):
    /// `[timestamp] [# exemplar]`, then the end of the line. Returns the
    /// timestamp in milliseconds (Prometheus: `int64(seconds * 1000)`).
    fn om_suffix(&mut self, line: usize) -> Result<Option<i64>, ParseError> {
        let b = self.b;
        let mut timestamp = None;
        if b.get(self.i) != Some(&b'#') {
            let ts = self.i;
            while self.i < b.len() && !matches!(b[self.i], b' ' | b'\t' | b'\n') {
                self.i += 1;
            }
            let secs = parse_float(&b[ts..self.i])
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    self.err(
                        ts,
                        format!("invalid timestamp while parsing {}", show(&b[line..self.i])),
                    )
                })?;
            timestamp = Some((secs * 1000.0) as i64);
            self.skip_blanks();
        }
        if b.get(self.i) == Some(&b'#') {
            self.exemplar(line)?;
        }
        match b.get(self.i) {
            Some(b'\n') => {
                self.i += 1;
                Ok(timestamp)
            }
            None => Err(self.err(self.i, "data does not end with # EOF".into())),
            Some(_) => Err(self.err(
                self.i,
                format!(
                    "expected next entry after timestamp, got {} while parsing {}",
                    show(&b[self.i..(self.i + 1).min(b.len())]),
                    show(&b[line..self.i])
                ),
            )),
        }
    }

    /// OpenMetrics: an exemplar, `# {labels} value [timestamp]`, at the `#`:
    /// checked for its shape (as Prometheus checks it) and dropped.
    fn exemplar(&mut self, line: usize) -> Result<(), ParseError> {
        let b = self.b;
        self.i += 1;
        self.skip_blanks();
        if b.get(self.i) != Some(&b'{') {
            return Err(self.err(
                self.i,
                format!(
                    "expected exemplar labels while parsing {}",
                    show(&b[line..self.i])
                ),
            ));
        }
        // The label block has the syntax of a series' (the spans and the
        // name comparison it records are the sample's; keep them). Its size
        // is not checked: Prometheus 2.x without exemplar storage ignores
        // exemplars past their syntax, and so do we.
        let spans = std::mem::take(&mut self.spans);
        let same = self.same_names;
        let r = self.label_block(line);
        self.spans = spans;
        self.same_names = same;
        r?;
        self.skip_blanks();
        let vs = self.i;
        while self.i < b.len() && !matches!(b[self.i], b' ' | b'\t' | b'\n') {
            self.i += 1;
        }
        parse_float(&b[vs..self.i]).map_err(|m| {
            self.err(
                vs,
                format!(
                    "{m} in an exemplar while parsing {}",
                    show(&b[line..self.i])
                ),
            )
        })?;
        self.skip_blanks();
        if b.get(self.i).is_some_and(|&c| c != b'\n') {
            let ts = self.i;
            while self.i < b.len() && !matches!(b[self.i], b' ' | b'\t' | b'\n') {
                self.i += 1;
            }
            parse_float(&b[ts..self.i])
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    self.err(
                        ts,
                        format!(
                            "invalid exemplar timestamp while parsing {}",
                            show(&b[line..self.i])
                        ),
                    )
                })?;
            self.skip_blanks();
        }
        Ok(())
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

/// Go's `strconv.ParseFloat` restricted as Prometheus restricts it.
pub fn parse_float(t: &[u8]) -> Result<f64, String> {
    // Plain integers (most counters) up to 15 digits convert exactly.
    if !t.is_empty() && t.len() <= 15 && t.iter().all(u8::is_ascii_digit) {
        let v = t.iter().fold(0u64, |v, &c| v * 10 + u64::from(c - b'0'));
        return Ok(v as f64);
    }
    if let Some(v) = exact_decimal(t) {
        return Ok(v);
    }
    let bad = || format!("strconv.ParseFloat: parsing {}: invalid syntax", show(t));
    if t.iter().any(|&c| matches!(c, b'p' | b'P' | b'_')) {
        return Err("unsupported character in float".into());
    }
    let s = std::str::from_utf8(t).map_err(|_| bad())?;
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    // Special values are rare: look only when the text is not a plain number.
    if unsigned
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
    {
        if unsigned.eq_ignore_ascii_case("nan") {
            // Go accepts NaN without a sign only.
            return if unsigned.len() == s.len() {
                Ok(f64::NAN)
            } else {
                Err(bad())
            };
        }
        if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
            return Ok(if s.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        return Err(bad());
    }
    // Rust accepts a few spellings Go does not ("inf" handled above); only
    // digits, sign, dot and exponent may remain.
    if !unsigned
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return Err(bad());
    }
    let v: f64 = s.parse().map_err(|_| bad())?;
    if v.is_infinite() {
        return Err(format!(
            "strconv.ParseFloat: parsing {}: value out of range",
            show(t)
        ));
    }
    Ok(v)
}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `[+-]digits[.digits][(e|E)[+-]digits]` whose digits (at most 19, leading
/// zeros aside) make an integer below 2^53 and whose decimal exponent is
/// within ±22: one exact multiplication or division, so the result is
/// correctly rounded (Clinger's fast path), as `str::parse` would give.
/// Anything else is `None`, for the general parser.
fn exact_decimal(t: &[u8]) -> Option<f64> {
    let (neg, mut i) = match t.first()? {
        b'-' => (true, 1),
        b'+' => (false, 1),
        _ => (false, 0),
    };
    let (mut mant, mut digits, mut any, mut exp) = (0u64, 0u32, false, 0i32);
    let mut digit = |c: u8, mant: &mut u64| -> Option<()> {
        any = true;
        if *mant != 0 || c != b'0' {
            digits += 1;
            if digits > 19 {
                return None;
            }
        }
        *mant = *mant * 10 + u64::from(c - b'0');
        Some(())
    };
    while let Some(&c) = t.get(i).filter(|c| c.is_ascii_digit()) {
        digit(c, &mut mant)?;
        i += 1;
    }
    if t.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c) = t.get(i).filter(|c| c.is_ascii_digit()) {
            digit(c, &mut mant)?;
            exp -= 1;
            i += 1;
        }
    }
    if !any {
        return None;
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        let eneg = match t.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e = 0i32;
        while let Some(&c) = t.get(i).filter(|c| c.is_ascii_digit()) {
            e = (e * 10 + i32::from(c - b'0')).min(10_000);
            i += 1;
        }
        if i == start {
            return None;
        }
        exp += if eneg { -e } else { e };
    }
    if i != t.len() || mant >= 1 << 53 {
        return None;
    }
    let m = mant as f64;
    let v = match exp {
        0 => m,
        1..=22 => m * POW10[exp as usize],
        -22..=-1 => m / POW10[(-exp) as usize],
        _ => return None,
    };
    Some(if neg { -v } else { v })
}

/// Appends the unescaped bytes of a label value to `out` (see [`unescape`];
/// the caller validates UTF-8).
pub fn unescape_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c == b'\\' && i + 1 < raw.len() {
            match raw[i + 1] {
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'n' => out.push(b'\n'),
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
}

/// Unescapes a label value as Prometheus does (`\"`, `\\`, `\n`).
pub fn unescape(raw: &[u8]) -> Result<Cow<'_, str>, String> {
    let s = std::str::from_utf8(raw)
        .map_err(|_| format!("invalid UTF-8 label value: {}", show(raw)))?;
    if !raw.contains(&b'\\') {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('"') => {
                    out.push('"');
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                Some('n') => {
                    out.push('\n');
                    chars.next();
                }
                _ => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Ok(Cow::Owned(out))
}

impl<'a> Sample<'a> {
    /// The sample's labels (name, unescaped value), in exposition order.
    /// Validates UTF-8; allocates only for values containing a backslash.
    pub fn labels(&self) -> LabelIter<'a> {
        LabelIter {
            b: self.raw_labels,
            i: 0,
        }
    }
}

/// Iterator over a validated label block; see [`Sample::labels`].
pub struct LabelIter<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = Result<(&'a str, Cow<'a, str>), String>;

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
        Some(unescape(raw).map(|v| (name, v)))
    }
}

#[cfg(test)]
mod tests {
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
                    message: m,
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
        assert!(s.labels().next().unwrap().unwrap_err().contains("UTF-8"));
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
