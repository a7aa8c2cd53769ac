//! The text-format lexer: [`Parser`] walks the body byte by byte, comparing
//! names with the previous sample's 16 bytes at a time and recording label
//! spans; nothing here allocates.

use super::canonical::{Rewrite, canonical_float_label};
use super::*;

/// `MASKS[n]` keeps the first `n` bytes of a little-endian 16-byte word (a
/// table: variable 128-bit shifts are slow).
pub(crate) static MASKS: [u128; 17] = {
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
pub(super) fn word_at(b: &[u8], at: usize) -> Option<u128> {
    b.get(at..at + 16)
        .and_then(|w| <[u8; 16]>::try_from(w).ok())
        .map(u128::from_le_bytes)
}

/// Bytes `x..x + len` of `b` equal bytes `y..y + len` (`y < x`): one masked
/// 16-byte compare for a short name.
#[inline(always)]
pub(super) fn same_bytes(b: &[u8], x: usize, y: usize, len: usize) -> bool {
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

pub(super) fn same_bytes_long(b: &[u8], x: usize, y: usize, len: usize) -> bool {
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
pub(super) fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// The index of the first `"` or `\\` at or after `i` (or the end): eight
/// bytes at a time (values are short, so this beats a SIMD search's set-up).
#[inline]
pub(super) fn quote_or_backslash(b: &[u8], mut i: usize) -> usize {
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

impl<'a> Parser<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self::with_spans(body, SpanBufs::default())
    }

    /// A parser that records label positions in `bufs` (cleared first),
    /// buffers reused across scrapes; [`Parser::into_spans`] gives them back.
    pub fn with_spans(body: &'a [u8], bufs: SpanBufs) -> Self {
        let SpanBufs(mut spans, mut prev, decisions, canon) = bufs;
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
            float_labels: false,
            float_label: None,
            rewrites: false,
            typed: (0, 0, MetricType::Unknown),
            canon,
            decisions,
        }
    }

    /// Reads `format` (the default is [`Format::Text`]).
    pub fn with_format(mut self, format: Format) -> Self {
        self.om = format == Format::OpenMetrics;
        self
    }

    /// Flags `le` values under a histogram `# TYPE` and `quantile` values
    /// under a summary's (the last TYPE line, whatever its metric, as
    /// Prometheus reads it) that Prometheus 3 stores in float form
    /// ([`Sample::float_label`], [`LabelSpan::rewrite`]); Prometheus 2 keeps
    /// them as written (`false`, the default).
    pub fn float_label_values(mut self, on: bool) -> Self {
        self.float_labels = on;
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

    /// The metric family of `s` (the sample returned last): the last
    /// `# TYPE` line's metric when `s`'s name is it or it plus a suffix its
    /// type allows (`_bucket`, `_sum`, `_count`, `_total`, ...), otherwise
    /// the sample's own name (an untyped family). No allocation.
    #[inline]
    pub fn family(&self, s: &Sample<'_>) -> Family {
        let start = s.name.as_ptr().addr().wrapping_sub(self.b.as_ptr().addr());
        let (ts, te, kind) = self.typed;
        let typed = &self.b[ts..te];
        if te > ts && s.name.starts_with(typed) {
            let rest = &s.name[typed.len()..];
            if rest.is_empty() {
                return Family {
                    name: (ts, te),
                    kind,
                    bucket: false,
                };
            }
            if let Some(sfx) = kind.suffixes().iter().find(|&&x| x == rest) {
                return Family {
                    name: (ts, te),
                    kind,
                    bucket: *sfx == b"_bucket",
                };
            }
        }
        Family {
            name: (start, start + s.name.len()),
            kind: MetricType::Unknown,
            bucket: false,
        }
    }

    pub fn into_spans(self) -> SpanBufs {
        SpanBufs(self.spans, self.prev, self.decisions, self.canon)
    }

    pub(super) fn err(&self, at: usize, message: String) -> ParseError {
        let at = at.min(self.b.len());
        let line = 1 + self.b[..at].iter().filter(|&&c| c == b'\n').count();
        ParseError { line, message }
    }

    pub(super) fn skip_blanks(&mut self) {
        while self.i < self.b.len() && is_blank(self.b[self.i]) {
            self.i += 1;
        }
    }

    pub(super) fn rest_of_line(&self) -> &'a [u8] {
        let b = self.b;
        let end = b[self.i..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |p| self.i + p);
        &b[self.i..end]
    }

    /// Skips to just after the next newline; false if there is none.
    pub(super) fn skip_line(&mut self) -> bool {
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
    pub(super) fn comment(&mut self) -> Result<(), ParseError> {
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
        let name_end = self.i;
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
            self.typed = (ns, name_end, MetricType::from_text(text));
            if self.float_labels {
                self.float_label = match text {
                    b"histogram" => Some(b"le"),
                    b"summary" => Some(b"quantile"),
                    _ => None,
                };
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
    pub(super) fn label_block(&mut self, line: usize) -> Result<&'a [u8], ParseError> {
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
                        let rewrite = if self
                            .float_label
                            .is_some_and(|l| b[name_start..name_end] == *l)
                        {
                            self.rewrites_value(&b[value_start..self.i], escaped)
                        } else {
                            Rewrite::No
                        };
                        self.rewrites |= rewrite != Rewrite::No;
                        self.spans.push(LabelSpan {
                            name_start,
                            name_end,
                            value_start,
                            value_end: self.i,
                            escaped,
                            rewrite,
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

    pub(super) fn sample(&mut self) -> Result<Sample<'a>, ParseError> {
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
        self.rewrites = false;
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
            float_label: self.float_label,
            rewrites: self.rewrites,
        })
    }

    /// Whether Prometheus 3 stores this `le`/`quantile` value (between the
    /// quotes) in another form.
    fn rewrites_value(&mut self, raw: &[u8], escaped: bool) -> Rewrite {
        if escaped {
            let mut plain = Vec::new();
            super::unescape_into(raw, &mut plain);
            if canonical_float_label(&plain, &mut self.canon) {
                Rewrite::Convert
            } else {
                Rewrite::No
            }
        } else {
            self.decisions.rewrites(raw, &mut self.canon)
        }
    }
}
