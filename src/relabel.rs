//! Prometheus relabeling: the `relabel_configs` / `metric_relabel_configs`
//! rules, with Prometheus's names, defaults and semantics.
//!
//! Defaults: `separator: ";"`, `regex: "(.*)"`, `replacement: "$1"`,
//! `action: replace`. Regexes are RE2 syntax (the `regex` crate) and fully
//! anchored. Actions: `replace`, `keep`, `drop`, `keepequal`, `dropequal`,
//! `hashmod` (MD5 of the joined source values, its last 8 bytes big-endian,
//! modulo `modulus`, as Prometheus), `labelmap`, `labeldrop`, `labelkeep`,
//! `lowercase`, `uppercase`. `replace` with an empty result deletes the target
//! label; a target label that is not a valid name after expansion leaves the
//! set unchanged. Relabeling runs once per new series (the series cache keeps
//! the result), never per sample.

use std::fmt;

use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::labels::{Labels, is_valid_label_name};

/// A relabel action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

/// A fully anchored regex that remembers how it was written.
#[derive(Clone)]
pub struct AnchoredRegex {
    source: String,
    re: Regex,
}

impl AnchoredRegex {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        Ok(AnchoredRegex {
            source: source.to_string(),
            re: Regex::new(&format!("^(?:{source})$"))?,
        })
    }
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

impl fmt::Debug for AnchoredRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl PartialEq for AnchoredRegex {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
    }
}

impl Eq for AnchoredRegex {}

/// By the pattern, as equality is.
impl std::hash::Hash for AnchoredRegex {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.source.hash(h);
    }
}

impl Default for AnchoredRegex {
    fn default() -> Self {
        // "(.*)" always compiles.
        AnchoredRegex {
            source: "(.*)".into(),
            re: Regex::new("^(?:(.*))$").unwrap_or_else(|_| unreachable!()),
        }
    }
}

impl<'de> Deserialize<'de> for AnchoredRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AnchoredRegex::new(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid regex {s:?}: {e}")))
    }
}

impl Serialize for AnchoredRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// One relabel rule.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    pub separator: String,
    #[serde(default)]
    pub regex: AnchoredRegex,
    #[serde(default)]
    pub modulus: u64,
    #[serde(default)]
    pub target_label: String,
    #[serde(default = "default_replacement")]
    pub replacement: String,
    #[serde(default)]
    pub action: Action,
}

fn default_separator() -> String {
    ";".into()
}
fn default_replacement() -> String {
    "$1".into()
}

