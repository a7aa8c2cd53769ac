//! Replicas that split the targets: with `--shard-count N --shard-index I`
//! and a replication factor `rf`, each target is scraped by exactly `rf` of
//! the `N` agents.
//!
//! The owners of a target are chosen by rendezvous (highest random weight)
//! hashing: every shard gets a score from a fixed hash of the target's key
//! (its job, scrape URL and labels after relabeling) and the shard's index,
//! and the `rf` highest scores own it. Every agent computes the same owners
//! without talking to the others, the choice survives restarts and versions
//! (the hash is defined here, never seeded), and going from `N` to `N + 1`
//! shards moves only the targets the new shard now wins: about `rf / (N + 1)`
//! of them, where `hash % N` would move nearly all.

use std::fmt;

/// This agent's place among its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    pub count: u32,
    pub index: u32,
    pub replication_factor: u32,
}

/// Why a sharding cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("--shard-count must be at least 1")]
    NoShards,
    #[error(
        "--shard-count {0} is more than {MAX_SHARDS} (one agent per shard: a fleet that large wants another layout)"
    )]
    TooManyShards(u32),
    #[error("--shard-index {index} is not below --shard-count {count}")]
    IndexTooHigh { index: u32, count: u32 },
    #[error("--replication-factor {rf} must be between 1 and --shard-count {count}")]
    BadReplication { rf: u32, count: u32 },
    #[error(
        "cannot derive the shard index from hostname {0:?}: it does not end in -<ordinal> (a StatefulSet pod name does)"
    )]
    Hostname(String),
}

/// Most shards: each target ranks every shard, so the count bounds the
/// work per target.
pub(crate) const MAX_SHARDS: u32 = 1024;

impl Default for Sharding {
    /// One agent that scrapes everything.
    fn default() -> Self {
        Sharding {
            count: 1,
            index: 0,
            replication_factor: 1,
        }
    }
}

impl fmt::Display for Sharding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shard {} of {} (replication factor {})",
            self.index, self.count, self.replication_factor
        )
    }
}

/// FNV-1a, 64 bits: fixed, unseeded, the same on every machine.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Sharding {
    pub fn new(count: u32, index: u32, replication_factor: u32) -> Result<Sharding, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if count > MAX_SHARDS {
            return Err(ShardError::TooManyShards(count));
        }
        if index >= count {
            return Err(ShardError::IndexTooHigh { index, count });
        }
        if replication_factor == 0 || replication_factor > count {
            return Err(ShardError::BadReplication {
                rf: replication_factor,
                count,
            });
        }
        Ok(Sharding {
            count,
            index,
            replication_factor,
        })
    }

    /// The ordinal at the end of a StatefulSet pod's hostname (`relay-2` → 2).
    pub fn index_from_hostname(hostname: &str) -> Result<u32, ShardError> {
        hostname
            .trim()
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse().ok())
            .ok_or_else(|| ShardError::Hostname(hostname.to_string()))
    }

    /// Whether there is more than one shard.
    pub fn is_sharded(&self) -> bool {
        self.count > 1
    }

    /// The shards that own a target with this key, highest score first.
    pub fn owners(&self, key: &[u8]) -> Vec<u32> {
        if self.count == 1 {
            return vec![0];
        }
        let h = fnv1a(key);
        let mut scored: Vec<(u64, u32)> = (0..self.count)
            .map(|i| (mix(h ^ mix(u64::from(i) + 1)), i))
            .collect();
        // Highest score first; the index breaks (unlikely) ties.
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored
            .into_iter()
            .take(self.replication_factor as usize)
            .map(|(_, i)| i)
            .collect()
    }

    /// Whether this shard scrapes a target with this key.
    pub fn owns(&self, key: &[u8]) -> bool {
        self.count == 1 || self.owners(key).contains(&self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                format!("job\u{0}https://10.0.{}.{}:6443/metrics", i / 250, i % 250).into_bytes()
            })
            .collect()
    }

    #[test]
    fn every_target_has_exactly_rf_distinct_owners() {
        for (n, rf) in [(1, 1), (3, 1), (3, 2), (3, 3), (7, 2)] {
            let s = Sharding::new(n, 0, rf).unwrap();
            for k in keys(500) {
                let mut o = s.owners(&k);
                assert_eq!(o.len(), rf as usize);
                o.sort();
                o.dedup();
                assert_eq!(o.len(), rf as usize, "owners repeat for n={n} rf={rf}");
                // Every shard agrees on the owners.
                let count = (0..n)
                    .filter(|&i| Sharding::new(n, i, rf).unwrap().owns(&k))
                    .count();
                assert_eq!(count, rf as usize);
            }
        }
    }

    #[test]
    fn load_is_spread_and_adding_a_shard_moves_about_its_share() {
        let ks = keys(3000);
        let four = Sharding::new(4, 0, 1).unwrap();
        let five = Sharding::new(5, 0, 1).unwrap();
        let mut per = [0usize; 4];
        let mut moved = 0;
        for k in &ks {
            let a = four.owners(k)[0];
            per[a as usize] += 1;
            let b = five.owners(k)[0];
            if a != b {
                // A target only ever moves to the new shard.
                assert_eq!(b, 4);
                moved += 1;
            }
        }
        for p in per {
            assert!((600..900).contains(&p), "uneven spread: {per:?}");
        }
        // About 1/5 of 3000.
        assert!((450..750).contains(&moved), "moved {moved}");
    }

    #[test]
    fn the_choice_is_fixed_across_builds() {
        // Pinned: a change of hash would reshuffle every fleet on upgrade.
        let s = Sharding::new(3, 0, 1).unwrap();
        let got: Vec<u32> = keys(8).iter().map(|k| s.owners(k)[0]).collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 8] = [0, 2, 2, 2, 1, 0, 0, 1];

    #[test]
    fn the_hash_is_fnv1a_64() {
        // The published FNV-1a test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn bad_settings_and_hostnames_are_errors() {
        assert_eq!(Sharding::new(0, 0, 1), Err(ShardError::NoShards));
        assert!(Sharding::new(3, 3, 1).is_err());
        assert!(Sharding::new(3, 0, 4).is_err());
        assert!(Sharding::new(3, 0, 0).is_err());
        assert_eq!(Sharding::index_from_hostname("metrics-relay-2"), Ok(2));
        assert!(Sharding::index_from_hostname("metrics-relay").is_err());
        assert!(Sharding::index_from_hostname("relay-x").is_err());
    }
}
