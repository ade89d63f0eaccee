//! Image files <-> tensors in the VAE's value range.
//!
//! Loading (PNG, JPEG, WebP, via the `image` crate): EXIF orientation applied; grayscale replicated to
//! RGB; alpha composited over a configurable background colour (only when some pixel is not opaque);
//! 8-bit values map as diffusers does, `2 * (p / 255) - 1` in f32, 16-bit as `2 * (p / 65535) - 1`.
//! Saving: `round_half_even(clamp(x * 0.5 + 0.5, 0, 1) * 255)`, the arithmetic of diffusers'
//! `VaeImageProcessor.postprocess` (denormalize in torch, `(x * 255).round()` in numpy).
//!
//! Differences from diffusers' PIL path, on purpose: PIL's `convert("RGB")` drops alpha (transparent
//! pixels show whatever colour they store) where this module composites; PIL ignores EXIF orientation
//! unless asked. JPEG decoders differ slightly (zune-jpeg vs libjpeg), so JPEG pixels can differ by a
//! level or two from Pillow's; PNG/WebP-lossless pixels are identical.

use std::io::Cursor;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::error::{Error, Result};

/// How to turn a file into RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLoadOptions {
    /// Colour that transparent pixels are composited over (8-bit sRGB). Default white.
    pub background: [u8; 3],
    /// Apply the EXIF orientation tag (default true).
    pub apply_orientation: bool,
}

impl Default for ImageLoadOptions {
    fn default() -> Self {
        Self { background: [255, 255, 255], apply_orientation: true }
    }
}

/// An RGB image as three f32 planes in [-1, 1] (channel-major, row-major), ready for the encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageF32 {
    pub width: usize,
    pub height: usize,
    /// `3 * height * width` values: all R, then all G, then all B.
    pub data: Vec<f32>,
}

impl ImageF32 {
    /// `[1, 3, H, W]` f32 tensor on `device`.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4> {
        let data = TensorData::new(self.data.clone(), [1, 3, self.height, self.width]);
        Tensor::from_data(data, (device, DType::F32))
    }
}

/// Decodes an image file (orientation applied) and converts it to [-1, 1] RGB.
pub fn load_image(path: impl AsRef<Path>, options: &ImageLoadOptions) -> Result<ImageF32> {
    Ok(dynamic_to_f32(&open_image(path, options)?, options))
}

/// Decodes an image file with the EXIF orientation applied (when `options` say so), without converting
/// it: for callers that resize or crop before [`dynamic_to_f32`].
pub fn open_image(path: impl AsRef<Path>, options: &ImageLoadOptions) -> Result<DynamicImage> {
    let path = path.as_ref();
    let reader = ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    decode_reader(reader, options, path)
}

/// Same as [`load_image`] for bytes in memory (`origin` only names the source in errors).
pub fn decode_image(bytes: &[u8], origin: impl AsRef<Path>, options: &ImageLoadOptions) -> Result<ImageF32> {
    let reader = ImageReader::new(Cursor::new(bytes));
    let img = decode_reader(reader, options, origin.as_ref())?;
    Ok(dynamic_to_f32(&img, options))
}

/// The largest image decoded by default: PIL's decompression-bomb limit (179 megapixels, where
/// ai-toolkit's PIL refuses a file). The header is checked before any pixel is decoded, so a small file
/// declaring 65000 x 65000 pixels fails at once instead of reserving 12.7 GB.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// The pixel limit in force: the `FLUX2_MAX_IMAGE_PIXELS` environment variable when set to a number
/// (the variable the dataset loader reads too), else [`DEFAULT_MAX_IMAGE_PIXELS`].
pub fn max_image_pixels() -> u64 {
    std::env::var("FLUX2_MAX_IMAGE_PIXELS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_MAX_IMAGE_PIXELS)
}

/// [`load_image`] straight to a `[1, 3, H, W]` f32 tensor.
pub fn load_image_tensor<B: Backend>(
    path: impl AsRef<Path>,
    options: &ImageLoadOptions,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    Ok(load_image(path, options)?.to_tensor(device))
}

fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    options: &ImageLoadOptions,
    path: &Path,
) -> Result<DynamicImage> {
    let failed = |source: image::ImageError| Error::ImageDecode { path: path.into(), source };
    let reader = reader.with_guessed_format().map_err(|e| failed(image::ImageError::IoError(e)))?;
    let mut decoder = reader.into_decoder().map_err(failed)?;
    let (width, height) = decoder.dimensions();
    let max = max_image_pixels();
    if u64::from(width) * u64::from(height) > max {
        return Err(Error::ImageTooLarge { path: path.into(), width, height, max });
    }
    let orientation = decoder.orientation().map_err(failed)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(failed)?;
    if options.apply_orientation {
        img.apply_orientation(orientation);
    }
    Ok(img)
}

