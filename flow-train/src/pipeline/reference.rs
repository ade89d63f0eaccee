//! Reference (edit) images, prepared exactly as diffusers' `Flux2Pipeline.__call__` prepares its `image`
//! argument before the VAE encodes it.
//!
//! For each image (diffusers 0.42.1, `pipeline_flux2.py` step 4 and `Flux2ImageProcessor`):
//! 1. refuse images with a side under 64 px or an aspect ratio above 8 (`check_image_input`);
//! 2. if `width * height > 1024 * 1024`: scale by `s = sqrt(1024² / (w h))` to `(int(w s), int(h s))`
//!    with Pillow's Lanczos filter (`_resize_to_target_area`; reproduced bit for bit, see
//!    [`super::resample`]);
//! 3. floor both sides to multiples of 16 (`vae_scale_factor * 2`) and center-crop to that size, the crop
//!    box starting at `((w - w16) // 2, (h - h16) // 2)` (`preprocess(..., resize_mode="crop")`, whose
//!    Flux2 `_resize_and_crop` only crops);
//! 4. pixels to `2 * (p / 255) - 1` in f32.
//!
//! When the generation size is not given, the first reference's prepared size is used.
//!
//! Where this differs from diffusers' PIL path, on purpose or by necessity: the EXIF orientation is
//! applied (as `diffusers.utils.load_image` does, but not a bare `PIL.Image.open`); transparent pixels are
//! composited over white (PIL's `convert("RGB")` drops alpha, showing whatever colour is stored); a 16-bit
//! image keeps 16-bit precision unless it must be resized, where it is first reduced to 8 bits (rounded;
//! Pillow truncates 16-bit PNGs to their high byte when opening them). For 8-bit RGB, grayscale or opaque
//! images, the prepared pixels equal diffusers' exactly.

use std::path::Path;

use burn::tensor::{Tensor, backend::Backend};
use flux2_vae::image_io::{dynamic_to_f32, open_image};
use flux2_vae::{ImageF32, ImageLoadOptions};
use image::DynamicImage;

use super::resample::resize_lanczos;
use crate::error::{Error, Result};

/// Largest reference area before it is scaled down (diffusers: 1024 * 1024).
pub const REFERENCE_MAX_AREA: usize = 1024 * 1024;
/// Smallest reference side (diffusers' `check_image_input`).
pub const REFERENCE_MIN_SIDE: usize = 64;
/// Largest reference aspect ratio (diffusers' `check_image_input`).
pub const REFERENCE_MAX_ASPECT_RATIO: f64 = 8.0;

/// A decoded reference image (EXIF orientation applied), not yet resized or cropped.
#[derive(Debug, Clone)]
pub struct ReferenceImage {
    /// Names the image in errors (its path, or what the caller chose).
    pub source: String,
    pub image: DynamicImage,
}

/// How a reference of a given size is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferencePlan {
    /// Lanczos resize to this `(width, height)` first (area above [`REFERENCE_MAX_AREA`]).
    pub resize: Option<(usize, usize)>,
    /// Crop box `(left, top, width, height)` of the (resized) image; the prepared size.
    pub crop: (usize, usize, usize, usize),
}

/// Checks a reference size as diffusers does; the error names `source`.
pub fn check_reference_size(source: &str, width: usize, height: usize) -> Result<()> {
    if width < REFERENCE_MIN_SIDE || height < REFERENCE_MIN_SIDE {
        return Err(Error::Invalid(format!(
            "reference image {source}: {width}x{height} is too small, both sides must be at least {REFERENCE_MIN_SIDE} px"
        )));
    }
    let ratio = (width as f64 / height as f64).max(height as f64 / width as f64);
    if ratio > REFERENCE_MAX_ASPECT_RATIO {
        return Err(Error::Invalid(format!(
            "reference image {source}: {width}x{height} has aspect ratio {ratio:.1}:1, at most {REFERENCE_MAX_ASPECT_RATIO}:1 is allowed"
        )));
    }
    Ok(())
}

/// The resize and crop diffusers applies to a `width x height` reference; `multiple` is the latent scale
/// factor (16 for FLUX.2), `max_area` the area limit ([`REFERENCE_MAX_AREA`]).
pub fn reference_plan(width: usize, height: usize, multiple: usize, max_area: usize) -> ReferencePlan {
    let (mut w, mut h) = (width, height);
    let resize = (w * h > max_area).then(|| {
        // Python floats are f64, `int()` truncates.
        let scale = (max_area as f64 / (w * h) as f64).sqrt();
        ((w as f64 * scale) as usize, (h as f64 * scale) as usize)
    });
    if let Some((rw, rh)) = resize {
        (w, h) = (rw, rh);
    }
    let (cw, ch) = (w / multiple * multiple, h / multiple * multiple);
    ReferencePlan { resize, crop: ((w - cw) / 2, (h - ch) / 2, cw, ch) }
}

