//! Helpers shared by the integration tests: small synthetic images written into temp folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use dataset_buckets::{CachedTensor, EncodeError, LatentEncoder, LoadOptions, PreparedImage, TextEncoder};
use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// Load options for tests: no progress bars, default rules otherwise.
pub fn quiet() -> LoadOptions {
    LoadOptions { show_progress: false, ..Default::default() }
}

/// A `w x h` image whose quadrants have distinct colours, so orientation, flips and crops show:
/// top-left red, top-right green, bottom-left blue, bottom-right white.
pub fn quadrants(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| match (x < w / 2, y < h / 2) {
        (true, true) => Rgb([255, 0, 0]),
        (false, true) => Rgb([0, 255, 0]),
        (true, false) => Rgb([0, 0, 255]),
        (false, false) => Rgb([255, 255, 255]),
    })
}

pub fn write_image(path: &Path, img: &RgbImage) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create test folder");
    }
    let format = ImageFormat::from_path(path).expect("test image extension");
    img.save_with_format(path, format).expect("write test image");
}

/// Writes a quadrant PNG/JPEG/WebP (by extension) of the given size.
pub fn write_quadrants(path: &Path, w: u32, h: u32) {
    write_image(path, &quadrants(w, h));
}

pub fn write_rgba_png(path: &Path, img: &RgbaImage) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create test folder");
    }
    img.save_with_format(path, ImageFormat::Png).expect("write test png");
}

pub fn transparent(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_pixel(w, h, Rgba([200, 100, 50, 0]))
}

pub fn write_text(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create test folder");
    }
    std::fs::write(path, text).expect("write test text");
}

/// A JPEG of `quadrants(w, h)` carrying an EXIF orientation tag (1..=8).
pub fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
    let mut plain = Vec::new();
    quadrants(w, h).write_to(&mut std::io::Cursor::new(&mut plain), ImageFormat::Jpeg).expect("encode jpeg");
    // APP1 "Exif\0\0" + big-endian TIFF header + one IFD entry: tag 0x0112 (Orientation), SHORT, 1.
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08");
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

/// Mean RGB of a prepared image, for checking which colour ended up where.
pub fn mean_rgb(img: &PreparedImage) -> [f32; 3] {
    let mut sum = [0f64; 3];
    for px in img.rgb.chunks_exact(3) {
        for c in 0..3 {
            sum[c] += f64::from(px[c]);
        }
    }
    let n = img.size.area() as f64;
    [(sum[0] / n) as f32, (sum[1] / n) as f32, (sum[2] / n) as f32]
}

/// A fake VAE: the "latent" is `[3, h/8, w/8]` filled with the image's mean colour, plus a call count.
pub struct FakeVae {
    pub identity: String,
    pub calls: AtomicUsize,
}

impl FakeVae {
    pub fn new(identity: &str) -> Self {
        FakeVae { identity: identity.to_string(), calls: AtomicUsize::new(0) }
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl LatentEncoder for FakeVae {
    fn identity(&self) -> String {
        self.identity.clone()
    }
    fn encode(&self, image: &PreparedImage) -> Result<CachedTensor, EncodeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (h, w) = ((image.size.height / 8) as usize, (image.size.width / 8) as usize);
        let m = mean_rgb(image);
        let mut data = Vec::with_capacity(3 * h * w);
        for c in m {
            data.extend(std::iter::repeat_n(c, h * w));
        }
        CachedTensor::new(vec![3, h, w], data).ok_or_else(|| "shape".into())
    }
}

/// A fake text encoder: one value per byte of the caption, plus a call count.
pub struct FakeText {
    pub identity: String,
    pub calls: AtomicUsize,
}

impl FakeText {
    pub fn new(identity: &str) -> Self {
        FakeText { identity: identity.to_string(), calls: AtomicUsize::new(0) }
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TextEncoder for FakeText {
    fn identity(&self) -> String {
        self.identity.clone()
    }
    fn encode(&self, caption: &str) -> Result<CachedTensor, EncodeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let data: Vec<f32> = caption.bytes().map(f32::from).collect();
        CachedTensor::new(vec![data.len()], data).ok_or_else(|| "shape".into())
    }
}

/// The text a fake-encoded caption tensor decodes back to.
pub fn decode_fake_text(t: &CachedTensor) -> String {
    String::from_utf8(t.data().iter().map(|v| *v as u8).collect()).expect("ascii caption")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn p(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
}

/// A small valid PNG whose header is patched to declare `w x h` pixels (a decompression bomb's
/// shape: a few bytes that would decode to gigabytes). The IHDR checksum is recomputed.
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(quadrants(8, 8))
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("encode");
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, ...; the CRC covers type + 13 data bytes.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
