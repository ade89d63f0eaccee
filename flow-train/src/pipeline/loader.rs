//! [`Flux2Pipeline`]: the transformer, the VAE and (optionally) the text encoder of a FLUX.2 model, loaded
//! from anything [`resolve_model`] accepts. The trainer loads its models through the same functions
//! ([`load_transformer`], [`load_vae`], [`load_text_encoder`]) and drops the text encoder once every
//! caption is encoded.

use burn::tensor::{DType, backend::Backend};
use flux2_dit::{BaseStorage, Checkpoint, Flux2Config, Flux2Transformer};
use flux2_ops::quant::QType;
use flux2_vae::{LoadOptions, Parts, Vae, VaeConfig};
use lora_adapters::AdapterHandle;
use mistral_encoder::{DEFAULT_MAX_SEQUENCE_LENGTH, EncoderOptions, MistralEncoder};

use super::hub::HubOptions;
use super::lora::{LoraSpec, apply_loras};
use super::source::{ModelFiles, SourceOptions, TextEncoderFiles, resolve_model};
use crate::error::{Error, Result};

/// FLUX.2 [dev]'s text-encoder hidden states stacked into the prompt embeddings (diffusers'
/// `text_encoder_out_layers` default).
pub const DEFAULT_TEXT_ENCODER_OUT_LAYERS: [usize; 3] = [10, 20, 30];

/// How to load a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Weights and compute dtype of all three models (diffusers' `torch_dtype`): `F32` (default, like
    /// diffusers), `BF16` or `F16`.
    pub dtype: DType,
    /// Text-encoder hidden states to stack (transformers numbering); `None`: [10, 20, 30].
    pub text_encoder_out_layers: Option<Vec<usize>>,
    /// Prompt token length; `None`: 512.
    pub max_sequence_length: Option<usize>,
    /// Load the text encoder (false: generate from prompt embeddings only; nothing of it is downloaded).
    pub load_text_encoder: bool,
    /// VAE source overriding the model's own (needed for a lone BFL transformer file).
    pub vae: Option<String>,
    /// Text-encoder source overriding the model's own: a pipeline folder or repository id.
    pub text_encoder: Option<String>,
    /// Hugging Face Hub settings (default: from the environment).
    pub hub: HubOptions,
    /// `Some(seed)`: draw every model's weights at random from its `config.json` instead of reading
    /// weight files (a rehearsal of the real sizes without the files; see [`random_transformer`]).
    pub random_weights: Option<u64>,
    /// The transformer's Linears stored quantized (`model.quantize` + `qtype`; `flux2-train sample
    /// --qtype`).
    pub quantize: Option<QType>,
    /// The text encoder's Linears stored quantized (`model.quantize_te`).
    pub quantize_text_encoder: Option<QType>,
    /// Share of the transformer's blocks / the text encoder's layers kept in host memory and uploaded
    /// ahead of use (`model.layer_offloading`; [`flux2_ops::offload`]).
    pub offload_transformer: f64,
    pub offload_text_encoder: f64,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            text_encoder_out_layers: None,
            max_sequence_length: None,
            load_text_encoder: true,
            vae: None,
            text_encoder: None,
            hub: HubOptions::from_env(),
            random_weights: None,
            quantize: None,
            quantize_text_encoder: None,
            offload_transformer: 0.0,
            offload_text_encoder: 0.0,
        }
    }
}

impl PipelineOptions {
    /// The options a job's `model:` panel asks for (source overrides, dtype, text-encoder layers and length,
    /// quantization, offloading, random weights): how the trainer loads its pipeline, and how whatever
    /// samples its result (the demo's comparison) loads the same one.
    pub fn for_model(model: &crate::job::ModelPlan) -> Self {
        Self {
            dtype: model.dtype.dtype(),
            text_encoder_out_layers: model.text_encoder_out_layers.clone(),
            max_sequence_length: model.max_sequence_length,
            vae: model.vae_path.clone(),
            text_encoder: model.text_encoder_path.clone(),
            random_weights: model.random_weights,
            quantize: model.quantize,
            quantize_text_encoder: model.quantize_te,
            offload_transformer: model.offload_transformer,
            offload_text_encoder: model.offload_text_encoder,
            ..Self::default()
        }
    }

