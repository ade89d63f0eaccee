//! One pre-norm Mistral decoder layer:
//! `h = x + attn(norm1(x)); out = h + mlp(norm2(h))`.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::attention::Attention;
use crate::mask::AttentionMask;
use crate::mlp::Mlp;
use crate::rms_norm::RmsNorm;
use crate::rope::RopeTables;

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Starts uploading the layer's offloaded Linears (`flux2_ops::offload`) ahead of its use.
    pub fn prefetch(&self) {
        let (a, m) = (&self.self_attn, &self.mlp);
        for l in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj] {
            l.prefetch();
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, rope: &RopeTables<B>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rope, mask);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}
