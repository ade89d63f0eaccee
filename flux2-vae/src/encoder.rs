//! Encoder: conv_in, down levels (ResNets + stride-2 conv except on the last level), mid block,
//! GN-SiLU-conv_out to 2*latent channels (mean and log-variance), then the optional 1x1 quant_conv.

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
use crate::sampling::Downsample;

#[derive(Module, Debug)]
struct DownLevel<B: Backend> {
    resnets: Vec<ResnetBlock<B>>,
    downsample: Option<Downsample<B>>,
}

#[derive(Module, Debug)]
pub(crate) struct Encoder<B: Backend> {
    conv_in: Conv2d<B>,
    levels: Vec<DownLevel<B>>,
    mid: MidBlock<B>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
    quant_conv: Option<Conv2d<B>>,
}

impl<B: Backend> Encoder<B> {
    pub(crate) fn load(p: &mut Params<'_, B>, cfg: &VaeConfig) -> Result<Self> {
        let g = cfg.norm_num_groups;
        let chans = &cfg.block_out_channels;
        let conv_in = Conv2d::load(p, "encoder.conv_in", cfg.in_channels, chans[0], 3, 1, Padding::Same(1))?;
        let mut levels = Vec::with_capacity(chans.len());
        let mut c_prev = chans[0];
        for (i, &c) in chans.iter().enumerate() {
            let mut resnets = Vec::with_capacity(cfg.layers_per_block);
            for j in 0..cfg.layers_per_block {
                let c_in = if j == 0 { c_prev } else { c };
                resnets.push(ResnetBlock::load(p, &format!("encoder.down_blocks.{i}.resnets.{j}"), c_in, c, g)?);
            }
            let downsample = if i + 1 < chans.len() {
                Some(Downsample::load(p, &format!("encoder.down_blocks.{i}.downsamplers.0.conv"), c)?)
            } else {
                None
            };
            levels.push(DownLevel { resnets, downsample });
            c_prev = c;
        }
        let c_last = c_prev;
        let mid = MidBlock::load(p, "encoder.mid_block", c_last, g, cfg.mid_block_add_attention)?;
        let norm_out = GroupNorm::load(p, "encoder.conv_norm_out", c_last, g)?;
        let moments = 2 * cfg.latent_channels;
        let conv_out = Conv2d::load(p, "encoder.conv_out", c_last, moments, 3, 1, Padding::Same(1))?;
        let quant_conv = if cfg.use_quant_conv {
            Some(Conv2d::load(p, "quant_conv", moments, moments, 1, 1, Padding::Same(0))?)
        } else {
            None
        };
        Ok(Self { conv_in, levels, mid, norm_out, conv_out, quant_conv })
    }

    /// [B, in, H, W] -> moments [B, 2*latent, H/f, W/f] (mean channels first, then log-variance).
    pub(crate) fn moments(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv_in.forward(x);
        for level in &self.levels {
            for resnet in &level.resnets {
                x = resnet.forward(x);
            }
            if let Some(down) = &level.downsample {
                x = down.forward(x);
            }
        }
        let x = self.mid.forward(x);
        let x = norm_silu_conv(&self.norm_out, &self.conv_out, &x);
        match &self.quant_conv {
            Some(q) => q.forward(x),
            None => x,
        }
    }

    /// Posterior mean (the distribution's mode): the first half of the moments' channels.
    pub(crate) fn mean(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let moments = self.moments(x);
        let latent = moments.dims()[1] / 2;
        moments.narrow(1, 0, latent)
    }
}
