//! End-to-end FLUX.2 inference, equal to diffusers' `Flux2Pipeline`: model sources (local diffusers
//! folders, Hugging Face repositories, BFL single files), loading the three models, LoRAs with multipliers,
//! reference images, generation and output files.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use flow_train::pipeline::{Flux2Pipeline, GenerateOptions, LoraSpec, PipelineOptions};
//! # fn main() -> flow_train::Result<()> {
//! let device = Default::default();
//! let mut pipe = Flux2Pipeline::<Flex>::load("black-forest-labs/FLUX.2-dev", &PipelineOptions::default(), &device)?;
//! pipe.load_loras(&[LoraSpec::new("style.safetensors", 0.8)])?;
//! let options = GenerateOptions { height: Some(768), width: Some(1024), steps: 28, seed: 7, ..Default::default() };
//! let image = pipe.generate("a lighthouse at dusk", options, None)?; // [1, 3, 768, 1024] in [0, 1]
//! flow_train::pipeline::save_image(image, "lighthouse.png".as_ref())?;
//! # Ok(()) }
//! ```
//!
//! The parts are usable on their own: [`resolve_model`] + [`load_transformer`] / [`load_vae`] /
//! [`load_text_encoder`] for a trainer, [`generate`] for a transformer and VAE held elsewhere (sample
//! previews with an adapter being trained), [`apply_loras`] for LoRA files.
//! `flow-train/tests/pipeline_parity.rs` checks the whole chain against diffusers on tiny pipelines
//! (`tests/fixtures/pipeline/`).

mod generate;
pub mod hub;
mod loader;
mod lora;
mod output;
mod reference;
pub mod resample;
mod source;

pub use generate::{
    DEFAULT_IMAGE_SIZE, GenerateOptions, MAX_IMAGE_SIDE, MAX_STEPS, Prompt, Stage, decode_image, generate,
    generate_latents,
};
pub use hub::{HubOptions, RepoId};
pub use loader::{
    DEFAULT_TEXT_ENCODER_OUT_LAYERS, Flux2Pipeline, PendingTransformer, PipelineOptions, check_compatible,
    check_text_encoder, load_text_encoder, load_transformer, load_vae, options_text_encoder, options_vae,
    random_text_encoder, random_transformer, random_vae,
};
pub use lora::{LoraSpec, apply_loras};
pub use output::{image_to_rgb8, read_latents, save_image, save_image_tensor};
pub use reference::{
    REFERENCE_MAX_AREA, REFERENCE_MAX_ASPECT_RATIO, REFERENCE_MIN_SIDE, ReferenceImage, ReferencePlan,
    check_reference_size, reference_plan,
};
pub use source::{ModelFiles, SourceOptions, TextEncoderFiles, check_pipeline_folder, resolve_model};
