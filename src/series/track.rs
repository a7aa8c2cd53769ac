//! Series identity and the series table: a 12-byte [`Key`] per series (a
//! seeded 64-bit hash and the length of its encoded labels) and [`Track`],
//! the last scrape's keys in exposition order, compared key by key with the
//! next scrape (sets only when the order changes).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// A label set's 64-bit hash and its encoded length (mod 2¹⁶): a series'
/// identity in the cache. With a per-cache random seed, two label sets of
/// one target share a key with probability below n²/2⁶⁵ (n series: 10⁻¹³
/// for 2,000; lengths rarely match too), and a target cannot aim for it.
/// Stored as 32-bit halves so that a key takes 12 bytes (the series table
/// is a list of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key([u32; 2], u16);

impl Key {
    pub(super) const NONE: Key = Key([0, 0], 0);

    pub(super) fn new(hash: u64, check: u64) -> Key {
        Key([hash as u32, (hash >> 32) as u32], check as u16)
    }
}

impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(u64::from(self.0[0]) | (u64::from(self.0[1]) << 32));
    }
}

/// The key is a hash already: the table uses it as is.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

pub(super) type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

pub(super) type KeySet = HashSet<Key, BuildHasherDefault<KeyHasher>>;

/// The series of the last successful scrape, as keys in the order it
/// exposed them (12 bytes a series), and how the current scrape compares.
///
/// Targets expose their series in the same order every time, so a scrape
/// is checked against that list one key after the other: no lookup, no
/// table. Only once it differs (a series new, gone or moved) are sets built,
/// for this scrape only, to find duplicates, new series and vanished ones.
#[derive(Default)]
pub(super) struct Track {
    pub(super) order: Vec<Key>,
    /// Keys of the current scrape that matched `order`, one by one, so far.
    pub(super) pos: usize,
    pub(super) diverged: Option<Box<Diverged>>,
}

/// The current scrape once it differs from the last.
pub(super) struct Diverged {
    /// The last scrape's keys.
    pub(super) prev: KeySet,
    /// The current scrape's keys, as a set and in order.
    pub(super) cur: KeySet,
    pub(super) keys: Vec<Key>,
    /// Keys of the current scrape the last one had too.
    pub(super) kept: usize,
}

impl Track {
    pub(super) fn start(&mut self) {
        self.pos = 0;
        self.diverged = None;
    }

    /// Records the next key of the current scrape: whether it is a new
    /// series, or `None` for a second sample of one series.
    #[inline]
    pub(super) fn see(&mut self, key: Key) -> Option<bool> {
        if self.diverged.is_none() {
            if self.order.get(self.pos) == Some(&key) {
                self.pos += 1;
                return Some(false);
            }
            self.diverge();
        }
        let d = self.diverged.as_mut()?;
        if !d.cur.insert(key) {
            return None;
        }
        d.keys.push(key);
        let old = d.prev.contains(&key);
        d.kept += usize::from(old);
        Some(!old)
    }

    #[cold]
    pub(super) fn diverge(&mut self) {
        let keys = self.order[..self.pos].to_vec();
        self.diverged = Some(Box::new(Diverged {
            prev: self.order.iter().copied().collect(),
            cur: keys.iter().copied().collect(),
            kept: keys.len(),
            keys,
        }));
    }

    /// Whether series of the last scrape are missing from the current one.
    pub(super) fn any_vanished(&self) -> bool {
        match &self.diverged {
            None => self.pos < self.order.len(),
            Some(d) => d.kept < d.prev.len(),
        }
    }

    /// `key` was in the last scrape and is not in the current one (after
    /// [`Track::diverge`]).
    pub(super) fn vanished(&self, key: &Key) -> bool {
        self.diverged
            .as_ref()
            .is_some_and(|d| d.prev.contains(key) && !d.cur.contains(key))
    }

    /// The current scrape drops the series `gone` after all (their family
    /// went over its budget): they count as not seen, so those the last
    /// scrape had vanish (and get markers). Returns how many of them were
    /// new series.
    pub(super) fn forget(&mut self, gone: &KeySet) -> u64 {
        if gone.is_empty() {
            return 0;
        }
        if self.diverged.is_none() {
            self.diverge();
        }
        let Some(d) = self.diverged.as_mut() else {
            return 0;
        };
        d.keys.retain(|k| !gone.contains(k));
        let mut new = 0;
        for k in gone {
            if d.cur.remove(k) {
                if d.prev.contains(k) {
                    d.kept -= 1;
                } else {
                    new += 1;
                }
            }
        }
        new
    }

    /// The current scrape succeeded: its keys are the ones to compare with next.
    pub(super) fn finish(&mut self) {
        match self.diverged.take() {
            Some(d) => {
                self.order = d.keys;
                self.order.shrink_to_fit();
            }
            None => self.order.truncate(self.pos),
        }
    }
}

/// The per-cache hash seeds.
pub(super) struct Hashers {
    pub(super) a: foldhash::quality::RandomState,
}

impl Hashers {
    /// A seeded 64-bit hash (what Prometheus tracks staleness by) and the
    /// length: a collision needs both.
    #[inline]
    pub(super) fn key(&self, bytes: &[u8]) -> Key {
        Key::new(self.a.hash_one(bytes), bytes.len() as u64)
    }

    /// The key of an exposed series whose labels are stored rewritten
    /// ([`crate::exposition::Sample::rewrites`]): other than its text's.
    pub(super) fn key_rewritten(&self, bytes: &[u8]) -> Key {
        Key::new(self.a.hash_one((bytes, 0x5eu8)), bytes.len() as u64)
    }
}
