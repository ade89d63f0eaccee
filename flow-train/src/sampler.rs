//! The FLUX.2 [dev] sampler: Euler integration of the transformer's velocity from noise (sigma 1) to an
//! image latent (sigma 0), step for step what diffusers' `Flux2Pipeline.__call__` does.
//!
//! Why every detail is the way it is (all checked against diffusers 0.42.1 `pipelines/flux2/pipeline_flux2.py`
//! and `FlowMatchEulerDiscreteScheduler.step`; the parity fixtures in `tests/fixtures/sampler/` run the real
//! pipeline):
//!
//! * **Schedule.** [`Flux2Schedule::new`] with the *noisy* image token count `h * w` only: the pipeline
//!   computes `mu` from `latents.shape[1]` before reference tokens are appended.
//! * **Ids and RoPE.** Text tokens `(0, 0, 0, i)` for every prompt position (padding included), image tokens
//!   `(0, row, col, 0)`, reference `k` `(10 (k + 1), row, col, 0)` after the image tokens. The ids never change
//!   during sampling, so the RoPE table is built once.
//! * **Latent dtype.** The pipeline creates the latents in the *prompt embeddings'* float type
//!   (`prepare_latents(dtype=prompt_embeds.dtype)`). Its Euler step returns the *velocity's* float type (the
//!   model's), so with f32 prompt embeddings and a bf16 model the latents are f32 for the first step and bf16
//!   from then on. [`sample`] follows that exactly. (diffusers itself only runs with prompt embeddings in the
//!   model's dtype — its `context_embedder` gets them uncast — so there the latents have the model dtype
//!   throughout; the transformer here casts them, so f32 embeddings with a bf16 model also work.)
//! * **Timestep.** The scheduler's timesteps are `t = f32(sigma * 1000)`; the pipeline passes
//!   `t.to(latents.dtype) / 1000`, computed in the latents' dtype (see [`transformer_timestep`]); the model then
//!   casts that to its own dtype and multiplies by 1000. In f32 this is `f32(t / 1000)`, which is not always
//!   the sigma itself (one ulp apart for some steps).
//! * **Guidance.** FLUX.2 [dev] is guidance-distilled: the guidance scale goes through the guidance
//!   embedding, one forward per step, no classifier-free guidance. Models without a guidance embedding
//!   (klein) ignore it, as in diffusers.
//! * **Euler step.** See [`euler_step`]: `x_f32 + dt * v`, where the product is formed in the velocity's dtype
//!   (PyTorch promotes `0-dim f32 tensor * bf16 tensor` to bf16, rounding `dt` to bf16 first), the sum in f32,
//!   and the result rounded back to the velocity's dtype. With an f32 model all of it is plain f32.
//! * **Reference images.** Appended after the noisy tokens (the same tokens for every batch item), cast to the
//!   model dtype, never noised, their predictions dropped ([`ReferenceTokens`]).
//! * **Noise.** With a seed, the initial noise is drawn on the host by [`Rng`] (see [`initial_noise`]), so
//!   a seed gives the same image on every backend and machine. It is *not* torch's `randn` stream: pass
//!   explicit latents to reproduce a diffusers run.
//!
//! Sampling never needs gradients: call it with the inner backend of an autodiff model (`model.valid()`).

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use flux2_dit::{Flux2Transformer, PositionIds, pack_latents, unpack_latents};

use crate::error::{Error, Result};
use crate::noise::gaussian_noise;
use crate::reference_images::ReferenceTokens;
use crate::schedule::Flux2Schedule;
use flux2_ops::Rng;

/// Steps when none are given: the default of diffusers' `Flux2Pipeline.__call__` (`num_inference_steps`).
pub const DEFAULT_SAMPLE_STEPS: usize = 50;

/// Embedded guidance scale when none is given: the default of `Flux2Pipeline.__call__` (`guidance_scale`).
pub const DEFAULT_GUIDANCE: f32 = 4.0;

