//! Grouped-query self-attention of one Mistral decoder layer.
//!
//! q has `num_attention_heads` heads, k and v only `num_key_value_heads` (8 for 32 in Mistral Small);
//! each KV head serves `heads / kv_heads` consecutive query heads (transformers' `repeat_kv`). RoPE is
//! applied to q and k, the scale is `1/sqrt(head_dim)`, and the shared [`AttentionMask`] carries the causal
//! and padding structure. Query rows with no visible key get a zero output, as transformers' SDPA path
//! does (see `mask.rs`).

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::mask::AttentionMask;
use crate::rope::RopeTables;
use flux2_ops::Linear;

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// [heads * head_dim, hidden].
    pub q_proj: Linear<B>,
    /// [kv_heads * head_dim, hidden].
    pub k_proj: Linear<B>,
    /// [kv_heads * head_dim, hidden].
    pub v_proj: Linear<B>,
    /// [hidden, heads * head_dim].
    pub o_proj: Linear<B>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// [B, L, hidden] -> [B, L, hidden].
    pub fn forward(&self, x: Tensor<B, 3>, rope: &RopeTables<B>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let [b, l, _] = x.dims();
        let q = rope.apply(self.split_heads(self.q_proj.forward(x.clone()), self.num_heads));
        let k = rope.apply(self.split_heads(self.k_proj.forward(x.clone()), self.num_kv_heads));
        let v = self.split_heads(self.v_proj.forward(x), self.num_kv_heads);
        // Grouped-query attention through the shared entry point (cuBLAS products on CUDA): the KV
        // heads are not repeated in memory.
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut out = flux2_ops::attention::masked(q, k, v, Some(mask.bias.clone()), scale);
        if mask.any_empty {
            out = out.mask_fill(mask.empty_rows.clone().expand([b, self.num_heads, l, self.head_dim]), 0.0);
        }
        let out = out.swap_dims(1, 2).reshape([b, l, self.num_heads * self.head_dim]);
        self.o_proj.forward(out)
    }

    /// [B, L, n * d] -> [B, n, L, d].
    fn split_heads(&self, x: Tensor<B, 3>, n: usize) -> Tensor<B, 4> {
        let [b, l, _] = x.dims();
        x.reshape([b, l, n, self.head_dim]).swap_dims(1, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn check_empty_rows_are_zero<B: Backend>(seq_len: usize, pads: usize) {
        let device = Default::default();
        let (hidden, heads, kv, d) = (4, 2, 1, 2);
        let lin = |out: usize, inp: usize, seed: usize| {
            let v: Vec<f32> = (0..out * inp).map(|i| (((i + seed) * 7919) % 13) as f32 / 13.0 - 0.5).collect();
            Linear::<B>::new(Tensor::from_data(TensorData::new(v, [out, inp]), &device))
        };
        let attn = Attention {
            q_proj: lin(heads * d, hidden, 1),
            k_proj: lin(kv * d, hidden, 2),
            v_proj: lin(kv * d, hidden, 3),
            o_proj: lin(hidden, heads * d, 4),
            num_heads: heads,
            num_kv_heads: kv,
            head_dim: d,
        };
        let x: Vec<f32> = (0..seq_len * hidden).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(x, [1, seq_len, hidden]), &device);
        let padding: Vec<i64> = (0..seq_len).map(|i| (i >= pads) as i64).collect();
        let mask = AttentionMask::new(&padding, 1, seq_len, None, &device);
        let rope = RopeTables::new(1e9, d, seq_len, burn::tensor::DType::F32, &device);
        let out = attn.forward(x, &rope, &mask).into_data().to_vec::<f32>().unwrap();
        assert!(out[..pads * hidden].iter().all(|v| *v == 0.0), "pad rows must be exactly zero");
        assert!(out[pads * hidden..].iter().all(|v| v.is_finite()) && out[pads * hidden..].iter().any(|v| *v != 0.0));
    }

    #[test]
    fn fully_masked_rows_give_zero_output() {
        // 520^2 scores exceed Flex's naive-attention budget: covers its tiled (flash) path too.
        for (len, pads) in [(6, 2), (520, 9)] {
            check_empty_rows_are_zero::<burn::backend::Flex>(len, pads);
            check_empty_rows_are_zero::<burn::backend::NdArray>(len, pads);
        }
    }
}
