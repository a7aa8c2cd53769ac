//! The per-sample encoder: a sample's final labels encoded straight from
//! the exposition text into the request by the plan for its label-name
//! shape ([`encode_fast`]), or label by label ([`resolve`]) when something
//! is unusual. The hot path: nothing here allocates in the steady state.

use std::cmp::Ordering;

use crate::exposition::{LabelSpan, Sample};
use crate::remote_write::proto::encode_label_bytes;

use crate::labels::LabelLimits;
use crate::remote_write::samples::{encode_into, encode_labels};

use super::track::{Hashers, Key, KeyMap};
use super::{NAME, Relabeled, Scratch, SeriesError, TargetContext};

/// A parsed sample as the encoders read it: the sample, where its labels
/// sit in `body`, and whether its label names are the previous sample's.
pub(super) struct Parsed<'p, 'b> {
    pub s: &'p Sample<'b>,
    pub spans: &'p [LabelSpan],
    pub same_names: bool,
    pub body: &'b [u8],
}

/// The parts of a series cache the encoder works with.
pub(super) struct EncodeState<'c> {
    pub hashers: &'c Hashers,
    pub scratch: &'c mut Scratch,
    pub relabeled: &'c mut KeyMap<Relabeled>,
}

/// The final labels of sample `p`, encoded and appended to `dst`, and their
/// key; `None` when metric relabeling drops the series (`dst` may then hold
/// part of them). `touch` is the generation to record in the relabeling
/// cache (`None`: read only).
#[inline]
pub(super) fn resolve(
    ctx: &TargetContext,
    p: &Parsed<'_, '_>,
    st: &mut EncodeState<'_>,
    touch: Option<u8>,
    dst: &mut Vec<u8>,
) -> Result<Option<Key>, SeriesError> {
    let Parsed {
        s,
        spans,
        same_names,
        body,
    } = *p;
    let start = dst.len();
    if ctx.metric_relabel.is_empty() {
        let Scratch {
            value,
            order,
            plans,
            ..
        } = &mut *st.scratch;
        if !plans.encode(s, spans, same_names, body, dst, value) {
            dst.truncate(start);
            if !encode_fast(ctx, s, spans, body, dst, value, order) {
                dst.truncate(start);
                match ctx.series_labels(s)? {
                    Some(l) => encode_into(&l, dst),
                    None => return Ok(None),
                }
            }
        }
        return Ok(Some(st.hashers.key(&dst[start..])));
    }
    // A series text stored rewritten under one `# TYPE` and as written
    // under another is two series.
    let raw = if s.rewrites {
        st.hashers.key_rewritten(s.series)
    } else {
        st.hashers.key(s.series)
    };
    if let Some(r) = st.relabeled.get_mut(&raw) {
        if let Some(g) = touch {
            r.generation = g;
        }
        return Ok(r.labels.as_ref().map(|l| {
            dst.extend_from_slice(l);
            r.key
        }));
    }
    let labels = ctx.series_labels(s)?.map(|l| encode_labels(&l));
    let key = labels.as_deref().map(|l| st.hashers.key(l));
    if let Some(l) = &labels {
        dst.extend_from_slice(l);
    }
    if let Some(generation) = touch {
        st.relabeled.insert(
            raw,
            Relabeled {
                labels,
                key: key.unwrap_or(Key::NONE),
                generation,
            },
        );
    }
    Ok(key)
}