/// Where sampling starts.
#[derive(Debug, Clone)]
pub enum InitialLatents<B: Backend> {
    /// Fresh Gaussian noise `[B, C, height, width]` from [`initial_noise`] (`B` from the prompt embeddings,
    /// `C` the model's `in_channels`). `height`/`width` count latent tokens: image pixels / 16.
    Seed { seed: u64, height: usize, width: usize },
    /// Given noisy latents `[B, C, h, w]` (normalized, patchified: the layout of diffusers' `latents`
    /// argument), cast to the prompt embeddings' float type as the pipeline does.
    Latents(Tensor<B, 4>),
}

/// What to sample: start, number of steps, guidance and reference images.
#[derive(Debug, Clone)]
pub struct SampleOptions<B: Backend> {
    pub initial: InitialLatents<B>,
    /// Euler steps (>= 1).
    pub steps: usize,
    /// Embedded guidance scale (ignored by models without a guidance embedding).
    pub guidance: f32,
    /// Reference (edit) image latents, each `[1, C, h_k, w_k]`, normalized and patchified like training
    /// latents; empty for text-to-image.
    pub references: Vec<Tensor<B, 4>>,
}

impl<B: Backend> SampleOptions<B> {
    /// Text-to-image from seeded noise of `height x width` latent tokens, with the diffusers defaults
    /// ([`DEFAULT_SAMPLE_STEPS`] steps, guidance [`DEFAULT_GUIDANCE`]).
    pub fn seeded(seed: u64, height: usize, width: usize) -> Self {
        Self::with_initial(InitialLatents::Seed { seed, height, width })
    }

    /// Starts from given latents `[B, C, h, w]`, with the diffusers defaults.
    pub fn from_latents(latents: Tensor<B, 4>) -> Self {
        Self::with_initial(InitialLatents::Latents(latents))
    }

    fn with_initial(initial: InitialLatents<B>) -> Self {
        Self { initial, steps: DEFAULT_SAMPLE_STEPS, guidance: DEFAULT_GUIDANCE, references: Vec::new() }
    }

    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    pub fn guidance(mut self, guidance: f32) -> Self {
        self.guidance = guidance;
        self
    }

    pub fn references(mut self, references: Vec<Tensor<B, 4>>) -> Self {
        self.references = references;
        self
    }
}

/// The seeded starting noise of [`sample`]: standard normals `[batch, channels, height, width]` drawn in
/// row-major order from `Rng::new(seed)` (f32 draws, converted to `dtype`).
///
/// Drawn in the latent-image layout (not the token layout) so the same seed gives the same noise image
/// whatever the packing; drawn on the host so it does not depend on the backend.
pub fn initial_noise<B: Backend>(
    seed: u64,
    [batch, channels, height, width]: [usize; 4],
    dtype: DType,
    device: &B::Device,
) -> Tensor<B, 4> {
    gaussian_noise(&mut Rng::new(seed), [batch, channels, height, width], (device, dtype))
}

/// The `timestep` tensor `[batch]` the pipeline feeds the transformer for scheduler timestep `t`
/// (`= f32(sigma * 1000)`, see [`Flux2Schedule::timesteps`]), in the latents' float type:
/// `t.to(latent_dtype) / 1000`, each operation rounded to `latent_dtype` as PyTorch does.
///
/// Computed on the host, so every backend gets the same bits.
pub fn transformer_timestep<B: Backend>(t: f32, batch: usize, latent_dtype: DType, device: &B::Device) -> Tensor<B, 1> {
    let data = match latent_dtype {
        DType::F64 => TensorData::new(vec![t as f64 / 1000.0; batch], [batch]),
        DType::BF16 => {
            let t = half::bf16::from_f32(t).to_f32();
            TensorData::new(vec![half::bf16::from_f32(t / 1000.0).to_f32(); batch], [batch])
        }
        DType::F16 => {
            let t = half::f16::from_f32(t).to_f32();
            TensorData::new(vec![half::f16::from_f32(t / 1000.0).to_f32(); batch], [batch])
        }
        _ => TensorData::new(vec![t / 1000.0; batch], [batch]),
    };
    // The values are exact in `latent_dtype`, so this cast only changes the storage type.
    Tensor::<B, 1>::from_data(data, device).cast(latent_dtype)
}

