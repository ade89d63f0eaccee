//! Image files -> [-1, 1] planes and back: bit depths, alpha, grayscale, EXIF orientation, formats, errors.

mod common;

use std::io::Cursor;

use burn::tensor::{DType, Tensor, TensorData};
use common::B;
use flux2_vae::image_io::{decode_image, dynamic_to_f32, to_u8};
use flux2_vae::{Error, ImageLoadOptions, load_image, save_png, tensor_to_rgb8};
use image::{DynamicImage, ImageBuffer, ImageEncoder, Luma, Rgb, Rgba};

fn png_bytes(img: &DynamicImage, exif: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = image::codecs::png::PngEncoder::new(Cursor::new(&mut out));
    if let Some(exif) = exif {
        enc.set_exif_metadata(exif).unwrap();
    }
    enc.write_image(img.as_bytes(), img.width(), img.height(), img.color().into()).unwrap();
    out
}

/// Minimal little-endian TIFF/EXIF block holding only the orientation tag.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut v = b"II*\0".to_vec();
    v.extend(8u32.to_le_bytes());
    v.extend(1u16.to_le_bytes());
    v.extend(0x0112u16.to_le_bytes());
    v.extend(3u16.to_le_bytes());
    v.extend(1u32.to_le_bytes());
    v.extend(value.to_le_bytes());
    v.extend([0, 0]);
    v.extend(0u32.to_le_bytes());
    v
}

fn pixel(img: &flux2_vae::ImageF32, x: usize, y: usize) -> [f32; 3] {
    let plane = img.width * img.height;
    [0, 1, 2].map(|c| img.data[c * plane + y * img.width + x])
}

fn opts() -> ImageLoadOptions {
    ImageLoadOptions::default()
}

#[test]
fn eight_bit_values_map_like_diffusers_and_round_trip() {
    let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(256, 1, |x, _| {
        Rgb([x as u8, 255 - x as u8, (x * 7 % 256) as u8])
    }));
    let loaded = decode_image(&png_bytes(&img, None), "ramp.png", &opts()).unwrap();
    assert_eq!((loaded.width, loaded.height), (256, 1));
    for x in 0..256usize {
        let p = pixel(&loaded, x, 0);
        let want = [x, 255 - x, x * 7 % 256].map(|v| 2.0 * (v as f32 / 255.0) - 1.0);
        assert_eq!(p, want, "x={x}");
        // Save path: diffusers' rounding recovers every 8-bit value exactly.
        assert_eq!(p.map(to_u8), [x, 255 - x, x * 7 % 256].map(|v| v as u8));
    }
}

#[test]
fn sixteen_bit_png_keeps_precision() {
    let vals = [0u16, 1, 257, 32768, 65534, 65535];
    let img = DynamicImage::ImageRgb16(ImageBuffer::from_fn(vals.len() as u32, 1, |x, _| {
        let v = vals[x as usize];
        Rgb([v, 65535 - v, v / 2])
    }));
    let loaded = decode_image(&png_bytes(&img, None), "deep.png", &opts()).unwrap();
    for (x, &v) in vals.iter().enumerate() {
        let want = [v, 65535 - v, v / 2].map(|c| 2.0 * (c as f32 / 65535.0) - 1.0);
        assert_eq!(pixel(&loaded, x, 0), want);
    }
    // 1/65535 steps are finer than 8-bit: values 0 and 1 differ.
    assert_ne!(pixel(&loaded, 0, 0)[0], pixel(&loaded, 1, 0)[0]);
}

#[test]
fn grayscale_is_replicated() {
    let img = DynamicImage::ImageLuma8(ImageBuffer::from_fn(4, 3, |x, y| Luma([(x * 60 + y) as u8])));
    let loaded = decode_image(&png_bytes(&img, None), "gray.png", &opts()).unwrap();
    for y in 0..3 {
        for x in 0..4 {
            let v = 2.0 * ((x * 60 + y) as f32 / 255.0) - 1.0;
            assert_eq!(pixel(&loaded, x, y), [v, v, v]);
        }
    }
    let img16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(2, 1, |x, _| Luma([x as u16 * 40000])));
    let loaded = decode_image(&png_bytes(&img16, None), "gray16.png", &opts()).unwrap();
    let v = 2.0 * (40000.0f32 / 65535.0) - 1.0;
    assert_eq!(pixel(&loaded, 1, 0), [v, v, v]);
}

