//! The training random number generator: small, explicit and serializable.
//!
//! Why our own generator instead of `rand`: a training run must be reproducible from its seed and
//! resumable from a checkpoint bit for bit. That needs (a) the complete generator state in the
//! checkpoint, and (b) a sequence that never changes with a dependency upgrade (`rand` has changed
//! its distributions' algorithms between major versions). xoshiro256++ (Blackman & Vigna) is 256 bits
//! of state, passes BigCrush, and the uniform and normal transforms below are fixed here.
//!
//! Whoever owns a [`TrainRng`] owns its stream: a trainer typically keeps one for timesteps (inside
//! [`crate::TimestepSampler`]) and one for noise, derived from the run seed with [`TrainRng::with_stream`].

use serde::{Deserialize, Serialize};

/// xoshiro256++ generator. `Serialize`/`Deserialize` capture the full state, so
/// save -> load -> continue gives exactly the numbers an uninterrupted run would have drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainRng {
    s: [u64; 4],
}

/// SplitMix64 step: expands a 64-bit seed into well-mixed words (the seeding recommended by the
/// xoshiro authors; it never yields the all-zero state for four consecutive outputs).
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl TrainRng {
    /// Generator for `seed` (stream 0).
    pub fn new(seed: u64) -> Self {
        Self::with_stream(seed, 0)
    }

    /// Independent generator for `(seed, stream)`: use distinct streams for distinct purposes
    /// (timesteps, noise, caption dropout, ...) so that adding draws to one never shifts another.
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        let mut k = stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut x = seed ^ splitmix64(&mut k);
        let s = [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)];
        Self { s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits (like `torch.rand`'s range).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `lo..=hi` (unbiased, by rejection).
    pub fn uniform_int(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo <= hi);
        let Some(span) = ((hi - lo) as u64).checked_add(1) else {
            return lo.wrapping_add(self.next_u64() as usize);
        };
        let zone = u64::MAX - (u64::MAX - span + 1) % span;
        loop {
            let v = self.next_u64();
            if v <= zone {
                return lo + (v % span) as usize;
            }
        }
    }

    /// Two independent standard normals (Box-Muller; the first uniform is mapped to `(0, 1]` so the
    /// logarithm is finite).
    pub fn normal_pair(&mut self) -> (f64, f64) {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        (r * c, r * s)
    }

    /// One standard normal (the pair's second value is discarded, so the state stays just the
    /// four words; use [`TrainRng::fill_normal`] for bulk noise).
    pub fn normal(&mut self) -> f64 {
        self.normal_pair().0
    }

    /// Fills `out` with standard normals, using both values of every Box-Muller pair.
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (a, b) = self.normal_pair();
            pair[0] = a as f32;
            pair[1] = b as f32;
        }
        if let [last] = chunks.into_remainder() {
            *last = self.normal() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let mut a = TrainRng::new(7);
        let mut b = TrainRng::new(7);
        let mut c = TrainRng::with_stream(7, 1);
        let xa: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        assert_ne!(TrainRng::new(7), TrainRng::new(8));
    }

    #[test]
    fn serialized_state_resumes_exactly() {
        let mut a = TrainRng::new(42);
        for _ in 0..1000 {
            a.next_u64();
        }
        let saved = serde_json::to_string(&a).unwrap();
        let expect: Vec<f64> = (0..100).map(|_| a.normal()).collect();
        let mut b: TrainRng = serde_json::from_str(&saved).unwrap();
        let got: Vec<f64> = (0..100).map(|_| b.normal()).collect();
        assert_eq!(expect, got);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = TrainRng::new(3);
        let n = 400_000;
        let u: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.003, "uniform mean {mean}");
        let mut z = vec![0f32; n];
        r.fill_normal(&mut z);
        let m = z.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let v = z.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.006, "normal mean {m}");
        assert!((v - 1.0).abs() < 0.01, "normal variance {v}");
        let tail = z.iter().filter(|&&x| x > 1.959_964).count() as f64 / n as f64;
        assert!((tail - 0.025).abs() < 0.0015, "P(z > 1.96) = {tail}");
    }

    #[test]
    fn uniform_int_covers_inclusive_range() {
        let mut r = TrainRng::new(11);
        let mut seen = [0usize; 5];
        for _ in 0..10_000 {
            let v = r.uniform_int(3, 7);
            assert!((3..=7).contains(&v));
            seen[v - 3] += 1;
        }
        assert!(seen.iter().all(|&c| c > 1800), "{seen:?}");
        assert_eq!(r.uniform_int(4, 4), 4);
    }
}
