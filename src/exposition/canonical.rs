//! Prometheus 3's float form of `le` and `quantile` label values.
//!
//! Prometheus 3 rewrites, while it parses a scrape, the `le` values of
//! histograms and the `quantile` values of summaries (the type named by the
//! last `# TYPE` line, whatever its metric) that Go's `strconv.ParseFloat`
//! reads: `1` becomes `1.0`, `1e6` becomes `1e+06`, `0x1p-2` becomes `0.25`.
//! A value `ParseFloat` refuses (or one out of range) stays as written.
//! Prometheus 2 stores every value as written. [`canonical_float_label`]
//! gives the rewritten form; [`parse_go_float`] is `ParseFloat` in full (hex
//! mantissas and `_` separators included, which sample values never allow);
//! [`append_float`] is Go's `FormatOpenMetricsFloat`.
//!
//! Checked against vectors made by Go itself (`tests/data/om-floats.txt`).

use std::fmt::Write as _;

use super::float::parse_float;

/// Go's `strconv.ParseFloat(s, 64)`; `None` where it returns an error
/// (syntax, or a value out of range).
pub(crate) fn parse_go_float(t: &[u8]) -> Option<f64> {
    if t.contains(&b'_') {
        if !underscores_ok(t) {
            return None;
        }
        let plain: Vec<u8> = t.iter().copied().filter(|&c| c != b'_').collect();
        return parse_go_float(&plain);
    }
    let (neg, unsigned) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if unsigned.len() > 2 && unsigned[0] == b'0' && unsigned[1] | 0x20 == b'x' {
        return hex_float(neg, &unsigned[2..]);
    }
    parse_float(t).ok()
}

