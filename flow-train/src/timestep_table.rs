//! Training timestep types: each builds ai-toolkit's 1000-entry table of candidate timesteps.
//!
//! Training draws a timestep in two stages, exactly as ai-toolkit does for flow-matching models:
//! first a *table* of 1000 timesteps on the 0..=1000 scale (`timestep = 1000 * sigma`), sorted from
//! most noise (index 0) to least (index 999), built by the [`TimestepType`]; then, per batch item,
//! an *index* into that table chosen by the bias (see [`crate::TimestepBias`]). The random types
//! (`sigmoid`, `lognorm_blend`) draw a fresh table for every batch, so a balanced draw from one is a
//! draw from the type's distribution, and a biased draw picks from its upper or lower order statistics.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schedule::{numpy_linspace, time_shift_exponential};
use flux2_ops::Rng;

/// Length of every timestep table (and of the weighting table): the model's training timesteps.
pub const NUM_TRAIN_TIMESTEPS: usize = 1000;

/// Token count at which the training shift is [`SHIFT_BASE_MU`] (ai-toolkit FLUX.2 scheduler config).
pub const SHIFT_BASE_SEQ_LEN: f64 = 256.0;
/// Token count at which the training shift is [`SHIFT_MAX_MU`].
pub const SHIFT_MAX_SEQ_LEN: f64 = 4096.0;
/// Shift `mu` at [`SHIFT_BASE_SEQ_LEN`] tokens.
pub const SHIFT_BASE_MU: f64 = 0.5;
/// Shift `mu` at [`SHIFT_MAX_SEQ_LEN`] tokens (ai-toolkit's FLUX.2 config says 1.15; its
/// `calculate_shift` default of 1.16 is not used for FLUX.2).
pub const SHIFT_MAX_MU: f64 = 1.15;

/// Log-normal `sigma` parameter of `lognorm_blend`'s log-normal part.
pub const LOGNORM_BLEND_SCALE: f64 = 0.333;
/// Fraction of `lognorm_blend`'s table drawn from the log-normal (the rest is linear).
pub const LOGNORM_BLEND_ALPHA: f64 = 0.75;

/// How the table of candidate training timesteps is built (ai-toolkit's `timestep_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepType {
    /// Uniform: the integer timesteps 1000, 999, ..., 1. No loss weighting.
    Linear,
    /// `t = 1 - sigmoid(z)`, `z ~ N(0, 1)`: concentrated around 0.5 (ai-toolkit's default).
    #[default]
    Sigmoid,
    /// The `linear` table plus a per-sample loss weight from [`crate::weighted_loss_weight`]
    /// (mean 1, peak near t=876). No resolution shift.
    Weighted,
    /// `linspace(1000, 1, 1000)` pushed towards high noise by the exponential time shift, with `mu`
    /// linear in the token count ([`training_shift_mu`]): matches inference's dynamic shifting in spirit.
    Shift,
    /// 750 draws `x ~ LogNormal(0, 0.333)` mapped to `(1 - x / max(x)) * 1000`, plus 250 linear
    /// timesteps, truncated to integers. Favours mid-to-high noise; note its table always contains
    /// timestep 0 (the largest draw), i.e. a clean input, as in ai-toolkit.
    LognormBlend,
}

/// ai-toolkit's training shift: `mu` linear in the token count, 0.5 at 256 tokens and 1.15 at 4096
/// (extrapolated beyond). Differs from inference's [`crate::compute_empirical_mu`] on purpose: that
/// is what ai-toolkit trains with.
pub fn training_shift_mu(image_seq_len: usize) -> f64 {
    let m = (SHIFT_MAX_MU - SHIFT_BASE_MU) / (SHIFT_MAX_SEQ_LEN - SHIFT_BASE_SEQ_LEN);
    let b = SHIFT_BASE_MU - m * SHIFT_BASE_SEQ_LEN;
    image_seq_len as f64 * m + b
}

impl TimestepType {
    /// Whether the table is random (redrawn for each batch) rather than fixed.
    pub fn is_random(self) -> bool {
        matches!(self, Self::Sigmoid | Self::LognormBlend)
    }

    /// Whether samples carry a non-unit loss weight.
    pub fn is_weighted(self) -> bool {
        matches!(self, Self::Weighted)
    }

