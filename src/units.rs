//! Durations and byte sizes written the way Prometheus writes them.
//!
//! Durations follow Prometheus's `model.Duration`: an ordered sequence of
//! `<int><unit>` with units `y w d h m s ms` (for example `1m30s`, `2h`, `500ms`,
//! or a bare `0`). Sizes follow `units.Base2Bytes` as used by `body_size_limit`:
//! `<int><unit>` with `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`, all
//! base 2 (Prometheus reads `64MB` as 64 MiB, and so do we).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration parsed from (and printed as) Prometheus's duration syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PromDuration(pub Duration);

/// A size in bytes parsed from (and printed as) `64MiB`-style strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// A duration or size that does not parse; says what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("empty duration string")]
    EmptyDuration,
    #[error("not a valid duration string: {0:?} (expected e.g. 1m30s, 500ms)")]
    Duration(String),
    #[error("duration out of range: {0:?}")]
    DurationRange(String),
    #[error("not a valid size: {0:?} (expected e.g. 64MiB)")]
    Size(String),
    #[error("size out of range: {0:?}")]
    SizeRange(String),
    #[error("not a valid size unit in {0:?} (use B, KiB, MiB, GiB, TiB)")]
    SizeUnit(String),
}

const DURATION_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses `1h30m`, `30s`, `500ms`, `0`. Units must appear at most once and in
/// decreasing order, as in Prometheus.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(UnitError::EmptyDuration);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    let mut next_unit = 0; // index into DURATION_UNITS: units must not go backwards
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(UnitError::Duration(s.into()));
        }
        let n: u64 = s[start..i]
            .parse()
            .map_err(|_| UnitError::DurationRange(s.into()))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[ustart..i];
        let pos = DURATION_UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .map(|p| p + next_unit)
            .ok_or_else(|| UnitError::Duration(s.into()))?;
        next_unit = pos + 1;
        total = n
            .checked_mul(DURATION_UNITS[pos].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| UnitError::DurationRange(s.into()))?;
    }
    Ok(Duration::from_millis(total))
}

/// Formats a duration the way Prometheus prints one (`1m30s`, `0s`).
pub(crate) fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, mult) in DURATION_UNITS {
        if ms >= mult {
            out.push_str(&format!("{}{}", ms / mult, unit));
            ms %= mult;
        }
    }
    out
}

/// Parses `512MiB`, `64MB`, `1024`, `10KiB`. Bare numbers are bytes.
pub(crate) fn parse_size(s: &str) -> Result<u64, UnitError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(UnitError::Size(s.into()));
    }
    let n: u64 = num.parse().map_err(|_| UnitError::SizeRange(s.into()))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KB" | "KiB" | "K" | "Ki" => 1 << 10,
        "MB" | "MiB" | "M" | "Mi" => 1 << 20,
        "GB" | "GiB" | "G" | "Gi" => 1 << 30,
        "TB" | "TiB" | "T" | "Ti" => 1 << 40,
        _ => {
            return Err(UnitError::SizeUnit(s.into()));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| UnitError::SizeRange(s.into()))
}

/// Formats bytes with the largest exact base-2 unit.
pub(crate) fn format_size(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{}", n >> shift, unit);
        }
    }
    format!("{n}B")
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The civil date (year, month, day) of days since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(PromDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_prometheus() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("1d2h").unwrap(),
            Duration::from_secs(26 * 3600)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "30", "1s1m", "1m1m", "s", "1.5s", "-1s", "1 s", "10x"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn civil_dates_round_trip() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2026, 11, 25),
            (1969, 12, 31),
            (2100, 3, 1),
        ] {
            let days = days_from_civil(y, m, d).unwrap();
            assert_eq!(civil_from_days(days), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 2), Some(1));
        assert_eq!(days_from_civil(2026, 13, 1), None);
    }

    #[test]
    fn sizes_are_base_two() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_size(1000), "1000B");
    }
}