/// Go's rule for `_` in a number: only between digits (a base prefix counts
/// as a digit).
fn underscores_ok(t: &[u8]) -> bool {
    let t = t.strip_prefix(b"-").or(t.strip_prefix(b"+")).unwrap_or(t);
    // '^' start, '0' a digit, '_' an underscore, '!' anything else.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if t.len() >= 2 && t[0] == b'0' && matches!(t[1] | 0x20, b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = t[1] | 0x20 == b'x';
    }
    for &c in &t[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// A hexadecimal float after its `0x`: hex digits with an optional point,
/// then a mandatory binary exponent `p[+-]digits`. Rounded to nearest, ties
/// to even, as Go rounds; `None` on bad syntax or overflow.
fn hex_float(neg: bool, t: &[u8]) -> Option<f64> {
    let mut mant = 0u64;
    // Binary exponent to apply to `mant`; `sticky`: nonzero digits dropped.
    let (mut exp, mut sticky, mut any, mut dot) = (0i64, false, false, false);
    let mut i = 0;
    while let Some(&c) = t.get(i) {
        if c == b'.' {
            if dot {
                break;
            }
            dot = true;
        } else if let Some(d) = (c as char).to_digit(16) {
            any = true;
            if mant >> 60 == 0 {
                mant = mant << 4 | u64::from(d);
                if dot {
                    exp -= 4;
                }
            } else {
                sticky |= d != 0;
                if !dot {
                    exp += 4;
                }
            }
        } else {
            break;
        }
        i += 1;
    }
    if !any || !matches!(t.get(i), Some(b'p' | b'P')) {
        return None;
    }
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
    if !t.get(i).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut e = 0i64;
    while let Some(&c) = t.get(i).filter(|c| c.is_ascii_digit()) {
        e = (e * 10 + i64::from(c - b'0')).min(100_000);
        i += 1;
    }
    if i != t.len() {
        return None;
    }
    exp += if eneg { -e } else { e };
    let sign = if neg { -1.0 } else { 1.0 };
    if mant == 0 {
        return Some(sign * 0.0);
    }
    // mant * 2^exp with the top bit of mant at bit 63.
    let lz = mant.leading_zeros();
    mant <<= lz;
    exp -= i64::from(lz);
    // The value's binary exponent (of its leading bit).
    let top = exp + 63;
    // Bits to drop to leave 53 (normal) or fewer (subnormal).
    let shift = if top >= -1022 { 11 } else { 11 + (-1022 - top) };
    let (mut q, rem, half) = if shift >= 64 {
        let half_above = shift > 64;
        // Everything is below the last kept bit: q = 0.
        (0u64, mant, if half_above { u64::MAX } else { 1 << 63 })
    } else {
        (
            mant >> shift,
            mant & ((1u64 << shift) - 1),
            1u64 << (shift - 1),
        )
    };
    let up = if shift > 64 {
        false
    } else {
        rem > half || (rem == half && (sticky || q & 1 == 1))
    };
    if up {
        q += 1;
    }
    let mut top = top;
    if top >= -1022 {
        if q == 1 << 53 {
            q >>= 1;
            top += 1;
        }
        if top > 1023 {
            return None;
        }
        let bits = ((top + 1023) as u64) << 52 | (q & ((1 << 52) - 1));
        Some(sign * f64::from_bits(bits))
    } else {
        // Subnormal (or zero); a carry into bit 52 is the smallest normal,
        // which these bits spell as well.
        Some(sign * f64::from_bits(q))
    }
}

/// Appends Go's `FormatOpenMetricsFloat(f)`: `strconv.FormatFloat(f, 'g',
/// -1, 64)` (shortest digits; exponent form below 1e-4 and from 1e6, with a
/// signed exponent of at least two digits) plus `.0` when that has neither a
/// point nor an exponent; `NaN`, `+Inf`, `-Inf`.
pub(crate) fn append_float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    if f == 0.0 {
        // Negative zero too, as Go's `f == 0` case has it.
        out.extend_from_slice(b"0.0");
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Go's -1
    // precision does: `d[.ddd]e[-]x`.
    let mut sci = Buf::default();
    let _ = write!(sci, "{:e}", f.abs());
    let s = &sci.b[..sci.n];
    let e_at = s.iter().position(|&c| c == b'e').unwrap_or(s.len());
    let (mant, exp) = (&s[..e_at], &s[e_at + 1..]);
    let x: i32 = std::str::from_utf8(exp)
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for &c in mant.iter().filter(|c| c.is_ascii_digit()) {
        digits[nd] = c;
        nd += 1;
    }
    // Two shortest candidates can be equally near only with 16 or more
    // digits (their spacing must fit in one ulp).
    if nd >= 15 {
        tie_to_even(f.abs(), &mut digits[..nd], x);
    }
    let digits = &digits[..nd];
    if f < 0.0 {
        out.push(b'-');
    }
    if !(-4..6).contains(&x) {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if x < 0 { b'-' } else { b'+' });
        let a = x.unsigned_abs();
        if a < 10 {
            out.push(b'0');
        }
        let _ = write!(VecWriter(out), "{a}");
        return;
    }
    if x < 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-x - 1) as usize));
        out.extend_from_slice(digits);
        return;
    }
    let int = x as usize + 1;
    if nd <= int {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', int - nd));
        out.extend_from_slice(b".0");
    } else {
        out.extend_from_slice(&digits[..int]);
        out.push(b'.');
        out.extend_from_slice(&digits[int..]);
    }
}

/// Where the value lies exactly halfway between two shortest decimals that
/// both read back as it, Go (Dragonbox) takes the one with the even last
/// digit and Rust's formatter the upper one: `digits` (significand of
/// `a`, exponent `x`) becomes the even one.
#[inline]
fn tie_to_even(a: f64, digits: &mut [u8], x: i32) {
    let nd = digits.len();
    // A tie needs the exact value to have nd + 1 significant digits. With
    // its binary significand m·2^e reduced (m odd): e > 0 is an even
    // integer (no final 5); e < 0 has exactly -e decimal places, of which
    // the leading zeros of a number below 1 are not significant.
    let bits = a.to_bits();
    let (mut m, mut e) = (
        (bits & ((1 << 52) - 1)) as i64,
        ((bits >> 52) & 0x7ff) as i64,
    );
    if e == 0 {
        e = -1074;
    } else {
        m |= 1 << 52;
        e -= 1075;
    }
    let tz = m.trailing_zeros() as i64;
    e += tz;
    let leading = if x < 0 { i64::from(-x - 1) } else { 0 };
    if e > 0 || -e - leading > nd as i64 + 1 {
        return;
    }
    tie_to_even_exact(a, digits, x);
}

