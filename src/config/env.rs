//! `${NAME}` expansion in config files, before they are parsed.

/// Expands `${NAME}` with environment variable NAME, for per-node configs
/// (a DaemonSet sets `NODE_IP` from the downward API). Only names that start
/// with a letter or `_` and are set in the environment are replaced, so
/// relabeling's `${1}` (and named groups with no such variable) stay as
/// written; `$${NAME}` escapes to a literal `${NAME}`.
pub fn expand_env(text: &str, get: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            // "$${": keep "${" literally.
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let name_end = after.find('}');
        let replaced = name_end.and_then(|e| {
            let name = &after[..e];
            let ok = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if ok { get(name).map(|v| (v, e)) } else { None }
        });
        match replaced {
            Some((v, e)) => {
                out.push_str(&v);
                rest = &after[e + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