/// `value` rounded to `dtype` (bf16/f16 round to nearest even; other types keep the f32).
fn round_to(value: f32, dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => half::bf16::from_f32(value).to_f32(),
        DType::F16 => half::f16::from_f32(value).to_f32(),
        _ => value,
    }
}

/// One Euler step of the flow ODE from `sigma` to `sigma_next`, as `FlowMatchEulerDiscreteScheduler.step`
/// computes it: `(f32(latents) + dt * velocity)` cast to the velocity's float type, `dt = sigma_next - sigma`
/// in f32.
///
/// The product `dt * velocity` is formed in the velocity's float type with `dt` rounded to it first (PyTorch
/// type promotion: a 0-dim f32 tensor times a bf16 tensor is a bf16 operation), and only the addition runs in
/// f32. With an f32 velocity this is plain f32 arithmetic; with bf16 it reproduces diffusers bit for bit
/// (checked by `tests/fixtures/sampler/euler_low_precision.safetensors`).
pub fn euler_step<B: Backend, const D: usize>(
    latents: Tensor<B, D>,
    velocity: Tensor<B, D>,
    sigma: f32,
    sigma_next: f32,
) -> Tensor<B, D> {
    let dtype = velocity.dtype();
    let dt = round_to(sigma_next - sigma, dtype);
    let update = velocity * dt;
    (latents.cast(DType::F32) + update.cast(DType::F32)).cast(dtype)
}

fn shape_error(what: &'static str, reason: String) -> Error {
    Error::InvalidValue { what, reason }
}

