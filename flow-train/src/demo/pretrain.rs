//! Pretraining the demo's base pipeline (`flux2-train pretrain-demo`): the tiny FLUX.2 of
//! [`super::DemoPipelineSpec`] learns to draw the coloured shapes of [`super::shapes`] from their
//! captions, so the demo's LoRA has a base whose pictures mean something.
//!
//! Two stages, both with this workspace's own models and Burn's Adam:
//! 1. the VAE as an autoencoder (posterior mean, reconstruction MSE), then the latent batch-norm
//!    statistics measured on its own latents, as FLUX.2's `bn` holds them for the real VAE;
//! 2. the whole transformer (every weight trains, from the seeded random start) on those normalized
//!    latents with the rectified-flow loss the LoRA trainer uses, conditioned on the captions' embeddings
//!    from the demo's (random, never trained) Mistral encoder. The guidance input is drawn per item in
//!    [1, 5], so the model learns to ignore it and samples alike at the demo's `guidance_scale`.
//!
//! The text encoder stays the seeded random one: its hidden states still tell the words apart, which is
//! all the conditioning needs. Everything is drawn from `seed`: the same options give the same weights
//! on the same backend.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor, TensorData};
use flux2_dit::{Flux2Transformer, PositionIds, pack_latents, save_diffusers_folder};
use flux2_ops::full_training::train_every_weight;
use flux2_vae::{LatentNorm, LoadOptions, Vae, patchify};

use super::pipeline::{DemoPipelineSpec, write_pipeline};
use super::shapes::{Scene, scenes};
use crate::error::Result;
use crate::pipeline::{Flux2Pipeline, PipelineOptions};
use crate::{Rng, flow_target, gaussian_noise, noisy_latents};

/// How long and how hard to pretrain.
#[derive(Clone, Debug, PartialEq)]
pub struct PretrainOptions {
    /// Painted scenes (the 72 shape x colour x background combinations, cycled).
    pub images: usize,
    /// Image side in pixels (the demo trains and samples at 128).
    pub resolution: u32,
    pub vae_steps: usize,
    /// Images per autoencoder step.
    pub vae_batch: usize,
    /// Side of the random square crop the autoencoder trains on (pixels, a multiple of 8): a quarter
    /// of the side is a sixteenth of the time of whole images. The price: GroupNorm's statistics span
    /// what it sees, so colours on whole images come out slightly shifted.
    pub vae_crop: usize,
    pub transformer_steps: usize,
    /// Images per transformer step.
    pub batch: usize,
    pub vae_lr: f64,
    pub transformer_lr: f64,
    pub seed: u64,
    /// Progress bars on stderr.
    pub progress: bool,
    /// How the trained weights are stored (F32: what the demo ships, bit for bit; F16 or BF16 halve
    /// the bytes).
    pub dtype: DType,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        Self {
            images: 288,
            resolution: 128,
            vae_steps: 1500,
            vae_batch: 8,
            vae_crop: 32,
            transformer_steps: 2500,
            batch: 8,
            vae_lr: 3e-3,
            transformer_lr: 5e-4,
            seed: 20261208,
            progress: true,
            dtype: DType::F32,
        }
    }
}

impl PretrainOptions {
    /// Refuses sizes the stages cannot run with, naming the field.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &'static str, reason: String| Err(crate::Error::InvalidValue { what, reason });
        if self.resolution < 16 || !self.resolution.is_multiple_of(16) || self.resolution > 1024 {
            return bad("pretrain resolution", format!("{} is not a multiple of 16 in 16..=1024", self.resolution));
        }
        if self.vae_crop < 16 || !self.vae_crop.is_multiple_of(8) || self.vae_crop > self.resolution as usize {
            return bad("pretrain vae_crop", format!("{} is not a multiple of 8 in 16..=resolution", self.vae_crop));
        }
        if self.images == 0 || self.batch == 0 || self.vae_batch == 0 {
            return bad("pretrain images / batch / vae_batch", "must be at least 1".into());
        }
        Ok(())
    }
}

/// Final losses of the two stages (mean of the last 50 steps).
#[derive(Clone, Debug, PartialEq)]
pub struct PretrainReport {
    pub vae_loss: f32,
    pub transformer_loss: f32,
    /// Wall time of each stage: autoencoder training, encoding the data set, transformer training.
    pub seconds: [f64; 3],
}

