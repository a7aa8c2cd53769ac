//! OpenMetrics 1.0 on top of the text lexer: what may follow a sample's
//! value (timestamp in seconds, an exemplar), `# EOF`, and the metadata
//! lines OpenMetrics adds.

use super::*;

impl<'a> Parser<'a> {
    /// OpenMetrics: what follows a sample's value (at a non-newline):
    /// `[timestamp] [# exemplar]`, then the end of the line. Returns the
    /// timestamp in milliseconds (Prometheus: `int64(seconds * 1000)`).
    pub(super) fn om_suffix(&mut self, line: usize) -> Result<Option<i64>, ParseError> {
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
    pub(super) fn exemplar(&mut self, line: usize) -> Result<(), ParseError> {
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
