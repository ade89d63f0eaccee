//! Tiled encode/decode for images too large to process in one piece.
//!
//! The image (or latent) is cut into overlapping tiles, each tile goes through the network on its own,
//! and the results are blended with linear ramps across each overlap (weighted average, weights
//! normalized per position). Memory then scales with the tile, not the image.
//!
//! **The seam trade-off.** Tiled output is *not* equal to untiled output: every GroupNorm computes its
//! statistics over the tile instead of the whole image, and the mid-block attention only sees the tile.
//! Neighbouring tiles therefore disagree slightly (colour/contrast shifts, most visible in flat regions);
//! the blend hides hard edges but cannot remove the disagreement. Larger tiles and overlaps get closer to
//! the untiled result at the cost of memory and compute (each overlap is computed twice or more).
//! Training latents should be encoded untiled whenever memory allows; tiles of 512 px with 128 px overlap
//! are a reasonable default for previews of very large images.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::vae::Vae;

/// Tile geometry, in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOptions {
    /// Tile side in pixels; a multiple of the latent scale factor (16 for FLUX.2). Default 512.
    pub tile_size: usize,
    /// Minimum overlap between neighbouring tiles in pixels; a multiple of 16, less than `tile_size`.
    /// Default 128.
    pub overlap: usize,
}

impl Default for TileOptions {
    fn default() -> Self {
        Self { tile_size: 512, overlap: 128 }
    }
}

impl TileOptions {
    fn validate(&self, unit: usize) -> Result<()> {
        if self.tile_size == 0 || self.tile_size % unit != 0 {
            return Err(Error::Tiling {
                field: "tile_size",
                reason: format!("{} is not a positive multiple of {unit}", self.tile_size),
            });
        }
        if self.overlap % unit != 0 || self.overlap >= self.tile_size {
            return Err(Error::Tiling {
                field: "overlap",
                reason: format!("{} must be a multiple of {unit} below tile_size {}", self.overlap, self.tile_size),
            });
        }
        Ok(())
    }
}

/// Tile spans `[start, end)` along one axis of `len` units: evenly spread, first at 0, last at the end,
/// neighbours overlapping by at least `overlap` units.
pub(crate) fn tile_spans(len: usize, tile: usize, overlap: usize) -> Vec<(usize, usize)> {
    if len <= tile {
        return vec![(0, len)];
    }
    let stride = tile - overlap;
    let n = (len - overlap).div_ceil(stride);
    let last = len - tile;
    (0..n).map(|k| (k * last / (n - 1), k * last / (n - 1) + tile)).collect()
}

/// Blend weight of each position of span `k` (in output units, `scale` output units per span unit):
/// linear ramps across the overlap with the previous and next span, 1 elsewhere; always > 0.
fn span_weights(spans: &[(usize, usize)], k: usize, scale: usize) -> Vec<f32> {
    let (s, e) = (spans[k].0 * scale, spans[k].1 * scale);
    let prev_end = (k > 0).then(|| spans[k - 1].1 * scale).filter(|&pe| pe > s);
    let next_start = spans.get(k + 1).map(|n| n.0 * scale).filter(|&ns| ns < e);
    (s..e)
        .map(|x| {
            let mut w = 1.0f32;
            if let Some(pe) = prev_end.filter(|&pe| x < pe) {
                w = w.min(((x - s) as f32 + 0.5) / (pe - s) as f32);
            }
            if let Some(ns) = next_start.filter(|&ns| x >= ns) {
                w = w.min(((e - x) as f32 - 0.5) / (e - ns) as f32);
            }
            w
        })
        .collect()
}

/// Accumulates weighted tiles of a [C, H, W] f32 canvas on the host.
struct Canvas {
    c: usize,
    h: usize,
    w: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Canvas {
    fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w, sum: vec![0.0; c * h * w], weight: vec![0.0; h * w] }
    }

    /// Adds `tile` ([c, th, tw] values) at (y0, x0) with separable weights.
    fn add(&mut self, tile: &[f32], y0: usize, x0: usize, wy: &[f32], wx: &[f32]) {
        let (th, tw) = (wy.len(), wx.len());
        for ch in 0..self.c {
            for ty in 0..th {
                let row = &tile[(ch * th + ty) * tw..(ch * th + ty + 1) * tw];
                let dst = &mut self.sum[(ch * self.h + y0 + ty) * self.w + x0..][..tw];
                for tx in 0..tw {
                    dst[tx] += row[tx] * wy[ty] * wx[tx];
                }
            }
        }
        for ty in 0..th {
            let dst = &mut self.weight[(y0 + ty) * self.w + x0..][..tw];
            for tx in 0..tw {
                dst[tx] += wy[ty] * wx[tx];
            }
        }
    }

    fn finish(mut self) -> Vec<f32> {
        let plane = self.h * self.w;
        for ch in 0..self.c {
            for i in 0..plane {
                self.sum[ch * plane + i] /= self.weight[i];
            }
        }
        self.sum
    }
}

fn host_f32<B: Backend>(t: Tensor<B, 4>) -> Result<Vec<f32>> {
    let shape = t.dims().to_vec();
    t.cast(DType::F32).into_data().convert::<f32>().into_vec::<f32>().map_err(|e| Error::InputShape {
        what: "tile output",
        shape,
        reason: format!("cannot read back as f32: {e:?}"),
    })
}

