//! `write_relabel_configs` of one destination, applied to the wire bytes of
//! a scrape: each series is decoded and relabeled once, then its result
//! (new labels, or dropped) is cached by its encoded labels, as the series
//! cache does for metric relabeling.

use std::collections::HashMap;
use std::sync::Arc;

use super::samples::{EncodedSamples, encode_labels, label_pairs, split_entry};
use crate::labels::Labels;
use crate::relabel::RelabelConfig;

type Rewritten = (Option<Box<[u8]>>, u64);

/// `write_relabel_configs` of one remote-write destination, for one target:
/// each series' relabeled (or dropped) label set is computed once and cached,
/// like the series cache does for metric relabeling.
pub(crate) struct WriteRelabelCache {
    rules: Arc<[RelabelConfig]>,
    /// Encoded labels → (relabeled labels or dropped, generation last seen).
    map: HashMap<Box<[u8]>, Rewritten, foldhash::fast::RandomState>,
    generation: u64,
}

impl WriteRelabelCache {
    pub(crate) fn new(rules: Arc<[RelabelConfig]>) -> Self {
        WriteRelabelCache {
            rules,
            map: HashMap::default(),
            generation: 0,
        }
    }

    /// Writes the relabeled samples of `input` into `out` (cleared first).
    pub(crate) fn apply(&mut self, input: &EncodedSamples, out: &mut EncodedSamples) {
        out.clear();
        out.scraped_at_ms = input.scraped_at_ms;
        out.stream = input.stream;
        self.generation += 1;
        let generation = self.generation;
        for k in 0..input.len() {
            let Some((labels, value, ts)) = split_entry(input.slice(k, k + 1)) else {
                continue;
            };
            if let Some((l, seen)) = self.map.get_mut(labels) {
                *seen = generation;
                if let Some(l) = l {
                    out.push(l, value, ts);
                }
                continue;
            }
            // Once per new series (the result is cached), read from the
            // bytes as they are: our own encoding, valid UTF-8.
            let decoded: Labels = label_pairs(labels)
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            let relabeled =
                relabel_series(decoded, &self.rules, |_, _| {}).map(|l| encode_labels(&l));
            if let Some(l) = &relabeled {
                out.push(l, value, ts);
            }
            self.map.insert(labels.into(), (relabeled, generation));
        }
        // Series absent from this scrape (their markers went through above).
        self.map.retain(|_, (_, seen)| *seen == generation);
    }
}

/// A series' labels through a destination's `write_relabel_configs`
/// (`step` sees each rule's result; `None`: dropped, as is a set left
/// empty). Empty values are dropped and the names sorted, as sent.
pub(crate) fn relabel_series(
    labels: crate::labels::Labels,
    rules: &[RelabelConfig],
    step: impl FnMut(usize, Option<&crate::labels::Labels>),
) -> Option<crate::labels::Labels> {
    crate::relabel::process_traced(labels, rules, step).and_then(|mut l| {
        l.retain(|(_, v)| !v.is_empty());
        l.sort_by(|a, b| a.0.cmp(&b.0));
        (!l.is_empty()).then_some(l)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relabel::{Action, AnchoredRegex};
    use crate::remote_write::proto::WriteRequest;
    use prost::Message;

    fn decode(out: &EncodedSamples) -> WriteRequest {
        WriteRequest::decode(out.buf.as_slice()).unwrap()
    }

    fn serde_yaml_default() -> RelabelConfig {
        RelabelConfig {
            source_labels: Vec::new(),
            separator: ";".into(),
            regex: AnchoredRegex::default(),
            modulus: 0,
            target_label: String::new(),
            replacement: "$1".into(),
            action: Action::Replace,
        }
    }

    #[test]
    fn write_relabeling_rewrites_drops_and_keeps_values() {
        let rules: Vec<RelabelConfig> = vec![
            RelabelConfig {
                source_labels: vec!["__name__".into()],
                regex: AnchoredRegex::new("secret_.*").unwrap(),
                action: Action::Drop,
                ..serde_yaml_default()
            },
            RelabelConfig {
                regex: AnchoredRegex::new("cluster").unwrap(),
                action: Action::LabelDrop,
                ..serde_yaml_default()
            },
            RelabelConfig {
                target_label: "aaa".into(),
                replacement: "first".into(),
                ..serde_yaml_default()
            },
        ];
        let mut out = EncodedSamples::default();
        let labels = |name: &str| {
            encode_labels(&[
                ("__name__".into(), name.into()),
                ("cluster".into(), "c1".into()),
                ("job".into(), "j".into()),
            ])
        };
        out.push(&labels("m"), 1.5, 7);
        out.push(&labels("secret_x"), 2.0, 10);
        let mut w = WriteRelabelCache::new(rules.into());
        let mut rewritten = EncodedSamples::default();
        for _ in 0..2 {
            w.apply(&out, &mut rewritten);
            let wr = decode(&rewritten);
            assert_eq!(wr.timeseries.len(), 1);
            let t = &wr.timeseries[0];
            assert_eq!(t.labels[0].name, "__name__", "sorted");
            assert_eq!(t.label("aaa"), Some("first"));
            assert_eq!(t.label("cluster"), None);
            assert_eq!((t.samples[0].value, t.samples[0].timestamp), (1.5, 7));
        }
    }
}
