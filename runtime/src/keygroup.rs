//! Key groups: the unit in which keyed state is partitioned, moved and rescaled (as in Flink).
//!
//! A key hashes to one of `max_parallelism` key groups; a subtask owns a contiguous range of
//! them. Changing parallelism reassigns whole key groups, so state never has to be re-hashed.
//! The hash must stay stable across versions and processes because state is stored under it.

use crate::types::Value;

/// Flink's default maximum parallelism, and ours.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// The largest `max_parallelism` a job may declare (Flink's limit, 2^15). Per-key-group
/// structures are allocated up front, so a larger value would only exhaust memory.
pub const MAX_KEY_GROUPS: u32 = 1 << 15;

/// The index of a key group, `0..max_parallelism`.
pub type KeyGroup = u32;

/// A stable 64-bit hash of a key: identical on every machine and version, unlike `std`'s
/// randomised hasher, because persisted state is addressed by it.
pub fn hash_key(values: &[Value]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for v in values {
        let vh = match v {
            Value::Null => 0x6a09_e667_f3bc_c908,
            Value::Bool(b) => *b as u64 + 1,
            Value::Int(i) | Value::Timestamp(i) | Value::Interval(i) => *i as u64,
            Value::Float(f) => f.to_bits(),
            Value::Decimal(d) => {
                let mut d = *d;
                while d.scale > 0 && d.unscaled % 10 == 0 {
                    d.unscaled /= 10;
                    d.scale -= 1;
                }
                (d.unscaled as u64) ^ ((d.scale as u64) << 56)
            }
            Value::Str(s) => fnv1a(s.as_bytes()),
        };
        h = fmix64(h ^ fmix64(vh)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    h
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finaliser: spreads every input bit over the output.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The key group of a key hash.
pub fn key_group_of(hash: u64, max_parallelism: u32) -> KeyGroup {
    (hash % max_parallelism as u64) as KeyGroup
}

/// The subtask that owns a key group (Flink: `keyGroup * parallelism / maxParallelism`).
pub fn subtask_of(key_group: KeyGroup, parallelism: u32, max_parallelism: u32) -> u32 {
    (key_group as u64 * parallelism as u64 / max_parallelism as u64) as u32
}

/// The contiguous key groups a subtask owns; the inverse of [`subtask_of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupRange {
    pub start: KeyGroup,
    /// Exclusive.
    pub end: KeyGroup,
}

impl KeyGroupRange {
    /// The range of `subtask` among `parallelism` subtasks.
    pub fn of_subtask(subtask: u32, parallelism: u32, max_parallelism: u32) -> KeyGroupRange {
        let bound =
            |i: u32| ((i as u64 * max_parallelism as u64).div_ceil(parallelism as u64)) as u32;
        KeyGroupRange {
            start: bound(subtask),
            end: bound(subtask + 1),
        }
    }

    pub fn contains(&self, kg: KeyGroup) -> bool {
        kg >= self.start && kg < self.end
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_invert_subtask_assignment() {
        for max in [1u32, 7, 128, 1000] {
            for p in 1..=max.min(13) {
                let mut next = 0;
                for s in 0..p {
                    let r = KeyGroupRange::of_subtask(s, p, max);
                    assert_eq!(r.start, next);
                    next = r.end;
                    for kg in r.start..r.end {
                        assert_eq!(subtask_of(kg, p, max), s, "max {max} p {p} kg {kg}");
                    }
                }
                assert_eq!(next, max);
            }
        }
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        // Persisted state depends on these exact values: changing them breaks restores.
        assert_eq!(hash_key(&[Value::Int(42)]), 10_170_320_601_224_710_043);
        assert_eq!(hash_key(&[Value::str("bid")]), 16_295_630_442_034_552_027);
        assert_eq!(
            hash_key(&[Value::Int(1000), Value::Int(1001)]),
            17_676_533_310_773_814_820
        );
        assert_eq!(hash_key(&[]), 11_400_714_819_323_198_485);
        assert_eq!(hash_key(&[Value::Int(42)]), hash_key(&[Value::Int(42)]));
        assert_ne!(hash_key(&[Value::Int(1)]), hash_key(&[Value::Int(2)]));
        assert_eq!(hash_key(&[Value::str("a")]), hash_key(&[Value::str("a")]));
        let mut counts = [0usize; 128];
        for i in 0..128_000 {
            counts[key_group_of(hash_key(&[Value::Int(i)]), 128) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
