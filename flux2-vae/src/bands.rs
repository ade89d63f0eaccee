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

/// Default elements of one band's input (channels x rows x width): 8M, i.e. 32 MiB in f32.
pub const DEFAULT_BAND_ELEMENTS: usize = 8 << 20;

static BAND_ELEMENTS: AtomicUsize = AtomicUsize::new(DEFAULT_BAND_ELEMENTS);

/// Sets, process-wide, how many input elements one row band may hold (at least one row is always
/// taken). Smaller bands lower peak memory a little further for large images and cost some speed;
/// `usize::MAX` disables banding. Results do not depend on it beyond float summation order.
pub fn set_band_elements(elements: usize) {
    BAND_ELEMENTS.store(elements.max(1), Ordering::Relaxed);
}

/// The current band size in elements (see [`set_band_elements`]).
pub fn band_elements() -> usize {
    BAND_ELEMENTS.load(Ordering::Relaxed)
}

/// Rows per band so that `elems_per_row * rows <= band_elements()` (at least 1).
pub(crate) fn rows_per_band(elems_per_row: usize) -> usize {
    (band_elements() / elems_per_row.max(1)).max(1)
}

/// `[r0, r1)` row ranges of at most `rows` rows covering `0..height`.
pub(crate) fn bands(height: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..height).step_by(rows.max(1)).map(move |r0| (r0, (r0 + rows).min(height)))
}

/// Builds a `[b, c, h, w]` tensor from row bands produced by `band(r0, r1)` (each `[b, c, r1-r0, w]`),
/// concatenated once at the end (so the output exists twice for a moment).
///
/// Not a preallocated output filled with `slice_assign`: burn-flex 0.21's `slice_assign` copies the
/// whole destination on every call (it clones the tensor handle before the copy-on-write check), which
/// costs the same peak memory and one full copy per band (measured).
pub(crate) fn assemble<B: Backend>(
    out_height: usize,
    rows: usize,
    mut band: impl FnMut(usize, usize) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    if rows >= out_height {
        return band(0, out_height);
    }
    Tensor::cat(bands(out_height, rows).map(|(r0, r1)| band(r0, r1)).collect(), 2)
}

/// `conv(silu(group_norm(x)))` for a stride-1 same-padded conv, band by band.
pub(crate) fn norm_silu_conv<B: Backend>(
    norm: &crate::group_norm::GroupNorm<B>,
    conv: &crate::conv::Conv2d<B>,
    x: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let stats = norm.stats(x);
    conv.forward_rows(x.dims(), |lo, hi| norm.apply_silu(x.clone().narrow(2, lo, hi - lo), &stats))
}

/// `conv(upsample_nearest_2x(x))` for a stride-1 same-padded conv, band by band of the upsampled rows.
pub(crate) fn upsample_conv<B: Backend>(conv: &crate::conv::Conv2d<B>, x: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    conv.forward_rows([b, c, 2 * h, 2 * w], |lo, hi| {
        // Upsampled rows lo..hi come from input rows lo/2 ..= (hi-1)/2.
        let (src_lo, src_hi) = (lo / 2, (hi - 1) / 2 + 1);
        let up = crate::sampling::upsample_nearest_2x(x.clone().narrow(2, src_lo, src_hi - src_lo));
        let skip = lo - 2 * src_lo;
        if skip == 0 && hi - lo == up.dims()[2] { up } else { up.narrow(2, skip, hi - lo) }
    })
}
