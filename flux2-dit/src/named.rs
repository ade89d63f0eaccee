//! The model's modules by BFL path, for saving, LoRA targeting and inspection. Paths are those of
//! `flux2-dev.safetensors` without `.weight` (see `key_map` for the diffusers equivalents).

use burn::tensor::backend::Backend;

use crate::model::Flux2Transformer;
use crate::norm::RmsNorm;
use flux2_ops::Linear;

macro_rules! linear_paths {
    ($self:ident, $($ref:tt)+) => {{
        let m = $self;
        let mut out: Vec<(String, $($ref)+ Linear<B>)> = Vec::new();
        out.push(("img_in".into(), $($ref)+ m.img_in));
        out.push(("txt_in".into(), $($ref)+ m.txt_in));
        out.push(("time_in.in_layer".into(), $($ref)+ m.time_guidance.time_in.in_layer));
        out.push(("time_in.out_layer".into(), $($ref)+ m.time_guidance.time_in.out_layer));
        if let Some(g) = $($ref)+ m.time_guidance.guidance_in {
            out.push(("guidance_in.in_layer".into(), $($ref)+ g.in_layer));
            out.push(("guidance_in.out_layer".into(), $($ref)+ g.out_layer));
        }
        out.push(("double_stream_modulation_img.lin".into(), $($ref)+ m.double_stream_modulation_img.lin));
        out.push(("double_stream_modulation_txt.lin".into(), $($ref)+ m.double_stream_modulation_txt.lin));
        out.push(("single_stream_modulation.lin".into(), $($ref)+ m.single_stream_modulation.lin));
        for (i, b) in ($($ref)+ m.double_blocks).iter_mut_or_ref().enumerate() {
            let p = format!("double_blocks.{i}");
            out.push((format!("{p}.img_attn.qkv"), $($ref)+ b.img_attn.qkv));
            out.push((format!("{p}.img_attn.proj"), $($ref)+ b.img_attn.proj));
            out.push((format!("{p}.img_mlp.0"), $($ref)+ b.img_mlp.fc_in));
            out.push((format!("{p}.img_mlp.2"), $($ref)+ b.img_mlp.fc_out));
            out.push((format!("{p}.txt_attn.qkv"), $($ref)+ b.txt_attn.qkv));
            out.push((format!("{p}.txt_attn.proj"), $($ref)+ b.txt_attn.proj));
            out.push((format!("{p}.txt_mlp.0"), $($ref)+ b.txt_mlp.fc_in));
            out.push((format!("{p}.txt_mlp.2"), $($ref)+ b.txt_mlp.fc_out));
        }
        for (i, b) in ($($ref)+ m.single_blocks).iter_mut_or_ref().enumerate() {
            out.push((format!("single_blocks.{i}.linear1"), $($ref)+ b.linear1));
            out.push((format!("single_blocks.{i}.linear2"), $($ref)+ b.linear2));
        }
        out.push(("final_layer.adaLN_modulation.1".into(), $($ref)+ m.final_layer.ada_ln_modulation));
        out.push(("final_layer.linear".into(), $($ref)+ m.final_layer.linear));
        out
    }};
}

/// `iter()` or `iter_mut()` chosen by the macro's reference kind.
trait IterKind<'a, T: 'a> {
    type Iter: Iterator;
    fn iter_mut_or_ref(self) -> Self::Iter;
}
impl<'a, T: 'a> IterKind<'a, T> for &'a Vec<T> {
    type Iter = std::slice::Iter<'a, T>;
    fn iter_mut_or_ref(self) -> Self::Iter {
        self.iter()
    }
}
impl<'a, T: 'a> IterKind<'a, T> for &'a mut Vec<T> {
    type Iter = std::slice::IterMut<'a, T>;
    fn iter_mut_or_ref(self) -> Self::Iter {
        self.iter_mut()
    }
}

impl<B: Backend> Flux2Transformer<B> {
    /// Every Linear with its BFL module path, in checkpoint order.
    pub fn linears(&self) -> Vec<(String, &Linear<B>)> {
        linear_paths!(self, &)
    }

    /// Mutable access to every Linear by BFL module path (LoRA injection, merging).
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear<B>)> {
        linear_paths!(self, &mut)
    }

    /// Every q/k RMSNorm with its BFL module path (parameter `<path>.scale`).
    pub fn rms_norms(&self) -> Vec<(String, &RmsNorm<B>)> {
        let mut out = Vec::new();
        for (i, b) in self.double_blocks.iter().enumerate() {
            for (stream, attn) in [("img", &b.img_attn), ("txt", &b.txt_attn)] {
                out.push((format!("double_blocks.{i}.{stream}_attn.norm.query_norm"), &attn.norm.query_norm));
                out.push((format!("double_blocks.{i}.{stream}_attn.norm.key_norm"), &attn.norm.key_norm));
            }
        }
        for (i, b) in self.single_blocks.iter().enumerate() {
            out.push((format!("single_blocks.{i}.norm.query_norm"), &b.norm.query_norm));
            out.push((format!("single_blocks.{i}.norm.key_norm"), &b.norm.key_norm));
        }
        out
    }
}
