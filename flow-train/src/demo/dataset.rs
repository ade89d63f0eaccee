//! The demo's training images, painted deterministically (no downloads, no committed binaries).
//!
//! The concept the LoRA learns is a glyph that a random base model has never seen: a yellow ring
//! around a red dot, at varying places and sizes on plain or two-tone backgrounds. Captions name the
//! background, so DOP's class prompt ("a ring ...") describes the same scenes without the trigger.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};

/// Backgrounds: (name used in captions, colour).
pub(crate) const BACKGROUNDS: [(&str, [u8; 3]); 6] = [
    ("blue", [40, 70, 170]),
    ("green", [40, 140, 70]),
    ("grey", [128, 128, 128]),
    ("purple", [110, 50, 140]),
    ("teal", [30, 130, 140]),
    ("black", [15, 15, 20]),
];

/// One painted item: file stem, size, background index, ring centre (fractions) and radius (fraction
/// of the shorter side).
struct Item {
    stem: String,
    width: u32,
    height: u32,
    background: usize,
    centre: (f32, f32),
    radius: f32,
    two_tone: bool,
}

fn items() -> Vec<Item> {
    let mut out = Vec::new();
    // Square images and landscape ones, so the demo exercises two buckets.
    for i in 0..12usize {
        let landscape = i % 3 == 2;
        let (width, height) = if landscape { (192, 128) } else { (128, 128) };
        // A fixed low-discrepancy walk over positions and sizes.
        let fx = 0.3 + 0.4 * (((i * 7) % 12) as f32 / 11.0);
        let fy = 0.3 + 0.4 * (((i * 5) % 12) as f32 / 11.0);
        let radius = 0.18 + 0.12 * (((i * 3) % 5) as f32 / 4.0);
        out.push(Item {
            stem: format!("ring_{i:02}"),
            width,
            height,
            background: i % BACKGROUNDS.len(),
            centre: (fx, fy),
            radius,
            two_tone: i % 4 == 1,
        });
    }
    out
}

fn paint(item: &Item) -> RgbImage {
    let bg = BACKGROUNDS[item.background].1;
    let (w, h) = (item.width as f32, item.height as f32);
    let (cx, cy) = (item.centre.0 * w, item.centre.1 * h);
    let r = item.radius * w.min(h);
    RgbImage::from_fn(item.width, item.height, |x, y| {
        let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
        let d = ((px - cx).powi(2) + (py - cy).powi(2)).sqrt();
        // Anti-aliased edges: coverage over a one-pixel band.
        let cover = |edge: f32| (edge - d + 0.5).clamp(0.0, 1.0);
        let ring = cover(r) - cover(0.62 * r);
        let dot = cover(0.3 * r);
        let mut c = bg.map(f32::from);
        if item.two_tone && py > h * 0.6 {
            c = c.map(|v| v * 0.55);
        }
        let mix = |c: [f32; 3], o: [f32; 3], a: f32| [0, 1, 2].map(|k| c[k] * (1.0 - a) + o[k] * a);
        c = mix(c, [235.0, 200.0, 40.0], ring);
        c = mix(c, [210.0, 30.0, 30.0], dot);
        Rgb(c.map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
}

/// Writes the demo images (PNG) and captions (`.txt`, with `[trigger]`) into `dir`.
pub fn write_dataset(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let items = items();
    for item in &items {
        let png = dir.join(format!("{}.png", item.stem));
        paint(item)
            .save(&png)
            .map_err(|e| Error::Invalid(format!("{}: cannot write the demo image: {e}", png.display())))?;
        let background = BACKGROUNDS[item.background].0;
        let caption = format!("a photo of [trigger] on a {background} background");
        let txt = dir.join(format!("{}.txt", item.stem));
        std::fs::write(&txt, caption).map_err(|e| Error::io(&txt, e))?;
    }
    Ok(items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn painting_is_deterministic_and_draws_the_ring() {
        let item = &items()[0];
        let a = paint(item);
        assert_eq!(a, paint(item));
        let (cx, cy) = ((item.centre.0 * 128.0) as u32, (item.centre.1 * 128.0) as u32);
        // The centre is the red dot, a corner is background.
        assert_eq!(a.get_pixel(cx, cy).0, [210, 30, 30]);
        assert_eq!(a.get_pixel(0, 0).0, BACKGROUNDS[item.background].1);
    }
}
