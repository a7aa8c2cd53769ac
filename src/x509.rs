//! Just enough X.509 (DER) to report a certificate's subject, issuer and
//! validity: for the expiry metric, `probe`, and refusing an expired client
//! certificate before it is used. Anything unexpected gives `None`, never a
//! panic.

use rustls_pki_types::CertificateDer;

/// What we report about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertInfo {
    /// `CN=...` (or the first attribute) of the subject.
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// One DER element: (tag, contents, rest).
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, hdr) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    Some((tag, b.get(hdr..end)?, b.get(end..)?))
}

fn digits(s: &[u8]) -> Option<i64> {
    let t = std::str::from_utf8(s).ok()?;
    if !t.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, v: &[u8]) -> Option<i64> {
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(v.get(0..2)?)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, v.get(2..)?)
        }
        0x18 => (digits(v.get(0..4)?)?, v.get(4..)?),
        _ => return None,
    };
    let f = |i: usize| digits(rest.get(i..i + 2)?);
    let (mo, d, h, mi, s) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    Some(crate::units::days_from_civil(year, mo, d)? * 86_400 + h * 3600 + mi * 60 + s)
}

/// The first attribute value of a Name, preferring CN (OID 2.5.4.3).
fn name(b: &[u8]) -> String {
    let mut first: Option<String> = None;
    let mut rest = b;
    while let Some((_, set, after)) = element(rest) {
        rest = after;
        let Some((_, attr, _)) = element(set) else {
            continue;
        };
        let Some((_, oid, after_oid)) = element(attr) else {
            continue;
        };
        let Some((_, value, _)) = element(after_oid) else {
            continue;
        };
        let v = String::from_utf8_lossy(value).into_owned();
        if oid == [0x55, 0x04, 0x03] {
            return format!("CN={v}");
        }
        first.get_or_insert(v);
    }
    first.unwrap_or_default()
}

impl CertInfo {
    pub(crate) fn parse(der: &CertificateDer<'_>) -> Option<CertInfo> {
        let (_, cert, _) = element(der.as_ref())?;
        let (_, tbs, _) = element(cert)?;
        let mut rest = tbs;
        // [0] version is optional.
        let (tag, _, r) = element(rest)?;
        if tag == 0xa0 {
            rest = r;
        }
        let (_, _serial, r) = element(rest)?;
        let (_, _sig, r) = element(r)?;
        let (_, issuer, r) = element(r)?;
        let (_, validity, r) = element(r)?;
        let (_, subject, _) = element(r)?;
        let (t1, nb, v) = element(validity)?;
        let (t2, na, _) = element(v)?;
        Some(CertInfo {
            subject: name(subject),
            issuer: name(issuer),
            not_before: time(t1, nb)?,
            not_after: time(t2, na)?,
        })
    }
}

/// `2026-11-25T21:26:20Z`.
pub(crate) fn format_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = crate::units::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_rcgen_makes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "ack");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        p.not_before = rcgen::date_time_ymd(2025, 1, 2);
        p.not_after = rcgen::date_time_ymd(2060, 3, 4);
        let cert = p.self_signed(&key).unwrap();
        let info = CertInfo::parse(cert.der()).unwrap();
        assert_eq!(info.subject, "CN=kube-apiserver");
        assert_eq!(info.issuer, "CN=kube-apiserver");
        assert_eq!(format_time(info.not_before), "2025-01-02T00:00:00Z");
        assert_eq!(format_time(info.not_after), "2060-03-04T00:00:00Z");
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for b in [
            &b""[..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x03, 0x30, 0x01],
        ] {
            assert!(CertInfo::parse(&CertificateDer::from(b.to_vec())).is_none());
        }
    }
}