/// Converts an already decoded image (e.g. resized/cropped by a dataset) to [-1, 1] RGB planes.
pub fn dynamic_to_f32(img: &DynamicImage, options: &ImageLoadOptions) -> ImageF32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let bg = options.background.map(|c| c as f32 / 255.0);
    let mut data = vec![0f32; 3 * w * h];
    let plane = w * h;
    // Per pixel: colour in [0, 1] (f32 exactly as p / max) and alpha in [0, 1].
    let mut put = |i: usize, rgb: [f32; 3], alpha: Option<f32>| {
        for ch in 0..3 {
            let v = match alpha {
                Some(a) => rgb[ch] * a + bg[ch] * (1.0 - a),
                None => rgb[ch],
            };
            data[ch * plane + i] = 2.0 * v - 1.0;
        }
    };
    let color = img.color();
    let has_alpha = color.has_alpha();
    match color.bytes_per_pixel() / color.channel_count() {
        1 => {
            let rgba = img.to_rgba8();
            let opaque = !has_alpha || rgba.pixels().all(|p| p[3] == u8::MAX);
            for (i, p) in rgba.pixels().enumerate() {
                let rgb = [p[0], p[1], p[2]].map(|c| c as f32 / 255.0);
                put(i, rgb, (!opaque).then(|| p[3] as f32 / 255.0));
            }
        }
        2 => {
            let rgba = img.to_rgba16();
            let opaque = !has_alpha || rgba.pixels().all(|p| p[3] == u16::MAX);
            for (i, p) in rgba.pixels().enumerate() {
                let rgb = [p[0], p[1], p[2]].map(|c| c as f32 / 65535.0);
                put(i, rgb, (!opaque).then(|| p[3] as f32 / 65535.0));
            }
        }
        _ => {
            let rgba = img.to_rgba32f();
            let opaque = !has_alpha || rgba.pixels().all(|p| p[3] >= 1.0);
            for (i, p) in rgba.pixels().enumerate() {
                let rgb = [p[0], p[1], p[2]].map(|c| c.clamp(0.0, 1.0));
                put(i, rgb, (!opaque).then(|| p[3].clamp(0.0, 1.0)));
            }
        }
    }
    ImageF32 { width: w, height: h, data }
}

/// One [-1, 1] value -> 8-bit, exactly as diffusers' postprocess.
pub fn to_u8(x: f32) -> u8 {
    let v = (x * 0.5 + 0.5).clamp(0.0, 1.0);
    (v * 255.0).round_ties_even() as u8
}

/// `[B, 3, H, W]` tensor (any float dtype, nominally [-1, 1]) -> 8-bit RGB images.
pub fn tensor_to_rgb8<B: Backend>(images: Tensor<B, 4>) -> Result<Vec<image::RgbImage>> {
    let [b, c, h, w] = images.dims();
    if c != 3 || h == 0 || w == 0 || u32::try_from(h).is_err() || u32::try_from(w).is_err() {
        return Err(Error::InputShape {
            what: "image tensor to save",
            shape: vec![b, c, h, w],
            reason: "expected [B, 3, H, W] with H, W > 0".into(),
        });
    }
    let values = images.cast(DType::F32).into_data().convert::<f32>().into_vec::<f32>().map_err(|e| {
        Error::InputShape { what: "image tensor to save", shape: vec![b, c, h, w], reason: format!("{e:?}") }
    })?;
    let plane = h * w;
    Ok((0..b)
        .map(|n| {
            let base = n * 3 * plane;
            image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let i = y as usize * w + x as usize;
                image::Rgb([0, 1, 2].map(|ch| to_u8(values[base + ch * plane + i])))
            })
        })
        .collect())
}

/// Writes a `[1, 3, H, W]` tensor as an 8-bit PNG.
pub fn save_png<B: Backend>(image: Tensor<B, 4>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let dims = image.dims();
    if dims[0] != 1 {
        return Err(Error::InputShape {
            what: "image tensor to save",
            shape: dims.to_vec(),
            reason: "save_png takes one image; use tensor_to_rgb8 for batches".into(),
        });
    }
    let mut imgs = tensor_to_rgb8(image)?;
    let img = imgs.pop().ok_or(Error::InputShape {
        what: "image tensor to save",
        shape: dims.to_vec(),
        reason: "empty batch".into(),
    })?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| Error::ImageEncode { path: path.into(), source })
}