#[test]
fn alpha_is_composited_on_the_background() {
    let img =
        DynamicImage::ImageRgba8(ImageBuffer::from_fn(3, 1, |x, _| Rgba([255, 0, 0, [0u8, 128, 255][x as usize]])));
    let options = ImageLoadOptions { background: [0, 0, 255], ..Default::default() };
    let loaded = decode_image(&png_bytes(&img, None), "alpha.png", &options).unwrap();
    assert_eq!(pixel(&loaded, 0, 0), [-1.0, -1.0, 1.0]); // fully transparent: background
    assert_eq!(pixel(&loaded, 2, 0), [1.0, -1.0, -1.0]); // opaque: the colour
    let a = 128.0f32 / 255.0;
    let mid = pixel(&loaded, 1, 0);
    assert!((mid[0] - (2.0 * a - 1.0)).abs() < 1e-6 && (mid[2] - (2.0 * (1.0 - a) - 1.0)).abs() < 1e-6, "{mid:?}");
    // Default background is white.
    let loaded = decode_image(&png_bytes(&img, None), "alpha.png", &opts()).unwrap();
    assert_eq!(pixel(&loaded, 0, 0), [1.0, 1.0, 1.0]);
    // A fully opaque RGBA file gives exactly the RGB result.
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(5, 2, |x, y| Rgba([x as u8 * 50, y as u8 * 9, 77, 255])));
    let rgb = DynamicImage::ImageRgb8(rgba.to_rgb8());
    assert_eq!(
        decode_image(&png_bytes(&rgba, None), "a.png", &opts()).unwrap(),
        decode_image(&png_bytes(&rgb, None), "b.png", &opts()).unwrap()
    );
    // 16-bit with alpha takes the 16-bit path.
    let la16 = DynamicImage::ImageLumaA16(ImageBuffer::from_fn(1, 1, |_, _| image::LumaA([65535u16, 0])));
    let loaded = decode_image(&png_bytes(&la16, None), "la16.png", &options).unwrap();
    assert_eq!(pixel(&loaded, 0, 0), [-1.0, -1.0, 1.0]);
}

#[test]
fn exif_orientation_is_applied() {
    let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(3, 2, |x, y| Rgb([x as u8 * 100, y as u8 * 200, 7])));
    for (tag, expected) in
        [(1u16, img.clone()), (6, img.rotate90()), (3, img.rotate180()), (8, img.rotate270()), (2, img.fliph())]
    {
        let loaded = decode_image(&png_bytes(&img, Some(exif_orientation(tag))), "exif.png", &opts()).unwrap();
        assert_eq!(loaded, dynamic_to_f32(&expected, &opts()), "orientation {tag}");
    }
    let raw = ImageLoadOptions { apply_orientation: false, ..Default::default() };
    let loaded = decode_image(&png_bytes(&img, Some(exif_orientation(6))), "exif.png", &raw).unwrap();
    assert_eq!((loaded.width, loaded.height), (3, 2));
    // JPEG carries EXIF in APP1 (pixels are lossy; check the geometry).
    let big =
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(
            32,
            16,
            |x, _| if x < 16 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) },
        ));
    let mut jpeg = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), 95);
    enc.set_exif_metadata(exif_orientation(6)).unwrap();
    enc.write_image(big.as_bytes(), 32, 16, big.color().into()).unwrap();
    let loaded = decode_image(&jpeg, "photo.jpg", &opts()).unwrap();
    assert_eq!((loaded.width, loaded.height), (16, 32));
    // Rotated clockwise: the red left half is now on top.
    assert!(pixel(&loaded, 8, 4)[0] > 0.8 && pixel(&loaded, 8, 28)[2] > 0.8);
}

