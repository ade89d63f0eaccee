//! `Flux2Transformer`: embedders, shared modulation, double and single blocks, final layer.

use burn::module::{Module, Param};
use burn::tensor::{activation::silu, backend::Backend, DType, Tensor, TensorData};

use crate::config::Flux2Config;
use crate::double_block::{DoubleBlock, QkNorm, StreamAttention, SwiGlu};
use crate::embeddings::{MlpEmbedder, TimeGuidanceEmbed};
use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::modulation::Modulation;
use crate::norm::{layer_norm, RmsNorm};
use crate::position_ids::PositionIds;
use crate::rope::RopeTable;
use crate::single_block::SingleBlock;
use crate::weight_source::WeightSource;

/// Output head: adaptive LayerNorm from the timestep embedding, then the projection to latent channels.
#[derive(Module, Debug)]
pub struct FinalLayer<B: Backend> {
    /// D -> 2D, rows [shift; scale] (BFL order; diffusers stores [scale; shift]).
    pub ada_ln_modulation: Linear<B>,
    pub linear: Linear<B>,
}

#[derive(Module, Debug)]
pub struct Flux2Transformer<B: Backend> {
    pub img_in: Linear<B>,
    pub txt_in: Linear<B>,
    pub time_guidance: TimeGuidanceEmbed<B>,
    pub double_stream_modulation_img: Modulation<B>,
    pub double_stream_modulation_txt: Modulation<B>,
    pub single_stream_modulation: Modulation<B>,
    pub double_blocks: Vec<DoubleBlock<B>>,
    pub single_blocks: Vec<SingleBlock<B>>,
    pub final_layer: FinalLayer<B>,
    pub config: Flux2Config,
}

/// Builds modules from a [`WeightSource`], asking for each parameter by BFL name.
struct Builder<'a, B: Backend, S: WeightSource> {
    source: &'a mut S,
    dtype: DType,
    device: &'a B::Device,
}

impl<B: Backend, S: WeightSource> Builder<'_, B, S> {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let data: TensorData = self.source.take(name, &shape, self.dtype)?;
        Ok(Tensor::from_data(data, (self.device, self.dtype)))
    }

    fn linear(&mut self, module: &str, out_features: usize, in_features: usize) -> Result<Linear<B>> {
        Ok(Linear::new(self.tensor(&format!("{module}.weight"), [out_features, in_features])?))
    }

    fn rms_norm(&mut self, module: &str, dim: usize, eps: f64) -> Result<RmsNorm<B>> {
        let weight = self.tensor(&format!("{module}.scale"), [dim])?;
        Ok(RmsNorm { weight: Param::from_tensor(weight).set_require_grad(false), eps })
    }

    fn qk_norm(&mut self, module: &str, c: &Flux2Config) -> Result<QkNorm<B>> {
        Ok(QkNorm {
            query_norm: self.rms_norm(&format!("{module}.query_norm"), c.attention_head_dim, c.eps)?,
            key_norm: self.rms_norm(&format!("{module}.key_norm"), c.attention_head_dim, c.eps)?,
        })
    }

    fn mlp_embedder(&mut self, module: &str, c: &Flux2Config) -> Result<MlpEmbedder<B>> {
        let d = c.inner_dim();
        Ok(MlpEmbedder {
            in_layer: self.linear(&format!("{module}.in_layer"), d, c.timestep_guidance_channels)?,
            out_layer: self.linear(&format!("{module}.out_layer"), d, d)?,
        })
    }

    fn stream(&mut self, module: &str, c: &Flux2Config) -> Result<(StreamAttention<B>, SwiGlu<B>)> {
        let (d, f) = (c.inner_dim(), c.mlp_hidden_dim());
        let attn = StreamAttention {
            qkv: self.linear(&format!("{module}_attn.qkv"), 3 * d, d)?,
            norm: self.qk_norm(&format!("{module}_attn.norm"), c)?,
            proj: self.linear(&format!("{module}_attn.proj"), d, d)?,
        };
        let mlp = SwiGlu {
            fc_in: self.linear(&format!("{module}_mlp.0"), 2 * f, d)?,
            fc_out: self.linear(&format!("{module}_mlp.2"), d, f)?,
        };
        Ok((attn, mlp))
    }

    fn model(&mut self, c: &Flux2Config) -> Result<Flux2Transformer<B>> {
        c.validate()?;
        let (d, f) = (c.inner_dim(), c.mlp_hidden_dim());
        let img_in = self.linear("img_in", d, c.in_channels)?;
        let txt_in = self.linear("txt_in", d, c.joint_attention_dim)?;
        let time_in = self.mlp_embedder("time_in", c)?;
        let guidance_in = if c.guidance_embeds { Some(self.mlp_embedder("guidance_in", c)?) } else { None };
        let modulation = |b: &mut Self, name: &str, sets: usize| -> Result<Modulation<B>> {
            Ok(Modulation { lin: b.linear(&format!("{name}.lin"), 3 * sets * d, d)? })
        };
        let double_stream_modulation_img = modulation(self, "double_stream_modulation_img", 2)?;
        let double_stream_modulation_txt = modulation(self, "double_stream_modulation_txt", 2)?;
        let single_stream_modulation = modulation(self, "single_stream_modulation", 1)?;
        let mut double_blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let (img_attn, img_mlp) = self.stream(&format!("double_blocks.{i}.img"), c)?;
            let (txt_attn, txt_mlp) = self.stream(&format!("double_blocks.{i}.txt"), c)?;
            double_blocks.push(DoubleBlock { img_attn, txt_attn, img_mlp, txt_mlp, heads: c.num_attention_heads, eps: c.eps });
        }
        let mut single_blocks = Vec::with_capacity(c.num_single_layers);
        for i in 0..c.num_single_layers {
            single_blocks.push(SingleBlock {
                linear1: self.linear(&format!("single_blocks.{i}.linear1"), 3 * d + 2 * f, d)?,
                linear2: self.linear(&format!("single_blocks.{i}.linear2"), d, d + f)?,
                norm: self.qk_norm(&format!("single_blocks.{i}.norm"), c)?,
                heads: c.num_attention_heads,
                eps: c.eps,
            });
        }
        let final_layer = FinalLayer {
            ada_ln_modulation: self.linear("final_layer.adaLN_modulation.1", 2 * d, d)?,
            linear: self.linear("final_layer.linear", c.out_channels(), d)?,
        };
        self.source.finish()?;
        Ok(Flux2Transformer {
            img_in,
            txt_in,
            time_guidance: TimeGuidanceEmbed { time_in, guidance_in, channels: c.timestep_guidance_channels },
            double_stream_modulation_img,
            double_stream_modulation_txt,
            single_stream_modulation,
            double_blocks,
            single_blocks,
            final_layer,
            config: c.clone(),
        })
    }
}

