//! Mid block shared by encoder and decoder: ResNet, optional self-attention, ResNet (same width).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::attention::MidAttention;
use crate::error::Result;
use crate::params::Params;
use crate::resnet::ResnetBlock;

#[derive(Module, Debug)]
pub(crate) struct MidBlock<B: Backend> {
    resnet_in: ResnetBlock<B>,
    attention: Option<MidAttention<B>>,
    resnet_out: ResnetBlock<B>,
}

impl<B: Backend> MidBlock<B> {
    /// `name` is `encoder.mid_block` or `decoder.mid_block`.
    pub(crate) fn load(
        p: &mut Params<'_, B>,
        name: &str,
        channels: usize,
        groups: usize,
        attention: bool,
    ) -> Result<Self> {
        Ok(Self {
            resnet_in: ResnetBlock::load(p, &format!("{name}.resnets.0"), channels, channels, groups)?,
            attention: if attention {
                Some(MidAttention::load(p, &format!("{name}.attentions.0"), channels, groups)?)
            } else {
                None
            },
            resnet_out: ResnetBlock::load(p, &format!("{name}.resnets.1"), channels, channels, groups)?,
        })
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.resnet_in.forward(x);
        let x = match &self.attention {
            Some(attn) => attn.forward(x),
            None => x,
        };
        self.resnet_out.forward(x)
    }
}
