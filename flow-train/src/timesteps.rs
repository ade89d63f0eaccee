//! Training timestep sampling: type x bias x denoising range, seeded and resumable.
//!
//! A [`TimestepSampler`] owns its [`Rng`]. Each [`TimestepSampler::sample`] call (one per
//! training step) builds the type's table (see [`TimestepType`]), picks one index per batch item
//! with the [`TimestepBias`] inside `[min_denoising_steps, max_denoising_steps]`, and returns the
//! timesteps with their loss weights. The sampler serializes completely (config and generator
//! state), so a run resumed from a checkpoint draws exactly what the uninterrupted run would have.
//!
//! Semantics follow ai-toolkit's `BaseSDTrainProcess` for flow matching, with one deliberate
//! difference: ai-toolkit's balanced draw uses `torch.randint(min, max)`, whose upper bound is
//! exclusive, so index `max_denoising_steps` (by default 999, timestep 1) can never be drawn while
//! its biased draws do reach it. Here the range is inclusive for every bias.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::timestep_table::{NUM_TRAIN_TIMESTEPS, TimestepType};
use crate::weighting::weighted_loss_table;
use flux2_ops::Rng;

/// Which part of the table to favour (ai-toolkit's `content_or_style`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepBias {
    /// Uniform index.
    #[default]
    Balanced,
    /// Favour high noise (ai-toolkit `content`): index `u^3 * 1000`, mean index ~250. High-noise steps
    /// decide composition and structure, what a subject/content LoRA must learn.
    #[serde(alias = "content")]
    HighNoise,
    /// Favour low noise (ai-toolkit `style`): index `(1 - u^3) * 1000`, mean index ~750. Low-noise
    /// steps refine texture and rendering, where a style lives.
    #[serde(alias = "style")]
    LowNoise,
}

/// Timestep sampling configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimestepConfig {
    /// Table type.
    pub timestep_type: TimestepType,
    /// Index bias.
    #[serde(alias = "content_or_style")]
    pub bias: TimestepBias,
    /// Smallest table index drawn (0 = most noise). Default 0.
    pub min_denoising_steps: usize,
    /// Largest table index drawn; values above 999 are clamped to 999 (as ai-toolkit does). Default 999.
    pub max_denoising_steps: usize,
}

impl Default for TimestepConfig {
    fn default() -> Self {
        Self {
            timestep_type: TimestepType::default(),
            bias: TimestepBias::default(),
            min_denoising_steps: 0,
            max_denoising_steps: NUM_TRAIN_TIMESTEPS - 1,
        }
    }
}

impl TimestepConfig {
    /// The effective inclusive index range, `max` clamped to 999; errors when `min > max`.
    pub fn index_range(&self) -> Result<(usize, usize)> {
        let max = self.max_denoising_steps.min(NUM_TRAIN_TIMESTEPS - 1);
        let min = self.min_denoising_steps;
        if min > max {
            return Err(Error::InvalidDenoisingRange { min, max });
        }
        Ok((min, max))
    }
}

/// One sampled training timestep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainTimestep {
    /// Index in the step's table (0 = most noise).
    pub index: usize,
    /// Timestep on the 0..=1000 scale, as ai-toolkit stores it (f32); the transformer receives
    /// `timestep / 1000`.
    pub timestep: f32,
    /// Multiplier of this sample's loss: the `weighted` curve for [`TimestepType::Weighted`], else 1.
    pub loss_weight: f32,
}

impl TrainTimestep {
    /// Noise level `sigma = timestep / 1000` (f32, like ai-toolkit's `timesteps / 1000`): the noisy
    /// latent is `(1 - sigma) x0 + sigma eps`, and the transformer's timestep input.
    pub fn sigma(&self) -> f32 {
        self.timestep / 1000.0
    }
}

/// The timesteps of one batch, one per item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimestepBatch {
    /// Per-item timesteps, in batch order.
    pub items: Vec<TrainTimestep>,
}

impl TimestepBatch {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Per-item `sigma` (noise level and transformer timestep input).
    pub fn sigmas(&self) -> Vec<f32> {
        self.items.iter().map(TrainTimestep::sigma).collect()
    }
    /// Per-item timesteps on the 0..=1000 scale.
    pub fn timesteps(&self) -> Vec<f32> {
        self.items.iter().map(|t| t.timestep).collect()
    }
    /// Per-item loss weights (for [`crate::flow_matching_loss`]).
    pub fn loss_weights(&self) -> Vec<f32> {
        self.items.iter().map(|t| t.loss_weight).collect()
    }
}