    /// How the transformer's base is stored on backend `B`: offloading only where `B` uploads from
    /// page-locked memory (CUDA); on the CPU backends host and device memory are one, and offloading
    /// would only add copies, so it is off there (the trainer's start-up line says so).
    pub fn transformer_storage<B: Backend>(&self) -> BaseStorage {
        let offload = if flux2_ops::offload::is_accelerated::<B>() { self.offload_transformer } else { 0.0 };
        BaseStorage { quantize: self.quantize, offload }
    }

    /// The layers actually used.
    pub fn out_layers(&self) -> Vec<usize> {
        self.text_encoder_out_layers.clone().unwrap_or_else(|| DEFAULT_TEXT_ENCODER_OUT_LAYERS.to_vec())
    }

    /// The source-resolution part of these options.
    pub fn source_options(&self) -> SourceOptions {
        SourceOptions {
            vae: self.vae.clone(),
            text_encoder: self.text_encoder.clone(),
            need_text_encoder: self.load_text_encoder,
            hub: self.hub.clone(),
        }
    }

    /// The text encoder's settings: FLUX.2's prompt format with these layers, length and dtype.
    pub fn encoder_options(&self) -> EncoderOptions {
        EncoderOptions {
            max_sequence_length: self.max_sequence_length.unwrap_or(DEFAULT_MAX_SEQUENCE_LENGTH),
            hidden_states_layers: self.out_layers(),
            dtype: Some(self.dtype),
            quantize: self.quantize_text_encoder,
            offload: self.offload_text_encoder,
            ..EncoderOptions::default()
        }
    }
}

/// A loaded FLUX.2 pipeline. The fields are public so a trainer can borrow or move the parts.
#[derive(Debug)]
pub struct Flux2Pipeline<B: Backend> {
    pub transformer: Flux2Transformer<B>,
    pub vae: Vae<B>,
    /// `None` when not loaded or dropped ([`Flux2Pipeline::drop_text_encoder`]).
    pub text_encoder: Option<MistralEncoder<B>>,
    /// Where everything came from.
    pub files: ModelFiles,
}

/// The transformer of `files` in `dtype`. Errors name the checkpoint.
pub fn load_transformer<B: Backend>(
    files: &ModelFiles,
    dtype: DType,
    device: &B::Device,
) -> Result<Flux2Transformer<B>> {
    PendingTransformer::open(files, None)?.load(dtype, device)
}

/// A transformer whose config is read and whose weights are not loaded yet: opening a checkpoint
/// reads its header and config only. The trainer checks the pipeline with [`check_compatible`] at
/// start-up and loads the weights after the text encoder has been freed, so the two never share the
/// device.
pub struct PendingTransformer {
    pub config: Flux2Config,
    /// Names the source in errors.
    path: std::path::PathBuf,
    source: Pending,
}

enum Pending {
    Checkpoint(Box<Checkpoint>),
    Random(u64),
}

impl PendingTransformer {
    /// Opens the transformer of `files`: its checkpoint, or with `random_weights` only its
    /// `config.json` (see [`random_transformer`]).
    pub fn open(files: &ModelFiles, random_weights: Option<u64>) -> Result<Self> {
        let path = files.transformer.clone();
        let (config, source) = match random_weights {
            Some(seed) => {
                let config = Flux2Config::from_json_file(&component_config("transformer", &path)?);
                (config.map_err(|e| transformer_error(&path, e))?, Pending::Random(seed))
            }
            None => {
                let checkpoint = Checkpoint::open(&path).map_err(|e| transformer_error(&path, e))?;
                (checkpoint.config.clone(), Pending::Checkpoint(Box::new(checkpoint)))
            }
        };
        Ok(Self { config, path, source })
    }

    /// Loads (or draws) the weights in `dtype` on `device`.
    pub fn load<B: Backend>(self, dtype: DType, device: &B::Device) -> Result<Flux2Transformer<B>> {
        self.load_with(dtype, BaseStorage::default(), device)
    }

