//! The search's memo of visited configurations: (set of linearized ops, register value).
//!
//! It owns only storage and hashing. The set is a bitset whose hash is kept incrementally
//! (Zobrist hashing: the XOR of one fixed random word per member), so a lookup neither hashes
//! nor copies the bitset; only an actual insert copies it, into one flat arena.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A set of op indices with an incrementally maintained hash.
pub(super) struct Bits {
    words: Vec<u64>,
    hash: u64,
}

/// Visited configurations.
pub(super) struct Cache {
    words: usize,
    /// Bitsets of every entry, `words` words each.
    arena: Vec<u64>,
    states: Vec<Option<u64>>,
    /// Entry with the same hash inserted before this one, or `NONE`.
    chain: Vec<usize>,
    heads: HashMap<u64, usize, BuildHasherDefault<Prehashed>>,
}

/// A hasher for keys that are already uniformly distributed `u64`s.
#[derive(Default)]
pub(super) struct Prehashed(u64);

const NONE: usize = usize::MAX;

impl Bits {
    pub(super) fn new(len: usize) -> Self {
        Bits {
            words: vec![0; words_for(len)],
            hash: 0,
        }
    }

    pub(super) fn set(&mut self, i: usize) {
        let mask = 1 << (i % 64);
        if self.words[i / 64] & mask == 0 {
            self.words[i / 64] |= mask;
            self.hash ^= member_key(i);
        }
    }

    pub(super) fn clear(&mut self, i: usize) {
        let mask = 1 << (i % 64);
        if self.words[i / 64] & mask != 0 {
            self.words[i / 64] &= !mask;
            self.hash ^= member_key(i);
        }
    }
}

impl Cache {
    /// A cache for sets over `len` ops.
    pub(super) fn new(len: usize) -> Self {
        Cache {
            words: words_for(len),
            arena: Vec::new(),
            states: Vec::new(),
            chain: Vec::new(),
            heads: HashMap::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.states.len()
    }

    /// Adds (bits, state); false if it was already there.
    pub(super) fn insert(&mut self, bits: &Bits, state: Option<u64>) -> bool {
        let hash = bits.hash ^ splitmix(state.map_or(0x5bd1_e995, |v| v.rotate_left(17) ^ 1));
        let head = self.heads.get(&hash).copied().unwrap_or(NONE);
        let mut at = head;
        while at != NONE {
            let k = at;
            if self.states[k] == state && self.arena[k * self.words..][..self.words] == bits.words {
                return false;
            }
            at = self.chain[k];
        }
        let index = self.states.len();
        self.arena.extend_from_slice(&bits.words);
        self.states.push(state);
        self.chain.push(head);
        self.heads.insert(hash, index);
        true
    }
}

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `u64` keys; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn words_for(len: usize) -> usize {
    len.div_ceil(64).max(1)
}

/// The fixed random word of op `i` (SplitMix64 of its index).
fn member_key(i: usize) -> u64 {
    splitmix(i as u64)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_reports_only_new_configurations() {
        let mut cache = Cache::new(130);
        let mut bits = Bits::new(130);
        assert!(cache.insert(&bits, None));
        assert!(!cache.insert(&bits, None));
        assert!(cache.insert(&bits, Some(0)));
        bits.set(129);
        bits.set(3);
        assert!(cache.insert(&bits, None));
        bits.clear(129);
        assert!(cache.insert(&bits, None));
        bits.clear(3);
        assert!(!cache.insert(&bits, None), "same set reached another way");
        assert_eq!(cache.len(), 4);
    }
}