/// Seeded, resumable training timestep sampler. Serializes to `{config, rng}`; deserializing
/// re-validates the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SamplerState")]
pub struct TimestepSampler {
    config: TimestepConfig,
    rng: Rng,
}

/// Serialized form of [`TimestepSampler`] (validated on the way in).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplerState {
    config: TimestepConfig,
    rng: Rng,
}

impl TryFrom<SamplerState> for TimestepSampler {
    type Error = Error;
    fn try_from(s: SamplerState) -> Result<Self> {
        Self::with_rng(s.config, s.rng)
    }
}

impl TimestepSampler {
    /// Sampler drawing from `Rng::new(seed)`.
    pub fn new(config: TimestepConfig, seed: u64) -> Result<Self> {
        Self::with_rng(config, Rng::new(seed))
    }

    /// Sampler drawing from a generator the caller prepared (e.g. a dedicated stream of the run seed).
    pub fn with_rng(config: TimestepConfig, rng: Rng) -> Result<Self> {
        config.index_range()?;
        Ok(Self { config, rng })
    }

    /// The configuration.
    pub fn config(&self) -> &TimestepConfig {
        &self.config
    }

    /// The generator's current state (what a checkpoint must keep).
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Draws the timesteps of one training step for `batch_size` items whose latents have
    /// `image_seq_len` image tokens each (used by [`TimestepType::Shift`] only).
    ///
    /// Randomness is consumed in a fixed order: the table (random types only), then one index per
    /// item in batch order.
    pub fn sample(&mut self, batch_size: usize, image_seq_len: usize) -> Result<TimestepBatch> {
        let (min, max) = self.config.index_range()?;
        let kind = self.config.timestep_type;
        let table = kind.table(image_seq_len, &mut self.rng)?;
        let weights = kind.is_weighted().then(weighted_loss_table);
        let items = (0..batch_size)
            .map(|_| {
                let index = self.draw_index(min, max);
                TrainTimestep { index, timestep: table[index], loss_weight: weights.map_or(1.0, |w| w[index]) }
            })
            .collect();
        Ok(TimestepBatch { items })
    }

