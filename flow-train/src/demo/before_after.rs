//! What the demo's LoRA learned, in pictures and two numbers: the same prompts and seeds sampled by the
//! base and by the base with the LoRA.
//!
//! - Trigger prompts ("a photo of sks on a blue background"): distance of each sample to the nearest
//!   training image, before and after. The LoRA learned the concept when it falls.
//! - The change the LoRA makes to a sample (distance between the base's and the LoRA's, same seed), on
//!   the trigger prompts and on the other prompts (shapes the base knows). The LoRA is specific to its
//!   trigger when the first is larger than the second (DOP trains for exactly this).
//!
//! Distance = mean absolute difference of RGB in [0, 1] (0 equal, 1 black against white), over images of
//! the same size. The strip shows the base's samples in its top row and the LoRA's below, one column per
//! prompt and seed (trigger prompts first).

use std::path::Path;

use burn::tensor::backend::Backend;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::pipeline::{Flux2Pipeline, GenerateOptions, LoraSpec, PipelineOptions};
use crate::train::previews::grid;

/// The prompts and sampling settings of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Prompts with the trigger word in place.
    pub trigger_prompts: Vec<String>,
    /// Prompts without it.
    pub other_prompts: Vec<String>,
    pub seeds: Vec<u64>,
    pub size: usize,
    pub steps: usize,
    pub guidance: f32,
}

impl Comparison {
    /// The demo's: its trigger prompts, two shapes the base learned, seeds 1 and 2, 128 px, 12 steps.
    pub fn demo() -> Self {
        Self {
            trigger_prompts: vec![
                "a photo of sks on a blue background".into(),
                "a photo of sks on a green background".into(),
            ],
            other_prompts: vec![
                "a photo of a white square on a purple background".into(),
                "a photo of a red triangle on a grey background".into(),
            ],
            seeds: vec![1, 2],
            size: 128,
            steps: 12,
            guidance: 4.0,
        }
    }
}

/// The numbers and the picture.
#[derive(Clone, Debug)]
pub struct BeforeAfter {
    /// Mean over trigger samples of the distance to the nearest training image: base, then with the LoRA.
    pub trigger_before: f32,
    pub trigger_after: f32,
    /// Mean over the trigger prompts' samples of the distance between the base's and the LoRA's.
    pub trigger_change: f32,
    /// The same over the other prompts' samples.
    pub others_change: f32,
    /// Top row the base's samples, bottom row the LoRA's, one column per prompt and seed.
    pub strip: RgbImage,
}

/// Mean absolute difference of two same-sized images, RGB in [0, 1].
pub fn image_distance(a: &RgbImage, b: &RgbImage) -> f32 {
    let total: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y) as u64).sum();
    total as f32 / (255.0 * a.as_raw().len().max(1) as f32)
}

fn stack(rows: &[RgbImage]) -> RgbImage {
    let width = rows.iter().map(|r| r.width()).max().unwrap_or(1);
    let height = rows.iter().map(|r| r.height()).sum::<u32>().max(1);
    let mut out = RgbImage::from_pixel(width, height, image::Rgb([24, 24, 24]));
    let mut y = 0;
    for row in rows {
        image::imageops::replace(&mut out, row, 0, y as i64);
        y += row.height();
    }
    out
}

/// Samples every prompt and seed of `comparison` with the pipeline at `pipeline_dir` (options as the job
/// loads it), without and with the LoRA at `lora`, and measures against `training_images` (those of
/// the sample size count).
pub fn before_after<B: Backend>(
    pipeline_dir: &Path,
    options: &PipelineOptions,
    lora: &Path,
    training_images: &[RgbImage],
    comparison: &Comparison,
    device: &B::Device,
) -> Result<BeforeAfter> {
    let side = comparison.size as u32;
    let references: Vec<&RgbImage> =
        training_images.iter().filter(|i| i.width() == side && i.height() == side).collect();
    if references.is_empty() {
        return Err(Error::Invalid(format!("no {side}x{side} training image to compare the samples with")));
    }
    let mut pipeline = Flux2Pipeline::<B>::load(&pipeline_dir.display().to_string(), options, device)?;
    let adapters = pipeline.load_loras(&[LoraSpec::new(lora, 1.0)])?;
    let sample = |prompt: &str, seed: u64, on: bool| -> Result<RgbImage> {
        for a in &adapters {
            if on { a.enable() } else { a.disable() }
        }
        let options = GenerateOptions {
            height: Some(comparison.size),
            width: Some(comparison.size),
            steps: comparison.steps,
            guidance: comparison.guidance,
            seed,
            ..GenerateOptions::default()
        };
        crate::pipeline::image_to_rgb8(pipeline.generate(prompt.to_string(), options, None)?)
    };
    let nearest = |img: &RgbImage| references.iter().map(|r| image_distance(img, r)).fold(f32::INFINITY, f32::min);
    let (mut bases, mut tuned_all, mut before, mut after) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut trigger_change, mut others_change) = (Vec::new(), Vec::new());
    for (prompts, trigger) in [(&comparison.trigger_prompts, true), (&comparison.other_prompts, false)] {
        for prompt in prompts {
            for &seed in &comparison.seeds {
                let (base, tuned) = (sample(prompt, seed, false)?, sample(prompt, seed, true)?);
                if trigger {
                    before.push(nearest(&base));
                    after.push(nearest(&tuned));
                    trigger_change.push(image_distance(&base, &tuned));
                } else {
                    others_change.push(image_distance(&base, &tuned));
                }
                bases.push(base);
                tuned_all.push(tuned);
            }
        }
    }
    let mean = |v: &[f32]| if v.is_empty() { 0.0 } else { v.iter().sum::<f32>() / v.len() as f32 };
    Ok(BeforeAfter {
        trigger_before: mean(&before),
        trigger_after: mean(&after),
        trigger_change: mean(&trigger_change),
        others_change: mean(&others_change),
        strip: stack(&[grid(&bases), grid(&tuned_all)]),
    })
}
