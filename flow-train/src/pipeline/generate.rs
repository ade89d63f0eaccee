//! Generation: prompt (or prompt embeddings), size, steps, guidance, seed or initial latents, reference
//! images -> an image `[1, 3, H, W]` in [0, 1], composed exactly as diffusers' `Flux2Pipeline.__call__`:
//!
//! 1. prompt embeddings from the text encoder (`encode_prompt`: FLUX.2 chat format, left padding to
//!    `max_sequence_length`, hidden states `text_encoder_out_layers` stacked per token);
//! 2. reference images prepared ([`super::reference`]) and encoded by the VAE to normalized, patchified
//!    latents (posterior mean);
//! 3. the size: `height`/`width` if given, else the initial latents', else the first reference's prepared
//!    size, else 1024; both must be multiples of the latent scale factor (16);
//! 4. the denoising loop [`crate::sample`] (schedule from the noisy token count, embedded guidance, Euler
//!    steps, reference tokens appended with time ids 10, 20, ...), starting from the given latents or from
//!    seeded noise ([`crate::initial_noise`]; not torch's stream, so pass latents to reproduce a diffusers run);
//! 5. the VAE decode (BN denormalization, unpatchify, decoder) and `(x / 2 + 0.5).clamp(0, 1)`, diffusers'
//!    `postprocess(output_type="pt")`.

use burn::tensor::{DType, Tensor, backend::Backend};
use flux2_dit::Flux2Transformer;
use flux2_vae::Vae;
use mistral_encoder::PromptEmbeds;

use super::loader::Flux2Pipeline;
use super::reference::{REFERENCE_MAX_AREA, ReferenceImage};
use crate::error::{Error, Result};
use crate::sampler::{DEFAULT_GUIDANCE, DEFAULT_SAMPLE_STEPS, SampleOptions, sample};

/// Image side when neither a size, latents nor a reference give one (diffusers: `default_sample_size` 128
/// x `vae_scale_factor` 8).
pub const DEFAULT_IMAGE_SIZE: usize = 1024;

/// What the image is conditioned on.
#[derive(Debug, Clone)]
pub enum Prompt<B: Backend> {
    /// Encoded by the pipeline's text encoder.
    Text(String),
    /// Precomputed prompt embeddings `[1, L, joint_attention_dim]` (their float type is the latents'
    /// starting type, as in diffusers).
    Embeds(Tensor<B, 3>),
}

impl<B: Backend> From<&str> for Prompt<B> {
    fn from(text: &str) -> Self {
        Prompt::Text(text.to_string())
    }
}

impl<B: Backend> From<String> for Prompt<B> {
    fn from(text: String) -> Self {
        Prompt::Text(text)
    }
}

impl<B: Backend> From<PromptEmbeds<B>> for Prompt<B> {
    fn from(embeds: PromptEmbeds<B>) -> Self {
        Prompt::Embeds(embeds.embeds)
    }
}

impl<B: Backend> From<Tensor<B, 3>> for Prompt<B> {
    fn from(embeds: Tensor<B, 3>) -> Self {
        Prompt::Embeds(embeds)
    }
}

/// How to generate. `Default` gives diffusers' defaults (50 steps, guidance 4, size from the inputs or
/// 1024x1024), seed 0.
#[derive(Debug, Clone)]
pub struct GenerateOptions<B: Backend> {
    /// Image height in pixels (multiple of 16); `None`: see the module docs.
    pub height: Option<usize>,
    /// Image width in pixels (multiple of 16); `None`: see the module docs.
    pub width: Option<usize>,
    /// Euler steps (>= 1).
    pub steps: usize,
    /// Embedded guidance scale (ignored by models without a guidance embedding).
    pub guidance: f32,
    /// Seed of the starting noise when `latents` is `None`.
    pub seed: u64,
    /// Starting noise `[1, 4 * latent_channels, H / 16, W / 16]` (diffusers' `latents` argument).
    pub latents: Option<Tensor<B, 4>>,
    /// Reference (edit) images, in order.
    pub references: Vec<ReferenceImage>,
}

impl<B: Backend> Default for GenerateOptions<B> {
    fn default() -> Self {
        Self {
            height: None,
            width: None,
            steps: DEFAULT_SAMPLE_STEPS,
            guidance: DEFAULT_GUIDANCE,
            seed: 0,
            latents: None,
            references: Vec::new(),
        }
    }
}

/// Progress of a generation, reported in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    EncodingPrompt,
    EncodingReferences {
        count: usize,
    },
    /// `step` Euler steps of `steps` are done (reported with 0 before the first).
    Denoising {
        step: usize,
        steps: usize,
    },
    Decoding,
}

/// A shorter-lived copy of a progress callback, to pass it on and keep using it.
fn reborrow<'a>(progress: &'a mut Option<&mut dyn FnMut(Stage)>) -> Option<&'a mut dyn FnMut(Stage)> {
    match progress {
        Some(p) => Some(&mut **p),
        None => None,
    }
}

