//! Decoding, checking and preparing images.
//!
//! Sizes are always taken after EXIF orientation (as ai-toolkit's `exif_transpose` does): a portrait
//! phone photo stored landscape with an orientation tag must be bucketed as portrait.
//!
//! Preparing a sample follows ai-toolkit's order: orient, flip, bicubic resize of the whole image to
//! `Geometry::resize_to`, crop. The bicubic filter is Catmull-Rom (a = -0.5), widened when shrinking
//! so it averages over the source like PIL's `BICUBIC` does.

use std::io::Cursor;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::bucket::{Geometry, Size};
use crate::control::ControlGeometry;
use crate::error::{Error, Result};
use crate::problem::{Problem, ProblemKind};

/// An RGB image ready for an encoder: 8-bit, row-major, `height x width x 3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedImage {
    pub size: Size,
    /// Interleaved RGB bytes, `size.width * size.height * 3` of them.
    pub rgb: Vec<u8>,
}

impl PreparedImage {
    /// Channel-first `[3, height, width]` floats in `[-1, 1]` (the VAE's input range: `x / 127.5 - 1`).
    pub fn to_chw_signed(&self) -> Vec<f32> {
        self.to_chw(|v| f32::from(v) / 127.5 - 1.0)
    }

    /// Channel-first `[3, height, width]` floats in `[0, 1]`.
    pub fn to_chw_unit(&self) -> Vec<f32> {
        self.to_chw(|v| f32::from(v) / 255.0)
    }

    fn to_chw(&self, map: impl Fn(u8) -> f32) -> Vec<f32> {
        let plane = self.size.area() as usize;
        let mut out = vec![0.0f32; plane * 3];
        for (i, px) in self.rgb.chunks_exact(3).enumerate() {
            out[i] = map(px[0]);
            out[plane + i] = map(px[1]);
            out[2 * plane + i] = map(px[2]);
        }
        out
    }

    /// The RGB value at `(x, y)`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.size.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn from_rgb(img: RgbImage) -> Self {
        let size = Size::new(img.width(), img.height());
        PreparedImage { size, rgb: img.into_raw() }
    }
}

/// What loading learns about an image file without keeping its pixels.
#[derive(Clone, Debug)]
pub(crate) struct ImageInfo {
    /// Size after EXIF orientation.
    pub size: Size,
    /// BLAKE3 of the file bytes (hex): cache keys depend on content, not on mtime, so a copied or
    /// re-synced dataset keeps its caches and an edited image never reuses a stale one.
    pub content_hash: String,
}

/// Reads, hashes and checks one image file. `full_decode` decodes all pixel data so damage anywhere in
/// the file is found now; otherwise only the header (and, for JPEG, the marker structure) is checked.
pub(crate) fn inspect_file(path: &Path, full_decode: bool) -> std::result::Result<ImageInfo, Problem> {
    let bytes = std::fs::read(path).map_err(|e| Problem::new(path, ProblemKind::Unreadable, e.to_string()))?;
    if bytes.is_empty() {
        return Err(Problem::new(path, ProblemKind::EmptyFile, ""));
    }
    let content_hash = blake3::hash(&bytes).to_hex().to_string();
    let size = if full_decode {
        let img = decode_bytes(&bytes).map_err(|(kind, msg)| Problem::new(path, kind, msg))?;
        Size::new(img.width(), img.height())
    } else {
        probe_bytes(&bytes).map_err(|(kind, msg)| Problem::new(path, kind, msg))?
    };
    Ok(ImageInfo { size, content_hash })
}

type DecodeFailure = (ProblemKind, String);

/// The largest image decoded by default: PIL's decompression-bomb limit (`2 * Image.MAX_IMAGE_PIXELS`,
/// where ai-toolkit's PIL refuses to open a file), 179 megapixels, about 13400 x 13400. A 4 MB PNG can
/// declare 65000 x 65000 pixels (12.7 GB decoded); the header is checked before any pixel is.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// Environment variable overriding [`DEFAULT_MAX_IMAGE_PIXELS`] (a pixel count).
pub const MAX_IMAGE_PIXELS_ENV: &str = "FLUX2_MAX_IMAGE_PIXELS";

