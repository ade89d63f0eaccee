//! The one attention entry point of the workspace (in the spirit of musubi-tuner's): every model calls
//! these, and they pick the fastest path the backend has.
//!
//! - [`scaled_dot_product`]: no mask (FLUX.2 attends to every token); the fused, recomputing attention
//!   of [`crate::fused_attention`] when the backend is registered there, Burn's `attention` otherwise.
//! - [`masked`]: an additive mask and grouped-query heads (the Mistral text encoder: causal + padding,
//!   8 KV heads for 32 query heads; the VAE's mid-block attention uses it without a mask). Inference
//!   only; its two products go through [`crate::matmul::matmul`] (cuBLAS on CUDA, exact f32 there instead
//!   of Burn's TF32), and the softmax runs in f32 whatever the model dtype.

use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, activation::softmax, backend::Backend, module::attention};

use crate::matmul::matmul;

/// softmax(Q Kᵀ / sqrt(d)) V over [B, H, S, head_dim], no mask.
///
/// Runs [`crate::fused_attention`] when `B` is registered there (the backends of this crate's `flex`,
/// `ndarray` and `cuda` features and their `Autodiff` wrappers are; others via
/// [`crate::fused_attention::register`]): under autodiff it keeps O(L·d) for backward instead of the
/// [B, H, L, L] probabilities. Otherwise it falls back to Burn's `attention` (same numerics; under
/// autodiff that stores the probabilities).
pub fn scaled_dot_product<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    match crate::fused_attention::dispatch(q, k, v) {
        Ok(out) => out,
        Err([q, k, v]) => attention(q, k, v, None, None, AttentionModuleOptions::default()),
    }
}

/// softmax(scale · Q Kᵀ + bias) V for q [B, H, Lq, d] and k, v [B, KV, Lk, d] with `H` a multiple of
/// `KV` (query head `h` uses KV head `h / (H / KV)`, transformers' `repeat_kv`, without materialising
/// the repeated keys). `bias` is [B, 1, Lq, Lk] in f32 (0 where a key is visible, a large negative
/// number where not) or `None`. A query row that sees no key gets the average of the values: callers
/// that need zeros there (Mistral's padded rows) overwrite them.
pub fn masked<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    scale: f64,
) -> Tensor<B, 4> {
    let [b, h, lq, d] = q.dims();
    let [_, kv, lk, _] = k.dims();
    let rep = (h / kv.max(1)).max(1);
    let dtype = q.dtype();
    // [B, KV, rep * Lq, d]: the `rep` query heads of one KV head share its keys in one product.
    let q = q.reshape([b, kv, rep * lq, d]);
    let scores = matmul(q, k.swap_dims(2, 3)).cast(DType::F32).mul_scalar(scale);
    let scores = match bias {
        Some(bias) => {
            let scores: Tensor<B, 5> = scores.reshape([b, kv, rep, lq, lk]);
            let bias: Tensor<B, 5> = bias.reshape([b, 1, 1, lq, lk]);
            (scores + bias).reshape([b, kv, rep * lq, lk])
        }
        None => scores,
    };
    let probs = softmax(scores, 3).cast(dtype);
    matmul(probs, v).reshape([b, h, lq, d])
}
