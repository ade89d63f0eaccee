//! The fused normalizations on host memory, for the CPU backends: the arithmetic of the CUDA kernels
//! (`cuda/kernels.cu`, `RMS_ROPE` and `MOD_LAYER_NORM`) row by row in f32, rows spread over the cores.
//!
//! On the CPU this replaces chains of strided element-wise passes over f32 copies with one read and one
//! write per row, and it is the executable statement of the kernels' formulas: the CPU tests check it
//! against the tensor-op compositions, forward and backward.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use rayon::prelude::*;

use crate::host_tensor::{Rounding, read, write};

/// The forward (`grad` None) or input gradient of `rope(RMSNorm(x) w)` over rows of d values.
#[allow(clippy::too_many_arguments)]
pub(super) fn rms_norm_rope<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    seq: usize,
    offset: usize,
    eps: f32,
    grad: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let device = B::float_device(&x);
    let (x, dims, dtype) = read::<B, 2>(x);
    let (w, _, _) = read::<B, 1>(weight);
    let (cs, _, _) = read::<B, 2>(cos);
    let (sn, _, _) = read::<B, 2>(sin);
    let g = grad.map(|g| read::<B, 2>(g).0);
    let d = dims[1];
    let rounding = Rounding::of(dtype);
    let round = |x: f32| rounding.round(x);
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let xr = &x[row * d..(row + 1) * d];
        let t = (offset + row % seq) * d;
        let (c, s) = (&cs[t..t + d], &sn[t..t + d]);
        let rms = (xr.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
        match &g {
            None => {
                for i in (0..d).step_by(2) {
                    let y0 = round((xr[i] / rms) * w[i]);
                    let y1 = round((xr[i + 1] / rms) * w[i + 1]);
                    o[i] = y0 * c[i] - y1 * s[i];
                    o[i + 1] = y1 * c[i + 1] + y0 * s[i + 1];
                }
            }
            Some(g) => {
                let gr = &g[row * d..(row + 1) * d];
                // dy = Rᵀ g, then dx = w dy / rms - x <x, w dy> / (d rms³).
                let dy = |i: usize| (gr[i] * c[i] + gr[i + 1] * s[i + 1], gr[i + 1] * c[i + 1] - gr[i] * s[i]);
                let mut dot = 0.0f32;
                for i in (0..d).step_by(2) {
                    let (dy0, dy1) = dy(i);
                    dot += xr[i] * w[i] * dy0 + xr[i + 1] * w[i + 1] * dy1;
                }
                let k = dot / (d as f32 * rms * rms * rms);
                for i in (0..d).step_by(2) {
                    let (dy0, dy1) = dy(i);
                    o[i] = w[i] * dy0 / rms - xr[i] * k;
                    o[i + 1] = w[i + 1] * dy1 / rms - xr[i + 1] * k;
                }
            }
        }
    });
    write::<B>(out, &dims, dtype, &device)
}

/// The forward (`grad` None, `shift` given) or input gradient of `(1 + scale) LayerNorm(x) + shift` for
/// x [B, S, D] and shift/scale [B, 1, D].
pub(super) fn modulated_layer_norm<B: Backend>(
    x: FloatTensor<B>,
    shift: Option<FloatTensor<B>>,
    scale: FloatTensor<B>,
    eps: f32,
    grad: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let device = B::float_device(&x);
    let (x, dims, dtype) = read::<B, 3>(x);
    let shift = shift.map(|t| read::<B, 3>(t).0);
    let (scale, _, _) = read::<B, 3>(scale);
    let g = grad.map(|g| read::<B, 3>(g).0);
    let (seq, d) = (dims[1], dims[2]);
    let rounding = Rounding::of(dtype);
    let round = |x: f32| rounding.round(x);
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let xr = &x[row * d..(row + 1) * d];
        let b = row / seq;
        let sc = &scale[b * d..(b + 1) * d];
        let mean = xr.iter().sum::<f32>() / d as f32;
        let sigma = (xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32 + eps).sqrt();
        match (&g, &shift) {
            (None, Some(shift)) => {
                let sh = &shift[b * d..(b + 1) * d];
                for i in 0..d {
                    let xh = round((xr[i] - mean) / sigma);
                    o[i] = round(xh * round(sc[i] + 1.0)) + sh[i];
                }
            }
            (Some(g), _) => {
                let gr = &g[row * d..(row + 1) * d];
                let dxh = |i: usize| gr[i] * round(sc[i] + 1.0);
                let (mut m1, mut m2) = (0.0f32, 0.0f32);
                for (i, x) in xr.iter().enumerate() {
                    m1 += dxh(i);
                    m2 += dxh(i) * (x - mean) / sigma;
                }
                let (m1, m2) = (m1 / d as f32, m2 / d as f32);
                for i in 0..d {
                    o[i] = (dxh(i) - m1 - (xr[i] - mean) / sigma * m2) / sigma;
                }
            }
            (None, None) => unreachable!("the forward passes shift"),
        }
    });
    write::<B>(out, &dims, dtype, &device)
}