/// Samples latents `[B, C, h, w]` (normalized, patchified; decode with the VAE crate) from `model`.
///
/// * `prompt_embeds` `[B, L, joint_attention_dim]`: the text encoder's output (all `L` positions, padding
///   included, get text ids). Its float type is the latents' starting type, as in diffusers.
/// * `options`: initial noise (seed or latents), steps, guidance, references; see [`SampleOptions`].
/// * `progress`: called after each step with `(step index, total steps)`, step index 0-based.
///
/// The result has the model's float type (after at least one step the latents take the velocity's type,
/// as in diffusers). Errors name the argument whose shape or value is wrong.
pub fn sample<B: Backend>(
    model: &Flux2Transformer<B>,
    prompt_embeds: Tensor<B, 3>,
    options: SampleOptions<B>,
    mut progress: Option<&mut dyn FnMut(usize, usize)>,
) -> Result<Tensor<B, 4>> {
    let config = &model.config;
    let channels = config.in_channels;
    if config.out_channels() != channels {
        return Err(shape_error(
            "sample: model",
            format!(
                "out_channels {} differs from in_channels {channels}; Euler sampling needs a velocity shaped like the latents",
                config.out_channels()
            ),
        ));
    }
    let [batch, text_len, joint] = prompt_embeds.dims();
    if batch == 0 || joint != config.joint_attention_dim {
        return Err(shape_error(
            "sample: prompt_embeds",
            format!(
                "shape {:?}, expected [B >= 1, L, {}] (the model's joint_attention_dim)",
                prompt_embeds.dims(),
                config.joint_attention_dim
            ),
        ));
    }
    if !options.guidance.is_finite() {
        return Err(shape_error("sample: guidance", format!("must be finite, got {}", options.guidance)));
    }
    let device = model.device();
    let model_dtype = model.dtype();
    let latent_dtype = prompt_embeds.dtype();

    let latents = match options.initial {
        InitialLatents::Seed { seed, height, width } => {
            if height == 0 || width == 0 {
                return Err(shape_error(
                    "sample: size",
                    format!("{height}x{width} latent tokens, both must be at least 1"),
                ));
            }
            initial_noise(seed, [batch, channels, height, width], latent_dtype, &device)
        }
        InitialLatents::Latents(latents) => {
            let [b, c, h, w] = latents.dims();
            if b != batch || c != channels || h == 0 || w == 0 {
                return Err(shape_error(
                    "sample: initial latents",
                    format!(
                        "shape {:?}, expected [{batch}, {channels}, h >= 1, w >= 1] (batch of prompt_embeds, model in_channels)",
                        latents.dims()
                    ),
                ));
            }
            latents.cast(latent_dtype)
        }
    };
    let [_, _, height, width] = latents.dims();
    let image_len = height * width;
    let schedule = Flux2Schedule::new(image_len, options.steps)?;

    let references = if options.references.is_empty() {
        None
    } else {
        let cast: Vec<Tensor<B, 4>> = options.references.into_iter().map(|r| r.cast(model_dtype)).collect();
        Some(ReferenceTokens::new(&cast, channels)?)
    };
    let image_ids = PositionIds::image(height, width);
    let rope = match &references {
        Some(r) => model.rope(&PositionIds::text(text_len), &PositionIds::concat(&[&image_ids, &r.ids])),
        None => model.rope(&PositionIds::text(text_len), &image_ids),
    };
    let reference_tokens = references.map(|r| r.tokens.repeat_dim(0, batch));
    let guidance = config.guidance_embeds.then(|| {
        Tensor::<B, 1>::from_data(TensorData::new(vec![options.guidance; batch], [batch]), (&device, DType::F32))
    });

    let steps = schedule.steps();
    let mut latents = pack_latents(latents);
    for (i, (t, (sigma, sigma_next))) in schedule.timesteps().into_iter().zip(schedule.intervals()).enumerate() {
        let timestep = transformer_timestep::<B>(t, batch, latents.dtype(), &device);
        let input = latents.clone().cast(model_dtype);
        let input = match &reference_tokens {
            Some(r) => Tensor::cat(vec![input, r.clone()], 1),
            None => input,
        };
        let velocity =
            model.forward(input, prompt_embeds.clone(), timestep, guidance.clone(), &rope).narrow(1, 0, image_len);
        latents = euler_step(latents, velocity, sigma, sigma_next);
        if let Some(report) = progress.as_deref_mut() {
            report(i, steps);
        }
    }
    Ok(unpack_latents(latents, height, width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    #[test]
    fn timestep_arithmetic_per_dtype() {
        let device = Default::default();
        let v = |t: Tensor<B, 1>| t.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
        // f32: t / 1000 in f32, which is not always the sigma it came from.
        let sigma = 0.954_500_6f32;
        let t = sigma * 1000.0;
        assert_eq!(v(transformer_timestep::<B>(t, 2, DType::F32, &device)), vec![t / 1000.0; 2]);
        let bf = transformer_timestep::<B>(t, 1, DType::BF16, &device);
        assert_eq!(bf.dtype(), DType::BF16);
        // bf16(954.5006) = 956, 956 / 1000 = 0.956 -> bf16 0.95703125 (torch gives the same)
        assert_eq!(v(bf), vec![0.957_031_25]);
        assert_eq!(v(transformer_timestep::<B>(1000.0, 1, DType::F16, &device)), vec![1.0]);
    }

    #[test]
    fn euler_step_in_f32_is_plain_arithmetic() {
        let device = Default::default();
        let x = Tensor::<B, 1>::from_data(TensorData::new(vec![1.0f32, -2.0, 0.5], [3]), &device);
        let v = Tensor::<B, 1>::from_data(TensorData::new(vec![0.25f32, 4.0, -1.0], [3]), &device);
        let out: Vec<f32> = euler_step(x, v, 0.75, 0.5).into_data().to_vec().unwrap();
        assert_eq!(out, vec![1.0 - 0.0625, -2.0 - 1.0, 0.5 + 0.25]);
    }

    #[test]
    fn euler_step_takes_the_velocity_dtype() {
        let device = Default::default();
        let x = Tensor::<B, 1>::from_data(TensorData::new(vec![1.0f32], [1]), &device);
        let v = Tensor::<B, 1>::from_data(TensorData::new(vec![1.0f32], [1]), (&device, DType::BF16));
        let out = euler_step(x, v, 1.0, 0.3);
        assert_eq!(out.dtype(), DType::BF16);
        // dt = -0.7 rounds to bf16 -0.69921875 before the product
        let got: f32 = out.cast(DType::F32).into_data().to_vec::<f32>().unwrap()[0];
        assert_eq!(got, half::bf16::from_f32(1.0 - 0.699_218_75).to_f32());
    }
}
