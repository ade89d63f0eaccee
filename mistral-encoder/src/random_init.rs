//! Seeded random weights in place of a checkpoint: the real architecture of a `config.json` without its
//! 48 GB of files, for rehearsing a training job's memory and speed at the real size.
//!
//! The values are drawn on the device by the backend's RNG (seeded once by [`RandomWeights::new`]), so
//! building the 24B model takes seconds on a GPU; they differ between backends, so nothing numeric may
//! depend on them. Scales follow the usual initialisation, which keeps activations finite through 40
//! layers: embeddings N(0, 1), matrices N(0, 1/fan_in), norm scales 1.

use burn::tensor::{DType, Distribution, Tensor, backend::Backend};

use crate::error::Result;
use crate::loader::TensorSource;

/// A [`TensorSource`] drawing every tensor at random (see the module docs).
#[derive(Debug, Clone)]
pub struct RandomWeights;

impl RandomWeights {
    /// Seeds the backend's RNG on `device`; the model built next is the same for the same seed and
    /// backend.
    pub fn new<B: Backend>(seed: u64, device: &B::Device) -> Self {
        B::seed(device, seed);
        RandomWeights
    }
}

impl TensorSource for RandomWeights {
    fn tensor<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
        _why: &str,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        if D == 1 {
            return Ok(Tensor::<B, D>::ones(expected, (device, dtype)));
        }
        let std = if key.ends_with("embed_tokens.weight") { 1.0 } else { 1.0 / (expected[D - 1] as f64).sqrt() };
        Ok(Tensor::<B, D>::random(expected, Distribution::Normal(0.0, std), device).cast(dtype))
    }
}
