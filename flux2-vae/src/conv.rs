//! 2-D convolution with PyTorch weight layout [out, in, kh, kw] and bias, via `burn::tensor::module::conv2d`.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use crate::error::Result;
use crate::params::{ParamKind, Params};

/// Padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Padding {
    /// The same amount on all four sides.
    Same(usize),
    /// Zero on top/left, one on bottom/right (the VAE's stride-2 downsampling).
    BottomRight1,
}

/// A convolution layer (weights in the model dtype).
#[derive(Debug, Clone)]
pub(crate) struct Conv2d<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    stride: usize,
    padding: Padding,
}

impl<B: Backend> Conv2d<B> {
    /// Loads `{name}.weight` [c_out, c_in, k, k] and `{name}.bias` [c_out].
    pub(crate) fn load(
        p: &mut Params<'_, B>,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> Result<Self> {
        let weight = p.get(&format!("{name}.weight"), [c_out, c_in, kernel, kernel], ParamKind::ConvWeight)?;
        let bias = p.get(&format!("{name}.bias"), [c_out], ParamKind::Bias)?;
        Ok(Self { weight, bias, stride, padding })
    }

    pub(crate) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let s = [self.stride, self.stride];
        let (x, p) = match self.padding {
            Padding::Same(p) => (x, p),
            Padding::BottomRight1 => (pad_bottom_right_1(x), 0),
        };
        conv2d(x, self.weight.clone(), Some(self.bias.clone()), ConvOptions::new(s, [p, p], [1, 1], 1))
    }
}

/// Zero row at the bottom and zero column at the right, in the input's dtype.
///
/// Not `Tensor::pad` / `PaddedConvOptions::asymmetric`: in burn 0.21 those build the padded buffer with
/// the device's default float dtype, which panics on Flex for a BF16/F16 input.
fn pad_bottom_right_1<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let padded = Tensor::<B, 4>::zeros([b, c, h + 1, w + 1], (&x.device(), x.dtype()));
    padded.slice_assign([0..b, 0..c, 0..h, 0..w], x)
}
