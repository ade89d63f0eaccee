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
    pub fn forward(&self, x: Tensor<B, 3>, rope: &RopeTables<B>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rope, mask);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}