#[cold]
fn tie_to_even_exact(a: f64, digits: &mut [u8], x: i32) {
    let nd = digits.len();
    // The exact decimal expansion (a double has at most 767 significant
    // digits), trailing zeros trimmed.
    let exact = format!("{a:.800e}");
    let Some((m, e)) = exact.split_once('e') else {
        return;
    };
    if e.parse::<i32>().ok() != Some(x) {
        return;
    }
    let sig: Vec<u8> = m.bytes().filter(u8::is_ascii_digit).collect();
    let end = sig.iter().rposition(|&c| c != b'0').map_or(0, |p| p + 1);
    let sig = &sig[..end];
    // A tie: exactly one digit more than the candidates, and it is a 5.
    if sig.len() != nd + 1 || sig[nd] != b'5' {
        return;
    }
    let lower = sig[..nd].to_vec();
    let mut upper = lower.clone();
    let mut i = nd;
    loop {
        if i == 0 {
            return; // 99…9 + 1 needs another digit: not a same-length pair.
        }
        i -= 1;
        if upper[i] == b'9' {
            upper[i] = b'0';
        } else {
            upper[i] += 1;
            break;
        }
    }
    let reads_back = |d: &[u8]| {
        let text = format!("{}.{}e{x}", d[0] as char, String::from_utf8_lossy(&d[1..]));
        text.parse::<f64>().ok() == Some(a)
    };
    let even = if lower[nd - 1].is_multiple_of(2) {
        &lower
    } else {
        &upper
    };
    if reads_back(even) {
        digits.copy_from_slice(even);
    }
}

/// The Prometheus 3 form of an `le`/`quantile` value (unescaped), written
/// to `out` (cleared first); false when the value stays as written (not a
/// number Go reads, or already in that form).
pub(crate) fn canonical_float_label(value: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    // Bucket bounds and quantiles are short plain decimals: decided from
    // their text, without converting.
    match plain_decimal(value) {
        Some(Plain::AsStored) => return false,
        Some(Plain::Integer) => {
            out.extend_from_slice(value);
            out.extend_from_slice(b".0");
            return true;
        }
        None => {}
    }
    if matches!(value, b"+Inf" | b"-Inf" | b"NaN") {
        return false;
    }
    let Some(f) = parse_go_float(value) else {
        return false;
    };
    append_float(out, f);
    out.as_slice() != value
}

/// Remembers, for the parser, whether values the text alone cannot decide
/// are rewritten: a histogram repeats its bucket bounds in every series, and
/// the general path (convert, format) costs ten times the text check.
#[derive(Debug, Default)]
pub(super) struct Decisions {
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    len: u8,
    bytes: [u8; SLOT_BYTES],
    rewrite: Rewrite,
    /// In the first slot of a pair: it was used last.
    recent: bool,
}

/// How a label value is stored (see [`crate::exposition::LabelSpan`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rewrite {
    /// As written (unescaped).
    #[default]
    No,
    /// A plain integer: as written, then `.0`.
    Integer,
    /// Converted: [`canonical_float_label`].
    Convert,
}

const SLOT_BYTES: usize = 30;
const SLOTS: usize = 64;

impl Decisions {
    /// Whether `value` (unescaped) is stored in another form; `scratch`
    /// may be overwritten.
    pub(super) fn rewrites(&mut self, value: &[u8], scratch: &mut Vec<u8>) -> Rewrite {
        match plain_decimal(value) {
            Some(Plain::AsStored) => return Rewrite::No,
            Some(Plain::Integer) => return Rewrite::Integer,
            None => {}
        }
        let convert = |value: &[u8], scratch: &mut Vec<u8>| {
            if canonical_float_label(value, scratch) {
                Rewrite::Convert
            } else {
                Rewrite::No
            }
        };
        if value.len() > SLOT_BYTES {
            return convert(value, scratch);
        }
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); SLOTS];
        }
        let h = value.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
            (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3)
        });
        // Two ways per set: a value lives in either slot of its pair; a
        // miss replaces the one not used last.
        let set = (h >> 59) as usize % (SLOTS / 2) * 2;
        for ix in [set, set + 1] {
            let slot = &self.slots[ix];
            if usize::from(slot.len) == value.len() && slot.bytes[..value.len()] == *value {
                let rewrite = slot.rewrite;
                self.slots[set].recent = ix == set;
                return rewrite;
            }
        }
        let rewrite = convert(value, scratch);
        let ix = if self.slots[set].recent { set + 1 } else { set };
        self.slots[set].recent = ix == set;
        let slot = &mut self.slots[ix];
        slot.len = value.len() as u8;
        slot.bytes[..value.len()].copy_from_slice(value);
        slot.rewrite = rewrite;
        rewrite
    }
}

