//! GroupNorm with affine parameters; statistics, normalization and affine in f32 whatever the model
//! dtype (the result is cast back to the input's dtype).
//!
//! Matches `torch.nn.GroupNorm`: biased variance, eps inside the square root, two-pass (mean, then mean of
//! squared deviations). Statistics are gathered in row bands and the normalization can be applied to any
//! band of rows ([`GroupNorm::apply`]), so callers never need a normalized copy of a whole large
//! activation (see [`crate::bands`]).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::bands::{bands, rows_per_band};
use crate::error::Result;
use crate::params::{ParamKind, Params};

/// Epsilon of every GroupNorm in this autoencoder (fixed by the architecture).
pub(crate) const GROUP_NORM_EPS: f64 = 1e-6;

#[derive(Module, Debug)]
pub(crate) struct GroupNorm<B: Backend> {
    /// [C] f32
    weight: Param<Tensor<B, 1>>,
    /// [C] f32
    bias: Param<Tensor<B, 1>>,
    groups: usize,
    eps: f64,
}

/// Per-(batch, group) statistics of one activation, f32, shaped [B, G, 1, 1, 1].
#[derive(Debug, Clone)]
pub(crate) struct GroupStats<B: Backend> {
    mean: Tensor<B, 5>,
    inv_std: Tensor<B, 5>,
}

impl<B: Backend> GroupNorm<B> {
    pub(crate) fn load(p: &mut Params<'_, B>, name: &str, channels: usize, groups: usize) -> Result<Self> {
        let weight = p.get_f32(&format!("{name}.weight"), [channels], ParamKind::NormWeight)?;
        let bias = p.get_f32(&format!("{name}.bias"), [channels], ParamKind::NormBias)?;
        Ok(Self { weight, bias, groups, eps: GROUP_NORM_EPS })
    }

    /// Rows `[lo, hi)` of `x` as f32 in group layout [B, G, C/G, rows, W].
    fn grouped_rows(&self, x: &Tensor<B, 4>, lo: usize, hi: usize) -> Tensor<B, 5> {
        let [b, c, _, w] = x.dims();
        x.clone().narrow(2, lo, hi - lo).cast(DType::F32).reshape([b, self.groups, c / self.groups, hi - lo, w])
    }

    /// Group statistics of `x` [B, C, H, W], gathered band by band.
    pub(crate) fn stats(&self, x: &Tensor<B, 4>) -> GroupStats<B> {
        let [_, c, h, w] = x.dims();
        let n = (c / self.groups * h * w) as f64;
        let rows = rows_per_band::<B>(&x.device(), c * w);
        let sum_bands = |f: &dyn Fn(Tensor<B, 5>) -> Tensor<B, 5>| {
            bands(h, rows)
                .map(|(lo, hi)| f(self.grouped_rows(x, lo, hi)).sum_dims(&[2, 3, 4]))
                .reduce(|a, b| a + b)
                .expect("an activation has at least one row")
        };
        let mean = sum_bands(&|g| g).div_scalar(n);
        let var = sum_bands(&|g| (g - mean.clone()).square()).div_scalar(n);
        GroupStats { mean, inv_std: var.add_scalar(self.eps).sqrt().recip() }
    }

    /// Normalizes rows of an activation (`x_rows` = [B, C, rows, W]) with `stats` of the whole
    /// activation; the result has the input's dtype.
    pub(crate) fn apply(&self, x_rows: Tensor<B, 4>, stats: &GroupStats<B>) -> Tensor<B, 4> {
        let dtype = x_rows.dtype();
        let [b, c, rows, w] = x_rows.dims();
        let g = self.grouped_rows(&x_rows, 0, rows);
        drop(x_rows);
        let normed = ((g - stats.mean.clone()) * stats.inv_std.clone()).reshape([b, c, rows, w]);
        let affine = |p: &Param<Tensor<B, 1>>| p.val().reshape([1, c, 1, 1]);
        (normed * affine(&self.weight) + affine(&self.bias)).cast(dtype)
    }

    /// `silu(apply(x_rows))`, the pattern in front of every 3x3 convolution.
    pub(crate) fn apply_silu(&self, x_rows: Tensor<B, 4>, stats: &GroupStats<B>) -> Tensor<B, 4> {
        burn::tensor::activation::silu(self.apply(x_rows, stats))
    }

    /// Whole-tensor GroupNorm.
    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let stats = self.stats(&x);
        self.apply(x, &stats)
    }
}