fn scalar<B: burn::tensor::backend::Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_data().iter::<f32>().next().unwrap_or(f32::NAN)
}

/// `indices` of a batch drawn without replacement within the batch.
fn draw(rng: &mut Rng, n: usize, batch: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut all);
    all.truncate(batch.min(n));
    all
}

fn select<B: burn::tensor::backend::Backend, const D: usize>(t: &Tensor<B, D>, idx: &[usize]) -> Tensor<B, D> {
    let device = t.device();
    let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(
        TensorData::new(idx.iter().map(|&i| i as i64).collect::<Vec<_>>(), [idx.len()]),
        &device,
    );
    t.clone().select(0, idx)
}

fn bar(total: usize, visible: bool, what: &str) -> indicatif::ProgressBar {
    let template = format!("{what} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}} {{msg}}");
    crate::train::trainer::bar(total as u64, visible, &template)
}

/// Running mean of the last 50 losses.
struct Tail(Vec<f32>);

impl Tail {
    fn push(&mut self, v: f32) -> f32 {
        self.0.push(v);
        let tail = &self.0[self.0.len().saturating_sub(50)..];
        tail.iter().sum::<f32>() / tail.len() as f32
    }
}

/// The painted scenes as one `[N, 3, res, res]` tensor in [-1, 1], and their captions.
fn images<B: burn::tensor::backend::Backend>(
    scenes: &[Scene],
    res: u32,
    device: &B::Device,
) -> (Tensor<B, 4>, Vec<String>) {
    let side = res as usize;
    let mut values = Vec::with_capacity(scenes.len() * 3 * side * side);
    for scene in scenes {
        let img = scene.paint(res, res);
        for c in 0..3 {
            values.extend(img.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
        }
    }
    let tensor = Tensor::from_data(TensorData::new(values, [scenes.len(), 3, side, side]), (device, DType::F32));
    (tensor, scenes.iter().map(Scene::caption).collect())
}

/// Pretrains the demo pipeline into `root` (a diffusers folder: text encoder and tokenizer as
/// [`write_pipeline`] writes them, the trained VAE and transformer).
pub fn pretrain<B: AutodiffBackend>(
    root: &Path,
    options: &PretrainOptions,
    device: &B::Device,
) -> Result<PretrainReport> {
    options.check()?;
    let spec = DemoPipelineSpec::default();
    write_pipeline::<B::InnerBackend>(root, &spec, device)?;
    let all = scenes(options.images, options.seed);
    let (pixels, captions) = images::<B>(&all, options.resolution, device);
    let mut rng = Rng::derive(options.seed, "demo pretraining", &[]);

    // Stage 1: the autoencoder.
    let mut clock = std::time::Instant::now();
    let mut seconds = [0.0; 3];
    let mut lap = |i: usize| {
        seconds[i] = clock.elapsed().as_secs_f64();
        clock = std::time::Instant::now();
    };
    let mut vae = Vae::<B>::load(root.join("vae"), device, &LoadOptions::default())?.trainable();
    let mut optim = AdamConfig::new().init::<B, Vae<B>>();
    let pb = bar(options.vae_steps, options.progress, "vae        ");
    let mut tail = Tail(Vec::new());
    let mut vae_loss = f32::NAN;
    for _ in 0..options.vae_steps {
        let x = select(&pixels, &draw(&mut rng, all.len(), options.vae_batch));
        let side = options.resolution as usize;
        let crop = options.vae_crop;
        let (top, left) = (8 * rng.uniform_int(0, (side - crop) / 8), 8 * rng.uniform_int(0, (side - crop) / 8));
        let x = x.narrow(2, top, crop).narrow(3, left, crop);
        let out = vae.decode_raw(vae.encode_mean(x.clone())?)?;
        let loss = (out - x).square().mean();
        vae_loss = tail.push(scalar(loss.clone().inner()));
        pb.set_message(format!("loss {vae_loss:.4}"));
        pb.inc(1);
        let grads = GradientsParams::from_grads(loss.backward(), &vae);
        vae = optim.step(options.vae_lr, vae, grads);
    }
    pb.finish();
    lap(0);
    let mut vae = vae.valid();
    // FLUX.2's latent statistics: per patchified channel over the data set.
    let raw = patchify(vae.encode_mean(pixels.clone().inner())?)?;
    let c = raw.dims()[1];
    let per_channel = raw.swap_dims(0, 1).reshape([c as i32, -1]);
    let mean = per_channel.clone().mean_dim(1);
    let var = (per_channel - mean.clone()).square().mean_dim(1);
    let eps = vae.config().batch_norm_eps;
    vae.set_latent_norm(LatentNorm::from_stats(mean.reshape([c]), var.reshape([c]), eps));
    flux2_vae::save_diffusers_folder(&vae, &root.join("vae"), options.dtype)?;
    let latents: Tensor<B, 4> = Tensor::from_inner(vae.encode_image(pixels.inner())?);
    drop(vae);

    // Stage 2: the transformer, conditioned on the captions.
    let pipeline_options = PipelineOptions {
        text_encoder_out_layers: Some(spec.text_encoder_out_layers()),
        max_sequence_length: Some(DEMO_MAX_SEQUENCE_LENGTH),
        ..PipelineOptions::default()
    };
    let pipeline = Flux2Pipeline::<B::InnerBackend>::load(&root.display().to_string(), &pipeline_options, device)?;
    let encoder = pipeline
        .text_encoder
        .as_ref()
        .ok_or_else(|| crate::Error::Invalid(format!("{}: the demo pipeline has no text encoder", root.display())))?;
    let mut unique = captions.clone();
    unique.sort();
    unique.dedup();
    let embeds = encoder.encode(&unique)?.embeds;
    let text_index: Vec<usize> = captions.iter().map(|c| unique.binary_search(c).unwrap_or(0)).collect();
    let text: Tensor<B, 3> = Tensor::from_inner(embeds);
    lap(1);
    let mut model = train_every_weight(Flux2Transformer::<B>::from_inner(pipeline.transformer));
    let [_, _, h, w] = latents.dims();
    let rope = model.rope(&PositionIds::text(text.dims()[1]), &PositionIds::image(h, w));
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init::<B, Flux2Transformer<B>>();
    let pb = bar(options.transformer_steps, options.progress, "transformer");
    let mut tail = Tail(Vec::new());
    let mut transformer_loss = f32::NAN;
    for step in 0..options.transformer_steps {
        let idx = draw(&mut rng, all.len(), options.batch);
        let n = idx.len();
        let x0 = pack_latents(select(&latents, &idx));
        let noise = gaussian_noise::<B, 3>(&mut rng, x0.dims(), (device, DType::F32));
        // Logit-normal sigmas (mean 0, std 1), as FLUX training samples them.
        let sigmas: Vec<f32> = (0..n).map(|_| 1.0 / (1.0 + (-rng.normal() as f32).exp())).collect();
        let guidance: Vec<f32> = (0..n).map(|_| 1.0 + 4.0 * rng.uniform() as f32).collect();
        let noisy = noisy_latents(x0.clone(), noise.clone(), &sigmas)?;
        let target = flow_target(x0, noise)?;
        let ids: Vec<usize> = idx.iter().map(|&i| text_index[i]).collect();
        let t = Tensor::from_data(TensorData::new(sigmas, [n]), (device, DType::F32));
        let g = Tensor::from_data(TensorData::new(guidance, [n]), (device, DType::F32));
        let pred = model.forward(noisy, select(&text, &ids), t, Some(g), &rope);
        let loss = (pred - target).square().mean();
        transformer_loss = tail.push(scalar(loss.clone().inner()));
        pb.set_message(format!("loss {transformer_loss:.4}"));
        pb.inc(1);
        // A short warm-up, then the rate decays linearly to 10%.
        let progress = step as f64 / options.transformer_steps.max(1) as f64;
        let lr = options.transformer_lr * ((step + 1) as f64 / 100.0).min(1.0) * (1.0 - 0.9 * progress);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    pb.finish();
    lap(2);
    save_diffusers_folder(&model.valid(), &root.join("transformer"), options.dtype)?;
    Ok(PretrainReport { vae_loss, transformer_loss, seconds })
}

/// Prompt length of the demo (`max_sequence_length` of `job.yaml`).
pub const DEMO_MAX_SEQUENCE_LENGTH: usize = 64;