/// The pixel limit in force: `FLUX2_MAX_IMAGE_PIXELS` when set to a number, else the default.
pub fn max_image_pixels() -> u64 {
    std::env::var(MAX_IMAGE_PIXELS_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_MAX_IMAGE_PIXELS)
}

fn check_pixels(width: u32, height: u32) -> std::result::Result<(), DecodeFailure> {
    let (pixels, max) = (u64::from(width) * u64::from(height), max_image_pixels());
    if pixels > max {
        return Err((
            ProblemKind::TooLarge,
            format!(
                "{width}x{height} = {pixels} pixels, more than the {max} decoded at most (set {MAX_IMAGE_PIXELS_ENV} to raise it)"
            ),
        ));
    }
    Ok(())
}

type Reader<'a> = ImageReader<Cursor<&'a [u8]>>;

fn reader(bytes: &[u8]) -> std::result::Result<(Reader<'_>, ImageFormat), DecodeFailure> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| (ProblemKind::Unreadable, e.to_string()))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => f,
        Some(other) => {
            return Err((ProblemKind::UnknownFormat, format!("content is {other:?}, not JPEG/PNG/WebP")));
        }
        None => return Err((ProblemKind::UnknownFormat, "content is not a recognised image format".into())),
    };
    if format == ImageFormat::Jpeg {
        jpeg_structure_complete(bytes).map_err(|m| (ProblemKind::Corrupt, m))?;
    }
    Ok((reader, format))
}

fn corrupt(e: image::ImageError) -> DecodeFailure {
    (ProblemKind::Corrupt, e.to_string())
}

/// Size after orientation, from the header only.
fn probe_bytes(bytes: &[u8]) -> std::result::Result<Size, DecodeFailure> {
    let (reader, _) = reader(bytes)?;
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h)?;
    Ok(oriented_size(Size::new(w, h), orientation))
}

/// Full decode with EXIF orientation applied.
fn decode_bytes(bytes: &[u8]) -> std::result::Result<DynamicImage, DecodeFailure> {
    let (reader, _) = reader(bytes)?;
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn oriented_size(size: Size, orientation: Orientation) -> Size {
    match orientation {
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH => {
            Size::new(size.height, size.width)
        }
        _ => size,
    }
}

/// Reads and decodes `path` (oriented), for preparing. Errors name the file.
pub(crate) fn load_oriented(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::Decode { path: path.to_path_buf(), message: "0-byte file".into() });
    }
    decode_bytes(&bytes).map_err(|(_, message)| Error::Decode { path: path.to_path_buf(), message })
}

/// Orient, flip, resize, crop: the pixels of one training sample.
/// `loaded_size` is the oriented size measured when the dataset was loaded (before `scale`).
pub(crate) fn prepare_target(
    path: &Path,
    loaded_size: Size,
    geometry: &Geometry,
    flip_x: bool,
    flip_y: bool,
) -> Result<PreparedImage> {
    let img = load_oriented(path)?;
    // PIL's convert('RGB'): alpha is dropped, not composited.
    let rgb = img.to_rgb8();
    check_size(path, &rgb, loaded_size)?;
    Ok(PreparedImage::from_rgb(resize_crop(rgb, flip_x, flip_y, geometry.resize_to, geometry.crop)))
}

