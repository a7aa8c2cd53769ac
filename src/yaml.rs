//! The guard every YAML document passes before it is loaded: the config,
//! `file_sd` target files and kubeconfigs.
//!
//! YAML aliases (`*name`) repeat an anchored node (`&name`); a loader
//! copies it each time, so a few hundred bytes of nested aliases (a
//! "billion laughs") expand to billions of nodes and exhaust memory, and a
//! document nested thousands of levels deep overflows the stack of a
//! recursive loader. [`check`] reads the document's events (nothing is
//! built) and counts the nodes it would expand to: more than
//! [`ALIAS_BUDGET_RATIO`] times the nodes written out (and more than
//! [`ALIAS_BUDGET_MIN`]) is refused as excessive aliasing, as Prometheus's
//! YAML library refuses it; so is nesting deeper than [`MAX_DEPTH`]. A
//! config that reuses a relabeling block through an anchor expands to a
//! few times its size and passes.
//!
//! Also here: YAML documents as JSON values ([`to_json`], for discovery
//! files and the manifests `render` starts from) and JSON values back as
//! block-style YAML ([`emit`], what `render` prints).

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Deepest nesting of sequences and mappings accepted.
pub(crate) const MAX_DEPTH: usize = 128;
/// Aliases may add at most this many times the nodes written out...
pub(crate) const ALIAS_BUDGET_RATIO: u64 = 10;
/// ...or this many, whichever is more.
pub(crate) const ALIAS_BUDGET_MIN: u64 = 100_000;

/// Why a document was refused before loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum YamlError {
    #[error(
        "excessive aliasing: its aliases expand to {expanded} nodes from {written} written out (a \"billion laughs\" document?)"
    )]
    ExcessiveAliasing { written: u64, expanded: u64 },
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("an alias refers to a node that contains it")]
    RecursiveAlias,
    #[error("{0}")]
    Syntax(String),
}

#[derive(Default)]
struct Counter {
    /// Nodes as written (aliases count one each).
    written: u64,
    /// Nodes after alias expansion.
    expanded: u64,
    /// Expanded size of each anchored node seen whole.
    anchors: HashMap<usize, u64>,
    /// Open sequences and mappings: (anchor id, expanded count at start).
    open: Vec<(usize, u64)>,
    error: Option<YamlError>,
}

impl Counter {
    fn node(&mut self, anchor: usize, size: u64) {
        self.written += 1;
        self.expanded = self.expanded.saturating_add(size);
        if anchor > 0 {
            self.anchors.insert(anchor, size);
        }
    }
}

impl MarkedEventReceiver for Counter {
    fn on_event(&mut self, ev: Event, _mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(_, _, anchor, _) => self.node(anchor, 1),
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(&size) => {
                    self.written += 1;
                    self.expanded = self.expanded.saturating_add(size);
                }
                // An anchor still open (it contains this alias), or none.
                None => self.error = Some(YamlError::RecursiveAlias),
            },
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.open.len() >= MAX_DEPTH {
                    self.error = Some(YamlError::TooDeep);
                    return;
                }
                self.written += 1;
                self.expanded = self.expanded.saturating_add(1);
                self.open.push((anchor, self.expanded - 1));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, start)) = self.open.pop()
                    && anchor > 0
                {
                    self.anchors.insert(anchor, self.expanded - start);
                }
            }
            _ => {}
        }
        let budget = (self.written.saturating_mul(ALIAS_BUDGET_RATIO)).max(ALIAS_BUDGET_MIN);
        if self.expanded > self.written.saturating_add(budget) {
            self.error = Some(YamlError::ExcessiveAliasing {
                written: self.written,
                expanded: self.expanded,
            });
        }
    }
}

/// Checks `text` (every document in it) against the limits in the module
/// docs; a syntax error is reported too.
pub(crate) fn check(text: &str) -> Result<(), YamlError> {
    let mut c = Counter::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut c, true)
        .map_err(|e| YamlError::Syntax(e.to_string()))?;
    match c.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How scalars become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalars {
    /// Every scalar a string (label values are strings whatever YAML
    /// typed them as).
    Strings,
    /// Integers, floats and booleans as JSON numbers and booleans.
    Typed,
}

/// Every document of `text` (checked by [`check`] first) as JSON values.
pub(crate) fn to_json(text: &str, scalars: Scalars) -> Result<Vec<serde_json::Value>, YamlError> {
    check(text)?;
    let docs = yaml_rust2::YamlLoader::load_from_str(text)
        .map_err(|e| YamlError::Syntax(e.to_string()))?;
    docs.into_iter().map(|d| convert(d, scalars)).collect()
}

fn convert(y: yaml_rust2::Yaml, scalars: Scalars) -> Result<serde_json::Value, YamlError> {
    use serde_json::Value;
    use yaml_rust2::Yaml;
    let typed = scalars == Scalars::Typed;
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::String(s) => Value::String(s),
        Yaml::Real(s) if typed => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(s), Value::Number),
        Yaml::Real(s) => Value::String(s),
        Yaml::Integer(i) if typed => Value::Number(i.into()),
        Yaml::Integer(i) => Value::String(i.to_string()),
        Yaml::Boolean(b) if typed => Value::Bool(b),
        Yaml::Boolean(b) => Value::String(b.to_string()),
        Yaml::Array(a) => Value::Array(
            a.into_iter()
                .map(|v| convert(v, scalars))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let k = match k {
                    Yaml::String(s) | Yaml::Real(s) => s,
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => return Err(YamlError::Syntax("a mapping key is not a scalar".into())),
                };
                m.insert(k, convert(v, scalars)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err(YamlError::Syntax("an unsupported YAML value".into()));
        }
    })
}

