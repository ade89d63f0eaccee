//! Lanczos resampling of 8-bit RGB images with the arithmetic of Pillow's `Image.resize(size,
//! Image.LANCZOS)`, so reference images larger than the pipeline's area limit get the same pixels as in
//! diffusers (which resizes them with Pillow).
//!
//! What makes the pixels identical, as Pillow computes them (libImaging `Resample.c`):
//! * a separable filter, horizontal pass first (only when the width changes), then vertical (only when
//!   the height changes), each pass rounding to 8 bits;
//! * per output index `i`: centre `(i + 0.5) * in/out`; for downscaling the kernel is stretched by
//!   `in/out` (support `3 * in/out`); taps `j` from `round(centre - support)` to `round(centre + support)`
//!   (rounded as `(int)(x + 0.5)`, clamped to the image), weights `lanczos3((j - centre + 0.5) / stretch)`
//!   normalized to sum 1, all in f64;
//! * weights in fixed point with 22 fraction bits (`(int)(w * 2^22 ± 0.5)`, rounding away from zero),
//!   accumulated in integers from `2^21` (round half up) and clipped to 0..=255 after an arithmetic
//!   shift by 22.
//!
//! `tests/fixtures/pipeline/resample/` holds Pillow outputs this must equal byte for byte.

use image::RgbImage;

const PRECISION_BITS: u32 = 22;
const SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos3(x: f64) -> f64 {
    if (-SUPPORT..SUPPORT).contains(&x) { sinc(x) * sinc(x / SUPPORT) } else { 0.0 }
}

/// Per output index: first input index, and the fixed-point weights of the taps from there.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let stretch = scale.max(1.0);
    let support = SUPPORT * stretch;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for i in 0..out_size {
        let center = (i as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero, as `as i64` does.
        let lo = ((center - support + 0.5) as i64).max(0);
        let hi = ((center + support + 0.5) as i64).min(in_size as i64);
        let raw: Vec<f64> = (lo..hi).map(|j| lanczos3((j as f64 - center + 0.5) / stretch)).collect();
        let sum: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if sum != 0.0 { w / sum } else { w };
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
            })
            .collect();
        first.push(lo as usize);
        weights.push(fixed);
    }
    Taps { first, weights }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass along rows (`horizontal`) or columns, 8-bit in and out.
fn pass(src: &RgbImage, out_w: u32, out_h: u32, horizontal: bool) -> RgbImage {
    let t = if horizontal {
        taps(src.width() as usize, out_w as usize)
    } else {
        taps(src.height() as usize, out_h as usize)
    };
    RgbImage::from_fn(out_w, out_h, |x, y| {
        let (i, other) = if horizontal { (x as usize, y) } else { (y as usize, x) };
        let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
        for (k, &w) in t.weights[i].iter().enumerate() {
            let j = (t.first[i] + k) as u32;
            let p = if horizontal { src.get_pixel(j, other) } else { src.get_pixel(other, j) };
            for c in 0..3 {
                acc[c] += p[c] as i64 * w as i64;
            }
        }
        image::Rgb(acc.map(clip8))
    })
}

/// `src` resized to `width x height` exactly as Pillow's `resize((width, height), Image.LANCZOS)` does for
/// an RGB image.
pub fn resize_lanczos(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut img = std::borrow::Cow::Borrowed(src);
    if width != src.width() {
        img = std::borrow::Cow::Owned(pass(&img, width, src.height(), true));
    }
    if height != src.height() {
        img = std::borrow::Cow::Owned(pass(&img, width, height, false));
    }
    img.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point_and_identity_is_untouched() {
        for (n_in, n_out) in [(100, 37), (37, 100), (1024, 1000), (5, 1)] {
            let t = taps(n_in, n_out);
            for w in &t.weights {
                let sum: i64 = w.iter().map(|&v| v as i64).sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64, "{n_in}->{n_out}: {sum}");
            }
        }
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 7]));
        assert_eq!(resize_lanczos(&img, 7, 5), img);
        // A constant image stays constant.
        let flat = RgbImage::from_pixel(40, 30, image::Rgb([200, 13, 99]));
        assert!(resize_lanczos(&flat, 17, 11).pixels().all(|p| *p == image::Rgb([200, 13, 99])));
    }
}