impl<B: Backend> Vae<B> {
    /// Tiled version of [`Vae::encode_image`]: posterior means of overlapping pixel tiles are blended in
    /// latent space, then patchified and normalized. See the module docs for the seam trade-off.
    pub fn encode_image_tiled(&self, image: Tensor<B, 4>, tiles: &TileOptions) -> Result<Tensor<B, 4>> {
        let unit = self.config().latent_scale_factor();
        tiles.validate(unit)?;
        self.check_image(&image)?;
        let [b, _, h, w] = image.dims();
        let vf = self.config().vae_scale_factor();
        let lat = self.config().latent_channels;
        let device = image.device();
        let (tu, ou) = (tiles.tile_size / unit, tiles.overlap / unit);
        let ys = tile_spans(h / unit, tu, ou);
        let xs = tile_spans(w / unit, tu, ou);
        // Units of `unit` pixels = unit/vf latent pixels.
        let scale = unit / vf;
        let mut means = Vec::with_capacity(b);
        for n in 0..b {
            let item = image.clone().narrow(0, n, 1);
            let mut canvas = Canvas::new(lat, h / vf, w / vf);
            for (ky, &(y0, y1)) in ys.iter().enumerate() {
                let wy = span_weights(&ys, ky, scale);
                for (kx, &(x0, x1)) in xs.iter().enumerate() {
                    let wx = span_weights(&xs, kx, scale);
                    let tile =
                        item.clone().narrow(2, y0 * unit, (y1 - y0) * unit).narrow(3, x0 * unit, (x1 - x0) * unit);
                    let mean = host_f32(self.encode_mean(tile)?)?;
                    canvas.add(&mean, y0 * scale, x0 * scale, &wy, &wx);
                }
            }
            let data = TensorData::new(canvas.finish(), [1, lat, h / vf, w / vf]);
            means.push(Tensor::<B, 4>::from_data(data, (&device, DType::F32)));
        }
        self.latent_norm().encode(Tensor::cat(means, 0))
    }

    /// Tiled version of [`Vae::decode_latents`]: overlapping tiles of the raw latent are decoded and
    /// blended in pixel space. See the module docs for the seam trade-off.
    pub fn decode_latents_tiled(&self, latents: Tensor<B, 4>, tiles: &TileOptions) -> Result<Tensor<B, 4>> {
        let vf = self.config().vae_scale_factor();
        tiles.validate(self.config().latent_scale_factor())?;
        let z = self.latent_norm().decode(latents)?;
        let [b, _, h, w] = z.dims();
        let out_c = self.config().out_channels;
        let device = z.device();
        let (tu, ou) = (tiles.tile_size / vf, tiles.overlap / vf);
        let ys = tile_spans(h, tu, ou);
        let xs = tile_spans(w, tu, ou);
        let mut images = Vec::with_capacity(b);
        for n in 0..b {
            let item = z.clone().narrow(0, n, 1);
            let mut canvas = Canvas::new(out_c, h * vf, w * vf);
            for (ky, &(y0, y1)) in ys.iter().enumerate() {
                let wy = span_weights(&ys, ky, vf);
                for (kx, &(x0, x1)) in xs.iter().enumerate() {
                    let wx = span_weights(&xs, kx, vf);
                    let tile = item.clone().narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0);
                    let pixels = host_f32(self.decode_raw(tile)?)?;
                    canvas.add(&pixels, y0 * vf, x0 * vf, &wy, &wx);
                }
            }
            let data = TensorData::new(canvas.finish(), [1, out_c, h * vf, w * vf]);
            images.push(Tensor::<B, 4>::from_data(data, (&device, DType::F32)));
        }
        Ok(Tensor::cat(images, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_and_overlap() {
        assert_eq!(tile_spans(10, 32, 8), vec![(0, 10)]);
        for (len, tile, overlap) in [(64, 32, 8), (100, 32, 8), (33, 32, 4), (257, 64, 16), (96, 32, 0)] {
            let spans = tile_spans(len, tile, overlap);
            assert_eq!(spans[0].0, 0);
            assert_eq!(spans.last().unwrap().1, len);
            for pair in spans.windows(2) {
                assert!(pair[0].1 >= pair[1].0 + overlap, "{len} {tile} {overlap}: {spans:?}");
                assert!(pair[1].0 > pair[0].0);
            }
            assert!(spans.iter().all(|(s, e)| e - s == tile));
        }
    }

    #[test]
    fn weights_are_positive_and_partition_unity_for_two_tiles() {
        let spans = tile_spans(48, 32, 16);
        assert_eq!(spans, vec![(0, 32), (16, 48)]);
        let w0 = span_weights(&spans, 0, 1);
        let w1 = span_weights(&spans, 1, 1);
        for x in 16..32 {
            let sum = w0[x] + w1[x - 16];
            assert!((sum - 1.0).abs() < 1e-6, "x={x} sum={sum}");
        }
        assert!(w0.iter().chain(&w1).all(|&w| w > 0.0 && w <= 1.0));
        assert_eq!(w0[0], 1.0);
        assert_eq!(w1[31], 1.0);
    }
}
