//! Encoding plans: the label layout of each *shape* a target exposes,
//! worked out once.
//!
//! A shape is the sequence of label names a sample is written with
//! (`{component,dry_run,group,le,resource,...}`); a page has a few dozen of
//! them (every histogram bucket of a family shares one) against thousands of
//! samples. The plan of a shape says in which order the final label set is
//! written: the metric name, each exposed label (by its position in the
//! text), and the target and external labels, whose encodings are constant
//! for the target and pre-encoded here. Encoding a sample then is: find its
//! shape (the one of the previous sample, usually), and copy. Names are
//! compared and bytes copied 16 at a time, from buffers padded for it, so no
//! copy goes through `memcpy`.
//!
//! A plan produces the bytes [`super::encode_fast`] would; a shape where that
//! needs a decision per sample (a repeated name, a name shared with a target
//! or external label, which turns on whether the exposed value is empty) has
//! no plan and the caller takes the per-sample encoder. So does a target with
//! label limits.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::{KeyHasher, TargetContext};
use crate::exposition::{LabelSpan, MASKS, Rewrite, Sample};
use crate::labels::{LabelLimits, Labels};
use crate::remote_write::proto::encode_label_bytes;

/// Shapes kept per target; past it they are all forgotten and rebuilt as
/// met (a page has tens, a real kube-apiserver a few hundred).
const MAX_SHAPES: usize = 512;
/// Zero bytes after pre-encoded bytes, so copies can move 16-byte words.
const PAD: usize = 16;
/// `Label { name: "__name__", value: … }` up to the value, lengths to fill
/// in at 1 and 13; padded to a word.
const NAME_HEAD: [u8; 16] = *b"\x0a\x00\x0a\x08__name__\x12\x00\x00\x00";

#[derive(Debug, Clone, Copy)]
enum Step {
    /// `__name__` and the metric name.
    Name,
    /// The exposed label at `span` (text order); its encoded head
    /// (`0x0a len 0x0a nlen name 0x12`) is at `head` in [`Shape::heads`].
    Exposed { span: u16, head: u32 },
    /// Target and external labels: bytes `off..off + len` of [`Plans::consts`].
    Const { off: u32, len: u32 },
}

#[derive(Debug)]
struct Name {
    /// The first 16 bytes of the name, zero-extended.
    word: u128,
    len: u16,
    /// Where its head starts in [`Shape::heads`].
    head: u32,
}

#[derive(Debug)]
struct Shape {
    /// Exposed label names, in text order.
    names: Box<[Name]>,
    /// Encoded label heads, then [`PAD`] zeros.
    heads: Box<[u8]>,
    /// `None`: samples of this shape take the per-sample encoder.
    steps: Option<Box<[Step]>>,
}

/// What the plans were made for; they are remade when it changes (a reload).
#[derive(Debug, Default, PartialEq)]
struct Made {
    targets: Labels,
    externals: Labels,
    limits: LabelLimits,
}

/// The plans of one target.
#[derive(Debug, Default)]
pub(super) struct Plans {
    made: Option<Made>,
    /// Target and external labels merged (a target label hides an external
    /// one of the same name), sorted, encoded, then [`PAD`] zeros.
    consts: Vec<u8>,
    /// Name, offset and length in `consts` of each of them.
    const_labels: Vec<(String, u32, u32)>,
    shapes: Vec<Shape>,
    /// Shape hash → index in `shapes`.
    index: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    /// The shape of the previous sample.
    last: usize,
    /// `last` is the shape of the sample just before the one being encoded.
    last_ok: bool,
}

/// The first 16 bytes of `body[start..start + len]`, zero-extended.
#[inline(always)]
fn word(body: &[u8], start: usize, len: usize) -> u128 {
    let w = match body
        .get(start..start + 16)
        .and_then(|w| <[u8; 16]>::try_from(w).ok())
    {
        Some(w) => u128::from_le_bytes(w),
        None => {
            // Near the end of the body: no room for a whole word.
            let mut k = [0u8; 16];
            let n = len.min(16);
            k[..n].copy_from_slice(&body[start..start + n]);
            return u128::from_le_bytes(k);
        }
    };
    w & MASKS[len.min(16)]
}

