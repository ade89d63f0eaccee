//! Row bands: computing a large activation a slice of rows at a time.
//!
//! A 3x3 convolution only needs one extra row above and below each output row, and GroupNorm + SiLU are
//! per-element once the group statistics are known. So `conv(silu(group_norm(x)))` and
//! `conv(upsample(x))` are computed band by band into a preallocated output: the normalized or
//! upsampled input and the convolution's own work buffers then exist only for one band instead of the
//! whole image. Results are the same up to float summation order.

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Default elements of one band's input on CPU backends (channels x rows x width): 8M, i.e. 32 MiB in
/// f32. CubeCL (GPU) backends default to no banding: GPU memory is rarely the limit there and bands cost
/// about 12 % of the decode time on an H100.
pub const DEFAULT_BAND_ELEMENTS: usize = 8 << 20;

/// 0 = automatic (see [`DEFAULT_BAND_ELEMENTS`]).
static BAND_ELEMENTS: AtomicUsize = AtomicUsize::new(0);

/// Sets, process-wide, how many input elements one row band may hold (at least one row is always
/// taken). Smaller bands lower peak memory a little further for large images and cost some speed;
/// `usize::MAX` disables banding, `0` restores the automatic choice. Results do not depend on it beyond
/// float summation order.
pub fn set_band_elements(elements: usize) {
    BAND_ELEMENTS.store(elements, Ordering::Relaxed);
}

/// The band size in elements used on `device`.
pub(crate) fn band_elements<B: Backend>(device: &B::Device) -> usize {
    match BAND_ELEMENTS.load(Ordering::Relaxed) {
        0 if crate::backend_kind::is_cubecl::<B>(device) => usize::MAX,
        0 => DEFAULT_BAND_ELEMENTS,
        n => n,
    }
}

/// Rows per band on `device` so that `elems_per_row * rows <= band_elements` (at least 1).
pub(crate) fn rows_per_band<B: Backend>(device: &B::Device, elems_per_row: usize) -> usize {
    (band_elements::<B>(device) / elems_per_row.max(1)).max(1)
}

/// `[r0, r1)` row ranges of at most `rows` rows covering `0..height`.
pub(crate) fn bands(height: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..height).step_by(rows.max(1)).map(move |r0| (r0, (r0 + rows).min(height)))
}

/// An activation held as consecutive row bands `[b, c, rows_i, w]` (not yet concatenated), so that the
/// caller can drop the inputs before paying for the concatenation.
pub(crate) struct RowBands<B: Backend> {
    parts: Vec<Tensor<B, 4>>,
}

impl<B: Backend> RowBands<B> {
    /// Computes `band(r0, r1)` for the bands of `0..height` with `rows` rows each.
    pub(crate) fn build(height: usize, rows: usize, band: impl FnMut((usize, usize)) -> Tensor<B, 4>) -> Self {
        Self { parts: bands(height, rows.min(height.max(1))).map(band).collect() }
    }

    /// Concatenates the bands (the output exists twice for a moment; a single band is returned as is).
    ///
    /// Not a preallocated output filled with `slice_assign`: burn-flex 0.21's `slice_assign` copies the
    /// whole destination on every call (it clones the tensor handle before its copy-on-write check), which
    /// costs the same peak memory plus one full copy per band (measured).
    pub(crate) fn concat(mut self) -> Tensor<B, 4> {
        if self.parts.len() == 1 {
            return self.parts.pop().expect("one band");
        }
        Tensor::cat(self.parts, 2)
    }
}

/// Row bands of `conv(silu(group_norm(x)))` (stride-1 same-padded conv), each band passed through
/// `finish(band, r0, r1)` (e.g. to add a residual) before it is kept.
pub(crate) fn norm_silu_conv_bands<B: Backend>(
    norm: &crate::group_norm::GroupNorm<B>,
    conv: &crate::conv::Conv2d<B>,
    x: &Tensor<B, 4>,
    finish: impl FnMut(Tensor<B, 4>, usize, usize) -> Tensor<B, 4>,
) -> RowBands<B> {
    let stats = norm.stats(x);
    conv.forward_row_bands(x.dims(), |lo, hi| norm.apply_silu(x.clone().narrow(2, lo, hi - lo), &stats), finish)
}

/// `conv(silu(group_norm(x)))` for a stride-1 same-padded conv, band by band.
pub(crate) fn norm_silu_conv<B: Backend>(
    norm: &crate::group_norm::GroupNorm<B>,
    conv: &crate::conv::Conv2d<B>,
    x: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    norm_silu_conv_bands(norm, conv, x, |band, _, _| band).concat()
}

/// `conv(upsample_nearest_2x(x))` for a stride-1 same-padded conv, band by band of the upsampled rows.
pub(crate) fn upsample_conv<B: Backend>(conv: &crate::conv::Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let bands = conv.forward_row_bands(
        [b, c, 2 * h, 2 * w],
        |lo, hi| {
            // Upsampled rows lo..hi come from input rows lo/2 ..= (hi-1)/2.
            let (src_lo, src_hi) = (lo / 2, (hi - 1) / 2 + 1);
            let up = crate::sampling::upsample_nearest_2x(x.clone().narrow(2, src_lo, src_hi - src_lo));
            let skip = lo - 2 * src_lo;
            if skip == 0 && hi - lo == up.dims()[2] { up } else { up.narrow(2, skip, hi - lo) }
        },
        |band, _, _| band,
    );
    drop(x);
    bands.concat()
}
