//! Single-stream ("parallel") block on the joint sequence h = [text; image]: one input Linear produces
//! q, k, v and the MLP's gate and up halves; one output Linear consumes [attention | MLP].

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::attention::{merge_heads, scaled_dot_product, split_qkv};
use crate::double_block::{QkNorm, swiglu};
use crate::modulation::ModParams;
use crate::rope::RopeTable;
use flux2_ops::Linear;

#[derive(Module, Debug)]
pub struct SingleBlock<B: Backend> {
    /// D -> 3D + 2F, columns [q | k | v | gate | up] (diffusers `attn.to_qkv_mlp_proj`).
    pub linear1: Linear<B>,
    /// D + F -> D (diffusers `attn.to_out`).
    pub linear2: Linear<B>,
    pub norm: QkNorm<B>,
    pub heads: usize,
    pub eps: f64,
}

impl<B: Backend> SingleBlock<B> {
    /// The block's two Linears.
    pub fn linears(&self) -> [&Linear<B>; 2] {
        [&self.linear1, &self.linear2]
    }

    pub fn forward(&self, h: Tensor<B, 3>, modulation: &ModParams<B>, rope: &RopeTable<B>) -> Tensor<B, 3> {
        let x = modulation.modulate_norm(h.clone(), self.eps);
        let fused = self.linear1.forward(x);
        let width = fused.shape().dims::<3>()[2];
        let inner = self.linear2.out_features();
        let mlp_width = (width - 3 * inner) / 2;
        let [q, k, v] = split_qkv(fused.clone().narrow(2, 0, 3 * inner), self.heads);
        let q = rope.norm_apply(&self.norm.query_norm, q, 0);
        let k = rope.norm_apply(&self.norm.key_norm, k, 0);
        let attn = merge_heads(scaled_dot_product(q, k, v));
        let out = self.linear2.forward(Tensor::cat(vec![attn, swiglu(fused, 3 * inner, mlp_width)], 2));
        modulation.gated(h, out)
    }
}
