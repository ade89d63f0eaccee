//! Resolution changes: stride-2 conv downsampling (padded right/bottom) and nearest x2 + conv upsampling.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::conv::{Conv2d, Padding};
use crate::error::Result;
use crate::params::Params;

/// `F.pad(x, (0, 1, 0, 1))` then a 3x3 conv with stride 2 and no padding: H, W -> H/2, W/2 (even sides).
#[derive(Module, Debug)]
pub(crate) struct Downsample<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> Downsample<B> {
    /// `name` is e.g. `encoder.down_blocks.0.downsamplers.0.conv`.
    pub(crate) fn load(p: &mut Params<'_, B>, name: &str, channels: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::load(p, name, channels, channels, 3, 2, Padding::BottomRight1)? })
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

/// Nearest-neighbour x2 (each pixel repeated 2x2, exactly `F.interpolate(scale_factor=2, mode="nearest")`)
/// followed by a 3x3 conv with padding 1.
#[derive(Module, Debug)]
pub(crate) struct Upsample<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> Upsample<B> {
    /// `name` is e.g. `decoder.up_blocks.0.upsamplers.0.conv`.
    pub(crate) fn load(p: &mut Params<'_, B>, name: &str, channels: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::load(p, name, channels, channels, 3, 1, Padding::Same(1))? })
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        crate::bands::upsample_conv(&self.conv, x)
    }
}

/// [B, C, H, W] -> [B, C, 2H, 2W], out[.., y, x] = in[.., y/2, x/2].
pub(crate) fn upsample_nearest_2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
}