    /// [`Self::load`] with the base stored as `storage` says (quantized and/or offloaded Linears,
    /// converted as they stream in).
    pub fn load_with<B: Backend>(
        self,
        dtype: DType,
        storage: BaseStorage,
        device: &B::Device,
    ) -> Result<Flux2Transformer<B>> {
        let model = match self.source {
            Pending::Checkpoint(checkpoint) => checkpoint.load_with::<B>(dtype, storage, device),
            Pending::Random(seed) => {
                B::seed(device, seed);
                Flux2Transformer::random_on_device_with(&self.config, dtype, storage, device)
            }
        };
        model.map_err(|e| transformer_error(&self.path, e))
    }
}

fn transformer_error(path: &std::path::Path, e: flux2_dit::Error) -> Error {
    Error::Component { component: "transformer", message: format!("{}: {e}", path.display()) }
}

/// The VAE of `files` (encoder and decoder) in `dtype`. Errors name the checkpoint.
pub fn load_vae<B: Backend>(files: &ModelFiles, dtype: DType, device: &B::Device) -> Result<Vae<B>> {
    let path = &files.vae;
    Vae::load(path, device, &LoadOptions::default().with_dtype(dtype))
        .map_err(|e| Error::Component { component: "vae", message: format!("{}: {e}", path.display()) })
}

/// The text encoder of `text_encoder` files with `options` (layers, length, dtype).
pub fn load_text_encoder<B: Backend>(
    files: &TextEncoderFiles,
    options: EncoderOptions,
    device: &B::Device,
) -> Result<MistralEncoder<B>> {
    MistralEncoder::from_parts(&files.model_dir, &files.tokenizer, options, device).map_err(|e| Error::Component {
        component: "text encoder",
        message: format!("{} (tokenizer {}): {e}", files.model_dir.display(), files.tokenizer.display()),
    })
}

/// The `config.json` of a component folder; random weights need one (a lone checkpoint file has no
/// config to draw from).
fn component_config(component: &'static str, path: &std::path::Path) -> Result<std::path::PathBuf> {
    let config = path.join("config.json");
    if config.is_file() {
        return Ok(config);
    }
    Err(Error::Component {
        component,
        message: format!(
            "{}: random weights are drawn from a diffusers folder's config.json, and there is none here",
            path.display()
        ),
    })
}

/// The transformer of `files` with random weights drawn on the device from its `config.json` (weight
/// files need not exist): the memory and speed of the real model without its 64 GB, e.g. to check
/// that a job fits a GPU before downloading. The values depend on the backend (seeded by `seed`).
pub fn random_transformer<B: Backend>(
    files: &ModelFiles,
    dtype: DType,
    seed: u64,
    device: &B::Device,
) -> Result<Flux2Transformer<B>> {
    PendingTransformer::open(files, Some(seed))?.load(dtype, device)
}

/// The VAE of `files` with seeded random weights from its `config.json` (see [`random_transformer`]).
pub fn random_vae<B: Backend>(files: &ModelFiles, dtype: DType, seed: u64, device: &B::Device) -> Result<Vae<B>> {
    let component = |e: &dyn std::fmt::Display| Error::Component {
        component: "vae",
        message: format!("{}: {e}", files.vae.display()),
    };
    let config = VaeConfig::from_json_file(component_config("vae", &files.vae)?).map_err(|e| component(&e))?;
    Vae::random(config, device, dtype, Parts::Both, seed).map_err(|e| component(&e))
}

/// The text encoder of `files` with seeded random weights from its `config.json` (see
/// [`random_transformer`]); the tokenizer is the real one.
pub fn random_text_encoder<B: Backend>(
    files: &TextEncoderFiles,
    options: EncoderOptions,
    seed: u64,
    device: &B::Device,
) -> Result<MistralEncoder<B>> {
    MistralEncoder::random_from_parts(&files.model_dir, &files.tokenizer, options, seed, device).map_err(|e| {
        Error::Component {
            component: "text encoder",
            message: format!(
                "{} (tokenizer {}, random weights): {e}",
                files.model_dir.display(),
                files.tokenizer.display()
            ),
        }
    })
}

