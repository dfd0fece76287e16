//! Seeded randomness for the traffic cores: the [`Rng`] trait every random choice takes as a
//! parameter, a small deterministic generator ([`SplitMix64`]) and a stable string hash.
//!
//! The cores never create randomness themselves (STYLE "time and randomness are parameters"):
//! the shell seeds one generator from config and passes it in, and tests pass a fixed seed so
//! every weighted split, jitter and power-of-two draw is reproducible. This module does not aim
//! at cryptographic strength; nothing here may choose a key, nonce or secret.

/// A source of uniformly distributed 64-bit words, with the few derived draws the cores need.
pub trait Rng {
    /// The next uniformly distributed 64-bit word.
    fn next_u64(&mut self) -> u64;

    /// A uniform integer in `0..n`, without modulo bias (Lemire's method). `n == 0` gives 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Reject the few low products that would over-represent small results.
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            // The low half is the fraction; the high half is the result in 0..n.
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A uniform float in `[0, 1)` with 53 bits of precision.
    fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): one 64-bit word of state, full period, and good
/// enough statistics for load balancing and jitter.
///
/// Call order: [`SplitMix64::new`] once with a seed from config, then any [`Rng`] draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl Rng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }
}

/// The SplitMix64 finaliser: a bijection on `u64` that spreads every input bit over the output.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash of `bytes` that is the same on every platform, build and run (FNV-1a, then
/// [`mix64`] so that similar inputs land far apart). Consistent hashing depends on this: every
/// sidecar must place a key on the same endpoint. Not for untrusted-input hash tables.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(
            xs,
            (0..8)
                .map(|_| SplitMix64::new(8).next_u64())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn first_output_matches_reference() {
        // Reference value of SplitMix64 seeded with 0 (as in Vigna's splitmix64.c).
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            let x = rng.below(7);
            seen[usize::try_from(x).unwrap()] += 1;
        }
        assert!(seen.iter().all(|c| (800..1200).contains(c)), "{seen:?}");
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn unit_f64_is_in_unit_interval() {
        let mut rng = SplitMix64::new(2);
        for _ in 0..1_000 {
            let x = rng.unit_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }

    #[test]
    fn stable_hash_is_pinned() {
        // Pinned: changing the hash would move every consistent-hash key in a mixed fleet.
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c (the published FNV test vector).
        assert_eq!(stable_hash(b"a"), mix64(0xaf63_dc4c_8601_ec8c));
        assert_eq!(stable_hash(b"user-1"), 0xc499_b5f8_a721_df58);
        assert_eq!(stable_hash(b"10.0.0.1:8443"), 0xa156_3516_6ce4_ab87);
    }
}