#[test]
fn webp_and_files_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(6, 4, |x, y| Rgb([x as u8 * 40, y as u8 * 60, 200])));
    let path = tmp.path().join("lossless.webp");
    img.save_with_format(&path, image::ImageFormat::WebP).unwrap();
    assert_eq!(load_image(&path, &opts()).unwrap(), dynamic_to_f32(&img, &opts()));
    // Wrong extension: the content decides.
    let path = tmp.path().join("actually_png.jpg");
    std::fs::write(&path, png_bytes(&img, None)).unwrap();
    assert_eq!(load_image(&path, &opts()).unwrap(), dynamic_to_f32(&img, &opts()));
}

#[test]
fn save_png_uses_diffusers_rounding() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    // x = 0 -> 127.5 -> 128 (half to even); out-of-range values clamp.
    let vals = vec![0.0f32, -2.0, 2.0, 1.0, -1.0, 0.5];
    let n = vals.len();
    let t = Tensor::<B, 4>::from_data(
        TensorData::new([vals.clone(), vals.clone(), vals].concat(), [1, 3, 1, n]),
        (&device, DType::F32),
    );
    let path = tmp.path().join("out.png");
    save_png(t.clone(), &path).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    let row: Vec<u8> = (0..n as u32).map(|x| back.get_pixel(x, 0)[0]).collect();
    assert_eq!(row, vec![128, 0, 255, 255, 0, 191]);
    assert_eq!(to_u8(0.0), 128);
    // Batches convert per image; save_png refuses them.
    let batch = Tensor::cat(vec![t.clone(), t], 0);
    assert_eq!(tensor_to_rgb8(batch.clone()).unwrap().len(), 2);
    assert!(matches!(save_png(batch, &path).unwrap_err(), Error::InputShape { .. }));
    // Loading the saved file gives the saved pixels back.
    let loaded = load_image(&path, &opts()).unwrap();
    assert_eq!(loaded.data[0], 2.0 * (128.0f32 / 255.0) - 1.0);
}

#[test]
fn bad_image_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.png");
    let err = load_image(&missing, &opts()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("missing.png"), "{err}");
    let garbage = tmp.path().join("garbage.png");
    std::fs::write(&garbage, b"definitely not an image").unwrap();
    let err = load_image(&garbage, &opts()).unwrap_err();
    assert!(matches!(err, Error::ImageDecode { .. }) && err.to_string().contains("garbage.png"), "{err}");
    let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(64, 64, |x, y| Rgb([x as u8, y as u8, 0])));
    let bytes = png_bytes(&img, None);
    let truncated = tmp.path().join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_image(&truncated, &opts()).unwrap_err();
    assert!(matches!(err, Error::ImageDecode { .. }) && err.to_string().contains("truncated.png"), "{err}");
    let err = save_png(Tensor::<B, 4>::zeros([1, 3, 2, 2], &Default::default()), tmp.path().join("no/such/dir/x.png"))
        .unwrap_err();
    assert!(matches!(err, Error::ImageEncode { .. }), "{err}");
}

/// A reference or dataset image whose header declares 65000 x 65000 pixels is refused before
/// decoding (no 12.7 GB reservation), naming the file and the limit.
#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let mut bytes = png_bytes(&DynamicImage::ImageRgb8(ImageBuffer::from_pixel(8, 8, Rgb([9u8, 9, 9]))), None);
    // Patch IHDR's width and height, then its CRC (over the chunk type and 13 data bytes).
    bytes[16..20].copy_from_slice(&65_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&65_000u32.to_be_bytes());
    let mut crc = !0u32;
    for &b in &bytes[12..29] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    bytes[29..33].copy_from_slice(&(!crc).to_be_bytes());
    let err = decode_image(&bytes, "bomb.png", &ImageLoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ImageTooLarge { width: 65_000, height: 65_000, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("bomb.png") && message.contains("FLUX2_MAX_IMAGE_PIXELS"), "{message}");
}
