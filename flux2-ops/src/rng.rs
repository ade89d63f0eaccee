//! The workspace's one seeded random number generator: SplitMix64 as a counter-based generator.
//!
//! Why our own, and why this one:
//! - A run must be reproducible from its seed and resumable bit for bit: the generator's whole state is
//!   one `u64` that serialises with the checkpoint, and its algorithm lives here, so no dependency
//!   upgrade can change a sequence (`rand` has changed its distributions between major versions).
//! - Counter-based: the state after `i` draws is `start + i * GAMMA` (a Weyl sequence through the
//!   SplitMix64 finaliser), so draw `i` can be computed directly. That makes [`Rng::fill_normal`]
//!   parallel with exactly the sequential results (a full-width FLUX.2 has 32 billion weights to draw)
//!   and lets a stream be skipped ahead without drawing.
//! - Streams: [`Rng::derive`] hashes (seed, purpose, indices) into an independent start, so epoch 7's
//!   shuffle does not depend on how many numbers epochs 0..6 consumed, and adding draws to the noise
//!   stream never shifts the timestep stream.
//!
//! SplitMix64 passes BigCrush; it is what the xoshiro authors recommend for seeding, and plenty for
//! noise, timesteps, shuffles and weight initialisation.

use serde::{Deserialize, Serialize};

/// SplitMix64 generator. `Serialize`/`Deserialize` capture the full state, so save -> load -> continue
/// gives exactly the numbers an uninterrupted run would have drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: u64,
}

/// The Weyl increment (2^64 / golden ratio).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijection of `u64` with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal from two draws (Box-Muller, cosine branch). The first uniform is centred in its
/// bin, so it is never 0 and the logarithm stays finite.
fn box_muller(a: u64, b: u64) -> f64 {
    let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Rng {
    /// A generator from a plain seed.
    pub fn new(seed: u64) -> Self {
        Rng { state: mix(seed ^ GAMMA) }
    }

    /// An independent stream for `purpose` and `parts` (e.g. `("epoch", [epoch, dataset, bucket])`).
    pub fn derive(seed: u64, purpose: &str, parts: &[u64]) -> Self {
        let mut h = mix(seed ^ GAMMA);
        for b in purpose.bytes() {
            h = mix(h ^ u64::from(b));
        }
        for p in parts {
            h = mix(h.wrapping_add(GAMMA) ^ *p);
        }
        Rng { state: h }
    }

    /// Stream number `stream` of `seed`: `derive(seed, "stream", [stream])`.
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        Self::derive(seed, "stream", &[stream])
    }

    /// The draw `i` positions ahead (1 = what [`Rng::next_u64`] returns next), without advancing.
    fn peek(&self, i: u64) -> u64 {
        mix(self.state.wrapping_add(GAMMA.wrapping_mul(i)))
    }

    /// Advances the stream by `n` draws without computing them.
    pub fn skip(&mut self, n: u64) {
        self.state = self.state.wrapping_add(GAMMA.wrapping_mul(n));
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits (like `torch.rand`'s range).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias (rejection).
    pub fn below(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Uniform integer in `lo..=hi` (`lo <= hi`).
    pub fn uniform_int(&mut self, lo: usize, hi: usize) -> usize {
        match ((hi.saturating_sub(lo)) as u64).checked_add(1) {
            Some(span) => lo + self.below(span) as usize,
            None => self.next_u64() as usize,
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// One standard normal (two draws).
    pub fn normal(&mut self) -> f64 {
        let a = self.next_u64();
        box_muller(a, self.next_u64())
    }

    /// Fills `out` with standard normals: the values `out.len()` calls of [`Rng::normal`] give, computed
    /// in parallel, and the generator left where those calls leave it.
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        use rayon::prelude::*;
        let start = self.clone();
        out.par_iter_mut().enumerate().for_each(|(i, v)| {
            let i = i as u64;
            *v = box_muller(start.peek(2 * i + 1), start.peek(2 * i + 2)) as f32;
        });
        self.skip(2 * out.len() as u64);
    }

    /// `n` standard normals times `std`, each passed through `convert` (e.g. rounding to bf16), in
    /// parallel; equal to [`Rng::fill_normal`] followed by the conversion.
    pub fn normals<T: Send>(&mut self, n: usize, std: f32, convert: impl Fn(f32) -> T + Sync) -> Vec<T> {
        use rayon::prelude::*;
        let start = self.clone();
        self.skip(2 * n as u64);
        (0..n as u64)
            .into_par_iter()
            .map(|i| convert(box_muller(start.peek(2 * i + 1), start.peek(2 * i + 2)) as f32 * std))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let draw = |mut r: Rng| (0..8).map(|_| r.next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(Rng::new(7)), draw(Rng::new(7)));
        assert_ne!(draw(Rng::new(7)), draw(Rng::with_stream(7, 1)));
        assert_ne!(draw(Rng::with_stream(7, 1)), draw(Rng::with_stream(7, 2)));
        assert_ne!(draw(Rng::derive(7, "a", &[1])), draw(Rng::derive(7, "b", &[1])));
    }

    #[test]
    fn serialized_state_resumes_exactly() {
        let mut a = Rng::new(42);
        a.skip(1000);
        let saved = serde_json::to_string(&a).expect("serialises");
        let expect: Vec<f64> = (0..100).map(|_| a.normal()).collect();
        let mut b: Rng = serde_json::from_str(&saved).expect("deserialises");
        assert_eq!(expect, (0..100).map(|_| b.normal()).collect::<Vec<_>>());
    }

    #[test]
    fn parallel_fills_equal_sequential_draws() {
        let mut fast = Rng::new(3);
        let mut slow = Rng::new(3);
        let mut out = vec![0f32; 1001];
        fast.fill_normal(&mut out);
        let want: Vec<f32> = (0..1001).map(|_| slow.normal() as f32).collect();
        assert_eq!(out, want);
        let scaled = fast.normals(17, 0.5, |x| x);
        let want: Vec<f32> = (0..17).map(|_| slow.normal() as f32 * 0.5).collect();
        assert_eq!(scaled, want);
        assert_eq!(fast.next_u64(), slow.next_u64());
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut r = Rng::new(3);
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
    fn integers_cover_their_ranges() {
        let mut r = Rng::new(11);
        let mut seen = [0usize; 5];
        for _ in 0..10_000 {
            let v = r.uniform_int(3, 7);
            assert!((3..=7).contains(&v));
            seen[v - 3] += 1;
        }
        assert!(seen.iter().all(|&c| c > 1800), "{seen:?}");
        assert_eq!(r.uniform_int(4, 4), 4);
        let mut items: Vec<u32> = (0..50).collect();
        r.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
