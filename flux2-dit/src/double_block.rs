//! Double-stream block: image and text keep separate weights but attend jointly over [text; image].

use burn::module::Module;
use burn::tensor::{Tensor, activation::silu, backend::Backend};

use crate::attention::{merge_heads, scaled_dot_product, split_qkv};
use crate::modulation::ModParams;
use crate::norm::RmsNorm;
use crate::rope::RopeTable;
use flux2_ops::Linear;

/// Per-head RMSNorm of queries and keys (BFL `norm.query_norm` / `norm.key_norm`).
#[derive(Module, Debug)]
pub struct QkNorm<B: Backend> {
    pub query_norm: RmsNorm<B>,
    pub key_norm: RmsNorm<B>,
}

/// One stream's attention weights: fused qkv, q/k norms, output projection (BFL `img_attn` / `txt_attn`).
#[derive(Module, Debug)]
pub struct StreamAttention<B: Backend> {
    pub qkv: Linear<B>,
    pub norm: QkNorm<B>,
    pub proj: Linear<B>,
}

/// SwiGLU MLP with a fused input projection: `Linear(D -> 2F)` -> SiLU(gate) * up -> `Linear(F -> D)`.
/// BFL names the two Linears `0` and `2` (`img_mlp.0`, `img_mlp.2`).
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    pub fc_in: Linear<B>,
    pub fc_out: Linear<B>,
}

/// `silu(h[.., start..start + n]) * h[.., start + n..start + 2n]` over the last dimension: one fused op
/// where the backend has it ([`flux2_ops::fused_gates`]), else this composition.
pub fn swiglu<B: Backend>(h: Tensor<B, 3>, start: usize, n: usize) -> Tensor<B, 3> {
    flux2_ops::fused_gates::swiglu(h, start, n)
        .unwrap_or_else(|h| silu(h.clone().narrow(2, start, n)) * h.narrow(2, start + n, n))
}

impl<B: Backend> SwiGlu<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.fc_in.forward(x);
        let half = h.shape().dims::<3>()[2] / 2;
        self.fc_out.forward(swiglu(h, 0, half))
    }
}

#[derive(Module, Debug)]
pub struct DoubleBlock<B: Backend> {
    pub img_attn: StreamAttention<B>,
    pub txt_attn: StreamAttention<B>,
    pub img_mlp: SwiGlu<B>,
    pub txt_mlp: SwiGlu<B>,
    pub heads: usize,
    pub eps: f64,
}

/// Modulation of one stream: [attention triple, MLP triple].
pub type StreamMods<B> = [ModParams<B>; 2];

impl<B: Backend> DoubleBlock<B> {
    /// The block's eight Linears (image stream, then text stream).
    pub fn linears(&self) -> [&Linear<B>; 8] {
        let (i, t) = ((&self.img_attn, &self.img_mlp), (&self.txt_attn, &self.txt_mlp));
        [&i.0.qkv, &i.0.proj, &i.1.fc_in, &i.1.fc_out, &t.0.qkv, &t.0.proj, &t.1.fc_in, &t.1.fc_out]
    }

    /// Returns updated (image, text) streams. `rope` covers [text; image] tokens.
    pub fn forward(
        &self,
        img: Tensor<B, 3>,
        txt: Tensor<B, 3>,
        img_mod: &StreamMods<B>,
        txt_mod: &StreamMods<B>,
        rope: &RopeTable<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let txt_len = txt.shape().dims::<3>()[1];
        // Text tokens come first in the joint sequence, so the image stream's rotary rows start at txt_len.
        let [img_q, img_k, img_v] =
            self.project(&self.img_attn, img_mod[0].modulate_norm(img.clone(), self.eps), rope, txt_len);
        let [txt_q, txt_k, txt_v] =
            self.project(&self.txt_attn, txt_mod[0].modulate_norm(txt.clone(), self.eps), rope, 0);

        let q = Tensor::cat(vec![txt_q, img_q], 2);
        let k = Tensor::cat(vec![txt_k, img_k], 2);
        let v = Tensor::cat(vec![txt_v, img_v], 2);
        let attn = merge_heads(scaled_dot_product(q, k, v));
        let total = attn.shape().dims::<3>()[1];
        let txt_attn = attn.clone().narrow(1, 0, txt_len);
        let img_attn = attn.narrow(1, txt_len, total - txt_len);

        let img = img_mod[0].gated(img, self.img_attn.proj.forward(img_attn));
        let img = img_mod[1].gated(img.clone(), self.img_mlp.forward(img_mod[1].modulate_norm(img, self.eps)));
        let txt = txt_mod[0].gated(txt, self.txt_attn.proj.forward(txt_attn));
        let txt = txt_mod[1].gated(txt.clone(), self.txt_mlp.forward(txt_mod[1].modulate_norm(txt, self.eps)));
        (img, txt)
    }

    /// q, k (normalized and rotated with the table rows from `offset`) and v of one stream.
    fn project(
        &self,
        attn: &StreamAttention<B>,
        x: Tensor<B, 3>,
        rope: &RopeTable<B>,
        offset: usize,
    ) -> [Tensor<B, 4>; 3] {
        let [q, k, v] = split_qkv(attn.qkv.forward(x), self.heads);
        [rope.norm_apply(&attn.norm.query_norm, q, offset), rope.norm_apply(&attn.norm.key_norm, k, offset), v]
    }
}
