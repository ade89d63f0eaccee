//! 2-D convolution with PyTorch weight layout [out, in, kh, kw] and bias, via `burn::tensor::module::conv2d`.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use crate::bands::{RowBands, rows_per_band};
use crate::conv_algorithm::{ConvAlgorithm, effective_conv_algorithm, shifted_matmul_conv};
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
#[derive(Module, Debug)]
pub(crate) struct Conv2d<B: Backend> {
    weight: Param<Tensor<B, 4>>,
    bias: Param<Tensor<B, 1>>,
    stride: usize,
    #[module(skip)]
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
        match self.padding {
            Padding::Same(p) => self.conv(x, [p, p]),
            Padding::BottomRight1 => self.forward_bottom_right_padded(x),
        }
    }

    /// The convolution itself with `padding` = [rows, columns] of zeros on both sides, through the
    /// selected [`ConvAlgorithm`].
    fn conv(&self, x: Tensor<B, 4>, padding: [usize; 2]) -> Tensor<B, 4> {
        match effective_conv_algorithm::<B>(&x.device()) {
            ConvAlgorithm::Backend | ConvAlgorithm::Auto => conv2d(
                x,
                self.weight.val(),
                Some(self.bias.val()),
                ConvOptions::new([self.stride, self.stride], padding, [1, 1], 1),
            ),
            ConvAlgorithm::ShiftedMatmul => {
                let [ph, pw] = padding;
                let x = if ph == 0 && pw == 0 { x } else { pad_zeros(x, [ph, ph], [pw, pw]) };
                shifted_matmul_conv(x, &self.weight.val(), &self.bias.val(), self.stride)
            }
        }
    }

    /// `F.pad(x, (0, 1, 0, 1))` then the (stride-2, 3x3) convolution, in row bands of the output so the
    /// padded copy and the convolution buffers exist for one band at a time.
    fn forward_bottom_right_padded(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, c_in, h, w] = x.dims();
        let k = self.weight.shape()[2];
        let s = self.stride;
        let out_h = (h + 1 - k) / s + 1;
        let rows = rows_per_band::<B>(&x.device(), c_in * w * s);
        RowBands::build(out_h, rows, |(o0, o1)| {
            // Output rows o0..o1 read padded input rows s*o0 .. s*(o1-1)+k; row h is the zero pad.
            let lo = s * o0;
            let need = s * (o1 - 1) + k - lo;
            let have = need.min(h - lo);
            let band = pad_zeros(x.clone().narrow(2, lo, have), [0, need - have], [0, 1]);
            self.conv(band, [0, 0])
        })
        .concat()
    }
}

impl<B: Backend> Conv2d<B> {
    /// Stride-1 "same" convolution of a virtual input of `in_dims` = [b, c_in, h, w] that is produced
    /// on demand: `input(lo, hi)` must return input rows `lo..hi`. The output is computed in row bands
    /// (see [`crate::bands`]), so the full input never needs to exist; each output band goes through
    /// `finish(band, r0, r1)`.
    pub(crate) fn forward_row_bands(
        &self,
        in_dims: [usize; 4],
        input: impl Fn(usize, usize) -> Tensor<B, 4>,
        mut finish: impl FnMut(Tensor<B, 4>, usize, usize) -> Tensor<B, 4>,
    ) -> RowBands<B> {
        let Padding::Same(p) = self.padding else {
            unreachable!("forward_row_bands is only used for stride-1 same-padded convolutions")
        };
        debug_assert_eq!(self.stride, 1);
        let [_, c_in, h, w] = in_dims;
        let c_out = self.weight.shape()[0];
        let rows = rows_per_band::<B>(&self.weight.device(), c_in.max(c_out) * w);
        RowBands::build(h, rows, |(r0, r1)| {
            // Input rows with a halo of `p` rows; the halo's outputs are cut away again.
            let lo = r0.saturating_sub(p);
            let hi = (r1 + p).min(h);
            let y = self.conv(input(lo, hi), [p, p]);
            let y = if lo == r0 && hi == r1 { y } else { y.narrow(2, r0 - lo, r1 - r0) };
            finish(y, r0, r1)
        })
    }
}

/// Zero padding `[top, bottom]` rows and `[left, right]` columns, in the input's dtype.
///
/// Not `Tensor::pad` / `PaddedConvOptions::asymmetric`: in burn 0.21 those build the padded buffer with
/// the device's default float dtype, which panics on Flex for a BF16/F16 input.
fn pad_zeros<B: Backend>(x: Tensor<B, 4>, rows: [usize; 2], cols: [usize; 2]) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let padded =
        Tensor::<B, 4>::full([b, c, h + rows[0] + rows[1], w + cols[0] + cols[1]], 0.0, (&x.device(), x.dtype()));
    padded.slice_assign([0..b, 0..c, rows[0]..rows[0] + h, cols[0]..cols[0] + w], x)
}
