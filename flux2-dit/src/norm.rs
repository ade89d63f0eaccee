//! The two normalizations of the transformer, both evaluated in f32 whatever the model dtype
//! (PyTorch's LayerNorm and the reference RMSNorm upcast internally; matching that keeps bf16 close).

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

/// Affine-free LayerNorm over the last dimension (every LayerNorm in FLUX.2 has no weight or bias), in f32
/// and rounded back to the input's dtype.
pub fn layer_norm<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let dtype = x.dtype();
    flux2_ops::fused_norm::layer_norm_f32(x, eps).cast(dtype)
}

/// RMSNorm with a learned scale, applied per attention head to queries and keys.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// [head_dim]. BFL calls it `scale`, diffusers `weight`.
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(dim: usize, eps: f64, dtype: DType, device: &B::Device) -> Self {
        Self { weight: Param::from_tensor(Tensor::ones([dim], (device, dtype))), eps }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let rms = (x.clone().square().mean_dim(D - 1) + self.eps).sqrt();
        let w = self.weight.val().cast(DType::F32);
        let mut shape = [1usize; D];
        shape[D - 1] = w.shape().dims::<1>()[0];
        ((x / rms) * w.reshape(shape)).cast(dtype)
    }
}