/// What the text of a plain decimal says about its stored form.
#[derive(Debug, PartialEq, Eq)]
enum Plain {
    /// Already Go's form (`0.005`, `2.5`, `10.0`).
    AsStored,
    /// An integer Go writes with `.0` appended (`1`, `60`, `100000`).
    Integer,
}

/// `[-]digits[.digits]` whose stored form follows from the text alone: at
/// most 15 significant digits (such a decimal is the shortest that reads
/// back as its double, so Go prints exactly those digits), a decimal
/// exponent in Go's plain range -4..=5, no superfluous zeros. `None`: the
/// general path decides.
fn plain_decimal(t: &[u8]) -> Option<Plain> {
    let u = t.strip_prefix(b"-").unwrap_or(t);
    if let Some(e) = u.iter().position(|&c| c == b'e') {
        return go_exponent_form(&u[..e], &u[e + 1..]).then_some(Plain::AsStored);
    }
    let dot = u.iter().position(|&c| c == b'.');
    let (int, frac) = match dot {
        Some(d) => (&u[..d], Some(&u[d + 1..])),
        None => (u, None),
    };
    if int.is_empty()
        || !int.iter().all(u8::is_ascii_digit)
        || (int.len() > 1 && int[0] == b'0')
        || int.len() > 6
    {
        return None;
    }
    let Some(frac) = frac else {
        // `0` is stored `0.0`, but `-0` too: the general path.
        return (int != b"0" || u.len() == t.len()).then_some(Plain::Integer);
    };
    if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if int == b"0" {
        // 0.000d… is the smallest plain form; zeros are the general path.
        let zeros = frac.iter().take_while(|&&c| c == b'0').count();
        let ok = zeros <= 3 && zeros < frac.len() && frac.len() - zeros <= 15;
        return (ok && frac[frac.len() - 1] != b'0').then_some(Plain::AsStored);
    }
    if frac == b"0" {
        return Some(Plain::AsStored);
    }
    (frac[frac.len() - 1] != b'0' && int.len() + frac.len() <= 15).then_some(Plain::AsStored)
}

/// Whether `mant` `e` `exp` is Go's exponent form of its value: `d[.ddd]`
/// (at most 15 significant digits, no trailing zero) and a signed exponent
/// of at least two digits outside the plain range -4..=5 (`1e+06`,
/// `2.5e-07`).
fn go_exponent_form(mant: &[u8], exp: &[u8]) -> bool {
    let digits_ok = match mant {
        [d] => d.is_ascii_digit() && *d != b'0',
        [d, b'.', rest @ ..] => {
            d.is_ascii_digit()
                && *d != b'0'
                && !rest.is_empty()
                && rest.len() <= 14
                && rest.iter().all(u8::is_ascii_digit)
                && rest[rest.len() - 1] != b'0'
        }
        _ => false,
    };
    let (neg, e) = match exp {
        [b'+', e @ ..] => (false, e),
        [b'-', e @ ..] => (true, e),
        _ => return false,
    };
    let exp_ok = e.len() >= 2
        && e.len() <= 3
        && e.iter().all(u8::is_ascii_digit)
        && (e.len() == 2 || e[0] != b'0');
    if !(digits_ok && exp_ok) {
        return false;
    }
    let x = e.iter().fold(0i32, |v, &c| v * 10 + i32::from(c - b'0'));
    // Within a double's range (the largest is 1.7976931348623157e+308).
    let x = if neg { -x } else { x };
    !(-4..6).contains(&x) && (-307..=307).contains(&x)
}