/// Appends `src[start..start + len]`, 16 bytes at a time where `src` has
/// room after it (the over-copy is cut off), plainly where it has not.
#[inline(always)]
fn copy(out: &mut Vec<u8>, src: &[u8], start: usize, len: usize) {
    let at = out.len();
    let mut k = 0;
    while k < len {
        let Some(w) = src
            .get(start + k..start + k + 16)
            .and_then(|w| <&[u8; 16]>::try_from(w).ok())
        else {
            out.truncate(at + k);
            out.extend_from_slice(&src[start + k..start + len]);
            return;
        };
        out.extend_from_slice(w);
        k += 16;
    }
    out.truncate(at + len);
}

fn shape_hash(spans: &[LabelSpan], body: &[u8]) -> u64 {
    let mut h = spans.len() as u64;
    for sp in spans {
        let len = sp.name_end - sp.name_start;
        let w = word(body, sp.name_start, len);
        h = (h.rotate_left(23) ^ (w as u64) ^ ((w >> 64) as u64).rotate_left(31) ^ len as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    h
}

impl Plans {
    /// Makes sure the plans are for `ctx`; cheap when they are.
    pub(super) fn prepare(&mut self, ctx: &TargetContext) {
        let same = self.made.as_ref().is_some_and(|m| {
            m.targets == ctx.target_labels
                && m.externals == ctx.external_labels
                && m.limits == ctx.limits
        });
        self.last_ok = false;
        if same {
            return;
        }
        *self = Plans::default();
        let mut merged: Vec<&(String, String)> = ctx.target_labels.iter().collect();
        for x in &ctx.external_labels {
            if !ctx.target_labels.iter().any(|(n, _)| *n == x.0) {
                merged.push(x);
            }
        }
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        for (n, v) in merged {
            let off = self.consts.len();
            encode_label_bytes(&mut self.consts, n.as_bytes(), v.as_bytes());
            let len = self.consts.len() - off;
            self.const_labels.push((n.clone(), off as u32, len as u32));
        }
        self.consts.extend_from_slice(&[0; PAD]);
        self.made = Some(Made {
            targets: ctx.target_labels.clone(),
            externals: ctx.external_labels.clone(),
            limits: ctx.limits,
        });
    }

    /// Forgets the shapes (the plans for the target labels stay).
    fn forget_shapes(&mut self) {
        self.shapes = Vec::new();
        self.index = HashMap::default();
        self.last = 0;
        self.last_ok = false;
    }

    /// Appends the encoded final labels of `s` to `out`, as
    /// [`super::encode_fast`] would. False (with `out` partly written) when
    /// the sample is for the per-sample encoder. Call [`Plans::prepare`]
    /// first, then this for every sample the parser returns, in order;
    /// `same_names` is [`crate::exposition::Parser::same_label_names`].
    #[inline]
    pub(super) fn encode(
        &mut self,
        s: &Sample<'_>,
        spans: &[LabelSpan],
        same_names: bool,
        body: &[u8],
        out: &mut Vec<u8>,
        tmp: &mut Vec<u8>,
    ) -> bool {
        let Some(made) = &self.made else {
            return false;
        };
        if made.limits != LabelLimits::default() {
            return false;
        }
        // The parser compared the names with the previous sample's already.
        let ix = if (same_names && self.last_ok) || self.matches(self.last, spans, body) {
            self.last
        } else {
            let h = shape_hash(spans, body);
            match self.index.get(&h) {
                Some(&i) if self.matches(i as usize, spans, body) => i as usize,
                _ => self.add(h, spans, body),
            }
        };
        self.last = ix;
        self.last_ok = true;
        let shape = &self.shapes[ix];
        let Some(steps) = &shape.steps else {
            return false;
        };
        // Room for everything, the over-copies included.
        out.reserve(s.series.len() + 2 * spans.len() + self.consts.len() + 16 * steps.len() + 32);
        for step in steps.iter() {
            match *step {
                Step::Name => {
                    let n = s.name.len();
                    if n + 12 >= 0x80 {
                        encode_label_bytes(out, b"__name__", s.name);
                        continue;
                    }
                    let at = out.len();
                    out.extend_from_slice(&NAME_HEAD);
                    out[at + 1] = (n + 12) as u8;
                    out[at + 13] = n as u8;
                    out.truncate(at + 14);
                    // A sample's text starts with its name.
                    debug_assert_eq!(body.get(s.offset..s.offset + n), Some(s.name));
                    copy(out, body, s.offset, n);
                }
                Step::Exposed { span, head } => {
                    let sp = &spans[span as usize];
                    let raw = sp.raw_value(body);
                    if raw.is_empty() {
                        continue;
                    }
                    if !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
                        return false;
                    }
                    let head = head as usize;
                    let nlen = usize::from(shape.heads[head + 3]);
                    if sp.escaped || sp.rewrite != Rewrite::No || nlen + raw.len() + 4 >= 0x80 {
                        let name = &shape.heads[head + 4..head + 4 + nlen];
                        encode_label_bytes(out, name, sp.stored_value(body, tmp));
                        continue;
                    }
                    let at = out.len();
                    copy(out, &shape.heads, head, nlen + 5);
                    out[at + 1] = (nlen + raw.len() + 4) as u8;
                    out.push(raw.len() as u8);
                    copy(out, body, sp.value_start, raw.len());
                }
                Step::Const { off, len } => copy(out, &self.consts, off as usize, len as usize),
            }
        }
        true
    }

    /// Whether shape `ix` exists and is the shape of `spans`.
    #[inline(always)]
    fn matches(&self, ix: usize, spans: &[LabelSpan], body: &[u8]) -> bool {
        let Some(shape) = self.shapes.get(ix) else {
            return false;
        };
        shape.names.len() == spans.len()
            && spans.iter().zip(shape.names.iter()).all(|(sp, nm)| {
                let len = sp.name_end - sp.name_start;
                len == usize::from(nm.len)
                    && word(body, sp.name_start, len) == nm.word
                    && (len <= 16 || {
                        let h = nm.head as usize + 4;
                        body[sp.name_start + 16..sp.name_end] == shape.heads[h + 16..h + len]
                    })
            })
    }

    /// Works out the plan of the shape of `spans` (hash `h`).
    #[cold]
    fn add(&mut self, h: u64, spans: &[LabelSpan], body: &[u8]) -> usize {
        if self.shapes.len() >= MAX_SHAPES {
            self.forget_shapes();
        }
        let mut names = Vec::with_capacity(spans.len());
        let mut heads = Vec::new();
        let mut plannable = true;
        for sp in spans {
            let name = sp.name(body);
            let head = heads.len();
            if name.len() + 4 >= 0x80 {
                // A label this long takes the general encoder (and its heads
                // are only for comparing).
                plannable = false;
            }
            heads.extend_from_slice(&[0x0a, 0, 0x0a, name.len() as u8]);
            heads.extend_from_slice(name);
            heads.push(0x12);
            names.push(Name {
                word: word(body, sp.name_start, name.len()),
                len: name.len() as u16,
                head: head as u32,
            });
        }
        heads.extend_from_slice(&[0; PAD]);
        let steps = if plannable {
            self.steps_for(&names, spans, body)
        } else {
            None
        };
        self.shapes.push(Shape {
            names: names.into_boxed_slice(),
            heads: heads.into_boxed_slice(),
            steps,
        });
        let ix = self.shapes.len() - 1;
        self.index.insert(h, ix as u32);
        ix
    }

    /// The steps for a shape: its names sorted and merged with the constant
    /// labels. `None` for a repeated name or one a constant label has too.
    fn steps_for(&self, names: &[Name], spans: &[LabelSpan], body: &[u8]) -> Option<Box<[Step]>> {
        // (name, what): the exposed labels with the metric name first.
        let mut order: Vec<(&[u8], Option<usize>)> = Vec::with_capacity(spans.len() + 1);
        order.push((b"__name__", None));
        order.extend(
            spans
                .iter()
                .enumerate()
                .map(|(i, sp)| (sp.name(body), Some(i))),
        );
        order.sort_by(|a, b| a.0.cmp(b.0));
        if order.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        let mut steps: Vec<Step> = Vec::with_capacity(order.len() + self.const_labels.len());
        let (mut i, mut j) = (0, 0);
        loop {
            let exposed = order.get(i);
            let konst = self.const_labels.get(j);
            let take_exposed = match (exposed, konst) {
                (None, None) => break,
                (Some(e), Some(c)) => match e.0.cmp(c.0.as_bytes()) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => return None,
                },
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_exposed {
                steps.push(match order[i].1 {
                    None => Step::Name,
                    Some(k) => Step::Exposed {
                        span: u16::try_from(k).ok()?,
                        head: names[k].head,
                    },
                });
                i += 1;
            } else {
                let (_, off, len) = self.const_labels[j];
                match steps.last_mut() {
                    Some(Step::Const { off: o, len: l }) if *o + *l == off => *l += len,
                    _ => steps.push(Step::Const { off, len }),
                }
                j += 1;
            }
        }
        Some(steps.into_boxed_slice())
    }

    /// Shapes known (for tests and the memory estimate).
    #[cfg(test)]
    pub(super) fn shapes(&self) -> usize {
        self.shapes.len()
    }

    /// Bytes held, roughly.
    pub(super) fn retained_bytes(&self) -> usize {
        self.consts.capacity()
            + self
                .shapes
                .iter()
                .map(|s| {
                    std::mem::size_of::<Shape>()
                        + s.names.len() * std::mem::size_of::<Name>()
                        + s.heads.len()
                        + s.steps
                            .as_ref()
                            .map_or(0, |t| t.len() * std::mem::size_of::<Step>())
                })
                .sum::<usize>()
            + self.index.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::Parser;

    fn ctx() -> TargetContext {
        TargetContext {
            target_labels: vec![
                ("instance".into(), "h:1".into()),
                ("job".into(), "j".into()),
            ],
            external_labels: vec![("cluster".into(), "c".into())],
            ..Default::default()
        }
    }

    /// Encodes every sample of `body` with the plans; each must equal the
    /// general path's bytes.
    fn check(plans: &mut Plans, c: &TargetContext, body: &str) -> usize {
        let body = body.as_bytes();
        let mut parser = Parser::new(body);
        let (mut out, mut tmp, mut n) = (Vec::new(), Vec::new(), 0);
        while let Some(s) = parser.next() {
            let s = s.unwrap();
            out.clear();
            let same = parser.same_label_names();
            assert!(plans.encode(&s, parser.label_spans(), same, body, &mut out, &mut tmp));
            let expected =
                crate::remote_write::samples::encode_labels(&c.series_labels(&s).unwrap().unwrap());
            assert_eq!(
                out[..],
                expected[..],
                "{}",
                String::from_utf8_lossy(s.series)
            );
            n += 1;
        }
        n
    }

    #[test]
    fn one_shape_per_label_name_sequence() {
        let c = ctx();
        let mut plans = Plans::default();
        plans.prepare(&c);
        let body = "h_bucket{a=\"1\",le=\"0.1\"} 1\nh_bucket{a=\"1\",le=\"+Inf\"} 2\n\
                    h_sum{a=\"1\"} 3\nh_count{a=\"1\"} 2\nh_bucket{a=\"2\",le=\"0.1\"} 1\nup 1\n";
        assert_eq!(check(&mut plans, &c, body), 6);
        assert_eq!(plans.shapes(), 3);
        // The same page again: no new shape.
        check(&mut plans, &c, body);
        assert_eq!(plans.shapes(), 3);
        // New target labels (a reload): plans for them.
        let mut c2 = ctx();
        c2.target_labels[0].1 = "other:2".into();
        plans.prepare(&c2);
        assert_eq!(plans.shapes(), 0);
        check(&mut plans, &c2, body);
    }

    #[test]
    fn shapes_are_bounded() {
        let c = ctx();
        let mut plans = Plans::default();
        plans.prepare(&c);
        let body: String = (0..MAX_SHAPES + 100)
            .map(|i| format!("m{{l{i}=\"v\"}} 1\n"))
            .collect();
        assert_eq!(check(&mut plans, &c, &body), MAX_SHAPES + 100);
        assert!(plans.shapes() <= MAX_SHAPES);
        assert_eq!(check(&mut plans, &c, &body), MAX_SHAPES + 100);
    }

    #[test]
    fn copies_at_the_end_of_the_body_and_across_words() {
        let c = ctx();
        let mut plans = Plans::default();
        plans.prepare(&c);
        // The last sample leaves no room for whole words after its name and
        // values; values of 15 to 33 bytes cross word boundaries.
        let mut body = String::new();
        for n in 15..34 {
            body.push_str(&format!("m{{a=\"{}\"}} 1\n", "v".repeat(n)));
        }
        body.push_str("m{a=\"x\"} 1\n");
        check(&mut plans, &c, &body);
        check(&mut plans, &c, "m{a=\"x\"} 1\n");
        check(&mut plans, &c, "metric_name_longer_than_16{b=\"y\"} 1\n");
    }
}
