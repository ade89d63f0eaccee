//! The base model's world: coloured squares, triangles and crosses on the demo's backgrounds, captioned
//! "a photo of a red square on a blue background", painted deterministically. The demo pipeline's base
//! is pretrained on these ([`super::pretrain`]); the demo's LoRA then teaches a glyph none of them is (the
//! ring of [`super::write_dataset`]).

use image::{Rgb, RgbImage};

use super::dataset::BACKGROUNDS;

/// Shapes the base knows.
pub const SHAPES: [&str; 3] = ["square", "triangle", "cross"];

/// Shape colours: (name used in captions, colour).
pub const COLOURS: [(&str, [u8; 3]); 4] =
    [("red", [210, 30, 30]), ("yellow", [235, 200, 40]), ("white", [235, 235, 235]), ("orange", [240, 130, 30])];

/// One painted scene.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub shape: usize,
    pub colour: usize,
    pub background: usize,
    /// Centre (fractions of width and height) and half-size (fraction of the shorter side).
    pub centre: (f32, f32),
    pub size: f32,
}

impl Scene {
    pub fn caption(&self) -> String {
        format!(
            "a photo of a {} {} on a {} background",
            COLOURS[self.colour].0, SHAPES[self.shape], BACKGROUNDS[self.background].0
        )
    }

    /// Coverage of the shape at a pixel centre (x, y) in [0, 1], anti-aliased over one pixel.
    fn coverage(&self, x: f32, y: f32, side: f32, w: f32, h: f32) -> f32 {
        let (cx, cy) = (self.centre.0 * w, self.centre.1 * h);
        let r = self.size * side;
        let (dx, dy) = (x - cx, y - cy);
        // Signed distance to the edge, positive inside.
        let inside = match SHAPES[self.shape] {
            "square" => r - dx.abs().max(dy.abs()),
            "triangle" => {
                // Upward triangle with its base at cy + r and apex at cy - r.
                let base = cy + r - y;
                let half = (y - (cy - r)) * 0.5;
                (half - dx.abs()).min(base).min(y - (cy - r))
            }
            _ => {
                let arm = 0.35 * r;
                let horizontal = (r - dx.abs()).min(arm - dy.abs());
                let vertical = (arm - dx.abs()).min(r - dy.abs());
                horizontal.max(vertical)
            }
        };
        (inside + 0.5).clamp(0.0, 1.0)
    }

    pub fn paint(&self, width: u32, height: u32) -> RgbImage {
        let bg = BACKGROUNDS[self.background].1.map(f32::from);
        let fg = COLOURS[self.colour].1.map(f32::from);
        let (w, h) = (width as f32, height as f32);
        RgbImage::from_fn(width, height, |x, y| {
            let a = self.coverage(x as f32 + 0.5, y as f32 + 0.5, w.min(h), w, h);
            Rgb([0, 1, 2].map(|k| (bg[k] * (1.0 - a) + fg[k] * a).round().clamp(0.0, 255.0) as u8))
        })
    }
}

/// `count` scenes cycling through every shape x colour x background combination, with positions and sizes
/// drawn from `seed`.
pub fn scenes(count: usize, seed: u64) -> Vec<Scene> {
    let mut rng = flux2_ops::Rng::derive(seed, "demo shapes", &[]);
    let combos = SHAPES.len() * COLOURS.len() * BACKGROUNDS.len();
    (0..count)
        .map(|i| {
            let c = i % combos;
            let size = 0.16 + 0.14 * rng.uniform() as f32;
            let place = |rng: &mut flux2_ops::Rng| size + 0.02 + (1.0 - 2.0 * size - 0.04) * rng.uniform() as f32;
            let centre = (place(&mut rng), place(&mut rng));
            Scene {
                shape: c % SHAPES.len(),
                colour: (c / SHAPES.len()) % COLOURS.len(),
                background: c / (SHAPES.len() * COLOURS.len()),
                centre,
                size,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_cover_every_combination_and_paint_their_caption() {
        let all = scenes(72, 1);
        assert_eq!(all, scenes(72, 1));
        let mut captions: Vec<String> = all.iter().map(Scene::caption).collect();
        captions.sort();
        captions.dedup();
        assert_eq!(captions.len(), 72);
        for scene in &all[..6] {
            let img = scene.paint(64, 64);
            let (cx, cy) = ((scene.centre.0 * 64.0) as u32, (scene.centre.1 * 64.0) as u32);
            assert_eq!(img.get_pixel(cx, cy).0, COLOURS[scene.colour].1, "{}", scene.caption());
            assert_eq!(img.get_pixel(0, 0).0, BACKGROUNDS[scene.background].1, "{}", scene.caption());
        }
    }
}
