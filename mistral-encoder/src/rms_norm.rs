//! Mistral's RMSNorm: `weight * (x / sqrt(mean(x^2) + eps))`.
//!
//! Like transformers' `MistralRMSNorm`, the statistics and the division run in f32 whatever the model
//! dtype, the result is cast back to the input dtype, and only then multiplied by the weight (in the
//! model dtype). Doing the multiply in f32 instead would change bf16 results by one rounding.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// [hidden_size].
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(weight: Tensor<B, 1>, eps: f64) -> Self {
        Self { weight: Param::from_tensor(weight), eps }
    }

    /// Normalizes [B, L, H] over H.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let variance = x.clone().square().mean_dim(2);
        let normed = (x * (variance + self.eps).sqrt().recip()).cast(dtype);
        let h = self.weight.dims()[0];
        normed * self.weight.val().reshape([1, 1, h])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    type B = burn::backend::Flex;

    #[test]
    fn normalizes_and_scales() {
        let device = Default::default();
        let norm = RmsNorm::<B>::new(Tensor::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &device), 0.0);
        let x = Tensor::<B, 3>::from_data(TensorData::new(vec![3.0f32, 4.0], [1, 1, 2]), &device);
        let y = norm.forward(x).into_data().to_vec::<f32>().unwrap();
        let rms = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / rms).abs() < 1e-6 && (y[1] - 8.0 / rms).abs() < 1e-6, "{y:?}");
    }
}
