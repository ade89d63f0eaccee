//! A small seeded generator (SplitMix64) owned by this crate.
//!
//! Shuffles, random crops and caption randomness must be reproducible from the job seed across
//! machines and across versions of third-party crates; a generator whose algorithm lives here cannot
//! change under us. Streams are derived from (seed, purpose, indices) so that, e.g., epoch 7's shuffle
//! does not depend on how many numbers epochs 0..6 consumed.

/// SplitMix64: tiny, fast, and statistically fine for shuffling and sampling.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator from a plain seed.
    pub fn new(seed: u64) -> Self {
        Rng { state: mix(seed ^ GOLDEN) }
    }

    /// An independent stream for `purpose` and `parts` (e.g. `("epoch", [epoch, dataset, bucket])`).
    pub fn derive(seed: u64, purpose: &str, parts: &[u64]) -> Self {
        let mut h = mix(seed ^ GOLDEN);
        for b in purpose.bytes() {
            h = mix(h ^ u64::from(b));
        }
        for p in parts {
            h = mix(h.wrapping_add(GOLDEN) ^ *p);
        }
        Rng { state: h }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Uniform in `0..=n`.
    pub fn below_inclusive(&mut self, n: u32) -> u32 {
        self.below(u64::from(n) + 1) as u32
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A stable 64-bit digest of a string, for deriving per-file streams from paths.
pub(crate) fn str_digest(s: &str) -> u64 {
    let hash = blake3::hash(s.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(bytes)
}
