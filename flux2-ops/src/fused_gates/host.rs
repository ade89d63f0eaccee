//! The gating chains on host memory for the CPU backends: the arithmetic of the CUDA kernels
//! (`cuda/kernels.cu`, `SWIGLU` and `GATED_RESIDUAL`) row by row in f32, rows spread over the cores;
//! the CPU tests check it against the tensor-op compositions.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use rayon::prelude::*;

use crate::host_tensor::{Rounding, exp, read, write};

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Forward (`grad` None: [rows, n]) or the gradient of `t` ([rows, width]) of
/// `silu(t[:, start..start + n]) * t[:, start + n..start + 2n]`.
pub(super) fn swiglu<B: Backend>(
    t: FloatTensor<B>,
    start: usize,
    n: usize,
    grad: Option<FloatTensor<B>>,
) -> FloatTensor<B> {
    let device = B::float_device(&t);
    let (t, dims, dtype) = read::<B, 2>(t);
    let (rows, width) = (dims[0], dims[1]);
    let rounding = Rounding::of(dtype);
    let round = |x: f32| rounding.round(x);
    match grad {
        None => {
            let mut out = vec![0.0f32; rows * n];
            out.par_chunks_mut(n).enumerate().for_each(|(r, o)| {
                let (gate, up) = (&t[r * width + start..][..n], &t[r * width + start + n..][..n]);
                for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                    *o = round(g * sigmoid(*g)) * u;
                }
            });
            write::<B>(out, &[rows, n], dtype, &device)
        }
        Some(grad) => {
            let (grad, _, _) = read::<B, 2>(grad);
            let mut dt = vec![0.0f32; rows * width];
            dt.par_chunks_mut(width).enumerate().for_each(|(r, d)| {
                let (gate, up, g) =
                    (&t[r * width + start..][..n], &t[r * width + start + n..][..n], &grad[r * n..][..n]);
                let (dgate, dup) = d[start..start + 2 * n].split_at_mut(n);
                for i in 0..n {
                    let s = sigmoid(gate[i]);
                    dgate[i] = g[i] * up[i] * s * (1.0 + gate[i] * (1.0 - s));
                    dup[i] = g[i] * gate[i] * s;
                }
            });
            write::<B>(dt, &[rows, width], dtype, &device)
        }
    }
}

/// `x + gate * y` (or `gate * y` without `x`) for [B, S, D] x, y and a [B, 1, D] gate.
pub(super) fn gated_residual<B: Backend>(
    x: Option<FloatTensor<B>>,
    gate: FloatTensor<B>,
    y: FloatTensor<B>,
) -> FloatTensor<B> {
    let device = B::float_device(&y);
    let (y, dims, dtype) = read::<B, 3>(y);
    let (gate, _, _) = read::<B, 3>(gate);
    let x = x.map(|x| read::<B, 3>(x).0);
    let (s, d) = (dims[1], dims[2]);
    let rounding = Rounding::of(dtype);
    let round = |x: f32| rounding.round(x);
    let mut out = vec![0.0f32; y.len()];
    out.par_chunks_mut(d).enumerate().for_each(|(r, o)| {
        let g = &gate[(r / s) * d..][..d];
        let yr = &y[r * d..][..d];
        match &x {
            Some(x) => {
                let xr = &x[r * d..][..d];
                for i in 0..d {
                    o[i] = xr[i] + round(g[i] * yr[i]);
                }
            }
            None => {
                for i in 0..d {
                    o[i] = g[i] * yr[i];
                }
            }
        }
    });
    write::<B>(out, &dims, dtype, &device)
}
