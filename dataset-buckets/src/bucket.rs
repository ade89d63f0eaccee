//! Aspect-ratio buckets, computed the way ai-toolkit computes them, so a LoRA trained here sees the
//! same pixel grids as one trained there.
//!
//! For a `w x h` image at resolution `r` with divisibility `d` (16 for FLUX.2):
//! 1. target area `t = min(w h, r^2)`: images are never scaled up to reach `r^2`;
//! 2. `s = (t / (w h))^0.5`, and the scaled sides in units of `d` are `w s / d`, `h s / d`;
//! 3. the four floor/ceil combinations of those, in the order (floor, floor), (floor, ceil),
//!    (ceil, floor), (ceil, ceil), times `d`, are the candidates; candidates with a zero side or an area
//!    above `r^2` are dropped; the one whose area is closest to `t` wins, the earlier one on a tie;
//! 4. if no candidate survives (only for aspect ratios so extreme that one scaled side is below `d`),
//!    ai-toolkit falls back to the floored sides, at least `d`, which can exceed `r^2`; this crate
//!    computes the same fallback but marks it ([`BucketFit::fits`] is false) and loading reports the
//!    image as [`crate::ProblemKind::ExtremeAspect`] instead of training on it.
//!
//! The image is then resized by the larger of `bucket / source` for the two sides, each side rounded
//! up (so both cover the bucket), and cropped to the bucket: in the middle, offsets rounded down, or at
//! a seeded random offset with `random_crop`.
//!
//! The float operations (a `powf(0.5)`, IEEE divisions and products of exact integers) are the same as
//! Python's, so the results agree bit for bit; `tests/bucket_table.rs` checks that against numbers
//! recorded from ai-toolkit's own function by `tools/datasets/record_bucket_table.py`.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Width and height in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const fn new(width: u32, height: u32) -> Self {
        Size { width, height }
    }

    /// Area in pixels (no overflow for any `u32` sides).
    pub fn area(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// The result of [`bucket_for_size`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketFit {
    /// The bucket (crop) size.
    pub size: Size,
    /// False when ai-toolkit's fallback was taken: the bucket may then exceed `resolution^2`.
    pub fits: bool,
}

/// The ai-toolkit bucket for an image of `width x height` pixels (see the module docs).
///
/// `width`, `height`, `resolution` and `divisibility` must be positive.
pub fn bucket_for_size(width: u32, height: u32, resolution: u32, divisibility: u32) -> BucketFit {
    let total = u64::from(width) * u64::from(height);
    let max_area = u64::from(resolution) * u64::from(resolution);
    let target = total.min(max_area);
    let d = u64::from(divisibility);

    let scaler = (target as f64 / total as f64).powf(0.5);
    let w_units = (f64::from(width) * scaler) / d as f64;
    let h_units = (f64::from(height) * scaler) / d as f64;
    let (w_lo, w_hi) = (w_units.floor() as u64 * d, w_units.ceil() as u64 * d);
    let (h_lo, h_hi) = (h_units.floor() as u64 * d, h_units.ceil() as u64 * d);

    let candidates = [(w_lo, h_lo), (w_lo, h_hi), (w_hi, h_lo), (w_hi, h_hi)];
    let mut best: Option<((u64, u64), u64)> = None;
    for (w, h) in candidates {
        if w == 0 || h == 0 || w * h > max_area {
            continue;
        }
        let distance = (w * h).abs_diff(target);
        // Strictly smaller only: on a tie the earlier candidate stays, as Python's `min` keeps it.
        if best.is_none_or(|(_, best_distance)| distance < best_distance) {
            best = Some(((w, h), distance));
        }
    }
    match best {
        Some(((w, h), _)) => BucketFit { size: Size::new(to_u32(w), to_u32(h)), fits: true },
        None => BucketFit { size: Size::new(to_u32(w_lo.max(d)), to_u32(h_lo.max(d))), fits: false },
    }
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A crop rectangle in the resized image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CropBox {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// How a sample's pixels are produced from its source image: resize to `resize_to`, crop `crop`
/// (whose size is the bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Geometry {
    /// Source size the bucket was computed from (after EXIF orientation and `scale`).
    pub source: Size,
    /// Size the whole image is resized to (bicubic); both sides cover the bucket.
    pub resize_to: Size,
    /// The crop, of the bucket's size, inside `resize_to`.
    pub crop: CropBox,
}

impl Geometry {
    /// The bucket size (the size of the crop, and of the prepared image).
    pub fn bucket(&self) -> Size {
        Size::new(self.crop.width, self.crop.height)
    }
}

/// How to place the crop inside the resized image.
#[derive(Debug)]
pub enum CropPlacement<'a> {
    /// Middle, offsets rounded down.
    Center,
    /// Uniform over every valid offset (both ends included), drawn from the generator.
    Random(&'a mut Rng),
}

/// Resize and crop for an image of `source` size (already scaled by the dataset's `scale`) into
/// `bucket`. Resizes by the larger scale factor with both sides rounded up, as ai-toolkit does.
pub fn plan_geometry(source: Size, bucket: Size, placement: CropPlacement<'_>) -> Geometry {
    let sx = f64::from(bucket.width) / f64::from(source.width);
    let sy = f64::from(bucket.height) / f64::from(source.height);
    let s = sx.max(sy);
    let resize_to =
        Size::new((f64::from(source.width) * s).ceil() as u32, (f64::from(source.height) * s).ceil() as u32);
    // The rounded-up sides are never below the bucket; saturate anyway rather than trust float rounding.
    let slack_x = resize_to.width.saturating_sub(bucket.width);
    let slack_y = resize_to.height.saturating_sub(bucket.height);
    let (x, y) = match placement {
        CropPlacement::Center => (slack_x / 2, slack_y / 2),
        CropPlacement::Random(rng) => {
            (rng.below(u64::from(slack_x) + 1) as u32, rng.below(u64::from(slack_y) + 1) as u32)
        }
    };
    Geometry {
        source,
        resize_to: Size::new(resize_to.width.max(bucket.width), resize_to.height.max(bucket.height)),
        crop: CropBox { x, y, width: bucket.width, height: bucket.height },
    }
}

/// The source size after ai-toolkit's dataset `scale` (`int(side * scale)`).
pub fn scaled_source(size: Size, scale: f64) -> Size {
    if scale == 1.0 {
        return size;
    }
    Size::new((f64::from(size.width) * scale) as u32, (f64::from(size.height) * scale) as u32)
}