/// A JSON value as block-style YAML (mappings in their order, strings
/// quoted when YAML would read them as something else).
pub(crate) fn emit(v: &serde_json::Value) -> String {
    let mut out = String::new();
    emit_into(v, 0, &mut out);
    out
}

fn emit_into(v: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                out.push_str(&pad);
                out.push_str(&scalar(k));
                out.push(':');
                block_value(v, indent, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for v in a {
                out.push_str(&pad);
                out.push('-');
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        // The first key on the dash's line.
                        let mut inner = String::new();
                        emit_into(v, indent + 2, &mut inner);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => block_value(v, indent, out),
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// After `key:` or `-`: a scalar on the line, or a block below it.
fn block_value(v: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_into(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit_into(v, indent + 2, out);
        }
        Value::String(s) if s.contains('\n') => {
            // A literal block, as a ConfigMap's file reads best.
            out.push_str(" |");
            if !s.ends_with('\n') {
                out.push('-');
            }
            out.push('\n');
            for line in s.lines() {
                if !line.is_empty() {
                    out.push_str(&" ".repeat(indent + 2));
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string as a YAML scalar: plain when YAML reads it back as the same
/// string, double-quoted (JSON escapes are valid YAML ones) otherwise.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./@".contains(&b))
        && !s.starts_with(['-', '.', '@'])
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// Replaces what a serde or YAML message quotes from the document
/// (`invalid type: string "-----BEGIN PRIVATE KEY-----…"`) with
/// `<redacted>`: a file given in the wrong place may be a key.
pub(crate) fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[start] as char;
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        match after.find(quote) {
            Some(end) => {
                let inner = &after[..end];
                // Field names and short words stay; values that could be
                // secrets (long, or containing spaces) do not.
                if inner.len() > 40 || inner.contains([' ', '\n']) {
                    out.push_str("<redacted>");
                } else {
                    out.push_str(inner);
                }
                out.push(quote);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("<redacted>");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_billion_laughs_is_refused_before_loading() {
        // 506 bytes, about 10^9 nodes expanded.
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            doc.push_str(&format!(
                "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        let e = check(&doc).unwrap_err();
        assert!(matches!(e, YamlError::ExcessiveAliasing { .. }), "{e}");
        assert!(e.to_string().starts_with("excessive aliasing"), "{e}");
    }

    #[test]
    fn anchors_reused_a_few_times_pass() {
        let doc = "rules: &r\n  - {source_labels: [a], action: keep}\n  - {target_label: b, replacement: c}\njobs:\n  - {relabel: *r}\n  - {relabel: *r}\n  - {relabel: *r}\n";
        check(doc).unwrap();
        // A large plain document passes whatever its size.
        let big: String = (0..200_000).map(|i| format!("- t{i}\n")).collect();
        check(&big).unwrap();
    }

    #[test]
    fn deep_nesting_and_syntax_errors_are_refused() {
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(check(&deep), Err(YamlError::TooDeep));
        let ok = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        check(&ok).unwrap();
        assert!(matches!(check("a: [1, 2"), Err(YamlError::Syntax(_))));
        assert!(matches!(
            check("a: *nowhere\n"),
            Err(YamlError::Syntax(_) | YamlError::RecursiveAlias)
        ));
    }

    #[test]
    fn quoted_values_are_redacted_from_messages() {
        let m = "invalid type: string \"-----BEGIN PRIVATE KEY----- MIIEvgIBADANBgkqhkiG9w0BAQEFAASC\", expected a map";
        let r = redact_quoted(m);
        assert_eq!(r, "invalid type: string \"<redacted>\", expected a map");
        assert_eq!(
            redact_quoted("unknown field `listen_adress`, expected `listen_address`"),
            "unknown field `listen_adress`, expected `listen_address`"
        );
        assert_eq!(redact_quoted("a \"never closed"), "a \"<redacted>");
    }

    #[test]
    fn emitted_yaml_reads_back_as_the_same_values() {
        let text = "a: 1\nb: [x, 'true', '0.5', '', null, -1, {c: d, e: [1, 2]}]\nf: {}\ng: []\nh: \"line one\\nline two\\n\"\ni: \"quote \\\" and: colon\"\nj: 1.5\nk: true\n";
        let v = to_json(text, Scalars::Typed).unwrap().remove(0);
        let back = to_json(&emit(&v), Scalars::Typed).unwrap().remove(0);
        assert_eq!(v, back, "{}", emit(&v));
        assert_eq!(v["b"][1], "true");
        assert_eq!(v["a"], 1);
        // Label values are strings whatever YAML made of them.
        let v = to_json("port: 9100\nup: true\n", Scalars::Strings)
            .unwrap()
            .remove(0);
        assert_eq!(v["port"], "9100");
        assert_eq!(v["up"], "true");
    }
}
