//! ResNet block: GN-SiLU-conv3-GN-SiLU-conv3 plus the input (through a 1x1 conv when channels change).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::bands::{norm_silu_conv, norm_silu_conv_bands};
use crate::conv::{Conv2d, Padding};
use crate::error::Result;
use crate::group_norm::GroupNorm;
use crate::params::Params;

#[derive(Module, Debug)]
pub(crate) struct ResnetBlock<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: Conv2d<B>,
    norm2: GroupNorm<B>,
    conv2: Conv2d<B>,
    shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    /// `name` is the diffusers prefix, e.g. `encoder.down_blocks.1.resnets.0`.
    pub(crate) fn load(p: &mut Params<'_, B>, name: &str, c_in: usize, c_out: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::load(p, &format!("{name}.norm1"), c_in, groups)?,
            conv1: Conv2d::load(p, &format!("{name}.conv1"), c_in, c_out, 3, 1, Padding::Same(1))?,
            norm2: GroupNorm::load(p, &format!("{name}.norm2"), c_out, groups)?,
            conv2: Conv2d::load(p, &format!("{name}.conv2"), c_out, c_out, 3, 1, Padding::Same(1))?,
            shortcut: if c_in != c_out {
                Some(Conv2d::load(p, &format!("{name}.conv_shortcut"), c_in, c_out, 1, 1, Padding::Same(0))?)
            } else {
                None
            },
        })
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // Banded (see crate::bands): at most the input, the first conv output and the output bands are
        // alive at once, plus one band of normalized rows and convolution buffers.
        let h1 = norm_silu_conv(&self.norm1, &self.conv1, &x);
        // The residual (through the 1x1 shortcut when channels change) is added band by band, so the
        // input and `h1` can be dropped before the output bands are concatenated.
        let out = norm_silu_conv_bands(&self.norm2, &self.conv2, &h1, |h, r0, r1| {
            let x_rows = x.clone().narrow(2, r0, r1 - r0);
            let x_rows = match &self.shortcut {
                Some(conv) => conv.forward(x_rows),
                None => x_rows,
            };
            x_rows + h
        });
        drop(h1);
        drop(x);
        out.concat()
    }
}
