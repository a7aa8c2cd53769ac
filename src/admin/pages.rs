//! `/targets` for people: an HTML table of every target's state.

use super::*;

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The families a target's last scrape dropped for their budget, in words.
fn over_budget(t: &TargetStatus) -> String {
    if t.over_budget_total == 0 {
        return String::new();
    }
    let mut s = t
        .over_budget
        .iter()
        .map(|f| {
            format!(
                "{}: over {} {} ({} samples dropped)",
                f.family, f.limit, f.limit_kind, f.dropped_samples
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    if t.over_budget_total > t.over_budget.len() {
        s.push_str(&format!("\n... {} families in all", t.over_budget_total));
    }
    s
}

pub(super) fn targets_html(targets: &[TargetStatus]) -> String {
    let now = crate::clock::unix_ms() as f64 / 1000.0;
    let up = targets.iter().filter(|t| t.health == Health::Up).count();
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>metrics-relay targets</title><style>\
         body{font-family:system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
         .up{background:#d4f7d4}.down{background:#f9d0d0}.unknown{background:#eee}\
         .err{font-family:monospace;white-space:pre-wrap;max-width:50em}</style></head><body>",
    );
    h.push_str(&format!(
        "<h1>Targets</h1><p>{up} of {} up. JSON: <a href=\"?format=json\">?format=json</a></p>",
        targets.len()
    ));
    h.push_str("<table><tr><th>job</th><th>endpoint</th><th>state</th><th>last scrape</th><th>duration</th><th>samples</th><th>error</th><th>over budget</th><th>backlog</th><th>labels</th><th>source</th><th></th></tr>");
    for t in targets {
        let (class, state) = match t.health {
            Health::Up => ("up", "UP"),
            Health::Down => ("down", "DOWN"),
            Health::Unknown => ("unknown", "UNKNOWN"),
        };
        let last = t.last_scrape.map_or("never".to_string(), |ts| {
            format!("{:.1}s ago", (now - ts).max(0.0))
        });
        let dur = t
            .last_scrape_duration_seconds
            .map_or("-".to_string(), |d| format!("{:.3}s", d));
        h.push_str(&format!(
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{state}</td><td>{last}</td><td>{dur}</td><td>{}</td><td class=\"err\">{}</td><td class=\"err\">{}</td><td>{}</td><td>{}</td><td>{}{}</td><td><a href=\"/explain?target={}\">explain</a></td></tr>",
            html_escape(&t.job),
            html_escape(&t.url),
            t.samples,
            html_escape(t.last_error.as_deref().unwrap_or("")),
            html_escape(&over_budget(t)),
            html_escape(
                &t.backlog
                    .iter()
                    .map(|b| format!(
                        "{}: {} samples, oldest {:.0}s ago",
                        b.remote_name,
                        b.samples,
                        (now - b.oldest_scrape).max(0.0)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            html_escape(
                &t.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            html_escape(t.discovered_from.as_deref().unwrap_or("static")),
            if t.shards.is_empty() {
                String::new()
            } else {
                format!("; shards {:?}", t.shards)
            },
            form_encode(&t.url),
        ));
    }
    h.push_str("</table></body></html>\n");
    h
}

/// A query component, percent-encoded (unreserved characters kept).
fn form_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A form value from a query string (`+` is a space).
pub(super) fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `/explain`: a form, and the explanation of what it asked.
pub(super) fn explain_html(
    target: &str,
    series: &str,
    result: Option<Result<String, crate::explain::ExplainError>>,
) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>metrics-relay explain</title><style>\
         body{font-family:system-ui,sans-serif;margin:1.5em}pre{background:#f6f6f6;padding:1em;white-space:pre-wrap}\
         input{font-family:monospace;width:40em}</style></head><body>\
         <h1>Explain</h1><p><a href=\"/targets\">targets</a>. What relabeling makes of a target and of one series, \
         rule by rule, with the running config (the same as <code>metrics-relay explain</code>).</p>",
    );
    h.push_str(&format!(
        "<form method=\"get\" action=\"/explain\"><p>target (job, address or URL): <input name=\"target\" value=\"{}\"></p>\
         <p>series (as exposed, optional): <input name=\"series\" value=\"{}\" placeholder=\"apiserver_request_total{{code=&quot;200&quot;}}\"></p>\
         <p><button>explain</button></p></form>",
        html_escape(target),
        html_escape(series)
    ));
    match result {
        None => {}
        Some(Ok(text)) => h.push_str(&format!("<pre>{}</pre>", html_escape(&text))),
        Some(Err(e)) => h.push_str(&format!(
            "<p class=\"err\">{}</p>",
            html_escape(&e.to_string())
        )),
    }
    h.push_str("</body></html>\n");
    h
}
