//! GroupNorm with affine parameters, statistics and affine computed in f32 whatever the model dtype.
//!
//! Matches `torch.nn.GroupNorm` (biased variance, eps inside the square root). The input is centred in
//! place when the backend allows it, so the peak is about two activations of f32 (one for a f32 model).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::error::Result;
use crate::params::{ParamKind, Params};

/// Epsilon of every GroupNorm in this autoencoder (fixed by the architecture).
pub(crate) const GROUP_NORM_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
pub(crate) struct GroupNorm<B: Backend> {
    /// [1, C, 1] f32
    weight: Tensor<B, 3>,
    /// [1, C, 1] f32
    bias: Tensor<B, 3>,
    groups: usize,
    eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    pub(crate) fn load(p: &mut Params<'_, B>, name: &str, channels: usize, groups: usize) -> Result<Self> {
        let weight = p.get_f32(&format!("{name}.weight"), [channels], ParamKind::NormWeight)?;
        let bias = p.get_f32(&format!("{name}.bias"), [channels], ParamKind::NormBias)?;
        Ok(Self {
            weight: weight.reshape([1, channels, 1]),
            bias: bias.reshape([1, channels, 1]),
            groups,
            eps: GROUP_NORM_EPS,
        })
    }

    /// Normalizes `x` [B, C, H, W]; the result has the input's dtype.
    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let dtype = x.dtype();
        let [b, c, h, w] = x.dims();
        let x = if dtype == DType::F32 { x } else { x.cast(DType::F32) };
        let x = x.reshape([b, self.groups, (c / self.groups) * h * w]);
        let mean = x.clone().mean_dim(2);
        let centred = x - mean;
        let var = centred.clone().square().mean_dim(2);
        let inv_std = var.add_scalar(self.eps).sqrt().recip();
        let normed = (centred * inv_std).reshape([b, c, h * w]);
        let out = (normed * self.weight.clone() + self.bias.clone()).reshape([b, c, h, w]);
        if dtype == DType::F32 { out } else { out.cast(dtype) }
    }

    /// `silu(group_norm(x))`, the pattern used everywhere in the VAE.
    pub(crate) fn forward_silu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        burn::tensor::activation::silu(self.forward(x))
    }
}
