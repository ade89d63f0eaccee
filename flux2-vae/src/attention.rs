//! Mid-block self-attention: single head over all H*W positions, GroupNorm first, residual added.
//!
//! q/k/v/out are Linear layers with bias (diffusers `to_q`, `to_k`, `to_v`, `to_out.0`). Scores and
//! softmax are computed in f32 in chunks of query rows, so memory stays bounded for large images
//! (chunking rows of a row-wise softmax is exact).

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use flux2_ops::matmul::matmul;

use crate::error::Result;
use crate::group_norm::GroupNorm;
use crate::params::{ParamKind, Params};

/// Largest score block materialized at once (elements per batch item): 16M f32 = 64 MiB.
const MAX_SCORE_ELEMS: usize = 16 << 20;

#[derive(Module, Debug)]
struct Projection<B: Backend> {
    /// [out, in] (PyTorch's layout; the product reads it transposed)
    weight: Param<Tensor<B, 2>>,
    bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Projection<B> {
    fn load(p: &mut Params<'_, B>, name: &str, channels: usize) -> Result<Self> {
        let weight = p.get(&format!("{name}.weight"), [channels, channels], ParamKind::LinearWeight)?;
        let bias = p.get(&format!("{name}.bias"), [channels], ParamKind::Bias)?;
        Ok(Self { weight, bias })
    }

    /// `x W + b` through the shared matmul (cuBLAS on CUDA).
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, c] = x.dims();
        let out = self.weight.shape()[0];
        let y = matmul(x.reshape([b * n, c]), self.weight.val().transpose()) + self.bias.val().unsqueeze_dim(0);
        y.reshape([b, n, out])
    }
}

#[derive(Module, Debug)]
pub(crate) struct MidAttention<B: Backend> {
    norm: GroupNorm<B>,
    to_q: Projection<B>,
    to_k: Projection<B>,
    to_v: Projection<B>,
    to_out: Projection<B>,
}

impl<B: Backend> MidAttention<B> {
    /// `name` is e.g. `encoder.mid_block.attentions.0`.
    pub(crate) fn load(p: &mut Params<'_, B>, name: &str, channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::load(p, &format!("{name}.group_norm"), channels, groups)?,
            to_q: Projection::load(p, &format!("{name}.to_q"), channels)?,
            to_k: Projection::load(p, &format!("{name}.to_k"), channels)?,
            to_v: Projection::load(p, &format!("{name}.to_v"), channels)?,
            to_out: Projection::load(p, &format!("{name}.to_out.0"), channels)?,
        })
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let dtype = x.dtype();
        // [B, C, H, W] -> [B, N, C]
        let hs = self.norm.forward(x.clone()).reshape([b, c, n]).swap_dims(1, 2);
        let to_f32 = |t: Tensor<B, 3>| if dtype == DType::F32 { t } else { t.cast(DType::F32) };
        let q = to_f32(self.to_q.forward(hs.clone()));
        let k_t = to_f32(self.to_k.forward(hs.clone())).swap_dims(1, 2); // [B, C, N]
        let v = to_f32(self.to_v.forward(hs));
        let scale = 1.0 / (c as f64).sqrt();

        let rows = (MAX_SCORE_ELEMS / n.max(1)).clamp(1, n);
        let attended = if rows >= n {
            matmul(softmax(matmul(q, k_t).mul_scalar(scale), 2), v)
        } else {
            let mut parts = Vec::with_capacity(n.div_ceil(rows));
            let mut start = 0;
            while start < n {
                let len = rows.min(n - start);
                let qc = q.clone().narrow(1, start, len);
                parts.push(matmul(softmax(matmul(qc, k_t.clone()).mul_scalar(scale), 2), v.clone()));
                start += len;
            }
            Tensor::cat(parts, 1)
        };
        let attended = if dtype == DType::F32 { attended } else { attended.cast(dtype) };
        let out = self.to_out.forward(attended).swap_dims(1, 2).reshape([b, c, h, w]);
        x + out
    }
}