/// The pixels of one control image: orient, composite transparency over `background`, flip like its
/// target, then the FLUX.2 reference resize and crop.
pub(crate) fn prepare_control(
    path: &Path,
    geometry: &ControlGeometry,
    background: [u8; 3],
    flip_x: bool,
    flip_y: bool,
) -> Result<PreparedImage> {
    let img = load_oriented(path)?;
    let rgb = if img.color().has_alpha() { composite(&img, background) } else { img.to_rgb8() };
    check_size(path, &rgb, geometry.source)?;
    Ok(PreparedImage::from_rgb(resize_crop(rgb, flip_x, flip_y, geometry.resize_to, geometry.crop)))
}

/// The file changed since loading measured it: using the old geometry would crop the wrong region.
fn check_size(path: &Path, rgb: &RgbImage, expected: Size) -> Result<()> {
    if (rgb.width(), rgb.height()) != (expected.width, expected.height) {
        return Err(Error::Decode {
            path: path.to_path_buf(),
            message: format!(
                "image is now {}x{} but was {} when the dataset was loaded; the file changed: reload the dataset",
                rgb.width(),
                rgb.height(),
                expected
            ),
        });
    }
    Ok(())
}

fn resize_crop(
    mut rgb: RgbImage,
    flip_x: bool,
    flip_y: bool,
    resize_to: Size,
    crop: crate::bucket::CropBox,
) -> RgbImage {
    if flip_x {
        imageops::flip_horizontal_in_place(&mut rgb);
    }
    if flip_y {
        imageops::flip_vertical_in_place(&mut rgb);
    }
    let resized = if (rgb.width(), rgb.height()) == (resize_to.width, resize_to.height) {
        rgb
    } else {
        imageops::resize(&rgb, resize_to.width, resize_to.height, FilterType::CatmullRom)
    };
    if (crop.x, crop.y, crop.width, crop.height) == (0, 0, resized.width(), resized.height()) {
        return resized;
    }
    imageops::crop_imm(&resized, crop.x, crop.y, crop.width, crop.height).to_image()
}

/// `background * (1 - a) + rgb * a`, rounded, as PIL's paste with the alpha channel as mask.
fn composite(img: &DynamicImage, background: [u8; 3]) -> RgbImage {
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src.0[3]);
        for ((d, s), b) in dst.0.iter_mut().zip(src.0).zip(background) {
            *d = ((u32::from(s) * a + u32::from(b) * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// Checks that a JPEG's marker structure runs from start-of-image to end-of-image.
///
/// The JPEG decoder used by `image` is lenient: a file cut short decodes "successfully" with the
/// missing rows filled in. Walking the segments and the entropy-coded data up to the first EOI marker
/// finds such truncation without decoding. Data after EOI (e.g. the video of a motion photo) is fine.
pub(crate) fn jpeg_structure_complete(b: &[u8]) -> std::result::Result<(), String> {
    const TRUNCATED: &str = "file ends before the JPEG end-of-image marker (truncated)";
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("missing JPEG start-of-image marker".into());
    }
    let mut i = 2;
    loop {
        // Seek the next marker: 0xFF, optional 0xFF fill bytes, then the marker code.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        if i >= b.len() {
            return Err(TRUNCATED.into());
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Markers without a length field.
            0x01 | 0xD0..=0xD8 => continue,
            _ => {
                if i + 2 > b.len() {
                    return Err(TRUNCATED.into());
                }
                let len = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
                if len < 2 {
                    return Err(format!("invalid JPEG segment length {len} at byte {i}"));
                }
                i += len;
                if i > b.len() {
                    return Err(TRUNCATED.into());
                }
                if marker == 0xDA {
                    // Entropy-coded data: runs until a 0xFF that is not stuffing (0xFF00), a restart
                    // marker (0xFFD0..D7) or a fill byte.
                    loop {
                        while i < b.len() && b[i] != 0xFF {
                            i += 1;
                        }
                        if i + 1 >= b.len() {
                            return Err(TRUNCATED.into());
                        }
                        match b[i + 1] {
                            0x00 | 0xD0..=0xD7 => i += 2,
                            0xFF => i += 1,
                            _ => break,
                        }
                    }
                }
            }
        }
    }
}
