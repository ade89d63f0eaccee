//! The loss plot (`loss.png`): raw per-step loss in light grey, an exponential moving average in blue,
//! axes with tick labels. Drawn with the `image` crate and a built-in 3x5 pixel font, so plotting
//! needs no font files or plotting stack.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::Result;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 400;
const LEFT: i64 = 70;
const RIGHT: i64 = 20;
const TOP: i64 = 30;
const BOTTOM: i64 = 40;
const SCALE: i64 = 2;

/// 3x5 glyphs, rows top to bottom, 3 bits each (MSB = left column).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        's' => [0, 3, 6, 1, 6],
        't' => [2, 7, 2, 2, 3],
        'p' => [0, 7, 5, 7, 4],
        'l' => [6, 2, 2, 2, 7],
        'o' => [0, 7, 5, 5, 7],
        'a' => [0, 6, 1, 7, 7],
        'v' => [0, 5, 5, 5, 2],
        'g' => [0, 7, 5, 7, 1],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        'm' => [0, 7, 7, 5, 5],
        'E' => [7, 4, 7, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'A' => [2, 5, 7, 5, 5],
        _ => [0; 5],
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: [u8; 3]) {
    for (i, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            put(img, x + (i as i64 * 4 + col) * SCALE + dx, y + row as i64 * SCALE + dy, c);
                        }
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> i64 {
    s.chars().count() as i64 * 4 * SCALE
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        put(img, (x0 + (x1 - x0) * t).round() as i64, (y0 + (y1 - y0) * t).round() as i64, c);
    }
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) { format!("{v:.1e}") } else { format!("{v:.3}") }
}

/// Exponential moving average with weight `alpha` on the newest value.
pub fn ema(values: &[f32], alpha: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let mut acc: Option<f64> = None;
    for &v in values {
        let next = match acc {
            Some(a) => a + alpha * (v as f64 - a),
            None => v as f64,
        };
        acc = Some(next);
        out.push(next);
    }
    out
}

/// Renders `(step, loss)` points to an image.
pub fn render(points: &[(u32, f32)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let (x0, x1) = (LEFT, WIDTH as i64 - RIGHT);
    let (y0, y1) = (TOP, HEIGHT as i64 - BOTTOM);
    let finite: Vec<(u32, f32)> = points.iter().copied().filter(|(_, l)| l.is_finite()).collect();
    let smooth = ema(&finite.iter().map(|p| p.1).collect::<Vec<_>>(), 0.1);
    let (smin, smax) = match (finite.first(), finite.last()) {
        (Some(a), Some(b)) => (a.0 as f64, (b.0 as f64).max(a.0 as f64 + 1.0)),
        _ => (0.0, 1.0),
    };
    let mut lmin = finite.iter().map(|p| p.1 as f64).fold(f64::INFINITY, f64::min);
    let mut lmax = finite.iter().map(|p| p.1 as f64).fold(f64::NEG_INFINITY, f64::max);
    if !lmin.is_finite() {
        (lmin, lmax) = (0.0, 1.0);
    }
    if lmax - lmin < 1e-12 {
        lmax = lmin + 1.0;
    }
    let px = |s: f64| x0 as f64 + (s - smin) / (smax - smin) * (x1 - x0) as f64;
    let py = |l: f64| y1 as f64 - (l - lmin) / (lmax - lmin) * (y1 - y0) as f64;
    let grid = [230, 230, 230];
    let axis = [60, 60, 60];
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (gx, gy) = (x0 as f64 + f * (x1 - x0) as f64, y1 as f64 - f * (y1 - y0) as f64);
        line(&mut img, (gx, y0 as f64), (gx, y1 as f64), grid);
        line(&mut img, (x0 as f64, gy), (x1 as f64, gy), grid);
        let s = format!("{}", (smin + f * (smax - smin)).round() as i64);
        text(&mut img, gx as i64 - text_width(&s) / 2, y1 + 8, &s, axis);
        let l = label(lmin + f * (lmax - lmin));
        text(&mut img, x0 - 6 - text_width(&l), gy as i64 - 5, &l, axis);
    }
    line(&mut img, (x0 as f64, y0 as f64), (x0 as f64, y1 as f64), axis);
    line(&mut img, (x0 as f64, y1 as f64), (x1 as f64, y1 as f64), axis);
    text(&mut img, (x0 + x1) / 2 - text_width("step") / 2, y1 + 24, "step", axis);
    text(&mut img, x0, 8, "loss", axis);
    text(&mut img, x0 + text_width("loss ") + 10, 8, "(EMA)", [40, 90, 200]);
    for w in finite.windows(2) {
        line(&mut img, (px(w[0].0 as f64), py(w[0].1 as f64)), (px(w[1].0 as f64), py(w[1].1 as f64)), [190, 190, 190]);
    }
    for (i, w) in smooth.windows(2).enumerate() {
        let (a, b) = (finite[i].0 as f64, finite[i + 1].0 as f64);
        for d in [-0.5, 0.0, 0.5] {
            line(&mut img, (px(a), py(w[0]) + d), (px(b), py(w[1]) + d), [40, 90, 200]);
        }
    }
    img
}

/// Writes the plot as PNG (atomically).
pub fn write_plot(path: &Path, points: &[(u32, f32)]) -> Result<()> {
    super::previews::write_image(&render(points), path, image::ImageFormat::Png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_is_drawn_where_the_values_are() {
        let points: Vec<(u32, f32)> = (1..=50).map(|s| (s, 2.0 / s as f32)).collect();
        let img = render(&points);
        // First point: top-left of the plot area (highest loss); the EMA colour appears.
        let blue = img.pixels().filter(|p| p.0 == [40, 90, 200]).count();
        assert!(blue > 500, "EMA curve drawn ({blue} px)");
        assert_eq!(img.get_pixel(LEFT as u32, TOP as u32).0, [40, 90, 200]);
    }

    #[test]
    fn ema_smooths() {
        assert_eq!(ema(&[1.0, 3.0], 0.5), vec![1.0, 2.0]);
    }
}
