//! Deterministic random parameters (for examples, benchmarks and tests without a checkpoint).
//!
//! Host-side draws of the workspace's one generator, so the same seed gives the same weights on every backend.
//! Conv/Linear weights ~ N(0, 1/fan_in) (keeps activations O(1) through the ResNets), biases small,
//! GroupNorm affine near (1, 0), latent statistics mean 0 / var 1 (identity normalization up to eps).

use burn::tensor::{DType, TensorData};
use flux2_ops::Rng;
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::params::{ParamKind, RawSource};

/// A [`RawSource`] of seeded random parameters, drawn from [`flux2_ops::Rng`] in parameter order.
#[derive(Debug, Clone)]
pub struct RandomSource {
    rng: Rng,
}

impl RandomSource {
    pub fn new(seed: u64) -> Self {
        Self { rng: Rng::new(seed) }
    }

    fn normal(&mut self) -> f64 {
        self.rng.normal()
    }
}

impl RawSource for RandomSource {
    fn fetch(&mut self, _name: &str, shape: &[usize], kind: ParamKind, dtype: DType) -> Result<TensorData> {
        let n: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let values: Vec<f32> = (0..n)
            .map(|_| match kind {
                ParamKind::ConvWeight | ParamKind::LinearWeight => self.normal() / (fan_in as f64).sqrt(),
                ParamKind::Bias => 0.02 * self.normal(),
                ParamKind::NormWeight => 1.0 + 0.05 * self.normal(),
                ParamKind::NormBias => 0.05 * self.normal(),
                ParamKind::BnMean => 0.0,
                ParamKind::BnVar => 1.0,
            } as f32)
            .collect();
        let shape = shape.to_vec();
        Ok(match dtype {
            DType::F32 => TensorData::new(values, shape),
            DType::BF16 => TensorData::new(values.into_iter().map(bf16::from_f32).collect::<Vec<_>>(), shape),
            DType::F16 => TensorData::new(values.into_iter().map(f16::from_f32).collect::<Vec<_>>(), shape),
            other => return Err(Error::ModelDtype(other)),
        })
    }
}

impl<B: burn::tensor::backend::Backend> crate::vae::Vae<B> {
    /// A VAE with seeded random weights (same seed, same weights on every backend).
    pub fn random(
        config: crate::config::VaeConfig,
        device: &B::Device,
        dtype: DType,
        parts: crate::vae::Parts,
        seed: u64,
    ) -> Result<Self> {
        Self::from_source(config, &mut RandomSource::new(seed), device, dtype, parts)
    }
}