/// A stack buffer for one formatted float.
struct Buf {
    b: [u8; 40],
    n: usize,
}

impl Default for Buf {
    fn default() -> Self {
        Buf { b: [0; 40], n: 0 }
    }
}

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.n + s.len();
        let dst = self.b.get_mut(self.n..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        let mut out = Vec::new();
        if canonical_float_label(s.as_bytes(), &mut out) {
            String::from_utf8(out).unwrap()
        } else {
            s.to_string()
        }
    }

    #[test]
    fn common_bucket_bounds() {
        for (raw, want) in [
            ("1", "1.0"),
            ("10", "10.0"),
            ("0.005", "0.005"),
            ("2.5", "2.5"),
            ("+Inf", "+Inf"),
            ("inf", "+Inf"),
            ("1e6", "1e+06"),
            ("100000", "100000.0"),
            ("0.00001", "1e-05"),
            ("1_000", "1000.0"),
            ("0x1p-2", "0.25"),
            ("0x1", "0x1"),
            ("1_", "1_"),
            ("1e400", "1e400"),
            ("-NaN", "-NaN"),
            ("nan", "NaN"),
            ("", ""),
            ("fast", "fast"),
        ] {
            assert_eq!(canon(raw), want, "{raw}");
        }
    }

    /// The text-only decision agrees with converting, on every vector and
    /// on a sweep of short decimals.
    #[test]
    fn plain_decimals_are_decided_as_converting_decides() {
        let general = |t: &[u8]| {
            let f = parse_go_float(t).unwrap();
            let mut out = Vec::new();
            append_float(&mut out, f);
            out
        };
        let mut cases: Vec<String> = include_str!("../../tests/data/om-floats.txt")
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(String::from))
            .collect();
        for int in ["0", "1", "12", "100", "999999", "1000000", "-3", "-0"] {
            for frac in [
                "",
                ".",
                ".0",
                ".00",
                ".5",
                ".50",
                ".05",
                ".0001",
                ".00001",
                ".123456789012345",
                ".1234567890123456",
            ] {
                cases.push(format!("{int}{frac}"));
            }
        }
        let mut decided = 0;
        for c in &cases {
            match plain_decimal(c.as_bytes()) {
                Some(Plain::AsStored) => assert_eq!(general(c.as_bytes()), c.as_bytes(), "{c}"),
                Some(Plain::Integer) => {
                    assert_eq!(general(c.as_bytes()), format!("{c}.0").as_bytes(), "{c}")
                }
                None => continue,
            }
            decided += 1;
        }
        assert!(decided > 1000, "{decided}");
    }

    #[test]
    fn hex_floats_round_to_nearest_even() {
        for (raw, want) in [
            ("0x1p0", 1.0),
            ("0x1.8p1", 3.0),
            ("0x1p-1074", f64::from_bits(1)),
            ("0x1p-1075", 0.0),
            ("0x1.8p-1075", f64::from_bits(1)),
            ("0x1.fffffffffffff8p0", 2.0),
            (
                "0x1.fffffffffffff7p0",
                f64::from_bits(0x3fff_ffff_ffff_ffff),
            ),
            ("0x1.fffffffffffffp1023", f64::MAX),
            ("0x10000000000000000000p-76", 1.0),
        ] {
            assert_eq!(parse_go_float(raw.as_bytes()), Some(want), "{raw}");
        }
        assert_eq!(parse_go_float(b"0x1p1024"), None);
        assert_eq!(parse_go_float(b"0x1.p"), None);
    }

    /// Every input of the vectors Go made: the same stored form.
    #[test]
    fn the_forms_go_gives() {
        let text = include_str!("../../tests/data/om-floats.txt");
        let mut n = 0;
        for line in text.lines() {
            let (raw, want) = line
                .strip_prefix('"')
                .and_then(|l| l.strip_suffix('"'))
                .and_then(|l| l.split_once("\" \""))
                .unwrap_or_else(|| panic!("bad vector line {line:?}"));
            assert_eq!(canon(raw), want, "input {raw:?}");
            n += 1;
        }
        assert!(n > 9000, "{n} vectors");
    }
}
