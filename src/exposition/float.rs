//! Sample values: Go's `strconv.ParseFloat` as Prometheus restricts it,
//! with an exact fast path for the plain integers and short decimals most
//! pages hold.

use super::show;

/// A sample value Prometheus would not read, in its words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FloatError {
    #[error("unsupported character in float")]
    Unsupported,
    #[error("strconv.ParseFloat: parsing {0}: invalid syntax")]
    Syntax(String),
    #[error("strconv.ParseFloat: parsing {0}: value out of range")]
    Range(String),
}

/// Go's `strconv.ParseFloat` restricted as Prometheus restricts it.
pub(crate) fn parse_float(t: &[u8]) -> Result<f64, FloatError> {
    // Plain integers (most counters) up to 15 digits convert exactly.
    if !t.is_empty() && t.len() <= 15 && t.iter().all(u8::is_ascii_digit) {
        let v = t.iter().fold(0u64, |v, &c| v * 10 + u64::from(c - b'0'));
        return Ok(v as f64);
    }
    if let Some(v) = exact_decimal(t) {
        return Ok(v);
    }
    let bad = || FloatError::Syntax(show(t));
    if t.iter().any(|&c| matches!(c, b'p' | b'P' | b'_')) {
        return Err(FloatError::Unsupported);
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
        return Err(FloatError::Range(show(t)));
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
pub(super) fn exact_decimal(t: &[u8]) -> Option<f64> {
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