impl ReferenceImage {
    /// Opens an image file (PNG, JPEG, WebP) with its EXIF orientation applied and checks its size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let image = open_image(path, &ImageLoadOptions::default())
            .map_err(|e| Error::Invalid(format!("reference image {}: {e}", path.display())))?;
        Self::new(path.display().to_string(), image)
    }

    /// A decoded image; `source` names it in errors.
    pub fn new(source: impl Into<String>, image: DynamicImage) -> Result<Self> {
        let source = source.into();
        check_reference_size(&source, image.width() as usize, image.height() as usize)?;
        Ok(Self { source, image })
    }

    /// Width and height before preparation.
    pub fn size(&self) -> (usize, usize) {
        (self.image.width() as usize, self.image.height() as usize)
    }

    /// The prepared image (steps 1-4 of the module docs) as [-1, 1] RGB planes.
    pub fn prepare(&self, multiple: usize, max_area: usize) -> Result<ImageF32> {
        let (w, h) = self.size();
        check_reference_size(&self.source, w, h)?;
        let plan = reference_plan(w, h, multiple, max_area);
        let options = ImageLoadOptions::default();
        let resized;
        let image = match plan.resize {
            None => &self.image,
            Some((rw, rh)) => {
                // Resample 8-bit RGB as Pillow does; other formats are reduced to it first.
                let rgb = match &self.image {
                    DynamicImage::ImageRgb8(rgb) => rgb.clone(),
                    other => to_rgb8(other, &options),
                };
                resized = DynamicImage::ImageRgb8(resize_lanczos(&rgb, rw as u32, rh as u32));
                &resized
            }
        };
        let (left, top, cw, ch) = plan.crop;
        if cw == 0 || ch == 0 {
            return Err(Error::Invalid(format!(
                "reference image {}: {w}x{h} leaves nothing after cropping to multiples of {multiple}",
                self.source
            )));
        }
        let cropped = image.crop_imm(left as u32, top as u32, cw as u32, ch as u32);
        Ok(dynamic_to_f32(&cropped, &options))
    }

    /// [`prepare`](Self::prepare) as a `[1, 3, H, W]` f32 tensor.
    pub fn to_tensor<B: Backend>(&self, multiple: usize, max_area: usize, device: &B::Device) -> Result<Tensor<B, 4>> {
        Ok(self.prepare(multiple, max_area)?.to_tensor(device))
    }
}

/// Any image as 8-bit RGB, alpha composited over the background like [`dynamic_to_f32`] does.
fn to_rgb8(image: &DynamicImage, options: &ImageLoadOptions) -> image::RgbImage {
    let planes = dynamic_to_f32(image, options);
    let (w, h) = (planes.width, planes.height);
    let plane = w * h;
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb(
            [0, 1, 2].map(|c| ((planes.data[c * plane + i] + 1.0) * 0.5 * 255.0).round().clamp(0.0, 255.0) as u8),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_match_diffusers_arithmetic() {
        // Small images are only cropped: 90x72 -> 80x64 from (5, 4).
        assert_eq!(
            reference_plan(90, 72, 16, REFERENCE_MAX_AREA),
            ReferencePlan { resize: None, crop: (5, 4, 80, 64) }
        );
        // 1500x1000: s = sqrt(1048576 / 1.5e6) = 0.8360920..., int(1254.13) = 1254, int(836.09) = 836,
        // floored to 1248x832, crop from (3, 2).
        assert_eq!(
            reference_plan(1500, 1000, 16, REFERENCE_MAX_AREA),
            ReferencePlan { resize: Some((1254, 836)), crop: (3, 2, 1248, 832) }
        );
        // Exactly at the limit: untouched.
        assert_eq!(reference_plan(1024, 1024, 16, REFERENCE_MAX_AREA).resize, None);
    }

    #[test]
    fn size_checks_name_the_image() {
        let err = check_reference_size("cat.png", 63, 500).unwrap_err().to_string();
        assert!(err.contains("cat.png") && err.contains("63x500") && err.contains("64"), "{err}");
        let err = check_reference_size("wide.png", 900, 100).unwrap_err().to_string();
        assert!(err.contains("wide.png") && err.contains("9.0:1"), "{err}");
        assert!(check_reference_size("ok.png", 512, 64).is_ok());
    }
}
