//! Decoder: optional 1x1 post_quant_conv, conv_in, mid block, up levels (layers_per_block+1 ResNets and
//! nearest x2 + conv except on the last level), GN-SiLU-conv_out.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::bands::norm_silu_conv;
use crate::config::VaeConfig;
use crate::conv::{Conv2d, Padding};
use crate::error::Result;
use crate::group_norm::GroupNorm;
use crate::mid_block::MidBlock;
use crate::params::Params;
use crate::resnet::ResnetBlock;
use crate::sampling::Upsample;

#[derive(Module, Debug)]
struct UpLevel<B: Backend> {
    resnets: Vec<ResnetBlock<B>>,
    upsample: Option<Upsample<B>>,
}

#[derive(Module, Debug)]
pub(crate) struct Decoder<B: Backend> {
    post_quant_conv: Option<Conv2d<B>>,
    conv_in: Conv2d<B>,
    mid: MidBlock<B>,
    levels: Vec<UpLevel<B>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    pub(crate) fn load(p: &mut Params<'_, B>, cfg: &VaeConfig) -> Result<Self> {
        let g = cfg.norm_num_groups;
        let lat = cfg.latent_channels;
        // diffusers lists decoder channels from full resolution up; the decoder walks them reversed.
        let reversed: Vec<usize> = cfg.decoder_channels().iter().rev().copied().collect();
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(Conv2d::load(p, "post_quant_conv", lat, lat, 1, 1, Padding::Same(0))?)
        } else {
            None
        };
        let c_top = reversed[0];
        let conv_in = Conv2d::load(p, "decoder.conv_in", lat, c_top, 3, 1, Padding::Same(1))?;
        let mid = MidBlock::load(p, "decoder.mid_block", c_top, g, cfg.mid_block_add_attention)?;
        let mut levels = Vec::with_capacity(reversed.len());
        let mut c_prev = c_top;
        for (i, &c) in reversed.iter().enumerate() {
            let mut resnets = Vec::with_capacity(cfg.layers_per_block + 1);
            for j in 0..=cfg.layers_per_block {
                let c_in = if j == 0 { c_prev } else { c };
                resnets.push(ResnetBlock::load(p, &format!("decoder.up_blocks.{i}.resnets.{j}"), c_in, c, g)?);
            }
            let upsample = if i + 1 < reversed.len() {
                Some(Upsample::load(p, &format!("decoder.up_blocks.{i}.upsamplers.0.conv"), c)?)
            } else {
                None
            };
            levels.push(UpLevel { resnets, upsample });
            c_prev = c;
        }
        let norm_out = GroupNorm::load(p, "decoder.conv_norm_out", c_prev, g)?;
        let conv_out = Conv2d::load(p, "decoder.conv_out", c_prev, cfg.out_channels, 3, 1, Padding::Same(1))?;
        Ok(Self { post_quant_conv, conv_in, mid, levels, norm_out, conv_out })
    }

    /// Raw latents [B, latent, h, w] (unnormalized, not patchified) -> image [B, out, h*f, w*f].
    pub(crate) fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        let mut x = self.mid.forward(self.conv_in.forward(z));
        for level in &self.levels {
            for resnet in &level.resnets {
                x = resnet.forward(x);
            }
            if let Some(up) = &level.upsample {
                x = up.forward(x);
            }
        }
        norm_silu_conv(&self.norm_out, &self.conv_out, &x)
    }
}