    /// One table index in `min..=max` according to the bias.
    fn draw_index(&mut self, min: usize, max: usize) -> usize {
        let n = NUM_TRAIN_TIMESTEPS as f64;
        let cube_position = |u: f64, bias: TimestepBias| match bias {
            TimestepBias::HighNoise => u * u * u * n,
            _ => (1.0 - u * u * u) * n,
        };
        match self.config.bias {
            TimestepBias::Balanced => self.rng.uniform_int(min, max),
            bias => {
                let x = cube_position(self.rng.uniform(), bias);
                // ai-toolkit's value_map from [0, 999] onto [min, max], then truncation and clamp.
                let mapped = x * (max - min) as f64 / (n - 1.0) + min as f64;
                (mapped.trunc() as usize).clamp(min, max)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{f64s, reference};

    fn config(kind: TimestepType, bias: TimestepBias, min: usize, max: usize) -> TimestepConfig {
        TimestepConfig { timestep_type: kind, bias, min_denoising_steps: min, max_denoising_steps: max }
    }

    /// `torch.quantile`'s default (linear interpolation) on sorted data.
    fn quantile(sorted: &[f64], q: f64) -> f64 {
        let pos = q * (sorted.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(sorted.len() - 1);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    }

    /// 200,000 sigmas from 20,000 steps of batch 10.
    fn draw_sigmas(cfg: TimestepConfig, seq_len: usize, seed: u64) -> Vec<f64> {
        let mut s = TimestepSampler::new(cfg, seed).unwrap();
        let mut out = Vec::with_capacity(200_000);
        for _ in 0..20_000 {
            out.extend(s.sample(10, seq_len).unwrap().items.iter().map(|t| t.sigma() as f64));
        }
        out
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn statistics_match_ai_toolkit_monte_carlo() {
        let cases = reference()["sampler_stats"].as_array().unwrap();
        assert!(cases.len() >= 15);
        for (k, case) in cases.iter().enumerate() {
            let kind: TimestepType = serde_json::from_value(case["timestep_type"].clone()).unwrap();
            let bias: TimestepBias = serde_json::from_value(case["bias"].clone()).unwrap();
            let min = case["min_denoising_steps"].as_u64().unwrap() as usize;
            let max = case["max_denoising_steps"].as_u64().unwrap() as usize;
            let seq = case["image_seq_len"].as_u64().unwrap() as usize;
            let mut sig = draw_sigmas(config(kind, bias, min, max), seq, 1000 + k as u64);
            let m = mean(&sig);
            let expect_mean = case["mean"].as_f64().unwrap();
            let label = format!("{kind:?}/{bias:?} [{min},{max}] S={seq}");
            // Monte Carlo error of both sides is ~1e-3; ai-toolkit's exclusive balanced bound moves
            // the mean by 5e-4.
            assert!((m - expect_mean).abs() < 0.005, "{label}: mean {m} vs ai-toolkit {expect_mean}");
            sig.sort_by(f64::total_cmp);
            for (q, e) in f64s(&case["quantile_levels"]).iter().zip(f64s(&case["quantiles"])) {
                let got = quantile(&sig, *q);
                assert!((got - e).abs() < 0.012, "{label}: q{q} {got} vs ai-toolkit {e}");
            }
            let lo = 1.0 - max as f64 / 1000.0 - 0.001;
            let hi = 1.0 - min as f64 / 1000.0 + 0.001;
            if kind == TimestepType::Linear || kind == TimestepType::Weighted {
                assert!(sig[0] >= lo && sig[sig.len() - 1] <= hi, "{label}: outside the index range");
            }
        }
    }

    #[test]
    fn bias_direction_for_every_type() {
        for kind in [
            TimestepType::Linear,
            TimestepType::Sigmoid,
            TimestepType::Weighted,
            TimestepType::Shift,
            TimestepType::LognormBlend,
        ] {
            let m = |bias| {
                let mut s = TimestepSampler::new(config(kind, bias, 0, 999), 77).unwrap();
                let v: Vec<f64> =
                    (0..2000).flat_map(|_| s.sample(5, 4096).unwrap().sigmas()).map(|x| x as f64).collect();
                mean(&v)
            };
            let (high, bal, low) = (m(TimestepBias::HighNoise), m(TimestepBias::Balanced), m(TimestepBias::LowNoise));
            assert!(high > bal + 0.1 && bal > low + 0.1, "{kind:?}: high {high} balanced {bal} low {low}");
        }
    }

    #[test]
    fn linear_balanced_is_uniform_over_inclusive_range() {
        let sig = draw_sigmas(config(TimestepType::Linear, TimestepBias::Balanced, 0, 999), 1, 5);
        // Uniform on {0.001, ..., 1.000}: mean 0.5005, every value reachable (including t = 1).
        assert!((mean(&sig) - 0.5005).abs() < 0.002);
        assert!(sig.iter().any(|&s| s == 0.001f32 as f64) && sig.iter().any(|&s| s == 1.0));
        let below = sig.iter().filter(|&&s| s <= 0.25).count() as f64 / sig.len() as f64;
        assert!((below - 0.25).abs() < 0.004, "P(sigma <= 0.25) = {below}");
    }

    #[test]
    fn cubic_laws_of_the_biases() {
        // high noise: index = floor(1000 u^3), so P(index < k) = (k/1000)^(1/3);
        // low noise: index = floor(1000 (1 - u^3)) clamped to 999, so P(index >= 1000 - k) = (k/1000)^(1/3).
        for bias in [TimestepBias::HighNoise, TimestepBias::LowNoise] {
            let mut s = TimestepSampler::new(config(TimestepType::Linear, bias, 0, 999), 6).unwrap();
            let idx: Vec<usize> = (0..20_000).flat_map(|_| s.sample(10, 1).unwrap().items).map(|t| t.index).collect();
            for k in [1usize, 8, 125, 512] {
                let hits = match bias {
                    TimestepBias::HighNoise => idx.iter().filter(|&&i| i < k).count(),
                    _ => idx.iter().filter(|&&i| i >= 1000 - k).count(),
                };
                let p = hits as f64 / idx.len() as f64;
                let e = (k as f64 / 1000.0).cbrt();
                assert!((p - e).abs() < 0.004, "{bias:?}: P = {p} for k = {k}, expected {e}");
            }
        }
    }

    #[test]
    fn denoising_range_is_respected_for_every_bias() {
        for bias in [TimestepBias::Balanced, TimestepBias::HighNoise, TimestepBias::LowNoise] {
            for kind in [TimestepType::Sigmoid, TimestepType::Shift, TimestepType::LognormBlend] {
                let mut s = TimestepSampler::new(config(kind, bias, 300, 450), 3).unwrap();
                for _ in 0..500 {
                    for t in s.sample(4, 1024).unwrap().items {
                        assert!((300..=450).contains(&t.index), "{kind:?}/{bias:?} index {}", t.index);
                    }
                }
            }
            let mut s = TimestepSampler::new(config(TimestepType::Linear, bias, 400, 400), 3).unwrap();
            assert!(s.sample(64, 1).unwrap().items.iter().all(|t| t.index == 400 && t.timestep == 600.0));
        }
    }

    #[test]
    fn weighted_carries_the_curve_and_others_weight_one() {
        let mut s = TimestepSampler::new(config(TimestepType::Weighted, TimestepBias::Balanced, 0, 999), 1).unwrap();
        let b = s.sample(256, 1).unwrap();
        for t in &b.items {
            assert_eq!(t.loss_weight, weighted_loss_table()[t.index]);
            assert_eq!(t.timestep, (1000 - t.index) as f32);
        }
        // Mean weight over uniform timesteps is ~1.
        let mut s = TimestepSampler::new(config(TimestepType::Weighted, TimestepBias::Balanced, 0, 999), 2).unwrap();
        let w: Vec<f64> = (0..2000).flat_map(|_| s.sample(50, 1).unwrap().loss_weights()).map(|x| x as f64).collect();
        assert!((mean(&w) - 1.0).abs() < 0.005);
        let mut s = TimestepSampler::new(config(TimestepType::Shift, TimestepBias::Balanced, 0, 999), 1).unwrap();
        assert!(s.sample(64, 4096).unwrap().loss_weights().iter().all(|&w| w == 1.0));
    }

    #[test]
    fn reproducible_from_seed_and_resumable_from_state() {
        let cfg = config(TimestepType::Sigmoid, TimestepBias::HighNoise, 10, 990);
        let mut a = TimestepSampler::new(cfg.clone(), 1234).unwrap();
        let mut b = TimestepSampler::new(cfg.clone(), 1234).unwrap();
        for _ in 0..10 {
            assert_eq!(a.sample(3, 4096).unwrap(), b.sample(3, 4096).unwrap());
        }
        let saved = serde_json::to_string(&a).unwrap();
        let uninterrupted: Vec<TimestepBatch> = (0..20).map(|_| a.sample(3, 4096).unwrap()).collect();
        let mut resumed: TimestepSampler = serde_json::from_str(&saved).unwrap();
        let after: Vec<TimestepBatch> = (0..20).map(|_| resumed.sample(3, 4096).unwrap()).collect();
        assert_eq!(uninterrupted, after);
        let first = |seed| TimestepSampler::new(cfg.clone(), seed).unwrap().sample(3, 4096).unwrap();
        assert_ne!(first(1234), first(1235));
    }

    #[test]
    fn config_validation_and_serde() {
        let bad = config(TimestepType::Linear, TimestepBias::Balanced, 600, 500);
        assert_eq!(TimestepSampler::new(bad, 0).unwrap_err(), Error::InvalidDenoisingRange { min: 600, max: 500 });
        let clamped = config(TimestepType::Linear, TimestepBias::Balanced, 0, 1000);
        assert_eq!(clamped.index_range().unwrap(), (0, 999));
        let cfg: TimestepConfig = serde_json::from_str(
            r#"{"timestep_type":"lognorm_blend","content_or_style":"style","max_denoising_steps":800}"#,
        )
        .unwrap();
        assert_eq!(cfg, config(TimestepType::LognormBlend, TimestepBias::LowNoise, 0, 800));
        let cfg: TimestepConfig = serde_json::from_str(r#"{"bias":"high_noise"}"#).unwrap();
        assert_eq!(cfg.bias, TimestepBias::HighNoise);
        assert!(serde_json::from_str::<TimestepConfig>(r#"{"timestep_typo":"linear"}"#).is_err());
        let bad_state = r#"{"config":{"min_denoising_steps":900,"max_denoising_steps":100},"rng":{"s":[1,2,3,4]}}"#;
        assert!(serde_json::from_str::<TimestepSampler>(bad_state).is_err());
    }

    #[test]
    fn shift_follows_resolution() {
        let m = |seq| {
            let v = draw_sigmas(config(TimestepType::Shift, TimestepBias::Balanced, 0, 999), seq, 8);
            mean(&v)
        };
        assert!(m(4096) > m(1024) && m(1024) > m(256));
    }
}
