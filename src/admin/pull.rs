//! The pull path (`/relay/metrics`): the bearer-token check, and the
//! latest samples of every target rendered back as the text format.

use super::*;

pub(super) fn check_bearer(
    state: &AdminState,
    headers: &http::HeaderMap,
) -> Result<(), &'static str> {
    let Some(path) = state
        .relay_auth
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    else {
        return Ok(());
    };
    let token = match crate::fsread::read_text(&path, crate::fsread::MAX_SECRET) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot read server.relay_auth.credentials_file; refusing /relay/metrics");
            return Err("credentials unavailable");
        }
    };
    let token = token.trim();
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110, section 11.1).
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim_start_matches(' '))
        })
        .unwrap_or("");
    // Compare without an early exit on the first differing byte.
    let same = token.len() == given.len()
        && token
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !token.is_empty() && same {
        Ok(())
    } else {
        Err("unauthorized")
    }
}

pub(super) fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

pub(super) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v:?}")
    }
}

/// Renders encoded samples as text-format lines (no timestamps: the scraper
/// stamps them, and Prometheus's staleness handling keeps working).
/// Straight from the wire bytes: nothing is decoded into `String`s.
pub(crate) fn render_text(samples: &EncodedSamples, out: &mut String) {
    for k in 0..samples.len() {
        let Some((labels, value, _ts)) = split_entry(samples.slice(k, k + 1)) else {
            continue;
        };
        // Our own bytes, so this holds; a damaged series is left out whole.
        let mut check = label_pairs(labels);
        if !(check
            .by_ref()
            .all(|(n, v)| utf8(n).is_some() && utf8(v).is_some())
            && check.is_complete())
        {
            continue;
        }
        let Some(name) = label_pairs(labels)
            .find(|(n, _)| *n == b"__name__")
            .and_then(|(_, v)| utf8(v))
        else {
            continue;
        };
        out.push_str(name);
        let mut first = true;
        for (n, v) in label_pairs(labels).filter(|(n, _)| *n != b"__name__") {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(utf8(n).unwrap_or_default());
            out.push_str("=\"");
            escape_label_value(utf8(v).unwrap_or_default(), out);
            out.push('"');
        }
        if !first {
            out.push('}');
        }
        out.push(' ');
        out.push_str(&format_value(value));
        out.push('\n');
    }
}

fn utf8(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}
