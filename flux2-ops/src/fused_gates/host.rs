//! The gating chains on host memory for the CPU backends: the arithmetic of the CUDA kernels
//! (`cuda/kernels.cu`, `SWIGLU` and `GATED_RESIDUAL`) row by row in f32, rows spread over the cores;
//! the CPU tests check it against the tensor-op compositions.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;

fn values<B: Backend, const D: usize>(t: FloatTensor<B>) -> (Vec<f32>, Vec<usize>, DType) {
    let t = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(t));
    let (dtype, dims) = (t.dtype(), t.dims().to_vec());
    let v = t.into_data().convert::<f32>().into_vec::<f32>();
    (v.unwrap_or_else(|e| panic!("fused gate: reading values: {e:?}")), dims, dtype)
}

fn tensor<B: Backend>(v: Vec<f32>, dims: Vec<usize>, dtype: DType, device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(v, dims).convert_dtype(dtype), device)
}

fn rounding(dtype: DType) -> fn(f32) -> f32 {
    match dtype {
        DType::BF16 => |x| half::bf16::from_f32(x).to_f32(),
        DType::F16 => |x| half::f16::from_f32(x).to_f32(),
        _ => |x| x,
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
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
    let (t, dims, dtype) = values::<B, 2>(t);
    let (rows, width) = (dims[0], dims[1]);
    let round = rounding(dtype);
    match grad {
        None => {
            let mut out = vec![0.0f32; rows * n];
            out.par_chunks_mut(n).enumerate().for_each(|(r, o)| {
                let (gate, up) = (&t[r * width + start..][..n], &t[r * width + start + n..][..n]);
                for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                    *o = round(g * sigmoid(*g)) * u;
                }
            });
            tensor::<B>(out, vec![rows, n], dtype, &device)
        }
        Some(grad) => {
            let (grad, _, _) = values::<B, 2>(grad);
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
            tensor::<B>(dt, vec![rows, width], dtype, &device)
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
    let (y, dims, dtype) = values::<B, 3>(y);
    let (gate, _, _) = values::<B, 3>(gate);
    let x = x.map(|x| values::<B, 3>(x).0);
    let (s, d) = (dims[1], dims[2]);
    let round = rounding(dtype);
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
    tensor::<B>(out, dims, dtype, &device)
}