fn report(progress: &mut Option<&mut dyn FnMut(Stage)>, stage: Stage) {
    if let Some(p) = progress.as_deref_mut() {
        p(stage);
    }
}

/// Picks one side: explicit, else from the latents, else from the first reference, else the default.
/// The largest image side [`generate`] makes: FLUX.2 [dev] is trained up to 4 megapixels; 4096 allows
/// 16 (a 100000-wide image would need tens of GB before its first step).
pub const MAX_IMAGE_SIDE: usize = 4096;

/// The most denoising steps [`generate`] runs (diffusers' FLUX.2 default is 50; 4 billion would
/// allocate 32 GB of sigmas).
pub const MAX_STEPS: usize = 1000;

fn side(
    what: &str,
    given: Option<usize>,
    from_latents: Option<usize>,
    from_reference: Option<usize>,
    multiple: usize,
) -> Result<usize> {
    let value = match (given, from_latents) {
        (Some(v), Some(l)) if v != l => {
            return Err(Error::Invalid(format!(
                "generate: {what} {v} does not match the initial latents, which make a {what} of {l} px"
            )));
        }
        (Some(v), _) => v,
        (None, Some(l)) => l,
        (None, None) => from_reference.unwrap_or(DEFAULT_IMAGE_SIZE),
    };
    if value > MAX_IMAGE_SIDE {
        return Err(Error::Invalid(format!("generate: {what} {value} is too large (at most {MAX_IMAGE_SIDE} px)")));
    }
    if value == 0 || !value.is_multiple_of(multiple) {
        let down = value / multiple * multiple;
        return Err(Error::Invalid(format!(
            "generate: {what} {value} is not a positive multiple of {multiple} (one latent token is {multiple} px); use {} or {}",
            down.max(multiple),
            down + multiple
        )));
    }
    Ok(value)
}

/// The denoised latents `[1, C, H/16, W/16]` (normalized, patchified; the model's float type) for
/// `prompt_embeds` `[1, L, joint_attention_dim]`: steps 2-4 of the module docs.
///
/// `transformer` is used as it is, adapters included (the trainer passes its model with the adapter being
/// trained; call it on the inner backend, `model.valid()`, as no gradients are needed).
pub fn generate_latents<B: Backend>(
    transformer: &Flux2Transformer<B>,
    vae: &Vae<B>,
    prompt_embeds: Tensor<B, 3>,
    options: GenerateOptions<B>,
    mut progress: Option<&mut dyn FnMut(Stage)>,
) -> Result<Tensor<B, 4>> {
    let device = transformer.device();
    let channels = transformer.config.in_channels;
    let vae_config = vae.config();
    if vae_config.patchified_channels() != channels {
        return Err(Error::Invalid(format!(
            "generate: the transformer takes {channels} latent channels (in_channels), the VAE makes {} (4 x latent_channels {})",
            vae_config.patchified_channels(),
            vae_config.latent_channels
        )));
    }
    let [batch, _, _] = prompt_embeds.dims();
    if batch != 1 {
        return Err(Error::Invalid(format!(
            "generate: prompt embeddings have shape {:?}; one prompt at a time ([1, L, D])",
            prompt_embeds.dims()
        )));
    }
    let multiple = vae_config.latent_scale_factor();
    let prepared =
        options.references.iter().map(|r| r.prepare(multiple, REFERENCE_MAX_AREA)).collect::<Result<Vec<_>>>()?;

    let latent_size = match &options.latents {
        Some(l) => {
            let [b, c, h, w] = l.dims();
            if b != 1 || c != channels || h == 0 || w == 0 {
                return Err(Error::Invalid(format!(
                    "generate: initial latents have shape {:?}, expected [1, {channels}, H/{multiple}, W/{multiple}]",
                    l.dims()
                )));
            }
            Some((h * multiple, w * multiple))
        }
        None => None,
    };
    if options.steps == 0 || options.steps > MAX_STEPS {
        return Err(Error::Invalid(format!("generate: {} denoising steps; use 1 to {MAX_STEPS}", options.steps)));
    }
    let first = prepared.first().map(|p| (p.height, p.width));
    let height = side("height", options.height, latent_size.map(|s| s.0), first.map(|s| s.0), multiple)?;
    let width = side("width", options.width, latent_size.map(|s| s.1), first.map(|s| s.1), multiple)?;

    let mut references = Vec::with_capacity(prepared.len());
    if !prepared.is_empty() {
        report(&mut progress, Stage::EncodingReferences { count: prepared.len() });
        for (image, source) in prepared.iter().zip(&options.references) {
            let latents = vae
                .encode_image(image.to_tensor::<B>(&device))
                .map_err(|e| Error::Invalid(format!("encoding reference image {}: {e}", source.source)))?;
            references.push(latents);
        }
    }

    let sample_options = match options.latents {
        Some(latents) => SampleOptions::from_latents(latents),
        None => SampleOptions::seeded(options.seed, height / multiple, width / multiple),
    }
    .steps(options.steps)
    .guidance(options.guidance)
    .references(references);

    report(&mut progress, Stage::Denoising { step: 0, steps: options.steps });
    let mut on_step = |i: usize, n: usize| report(&mut progress, Stage::Denoising { step: i + 1, steps: n });
    let latents = sample(transformer, prompt_embeds, sample_options, Some(&mut on_step))?;
    // A NaN anywhere (a weight, a LoRA, the prompt embeddings, an f16 overflow) spreads to every pixel:
    // an all-black image written with exit 0 would hide it.
    if !flux2_dit::all_finite(&latents) {
        return Err(Error::Invalid(
            "generate: the denoised latents hold NaN or infinite values (a non-finite weight, LoRA factor or prompt \
             embedding, or an overflow in this dtype); no image was written"
                .into(),
        ));
    }
    Ok(latents)
}