/// A relabel rule Prometheus would refuse, in Prometheus's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelabelError {
    #[error("relabel configuration for {0:?} action requires 'target_label' value")]
    NoTargetLabel(&'static str),
    #[error("{label:?} is invalid 'target_label' for {action} action")]
    TargetLabel { label: String, action: &'static str },
    #[error("relabel configuration for hashmod requires non-zero modulus")]
    ZeroModulus,
    #[error("{0} action requires only 'regex', and no other fields")]
    OnlyRegex(&'static str),
    #[error("{0} action requires only 'source_labels' and 'target_label', and no other fields")]
    OnlyLabels(&'static str),
    #[error("{0:?} is not a valid label name in source_labels")]
    SourceLabel(String),
}

impl RelabelConfig {
    /// Prometheus's per-action checks; the error is the reason only.
    pub fn validate(&self) -> Result<(), RelabelError> {
        use Action::*;
        let name = action_name(self.action);
        let needs_target = matches!(
            self.action,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(RelabelError::NoTargetLabel(name));
        }
        let bad_target = || RelabelError::TargetLabel {
            label: self.target_label.clone(),
            action: name,
        };
        if matches!(
            self.action,
            Lowercase | Uppercase | KeepEqual | DropEqual | HashMod
        ) && !is_valid_label_name(&self.target_label)
        {
            return Err(bad_target());
        }
        if self.action == Replace
            && !self.target_label.contains('$')
            && !is_valid_label_name(&self.target_label)
        {
            return Err(bad_target());
        }
        if self.action == HashMod && self.modulus == 0 {
            return Err(RelabelError::ZeroModulus);
        }
        if matches!(self.action, LabelDrop | LabelKeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != default_separator()
                || self.replacement != default_replacement())
        {
            return Err(RelabelError::OnlyRegex(name));
        }
        if matches!(self.action, KeepEqual | DropEqual)
            && (self.regex != AnchoredRegex::default()
                || self.modulus != 0
                || self.separator != default_separator()
                || self.replacement != default_replacement())
        {
            return Err(RelabelError::OnlyLabels(name));
        }
        for l in &self.source_labels {
            if !is_valid_label_name(l) {
                return Err(RelabelError::SourceLabel(l.clone()));
            }
        }
        Ok(())
    }
}

fn action_name(a: Action) -> &'static str {
    use Action::*;
    match a {
        Replace => "replace",
        Keep => "keep",
        Drop => "drop",
        KeepEqual => "keepequal",
        DropEqual => "dropequal",
        HashMod => "hashmod",
        LabelMap => "labelmap",
        LabelDrop => "labeldrop",
        LabelKeep => "labelkeep",
        Lowercase => "lowercase",
        Uppercase => "uppercase",
    }
}

fn get<'a>(lbls: &'a Labels, name: &str) -> &'a str {
    lbls.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn set(lbls: &mut Labels, name: &str, value: String) {
    if value.is_empty() {
        lbls.retain(|(n, _)| n != name);
    } else if let Some(e) = lbls.iter_mut().find(|(n, _)| n == name) {
        e.1 = value;
    } else {
        lbls.push((name.to_string(), value));
    }
}

/// MD5 of `s`, last 8 bytes as a big-endian integer (Prometheus's `sum64`).
pub(crate) fn hash_mod(s: &str, modulus: u64) -> u64 {
    let d = Md5::digest(s.as_bytes());
    let mut last = [0u8; 8];
    last.copy_from_slice(&d[8..16]);
    u64::from_be_bytes(last) % modulus
}

/// Applies `rules` in order. Returns `None` when the set is dropped.
#[cfg(test)]
pub(crate) fn process(lbls: Labels, rules: &[RelabelConfig]) -> Option<Labels> {
    process_traced(lbls, rules, |_, _| {})
}

/// [`process`], calling `step(index, labels after the rule)` after each rule
/// (`None`: the rule dropped the set, and nothing follows). `explain` shows
/// relabeling with it: the code that runs is the code it shows.
pub(crate) fn process_traced(
    mut lbls: Labels,
    rules: &[RelabelConfig],
    mut step: impl FnMut(usize, Option<&Labels>),
) -> Option<Labels> {
    for (i, r) in rules.iter().enumerate() {
        if !apply(r, &mut lbls) {
            step(i, None);
            return None;
        }
        step(i, Some(&lbls));
    }
    Some(lbls)
}

/// One rule; false when it drops the set.
fn apply(r: &RelabelConfig, lbls: &mut Labels) -> bool {
    use Action::*;
    let val = r
        .source_labels
        .iter()
        .map(|n| get(lbls, n))
        .collect::<Vec<_>>()
        .join(&r.separator);
    match r.action {
        Drop => {
            if r.regex.is_match(&val) {
                return false;
            }
        }
        Keep => {
            if !r.regex.is_match(&val) {
                return false;
            }
        }
        DropEqual => {
            if get(lbls, &r.target_label) == val {
                return false;
            }
        }
        KeepEqual => {
            if get(lbls, &r.target_label) != val {
                return false;
            }
        }
        Replace => {
            let Some(caps) = r.regex.re.captures(&val) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&r.target_label, &mut target);
            if !is_valid_label_name(&target) {
                return true;
            }
            let mut value = String::new();
            caps.expand(&r.replacement, &mut value);
            set(lbls, &target, value);
        }
        Lowercase => set(lbls, &r.target_label, val.to_lowercase()),
        Uppercase => set(lbls, &r.target_label, val.to_uppercase()),
        HashMod => set(lbls, &r.target_label, hash_mod(&val, r.modulus).to_string()),
        LabelMap => {
            let mut add = Vec::new();
            for (n, v) in lbls.iter() {
                if let Some(caps) = r.regex.re.captures(n) {
                    let mut name = String::new();
                    caps.expand(&r.replacement, &mut name);
                    add.push((name, v.clone()));
                }
            }
            for (n, v) in add {
                set(lbls, &n, v);
            }
        }
        LabelDrop => lbls.retain(|(n, _)| !r.regex.is_match(n)),
        LabelKeep => lbls.retain(|(n, _)| r.regex.is_match(n)),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Vec<RelabelConfig> {
        #[derive(Deserialize)]
        struct W {
            r: Vec<RelabelConfig>,
        }
        let w: W = ::config::Config::builder()
            .add_source(::config::File::from_str(yaml, ::config::FileFormat::Yaml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        for r in &w.r {
            r.validate().unwrap();
        }
        w.r
    }

    fn l(p: &[(&str, &str)]) -> Labels {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn sorted(mut x: Labels) -> Labels {
        x.sort();
        x
    }

    #[test]
    fn replace_with_groups_and_defaults() {
        let r = rules(
            "r:\n  - {source_labels: [__name__], regex: '(kube_scheduler|scheduler)_.*', target_label: job, replacement: kube-scheduler}\n  - {source_labels: [a, b], target_label: ab}\n  - {source_labels: [a], regex: '(.)(.*)', target_label: 'x_${1}', replacement: '$2-${1}'}\n",
        );
        let out = process(
            l(&[
                ("__name__", "scheduler_pending_pods"),
                ("job", "agg"),
                ("a", "hello"),
                ("b", "w"),
            ]),
            &r,
        )
        .unwrap();
        assert_eq!(
            sorted(out),
            sorted(l(&[
                ("__name__", "scheduler_pending_pods"),
                ("job", "kube-scheduler"),
                ("a", "hello"),
                ("b", "w"),
                ("ab", "hello;w"),
                ("x_h", "ello-h")
            ]))
        );
        // No match: unchanged.
        let out = process(l(&[("__name__", "etcd_x"), ("job", "agg")]), &r[..1]).unwrap();
        assert_eq!(get(&out, "job"), "agg");
    }

    #[test]
    fn replace_with_empty_result_deletes_and_invalid_target_is_skipped() {
        let r = rules(
            "r:\n  - {source_labels: [missing], target_label: a}\n  - {source_labels: [b], regex: '(.*)', target_label: '$1'}\n",
        );
        let out = process(l(&[("a", "1"), ("b", "not valid!")]), &r).unwrap();
        assert_eq!(out, l(&[("b", "not valid!")]));
    }

    #[test]
    fn keep_drop_and_equal_variants() {
        let keep = rules("r: [{source_labels: [__name__], regex: 'apiserver_.*', action: keep}]");
        assert!(process(l(&[("__name__", "apiserver_request_total")]), &keep).is_some());
        assert!(process(l(&[("__name__", "go_goroutines")]), &keep).is_none());
        let drop = rules("r: [{source_labels: [__name__], regex: 'go_.*', action: drop}]");
        assert!(process(l(&[("__name__", "go_goroutines")]), &drop).is_none());
        // Anchored: 'go_' alone does not match "go_goroutines".
        let drop = rules("r: [{source_labels: [__name__], regex: 'go_', action: drop}]");
        assert!(process(l(&[("__name__", "go_goroutines")]), &drop).is_some());
        let ke = rules("r: [{source_labels: [a], target_label: b, action: keepequal}]");
        assert!(process(l(&[("a", "1"), ("b", "1")]), &ke).is_some());
        assert!(process(l(&[("a", "1"), ("b", "2")]), &ke).is_none());
        let de = rules("r: [{source_labels: [a], target_label: b, action: dropequal}]");
        assert!(process(l(&[("a", "1"), ("b", "1")]), &de).is_none());
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Prometheus's sum64 keeps the last 8 bytes of the MD5, big-endian:
        // md5("foo") = acbd18db4cc2f85c edef654fccc4a4d8.
        let r =
            rules("r: [{source_labels: [a, b], modulus: 1000, target_label: h, action: hashmod}]");
        let out = process(l(&[("a", "foo")]), &r).unwrap();
        assert!(get(&out, "h").parse::<u64>().unwrap() < 1000);
        assert_eq!(hash_mod("foo", u64::MAX), 0xedef_654f_ccc4_a4d8);
        assert_eq!(hash_mod("foo", 1000), 0xedef_654f_ccc4_a4d8 % 1000);
    }

    #[test]
    fn labelmap_labeldrop_labelkeep_case() {
        let r = rules(
            "r:\n  - {regex: '__meta_(.+)', action: labelmap}\n  - {regex: '__meta_.*', action: labeldrop}\n",
        );
        let out = process(l(&[("__meta_zone", "a"), ("x", "1")]), &r).unwrap();
        assert_eq!(sorted(out), l(&[("x", "1"), ("zone", "a")]));
        let r = rules("r: [{regex: 'x|__name__', action: labelkeep}]");
        assert_eq!(
            process(l(&[("__name__", "m"), ("x", "1"), ("y", "2")]), &r).unwrap(),
            l(&[("__name__", "m"), ("x", "1")])
        );
        let r = rules(
            "r: [{source_labels: [a], target_label: lo, action: lowercase}, {source_labels: [a], target_label: up, action: uppercase}]",
        );
        let out = process(l(&[("a", "MiXed")]), &r).unwrap();
        assert_eq!((get(&out, "lo"), get(&out, "up")), ("mixed", "MIXED"));
    }

    #[test]
    fn validation_like_prometheus() {
        let bad = [
            RelabelConfig {
                target_label: String::new(),
                ..base()
            },
            RelabelConfig {
                action: Action::HashMod,
                target_label: "h".into(),
                modulus: 0,
                ..base()
            },
            RelabelConfig {
                action: Action::LabelDrop,
                source_labels: vec!["a".into()],
                ..base()
            },
            RelabelConfig {
                action: Action::Replace,
                target_label: "1bad".into(),
                ..base()
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
        assert!(AnchoredRegex::new("(").is_err());
    }

    fn base() -> RelabelConfig {
        RelabelConfig {
            source_labels: vec![],
            separator: ";".into(),
            regex: AnchoredRegex::default(),
            modulus: 0,
            target_label: "t".into(),
            replacement: "$1".into(),
            action: Action::Replace,
        }
    }
}