impl<B: Backend> Flux2Transformer<B> {
    /// Builds the model parameter by parameter from `source` (a checkpoint or [`crate::RandomSource`]).
    pub fn from_source<S: WeightSource>(config: &Flux2Config, source: &mut S, dtype: DType, device: &B::Device) -> Result<Self> {
        Builder::<B, S> { source, dtype, device }.model(config)
    }

    /// The dtype of the weights; activations run in it.
    pub fn dtype(&self) -> DType {
        self.img_in.weight.val().dtype()
    }

    pub fn device(&self) -> B::Device {
        self.img_in.weight.val().device()
    }

    /// RoPE tables for a joint sequence of `txt_ids` followed by `img_ids` (image + reference tokens).
    pub fn rope(&self, txt_ids: &PositionIds, img_ids: &PositionIds) -> RopeTable<B> {
        let ids = PositionIds::concat(&[txt_ids, img_ids]);
        RopeTable::new(&ids, &self.config.axes_dims_rope, self.config.rope_theta, &self.device())
    }

    /// Predicted velocity [B, N, out_channels] for every image token, reference tokens included (the
    /// caller drops those).
    ///
    /// * `hidden_states` [B, N, in_channels] packed latents (+ reference tokens after them)
    /// * `encoder_hidden_states` [B, L, joint_attention_dim] prompt embeddings
    /// * `timestep` [B] sigma in [0, 1]; `guidance` [B] (ignored by models without guidance embedding)
    /// * `rope` from [`Self::rope`] over the L text then N image ids
    pub fn forward(
        &self,
        hidden_states: Tensor<B, 3>,
        encoder_hidden_states: Tensor<B, 3>,
        timestep: Tensor<B, 1>,
        guidance: Option<Tensor<B, 1>>,
        rope: &RopeTable<B>,
    ) -> Tensor<B, 3> {
        let dtype = self.dtype();
        let txt_len = encoder_hidden_states.shape().dims::<3>()[1];
        let img_len = hidden_states.shape().dims::<3>()[1];
        assert_eq!(rope.len(), txt_len + img_len, "RoPE table covers {} tokens, input has {txt_len} text + {img_len} image", rope.len());

        // The reference casts sigma to the model dtype before scaling by 1000.
        let timestep = timestep.cast(dtype) * 1000.0;
        let guidance = guidance.map(|g| g.cast(dtype) * 1000.0);
        let temb = self.time_guidance.forward(timestep, guidance);

        let img_mods = self.double_stream_modulation_img.forward(temb.clone());
        let txt_mods = self.double_stream_modulation_txt.forward(temb.clone());
        let single_mod = self.single_stream_modulation.forward(temb.clone()).remove(0);
        let img_mods = [img_mods[0].clone(), img_mods[1].clone()];
        let txt_mods = [txt_mods[0].clone(), txt_mods[1].clone()];

        let mut img = self.img_in.forward(hidden_states.cast(dtype));
        let mut txt = self.txt_in.forward(encoder_hidden_states.cast(dtype));
        for block in &self.double_blocks {
            (img, txt) = block.forward(img, txt, &img_mods, &txt_mods, rope);
        }
        let mut h = Tensor::cat(vec![txt, img], 1);
        for block in &self.single_blocks {
            h = block.forward(h, &single_mod, rope);
        }
        let img = h.narrow(1, txt_len, img_len);

        let d = self.config.inner_dim();
        let m = self.final_layer.ada_ln_modulation.forward(silu(temb)).unsqueeze_dim::<3>(1);
        let shift = m.clone().narrow(2, 0, d);
        let scale = m.narrow(2, d, d);
        let x = layer_norm(img, self.config.eps) * (scale + 1.0) + shift;
        self.final_layer.linear.forward(x)
    }

    /// Checks input shapes against the config; the forward itself asserts, this returns errors.
    pub fn check_inputs(&self, hidden_states: &[usize], encoder_hidden_states: &[usize]) -> Result<()> {
        let c = &self.config;
        if hidden_states.len() != 3 || hidden_states[2] != c.in_channels {
            return Err(Error::Input { name: "hidden_states", message: format!("shape {hidden_states:?}, expected [B, N, {}]", c.in_channels) });
        }
        if encoder_hidden_states.len() != 3 || encoder_hidden_states[2] != c.joint_attention_dim || encoder_hidden_states[0] != hidden_states[0] {
            return Err(Error::Input {
                name: "encoder_hidden_states",
                message: format!("shape {encoder_hidden_states:?}, expected [{}, L, {}]", hidden_states[0], c.joint_attention_dim),
            });
        }
        Ok(())
    }
}
