//! Label value escapes: `\"`, `\\` and `\n` unescaped, any other escape kept
//! as written (as Prometheus does).

use std::borrow::Cow;

use super::show;

/// Appends the unescaped bytes of a label value to `out` (see [`unescape`];
/// the caller validates UTF-8).
pub(crate) fn unescape_into(raw: &[u8], out: &mut Vec<u8>) {
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

/// A label value that is not UTF-8 (the first 64 bytes of it, quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 label value: {0}")]
pub struct InvalidUtf8(pub String);

/// Unescapes a label value as Prometheus does (`\"`, `\\`, `\n`).
pub(crate) fn unescape(raw: &[u8]) -> Result<Cow<'_, str>, InvalidUtf8> {
    let s = std::str::from_utf8(raw).map_err(|_| InvalidUtf8(show(raw)))?;
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