    /// The 1000 candidate timesteps on the 0..=1000 scale, descending (index 0 = most noise).
    /// `image_seq_len` (noisy image tokens of the batch) matters for [`TimestepType::Shift`] only.
    /// Random types consume `rng`; fixed types leave it untouched.
    pub fn table(self, image_seq_len: usize, rng: &mut Rng) -> Result<Vec<f32>> {
        let n = NUM_TRAIN_TIMESTEPS;
        let mut table: Vec<f32> = match self {
            Self::Linear | Self::Weighted => (0..n).map(|i| (n - i) as f32).collect(),
            Self::Sigmoid => (0..n)
                .map(|_| {
                    let sig = 1.0 / (1.0 + (-rng.normal()).exp());
                    ((1.0 - sig) * 1000.0) as f32
                })
                .collect(),
            Self::Shift => {
                if image_seq_len == 0 {
                    return Err(Error::InvalidImageSeqLen { image_seq_len });
                }
                let mu = training_shift_mu(image_seq_len);
                // ai-toolkit spans the scheduler's [sigma_max, sigma_min] = [1, 0.001 as f32] in f64,
                // shifts in f64, then stores float32 sigmas and float32 `sigma * 1000`.
                let stop = (0.001f32 as f64) * 1000.0;
                numpy_linspace(1000.0, stop, n)
                    .into_iter()
                    .map(|t| time_shift_exponential(mu, t / 1000.0) as f32 * 1000.0f32)
                    .collect()
            }
            Self::LognormBlend => {
                let n_log = (n as f64 * LOGNORM_BLEND_ALPHA) as usize;
                let n_lin = (n as f64 * (1.0 - LOGNORM_BLEND_ALPHA)) as usize;
                let draws: Vec<f64> = (0..n_log).map(|_| (LOGNORM_BLEND_SCALE * rng.normal()).exp()).collect();
                let max = draws.iter().copied().fold(f64::MIN, f64::max);
                let mut t: Vec<f64> = draws.iter().map(|x| (1.0 - x / max) * 1000.0).collect();
                t.extend(numpy_linspace(1000.0, 1.0, n_lin));
                // ai-toolkit casts to int after sorting: truncation towards zero.
                t.into_iter().map(|x| x.trunc() as f32).collect()
            }
        };
        if self.is_random() {
            table.sort_by(|a, b| b.total_cmp(a));
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{f64s, reference};

    #[test]
    fn shift_table_matches_ai_toolkit() {
        let mut rng = Rng::new(0);
        for case in reference()["train_shift"].as_array().unwrap() {
            let s = case["image_seq_len"].as_u64().unwrap() as usize;
            let mu = case["mu"].as_f64().unwrap();
            assert!((training_shift_mu(s) - mu).abs() < 1e-14, "mu at S={s}");
            let table = TimestepType::Shift.table(s, &mut rng).unwrap();
            let idx = f64s(&case["indices"]);
            let expect = f64s(&case["timesteps"]);
            for (i, e) in idx.iter().zip(expect) {
                assert_eq!(table[*i as usize], e as f32, "S={s} index {i}");
            }
            let mean = table.iter().map(|&t| t as f64).sum::<f64>() / 1000.0 / 1000.0;
            assert!((mean - case["mean_sigma"].as_f64().unwrap()).abs() < 1e-9);
        }
        assert_eq!(rng, Rng::new(0), "fixed tables must not consume randomness");
    }

    #[test]
    fn shift_mu_anchors() {
        assert!((training_shift_mu(256) - 0.5).abs() < 1e-12);
        assert!((training_shift_mu(4096) - 1.15).abs() < 1e-12);
        assert!(training_shift_mu(1024) > 0.5 && training_shift_mu(1024) < 1.15);
    }

    #[test]
    fn linear_table_is_1000_down_to_1() {
        let mut rng = Rng::new(0);
        let t = TimestepType::Linear.table(0, &mut rng).unwrap();
        assert_eq!(t.len(), 1000);
        assert_eq!((t[0], t[1], t[999]), (1000.0, 999.0, 1.0));
        assert_eq!(TimestepType::Weighted.table(0, &mut rng).unwrap(), t);
    }

    #[test]
    fn lognorm_blend_table_structure() {
        let mut rng = Rng::new(5);
        let t = TimestepType::LognormBlend.table(0, &mut rng).unwrap();
        assert_eq!(t.len(), 1000);
        assert!(t.windows(2).all(|w| w[0] >= w[1]));
        assert!(t.iter().all(|&x| x == x.trunc() && (0.0..=1000.0).contains(&x)));
        assert_eq!(t[999], 0.0, "the largest log-normal draw maps to timestep 0");
        // The linear quarter is exactly torch.linspace(1000, 1, 250).int().
        let lin: Vec<f64> = numpy_linspace(1000.0, 1.0, 250).into_iter().map(f64::trunc).collect();
        assert_eq!(lin, f64s(&reference()["lognorm_blend_linear_part"]));
    }

    #[test]
    fn random_tables_are_sorted_and_in_range() {
        let mut rng = Rng::new(9);
        let t = TimestepType::Sigmoid.table(0, &mut rng).unwrap();
        assert!(t.windows(2).all(|w| w[0] >= w[1]));
        assert!(t.iter().all(|&x| (0.0..=1000.0).contains(&x)));
        assert_ne!(rng, Rng::new(9));
    }

    #[test]
    fn shift_needs_tokens() {
        let mut rng = Rng::new(0);
        assert_eq!(TimestepType::Shift.table(0, &mut rng), Err(Error::InvalidImageSeqLen { image_seq_len: 0 }));
    }

    #[test]
    fn serde_names() {
        let names: Vec<String> = [
            TimestepType::Linear,
            TimestepType::Sigmoid,
            TimestepType::Weighted,
            TimestepType::Shift,
            TimestepType::LognormBlend,
        ]
        .iter()
        .map(|t| serde_json::to_string(t).unwrap())
        .collect();
        assert_eq!(names, ["\"linear\"", "\"sigmoid\"", "\"weighted\"", "\"shift\"", "\"lognorm_blend\""]);
    }
}
