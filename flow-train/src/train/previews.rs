//! Sample previews during training: each prompt of the `sample:` panel rendered with the adapter as it
//! is now, saved as `samples/<step:09d>_<i>.<ext>`, plus one grid image per step
//! (`samples/<step:09d>_grid.<ext>`) to compare prompts at a glance.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use flux2_dit::Flux2Transformer;
use flux2_vae::Vae;
use image::RgbImage;
use lora_adapters::AdapterHandle;

use crate::error::{Error, Result};
use crate::job::{ImageFormat, SamplePrompt};
use crate::pipeline::{GenerateOptions, ReferenceImage, generate_latents};

/// One prompt, ready to render: its embedding `[1, L, D]` and its control (reference) images, read
/// once and preprocessed as the FLUX.2 pipeline does at every render.
pub struct PreparedPrompt<B: Backend> {
    pub prompt: SamplePrompt,
    pub embeds: Tensor<B, 3>,
    pub references: Vec<ReferenceImage>,
}

fn extension(format: ImageFormat) -> (&'static str, image::ImageFormat) {
    match format {
        ImageFormat::Jpg => ("jpg", image::ImageFormat::Jpeg),
        ImageFormat::Png => ("png", image::ImageFormat::Png),
        ImageFormat::Webp => ("webp", image::ImageFormat::WebP),
    }
}

/// Encodes `img` as `format` and writes it atomically (sample images, grids, the loss plot).
pub(crate) fn write_image(img: &RgbImage, path: &Path, format: image::ImageFormat) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    super::checkpoint::write_atomic(path, &bytes)
}

/// Side-by-side grid (one row), images top-aligned on a dark background.
pub fn grid(images: &[RgbImage]) -> RgbImage {
    let gap = 4u32;
    let width = images.iter().map(|i| i.width()).sum::<u32>() + gap * (images.len() as u32 + 1);
    let height = images.iter().map(|i| i.height()).max().unwrap_or(0) + 2 * gap;
    let mut out = RgbImage::from_pixel(width.max(1), height.max(1), image::Rgb([24, 24, 24]));
    let mut x = gap;
    for img in images {
        image::imageops::replace(&mut out, img, x as i64, gap as i64);
        x += img.width() + gap;
    }
    out
}

/// Renders every prompt with `model` (the adapter's multiplier set per prompt, restored after) and
/// writes the files. `progress(i, total)` is called after each image.
pub fn render<B: Backend>(
    model: &Flux2Transformer<B>,
    vae: &Vae<B>,
    adapter: &AdapterHandle,
    prompts: &[PreparedPrompt<B>],
    dir: &Path,
    step: u32,
    format: ImageFormat,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (ext, fmt) = extension(format);
    let mut images = Vec::new();
    let mut paths = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let options = GenerateOptions {
            // Floored to the latent grid (16 pixels), as ai-toolkit does (the job check warns).
            height: Some((p.prompt.height / 16 * 16) as usize),
            width: Some((p.prompt.width / 16 * 16) as usize),
            steps: p.prompt.steps as usize,
            guidance: p.prompt.guidance_scale,
            seed: p.prompt.seed,
            latents: None,
            references: p.references.clone(),
        };
        adapter.set_multiplier(p.prompt.network_multiplier);
        let latents = generate_latents(model, vae, p.embeds.clone().cast(DType::F32), options, None);
        adapter.set_multiplier(1.0);
        let image = vae.decode_latents(latents?)?;
        let img =
            flux2_vae::tensor_to_rgb8(image)?.pop().ok_or_else(|| Error::Invalid("VAE decoded no image".into()))?;
        let path = dir.join(format!("{step:09}_{i}.{ext}"));
        write_image(&img, &path, fmt)?;
        paths.push(path);
        images.push(img);
        progress(i + 1, prompts.len());
    }
    if images.len() > 1 {
        let path = dir.join(format!("{step:09}_grid.{ext}"));
        write_image(&grid(&images), &path, fmt)?;
        paths.push(path);
    }
    Ok(paths)
}