/// Checks that the three models fit together; errors name both config values.
pub fn check_compatible<B: Backend>(
    files: &ModelFiles,
    transformer: &Flux2Config,
    vae: &Vae<B>,
    text_encoder: Option<&MistralEncoder<B>>,
) -> Result<()> {
    let t = transformer;
    let vae_channels = vae.config().patchified_channels();
    if t.in_channels != vae_channels {
        return Err(Error::Invalid(format!(
            "{}: the transformer's in_channels is {}, the VAE ({}) makes {vae_channels} patchified latent channels",
            files.transformer.display(),
            t.in_channels,
            files.vae.display()
        )));
    }
    match text_encoder {
        Some(encoder) => check_text_encoder(files, transformer, encoder),
        None => Ok(()),
    }
}

/// Checks that the text encoder's stacked hidden states are the transformer's `joint_attention_dim`.
pub fn check_text_encoder<B: Backend>(
    files: &ModelFiles,
    transformer: &Flux2Config,
    encoder: &MistralEncoder<B>,
) -> Result<()> {
    let t = transformer;
    {
        let layers = &encoder.options.hidden_states_layers;
        let features = layers.len() * encoder.config.hidden_size;
        if features != t.joint_attention_dim {
            return Err(Error::Invalid(format!(
                "{}: the transformer's joint_attention_dim is {}, but {} text-encoder layers {layers:?} x hidden_size {} give {features}; \
                 set the text-encoder out layers to match",
                files.transformer.display(),
                t.joint_attention_dim,
                layers.len(),
                encoder.config.hidden_size
            )));
        }
    }
    Ok(())
}

/// The text encoder `options` ask for (loaded, drawn at random, or none).
pub fn options_text_encoder<B: Backend>(
    files: &ModelFiles,
    options: &PipelineOptions,
    device: &B::Device,
) -> Result<Option<MistralEncoder<B>>> {
    let mut encoder_options = options.encoder_options();
    if !flux2_ops::offload::is_accelerated::<B>() {
        // As for the transformer (PipelineOptions::transformer_storage): no offloading on the CPU.
        encoder_options.offload = 0.0;
    }
    match (&files.text_encoder, options.load_text_encoder) {
        (Some(te), true) => Ok(Some(match options.random_weights {
            Some(seed) => random_text_encoder(te, encoder_options, seed ^ 0x5445, device)?,
            None => load_text_encoder(te, encoder_options, device)?,
        })),
        (None, true) => Err(Error::Invalid(format!("model `{}`: no text encoder was found to load", files.name))),
        (_, false) => Ok(None),
    }
}

/// The VAE `options` ask for (loaded or drawn at random).
pub fn options_vae<B: Backend>(files: &ModelFiles, options: &PipelineOptions, device: &B::Device) -> Result<Vae<B>> {
    match options.random_weights {
        Some(seed) => random_vae(files, options.dtype, seed ^ 0x5641_4500, device),
        None => load_vae(files, options.dtype, device),
    }
}

impl<B: Backend> Flux2Pipeline<B> {
    /// Resolves `name_or_path` ([`resolve_model`]: pipeline folder, Hub repository id, or transformer
    /// checkpoint plus VAE/text-encoder sources) and loads it.
    pub fn load(name_or_path: &str, options: &PipelineOptions, device: &B::Device) -> Result<Self> {
        let files = resolve_model(name_or_path, &options.source_options())?;
        Self::from_files(files, options, device)
    }

    /// Loads already resolved files.
    pub fn from_files(files: ModelFiles, options: &PipelineOptions, device: &B::Device) -> Result<Self> {
        let text_encoder = options_text_encoder(&files, options, device)?;
        let transformer = PendingTransformer::open(&files, options.random_weights)?;
        let vae = options_vae(&files, options, device)?;
        check_compatible(&files, &transformer.config, &vae, text_encoder.as_ref())?;
        let transformer = transformer.load_with(options.dtype, options.transformer_storage::<B>(), device)?;
        Ok(Self { transformer, vae, text_encoder, files })
    }

    /// Frees the text encoder (after caching prompt embeddings) and returns it.
    pub fn drop_text_encoder(&mut self) -> Option<MistralEncoder<B>> {
        self.text_encoder.take()
    }

    /// Attaches LoRA files to the transformer, each at its multiplier (see [`apply_loras`]).
    pub fn load_loras(&mut self, specs: &[LoraSpec]) -> Result<Vec<AdapterHandle>> {
        apply_loras(&mut self.transformer, specs)
    }
}