/// Latents `[1, C, h, w]` -> image `[1, 3, 16h, 16w]` f32 in [0, 1]: VAE decode and diffusers'
/// `(x / 2 + 0.5).clamp(0, 1)`.
pub fn decode_image<B: Backend>(vae: &Vae<B>, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
    let decoded = vae.decode_latents(latents).map_err(|e| Error::Invalid(format!("decoding the latents: {e}")))?;
    Ok((decoded.cast(DType::F32) * 0.5 + 0.5).clamp(0.0, 1.0))
}

/// A whole generation from prompt embeddings `[1, L, joint_attention_dim]`: [`generate_latents`] then
/// [`decode_image`]. Returns `[1, 3, H, W]` f32 in [0, 1].
pub fn generate<B: Backend>(
    transformer: &Flux2Transformer<B>,
    vae: &Vae<B>,
    prompt_embeds: Tensor<B, 3>,
    options: GenerateOptions<B>,
    mut progress: Option<&mut dyn FnMut(Stage)>,
) -> Result<Tensor<B, 4>> {
    let latents = generate_latents(transformer, vae, prompt_embeds, options, reborrow(&mut progress))?;
    report(&mut progress, Stage::Decoding);
    decode_image(vae, latents)
}

impl<B: Backend> Flux2Pipeline<B> {
    /// Prompt embeddings `[1, L, joint_attention_dim]` for `prompt` (errors if the text encoder was not
    /// loaded or was dropped).
    pub fn encode_prompt(&self, prompt: &str) -> Result<PromptEmbeds<B>> {
        let encoder = self.text_encoder.as_ref().ok_or_else(|| {
            Error::Invalid(
                "the pipeline has no text encoder (not loaded, or dropped after caching embeddings): pass prompt embeddings".into(),
            )
        })?;
        encoder.encode(&[prompt]).map_err(|e| Error::Invalid(format!("encoding the prompt: {e}")))
    }

    /// Generates one image `[1, 3, H, W]` in [0, 1] (see the module docs) with the transformer as it is
    /// (LoRAs attached with [`Flux2Pipeline::load_loras`] included).
    pub fn generate(
        &self,
        prompt: impl Into<Prompt<B>>,
        options: GenerateOptions<B>,
        mut progress: Option<&mut dyn FnMut(Stage)>,
    ) -> Result<Tensor<B, 4>> {
        let embeds = match prompt.into() {
            Prompt::Embeds(embeds) => embeds,
            Prompt::Text(text) => {
                report(&mut progress, Stage::EncodingPrompt);
                self.encode_prompt(&text)?.embeds
            }
        };
        generate(&self.transformer, &self.vae, embeds, options, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_follow_diffusers_precedence_and_name_the_fix() {
        assert_eq!(side("height", Some(512), None, Some(64), 16).unwrap(), 512);
        assert_eq!(side("height", None, Some(48), Some(64), 16).unwrap(), 48);
        assert_eq!(side("height", None, None, Some(64), 16).unwrap(), 64);
        assert_eq!(side("height", None, None, None, 16).unwrap(), DEFAULT_IMAGE_SIZE);
        let err = side("width", Some(1000), None, None, 16).unwrap_err().to_string();
        assert!(err.contains("width 1000") && err.contains("992") && err.contains("1008"), "{err}");
        let err = side("height", Some(64), Some(48), None, 16).unwrap_err().to_string();
        assert!(err.contains("height 64") && err.contains("48"), "{err}");
        assert!(side("height", Some(0), None, None, 16).is_err());
        let err = side("width", Some(100_000), None, None, 16).unwrap_err().to_string();
        assert!(err.contains("width 100000") && err.contains("at most 4096"), "{err}");
    }
}