/// Byte order of two (short) label names, without a call to `memcmp`.
#[inline(always)]
pub(super) fn name_cmp(a: &[u8], b: &[u8]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Appends the final label set of `s`, encoded straight from the exposition
/// text, to `out`: exposed labels (sorted, empty values dropped, unescaped)
/// merged with the target labels (honoring `honor_labels`) and the external
/// labels. Returns false for what it leaves to [`TargetContext::series_labels`]:
/// a repeated label name, a name conflict to rename (`exported_…`),
/// invalid UTF-8, a label limit exceeded; that path builds the error or the
/// renamed set.
#[inline]
pub(super) fn encode_fast(
    ctx: &TargetContext,
    s: &Sample<'_>,
    spans: &[LabelSpan],
    body: &[u8],
    out: &mut Vec<u8>,
    tmp: &mut Vec<u8>,
    order: &mut Vec<(u64, u32)>,
) -> bool {
    let name_of = |ix: u32| -> &[u8] {
        if ix == NAME {
            b"__name__"
        } else {
            spans[ix as usize].name(body)
        }
    };
    // Names compare by their first 8 bytes as an integer; only a tie looks
    // further.
    let cmp = |a: &(u64, u32), b: &(u64, u32)| match a.0.cmp(&b.0) {
        Ordering::Equal => name_cmp(name_of(a.1), name_of(b.1)),
        o => o,
    };
    order.clear();
    order.push((prefix(b"__name__"), NAME));
    let mut size = s.name.len() + 14;
    for (i, sp) in spans.iter().enumerate() {
        order.push((prefix(sp.name(body)), i as u32));
        size += sp.name_end - sp.name_start + sp.value_end - sp.value_start + 6;
    }
    // Usually sorted already; Go clients append `le` and `quantile` last.
    if !order
        .windows(2)
        .all(|w| cmp(&w[0], &w[1]) == Ordering::Less)
    {
        for i in 1..order.len() {
            let mut j = i;
            while j > 0 && cmp(&order[j - 1], &order[j]) == Ordering::Greater {
                order.swap(j - 1, j);
                j -= 1;
            }
        }
        if order
            .windows(2)
            .any(|w| cmp(&w[0], &w[1]) == Ordering::Equal)
        {
            return false;
        }
    }
    let targets = &ctx.target_labels;
    let externals = &ctx.external_labels;
    for (n, v) in targets.iter().chain(externals) {
        size += n.len() + v.len() + 6;
    }
    out.reserve(size);
    let limits = ctx.limits;
    let check_limits = limits != LabelLimits::default();
    let mut count = 0usize;
    let mut emit = |out: &mut Vec<u8>, name: &[u8], value: &[u8]| -> bool {
        if check_limits {
            count += 1;
            if (limits.labels > 0 && count > limits.labels)
                || (limits.name_length > 0 && name.len() > limits.name_length)
                || (limits.value_length > 0 && value.len() > limits.value_length)
            {
                return false;
            }
        }
        encode_label_bytes(out, name, value);
        true
    };
    let (mut i, mut j, mut k) = (0, 0, 0);
    loop {
        // The next exposed label with a value (empty is the same as absent).
        while let Some(&(_, ix)) = order.get(i) {
            if ix != NAME && spans[ix as usize].value_start == spans[ix as usize].value_end {
                i += 1;
            } else {
                break;
            }
        }
        let exposed = order.get(i).map(|&(_, ix)| name_of(ix));
        let target = targets.get(j).map(|(n, _)| n.as_bytes());
        let take_exposed = match (exposed, target) {
            (None, None) => break,
            (Some(e), Some(t)) => match name_cmp(e, t) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => {
                    if !ctx.honor_labels {
                        return false;
                    }
                    j += 1;
                    true
                }
            },
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        let name = if take_exposed { exposed } else { target }.unwrap_or_default();
        // External labels sorting first go first; a same-named one yields.
        while let Some((xn, xv)) = externals.get(k) {
            match name_cmp(xn.as_bytes(), name) {
                Ordering::Less => {
                    if !emit(out, xn.as_bytes(), xv.as_bytes()) {
                        return false;
                    }
                    k += 1;
                }
                Ordering::Equal => {
                    k += 1;
                    break;
                }
                Ordering::Greater => break,
            }
        }
        let ok = if take_exposed {
            let ix = order[i].1;
            i += 1;
            if ix == NAME {
                emit(out, name, s.name)
            } else {
                let sp = &spans[ix as usize];
                let raw = sp.raw_value(body);
                if !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
                    return false;
                }
                emit(out, name, sp.stored_value(body, tmp))
            }
        } else {
            let (_, v) = &targets[j];
            j += 1;
            emit(out, name, v.as_bytes())
        };
        if !ok {
            return false;
        }
    }
    for (xn, xv) in &externals[k..] {
        if !emit(out, xn.as_bytes(), xv.as_bytes()) {
            return false;
        }
    }
    true
}

/// The first 8 bytes of a name as a big-endian integer (zero-padded): it
/// orders names as their bytes do, up to a tie.
#[inline(always)]
pub(super) fn prefix(name: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    for (d, c) in k.iter_mut().zip(name) {
        *d = *c;
    }
    u64::from_be_bytes(k)
}
