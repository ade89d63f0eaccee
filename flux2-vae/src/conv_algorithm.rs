//! How convolutions are computed: the backend's `conv2d`, or a sum of matmuls over the kernel taps.
//!
//! Measured on one H100 with Burn 0.21's CUDA backend: a 3x3 128->128 convolution on a 1024x1024
//! activation takes 153 ms (f32) / 75 ms (bf16) through `conv2d`, while PyTorch (cuDNN) runs the whole
//! 1024² encode in 73 ms. Expressed as k*k matmuls of the weight slice `[out, in]` with the shifted input
//! `[in, H*W]`, the same convolution uses the backend's matmul kernels instead: 0.36 s instead of 2.41 s
//! for the encode, 0.69 s instead of 5.55 s for the decode (f32; bf16 decode 0.65 s instead of 2.95 s,
//! and 10x closer to the f32 reference because the matmuls accumulate in f32). On the CPU backend
//! (`Flex`) the backend convolution is the better choice (it tiles its im2col). [`ConvAlgorithm::Auto`]
//! (the default) picks per backend.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Slice, Tensor};

/// Convolution implementation, chosen process-wide with [`set_conv_algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// `ShiftedMatmul` on CubeCL (GPU) backends, `Backend` elsewhere (default).
    Auto,
    /// `burn::tensor::module::conv2d`.
    Backend,
    /// One matmul per kernel tap on a shifted (and, for stride 2, subsampled) copy of the input, summed.
    /// Much faster than `conv2d` on Burn 0.21's CUDA backend; costs one input-sized copy per tap.
    ShiftedMatmul,
}

static ALGORITHM: AtomicU8 = AtomicU8::new(0);

/// Selects the convolution implementation for all VAEs in this process.
pub fn set_conv_algorithm(algorithm: ConvAlgorithm) {
    ALGORITHM.store(algorithm as u8, Ordering::Relaxed);
}

/// The configured convolution implementation (possibly `Auto`).
pub fn conv_algorithm() -> ConvAlgorithm {
    match ALGORITHM.load(Ordering::Relaxed) {
        1 => ConvAlgorithm::Backend,
        2 => ConvAlgorithm::ShiftedMatmul,
        _ => ConvAlgorithm::Auto,
    }
}

/// The implementation used on `device`: `Auto` resolved for its backend.
pub(crate) fn effective_conv_algorithm<B: Backend>(device: &B::Device) -> ConvAlgorithm {
    match conv_algorithm() {
        ConvAlgorithm::Auto if crate::backend_kind::is_cubecl::<B>(device) => ConvAlgorithm::ShiftedMatmul,
        ConvAlgorithm::Auto => ConvAlgorithm::Backend,
        other => other,
    }
}

/// Convolution of an already padded input `xp` [B, C_in, Hp, Wp] with `weight` [C_out, C_in, k, k],
/// stride `s`, no further padding: out[b, o, i, j] = bias[o] + Σ_{c,ky,kx} w[o, c, ky, kx] ·
/// xp[b, c, s·i + ky, s·j + kx].
pub(crate) fn shifted_matmul_conv<B: Backend>(
    xp: Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: &Tensor<B, 1>,
    stride: usize,
) -> Tensor<B, 4> {
    let [b, c_in, hp, wp] = xp.dims();
    let [c_out, _, k, _] = weight.dims();
    let dtype = xp.dtype();
    let (oh, ow) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
    let mut acc: Option<Tensor<B, 3>> = None;
    for ky in 0..k {
        for kx in 0..k {
            let w = weight.clone().narrow(2, ky, 1).narrow(3, kx, 1).reshape([1, c_out, c_in]).expand([b, c_out, c_in]);
            let span = |start: usize, n: usize| {
                Slice::new(start as isize, Some((start + stride * (n - 1) + 1) as isize), stride as isize)
            };
            let shifted = xp.clone().slice([Slice::full(), Slice::full(), span(ky, oh), span(kx, ow)]).reshape([
                b,
                c_in,
                oh * ow,
            ]);
            // Sum the taps in f32: rounding each partial sum to bf16 would add k*k roundings.
            let term = flux2_ops::matmul::matmul(w, shifted).cast(DType::F32);
            acc = Some(match acc {
                Some(a) => a + term,
                None => term,
            });
        }
    }
    let out = acc.expect("kernel has at least one tap").cast(dtype).reshape([b, c_out, oh, ow]);
    out + bias.clone().reshape([1, c_out, 1, 1])
}
