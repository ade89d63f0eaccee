//! FLUX.2's head layout around the shared attention entry point (`flux2_ops::attention`; no mask:
//! FLUX.2 attends to every token).

use burn::tensor::{Tensor, backend::Backend};

pub use flux2_ops::attention::scaled_dot_product;

/// Splits a fused [B, S, 3 H d] projection into per-head q, k, v, each [B, H, S, d].
pub fn split_qkv<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> [Tensor<B, 4>; 3] {
    let [b, s, three_hd] = qkv.shape().dims();
    let head_dim = three_hd / (3 * heads);
    let qkv: Tensor<B, 5> = qkv.reshape([b, s, 3, heads, head_dim]);
    let part =
        |i: usize| -> Tensor<B, 4> { qkv.clone().narrow(2, i, 1).reshape([b, s, heads, head_dim]).swap_dims(1, 2) };
    [part(0), part(1), part(2)]
}

/// [B, H, S, d] back to [B, S, H d].
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, s, d] = x.shape().dims();
    x.swap_dims(1, 2).reshape([b, s, h * d])
}
