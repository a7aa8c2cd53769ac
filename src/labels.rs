//! Label sets and the label grammar: the leaf every other module builds on.
//!
//! A label set ([`Labels`]) is a `Vec` of name/value pairs sorted by name;
//! names follow Prometheus 2.x (`[a-zA-Z_][a-zA-Z0-9_]*`, metric names may
//! also hold `:`), checked by one byte-class table ([`CLASS`]) that the
//! exposition lexer, the config validation and the series checks share.
//! [`LabelLimits`] are the per-scrape `label_limit`s, checked after metric
//! relabeling; [`STALE_NAN`] is the staleness marker. Nothing here depends on
//! another module of the crate.

/// A label set sorted by name.
pub(crate) type Labels = Vec<(String, String)>;

/// The NaN Prometheus uses as a staleness marker.
pub(crate) const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// A `label_limit`, `label_name_length_limit` or `label_value_length_limit`
/// exceeded, in Prometheus's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitExceeded(pub String);

/// `label_limit`, `label_name_length_limit`, `label_value_length_limit`
/// (0 = no limit), checked after metric relabeling as in Prometheus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelLimits {
    pub labels: usize,
    pub name_length: usize,
    pub value_length: usize,
}

impl LabelLimits {
    pub fn check(&self, lbls: &Labels) -> Result<(), LimitExceeded> {
        let metric = lbls
            .iter()
            .find(|(n, _)| n == "__name__")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let metric: String = metric.chars().take(50).collect();
        if self.labels > 0 && lbls.len() > self.labels {
            return Err(LimitExceeded(format!(
                "label_limit exceeded (metric: {metric}, number of labels: {}, limit: {})",
                lbls.len(),
                self.labels
            )));
        }
        for (n, v) in lbls {
            if self.name_length > 0 && n.len() > self.name_length {
                return Err(LimitExceeded(format!(
                    "label_name_length_limit exceeded (metric: {metric}, label name: {n}, length: {}, limit: {})",
                    n.len(),
                    self.name_length
                )));
            }
            if self.value_length > 0 && v.len() > self.value_length {
                return Err(LimitExceeded(format!(
                    "label_value_length_limit exceeded (metric: {metric}, label name: {n}, length: {}, limit: {})",
                    v.len(),
                    self.value_length
                )));
            }
        }
        Ok(())
    }
}

/// Prometheus 2.x label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.first().is_some_and(|&c| is_label_start(c)) && b.iter().all(|&c| is_label_char(c))
}

/// Prometheus 2.x metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn is_valid_metric_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.first().is_some_and(|&c| is_name_start(c)) && b.iter().all(|&c| is_name_char(c))
}

/// Character classes, one bit each, looked up in [`CLASS`].
pub(crate) const LABEL_START: u8 = 1;
pub(crate) const LABEL_CHAR: u8 = 2;
pub(crate) const NAME_START: u8 = 4;
pub(crate) const NAME_CHAR: u8 = 8;

pub(crate) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic();
        let digit = b.is_ascii_digit();
        let mut v = 0;
        if alpha || b == b'_' {
            v |= LABEL_START | LABEL_CHAR | NAME_START | NAME_CHAR;
        }
        if digit {
            v |= LABEL_CHAR | NAME_CHAR;
        }
        if b == b':' {
            v |= NAME_START | NAME_CHAR;
        }
        t[c] = v;
        c += 1;
    }
    t
};

/// The end of the run of bytes of `class` starting at `i`.
#[inline]
pub(crate) fn span_end(b: &[u8], i: usize, class: u8) -> usize {
    let rest = b.get(i..).unwrap_or_default();
    i + rest
        .iter()
        .position(|&c| CLASS[c as usize] & class == 0)
        .unwrap_or(rest.len())
}

#[inline]
pub(crate) fn is_name_start(c: u8) -> bool {
    CLASS[c as usize] & NAME_START != 0
}
#[inline]
pub(crate) fn is_name_char(c: u8) -> bool {
    CLASS[c as usize] & NAME_CHAR != 0
}
#[inline]
pub(crate) fn is_label_start(c: u8) -> bool {
    CLASS[c as usize] & LABEL_START != 0
}
#[inline]
pub(crate) fn is_label_char(c: u8) -> bool {
    CLASS[c as usize] & LABEL_CHAR != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_2() {
        for ok in ["a", "_", "__name__", "A_1", "job"] {
            assert!(is_valid_label_name(ok), "{ok}");
            assert!(is_valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a:b", "a.b", "ä"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
        assert!(is_valid_metric_name("job:rate:5m"));
        assert!(is_valid_metric_name(":a"));
        for bad in ["", "1a", "a-b", "a b"] {
            assert!(!is_valid_metric_name(bad), "{bad}");
        }
        assert_eq!(span_end(b"ab_1-c", 0, LABEL_CHAR), 4);
        assert_eq!(span_end(b"a:b c", 0, NAME_CHAR), 3);
    }

    #[test]
    fn limits_name_what_was_exceeded() {
        let l: Labels = vec![
            ("__name__".into(), "m".into()),
            ("long".into(), "x".repeat(10)),
        ];
        assert!(LabelLimits::default().check(&l).is_ok());
        let e = LabelLimits {
            labels: 1,
            ..Default::default()
        }
        .check(&l)
        .unwrap_err();
        assert!(
            e.0.contains("label_limit exceeded (metric: m, number of labels: 2, limit: 1)"),
            "{e}"
        );
        let e = LabelLimits {
            value_length: 5,
            ..Default::default()
        }
        .check(&l)
        .unwrap_err();
        assert!(e.0.contains("label_value_length_limit exceeded"), "{e}");
    }
}
