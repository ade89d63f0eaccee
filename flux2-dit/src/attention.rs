//! Scaled dot-product attention over [B, H, S, head_dim], no mask (FLUX.2 attends to every token).

use burn::tensor::{backend::Backend, module::attention, Tensor};
use burn::tensor::ops::AttentionModuleOptions;

/// softmax(Q K^T / sqrt(d)) V.
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

/// Splits a fused [B, S, 3 H d] projection into per-head q, k, v, each [B, H, S, d].
pub fn split_qkv<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> [Tensor<B, 4>; 3] {
    let [b, s, three_hd] = qkv.shape().dims();
    let head_dim = three_hd / (3 * heads);
    let qkv: Tensor<B, 5> = qkv.reshape([b, s, 3, heads, head_dim]);
    let part = |i: usize| -> Tensor<B, 4> {
        qkv.clone().narrow(2, i, 1).reshape([b, s, heads, head_dim]).swap_dims(1, 2)
    };
    [part(0), part(1), part(2)]
}

/// [B, H, S, d] back to [B, S, H d].
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, s, d] = x.shape().dims();
    x.swap_dims(1, 2).reshape([b, s, h * d])
}
