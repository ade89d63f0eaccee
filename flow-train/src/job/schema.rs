//! The job file as written: ai-toolkit's schema (`job`, `config.name`, `config.process[0].{network, save,
//! datasets, train, model, sample, logging}`, `meta`), one struct per section, field names equal to the
//! keys, defaults equal to ai-toolkit's (`toolkit/config_modules.py`) unless the field docs say otherwise.
//!
//! Only keys this trainer uses (plus a few recognised keys users see in every ai-toolkit job, such as
//! `model.quantize`) have fields; the classification of every key, including the many ai-toolkit keys
//! without a field here, is in [`super::keys`]. Serializing a [`JobFile`] after loading gives the resolved
//! job with every default written out, still in ai-toolkit's schema.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dataset_buckets::DatasetConfig;
use lora_adapters::LoraLayout;
use serde::{Deserialize, Serialize};

use super::lenient;
use crate::{LossType, TimestepBias, TimestepType};

/// A whole job file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobFile {
    /// Job kind; ai-toolkit trainer jobs are `extension` (the only kind accepted).
    pub job: String,
    pub config: JobConfig,
    /// Free-form; ai-toolkit writes it into the saved LoRA's metadata. `[name]` is replaced by
    /// `config.name`.
    pub meta: BTreeMap<String, serde_json::Value>,
}

impl Default for JobFile {
    fn default() -> Self {
        JobFile { job: "extension".into(), config: JobConfig::default(), meta: BTreeMap::new() }
    }
}

/// `config:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobConfig {
    /// Run name (required): the output sub-folder and the checkpoint file prefix; replaces `[name]`
    /// everywhere in the file.
    pub name: String,
    /// The processes; exactly one is supported.
    pub process: Vec<ProcessConfig>,
}

/// `config.process[i]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessConfig {
    /// `sd_trainer`, `diffusion_trainer` (what the ai-toolkit UI writes) or `ui_trainer`: all the same here.
    #[serde(rename = "type")]
    pub kind: String,
    /// Outputs go to `<training_folder>/<config.name>/`.
    pub training_folder: PathBuf,
    /// `auto` (default), `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// Added to captions that lack it; replaces `[trigger]` in captions and sample prompts.
    pub trigger_word: Option<String>,
    /// Seed of everything random (LoRA init, timesteps, noise, shuffles, caption dropout). `null`: a
    /// seed is drawn at start and written to the output folder's copy of the job.
    pub training_seed: Option<u64>,
    pub network: NetworkConfig,
    pub save: SaveConfig,
    /// ai-toolkit dataset entries, deserialized by `dataset-buckets`.
    pub datasets: Vec<DatasetConfig>,
    pub train: TrainConfig,
    pub model: ModelConfig,
    pub sample: SampleConfig,
    pub logging: LoggingConfig,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            kind: "diffusion_trainer".into(),
            training_folder: PathBuf::from("output"),
            device: "auto".into(),
            trigger_word: None,
            training_seed: None,
            network: NetworkConfig::default(),
            save: SaveConfig::default(),
            datasets: Vec::new(),
            train: TrainConfig::default(),
            model: ModelConfig::default(),
            sample: SampleConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

/// `network:` — the LoRA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkConfig {
    /// `lora` (or `locon`, identical on FLUX.2, which has no convolutions in its blocks).
    #[serde(rename = "type")]
    pub kind: String,
    /// Rank of every adapter (ai-toolkit default 4).
    pub linear: usize,
    /// Legacy name of `linear`; when set it wins. Cleared (folded into `linear`) after loading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// Alpha; the adapter output is scaled by `linear_alpha / linear`. Default: `alpha` if set, else equal
    /// to `linear` (scale 1, which is what ai-toolkit trains with: it ignores `linear_alpha`).
    pub linear_alpha: Option<f64>,
    /// Legacy fallback for `linear_alpha`. Cleared after loading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Dropout on the adapter input during training (`null` = 0).
    pub dropout: Option<f64>,
    pub network_kwargs: NetworkKwargs,
    /// `false` (train text-encoder adapters too) is not supported.
    pub transformer_only: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            kind: "lora".into(),
            linear: 4,
            rank: None,
            linear_alpha: None,
            alpha: None,
            dropout: None,
            network_kwargs: NetworkKwargs::default(),
            transformer_only: true,
        }
    }
}

/// `network.network_kwargs:` — which Linears get adapters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkKwargs {
    /// Keep only Linears whose module path contains one of these (BFL `double_blocks.0.img_attn.qkv` or
    /// diffusers `transformer_blocks.0.attn.to_q` names). Empty: all 160 block Linears.
    #[serde(deserialize_with = "lenient::one_or_many")]
    pub only_if_contains: Vec<String>,
    /// Drop Linears whose module path contains one of these.
    #[serde(deserialize_with = "lenient::one_or_many")]
    pub ignore_if_contains: Vec<String>,
}

/// Floating-point precision names as ai-toolkit spells them (`get_torch_dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    #[serde(rename = "fp32", alias = "float32", alias = "float", alias = "single")]
    Fp32,
    #[serde(rename = "bf16", alias = "bfloat16")]
    Bf16,
    #[serde(rename = "fp16", alias = "float16", alias = "half")]
    Fp16,
}

impl Precision {
    /// The Burn dtype.
    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            Precision::Fp32 => burn::tensor::DType::F32,
            Precision::Bf16 => burn::tensor::DType::BF16,
            Precision::Fp16 => burn::tensor::DType::F16,
        }
    }
}

/// ai-toolkit's `save_format`: only changes full-model saves; a LoRA is always one `.safetensors` file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveFormat {
    #[default]
    Safetensors,
    Diffusers,
}

/// `save:` — checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SaveConfig {
    /// Storage precision of the saved LoRA factors (ai-toolkit default `float16`).
    pub dtype: Precision,
    /// Save every N steps (and always at the end); 0 = only at the end.
    pub save_every: u32,
    /// Keep the newest N step checkpoints (the final file is never deleted).
    pub max_step_saves_to_keep: u32,
    /// Accepted and ignored for LoRAs (see [`SaveFormat`]).
    pub save_format: SaveFormat,
    /// Uploading is not supported; must stay `false`.
    pub push_to_hub: bool,
    /// flux2-burn extension (ai-toolkit ignores it): key layout of the saved LoRA, `ai_toolkit`
    /// (`diffusion_model.*`, what ai-toolkit writes and ComfyUI reads), `diffusers` or `kohya`.
    pub lora_layout: LoraLayout,
}

impl Default for SaveConfig {
    fn default() -> Self {
        SaveConfig {
            dtype: Precision::Fp16,
            save_every: 1000,
            max_step_saves_to_keep: 5,
            save_format: SaveFormat::Safetensors,
            push_to_hub: false,
            lora_layout: LoraLayout::AiToolkit,
        }
    }
}

/// `train:` — the optimisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Images per step (within one bucket).
    pub batch_size: u32,
    /// Number of training steps.
    pub steps: u32,
    /// Batches per optimizer step; each step draws this many batches and averages their gradients.
    pub gradient_accumulation: u32,
    /// Legacy accumulation: an optimizer step every N steps (each step one batch, gradients averaged).
    /// Mutually exclusive with `gradient_accumulation > 1`; ai-toolkit's `-1` (a whole epoch) is not
    /// supported.
    pub gradient_accumulation_steps: i64,
    /// Train the transformer's LoRA; must stay `true`.
    pub train_unet: bool,
    /// Training text-encoder adapters is not supported; must stay `false`.
    pub train_text_encoder: bool,
    /// Recompute block activations in the backward pass instead of storing them.
    pub gradient_checkpointing: bool,
    /// Must be `flowmatch` (FLUX.2 is a flow-matching model). Default here `flowmatch` (ai-toolkit's
    /// generic default `ddpm` would be wrong for FLUX.2).
    pub noise_scheduler: String,
    /// `adamw` (default), `adamw8bit` (aliases `adam8bit`, `adamw8`), `adafactor`, `prodigy` (alias
    /// `prodigyopt`) or `lion`; case-insensitive.
    pub optimizer: String,
    /// Learning rate (ai-toolkit default 1e-6).
    pub lr: f64,
    /// Learning rate of the transformer's LoRA; defaults to `lr`.
    pub unet_lr: Option<f64>,
    pub optimizer_params: OptimizerParams,
    /// `constant` (default), `constant_with_warmup`, `cosine` or `linear`.
    pub lr_scheduler: String,
    pub lr_scheduler_params: LrSchedulerParams,
    /// Clip the global gradient norm to this; 0 disables clipping.
    pub max_grad_norm: f64,
    /// Smallest timestep-table index drawn (0 = most noise).
    pub min_denoising_steps: usize,
    /// Largest timestep-table index drawn (999 = least noise).
    pub max_denoising_steps: usize,
    /// Precision of the base weights and activations (ai-toolkit default `fp32`; FLUX.2 jobs use `bf16`).
    /// LoRA factors and optimizer state are always f32.
    pub dtype: Precision,
    /// How training timesteps are drawn.
    pub timestep_type: TimestepType,
    /// Timestep bias: `balanced`, `content` (high noise) or `style` (low noise).
    #[serde(serialize_with = "lenient::content_or_style")]
    pub content_or_style: TimestepBias,
    /// Element-wise loss.
    pub loss_type: LossType,
    /// Noise offset strength (0 = off).
    pub noise_offset: f64,
    pub ema_config: EmaConfig,
    /// Do not sample before the first step.
    pub skip_first_sample: bool,
    /// Sample before the first step even when resuming.
    pub force_first_sample: bool,
    /// Never sample.
    pub disable_sampling: bool,
    /// Differential Output Preservation: keep the base model's output on the class prompt.
    pub diff_output_preservation: bool,
    pub diff_output_preservation_multiplier: f64,
    /// The class word that replaces the trigger in DOP's preservation prompt (`person`, `dog`).
    pub diff_output_preservation_class: String,
    /// Differential guidance: push the target further from the current prediction.
    pub do_differential_guidance: bool,
    pub differential_guidance_scale: f64,
    /// Encode only the trigger word (or an empty prompt) once, free the text encoder, train every image
    /// on that embedding (captions are not used).
    pub unload_text_encoder: bool,
    /// Cache every caption's embedding (sets `cache_text_embeddings` on every dataset), then free the
    /// text encoder.
    pub cache_text_embeddings: bool,
    /// Loss multiplier for regularization-dataset items.
    pub reg_weight: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 1,
            steps: 1000,
            gradient_accumulation: 1,
            gradient_accumulation_steps: 1,
            train_unet: true,
            train_text_encoder: false,
            gradient_checkpointing: true,
            noise_scheduler: "flowmatch".into(),
            optimizer: "adamw".into(),
            lr: 1e-6,
            unet_lr: None,
            optimizer_params: OptimizerParams::default(),
            lr_scheduler: "constant".into(),
            lr_scheduler_params: LrSchedulerParams::default(),
            max_grad_norm: 1.0,
            min_denoising_steps: 0,
            max_denoising_steps: 999,
            dtype: Precision::Fp32,
            timestep_type: TimestepType::Sigmoid,
            content_or_style: TimestepBias::Balanced,
            loss_type: LossType::Mse,
            noise_offset: 0.0,
            ema_config: EmaConfig::default(),
            skip_first_sample: false,
            force_first_sample: false,
            disable_sampling: false,
            diff_output_preservation: false,
            diff_output_preservation_multiplier: 1.0,
            diff_output_preservation_class: String::new(),
            do_differential_guidance: false,
            differential_guidance_scale: 3.0,
            unload_text_encoder: false,
            cache_text_embeddings: false,
            reg_weight: 1.0,
        }
    }
}

/// `train.optimizer_params:` the optimizer's keyword arguments, as ai-toolkit passes them. A key left
/// unset takes the chosen optimizer's own default (ai-toolkit's, see `docs/user-guide.md`); a key the chosen
/// optimizer does not take is an error (Python rejects the keyword too). Checked and resolved in
/// [`super::optimizer`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizerParams {
    /// Weight decay (AdamW 0.01, adamw8bit 0.01, adam8bit/adamw8 0, the others 0).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub weight_decay: Option<f64>,
    /// `(beta1, beta2)`: Adam-family and Prodigy `[0.9, 0.999]`, Lion `[0.9, 0.99]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// A number for Adam-family and Prodigy (default 1e-6, what ai-toolkit passes; ai-toolkit itself rejects
    /// the key), or Adafactor's pair `[eps1, eps2]` (default `[1e-30, 1e-3]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<OptimizerEps>,
    /// adamw8bit (flux2-burn extension): values per quantization block, each with its own f32 scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    /// adamw8bit: tensors with fewer elements keep 32-bit state (bitsandbytes default 4096).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_8bit_size: Option<usize>,
    /// Adafactor: threshold of the update's RMS (default 1.0).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub clip_threshold: Option<f64>,
    /// Adafactor: exponent of the second-moment decay `1 - step^decay_rate` (default -0.8).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub decay_rate: Option<f64>,
    /// Adafactor: first-moment decay; unset (default) keeps no first moment.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub beta1: Option<f64>,
    /// Adafactor: scale the step by the parameter's RMS (ai-toolkit default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_parameter: Option<bool>,
    /// Adafactor: a time-dependent step size replaces the learning rate (ai-toolkit default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_step: Option<bool>,
    /// Adafactor: with `relative_step`, ramp the step size up from 1e-6 per step (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_init: Option<bool>,
    /// Prodigy: decay of the step-size statistics (default `sqrt(beta2)`).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub beta3: Option<f64>,
    /// Prodigy: initial step-size estimate D (default 1e-6).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub d0: Option<f64>,
    /// Prodigy: multiplier of the D estimate (default 1.0), the preferred knob.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub d_coef: Option<f64>,
    /// Prodigy: largest factor D may grow by per step (default unbounded, `.inf`).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub growth_rate: Option<f64>,
    /// Prodigy: Adam's bias correction in the step size (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_bias_correction: Option<bool>,
    /// Prodigy: leave the learning rate out of the D denominator during warm-up (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safeguard_warmup: Option<bool>,
    /// Prodigy: decoupled (AdamW-style) weight decay (default true); false adds it to the gradient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decouple: Option<bool>,
    /// Prodigy: compute the D statistics on every p-th element only (default 1: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_p: Option<usize>,
    /// Lion: divide the weight decay by the initial learning rate (lion-pytorch, default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoupled_weight_decay: Option<bool>,
}

/// `optimizer_params.eps`: one number (Adam-family, Prodigy) or Adafactor's pair.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OptimizerEps {
    One(f64),
    Pair([f64; 2]),
}

/// `train.lr_scheduler_params:` — the keys each scheduler reads (ai-toolkit passes them to torch).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LrSchedulerParams {
    /// `constant_with_warmup`: linear warmup length (ai-toolkit default 1000, with a warning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_warmup_steps: Option<u32>,
    /// `cosine`: final learning rate (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_min: Option<f64>,
    /// `linear`: factor at step 0 (torch `LinearLR` default 1/3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_factor: Option<f64>,
    /// `linear`: factor reached at `total_iters` (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_factor: Option<f64>,
    /// `linear` / `cosine`: schedule length; ai-toolkit sets it to `train.steps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_iters: Option<u32>,
}

/// `train.ema_config:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmaConfig {
    /// Keep an exponential moving average of the LoRA weights and save/sample with it.
    pub use_ema: bool,
    /// EMA decay per optimizer step.
    pub ema_decay: f64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig { use_ema: false, ema_decay: 0.999 }
    }
}

/// `model:` — the base model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// Local diffusers FLUX.2 folder, BFL single file / folder, or Hugging Face repo id (required).
    pub name_or_path: Option<String>,
    /// Must be `flux2` (an ai-toolkit `arch:tag` suffix is dropped, as ai-toolkit does).
    pub arch: Option<String>,
    /// Separate VAE file or repo (default: the one in `name_or_path`, else `extras_name_or_path`).
    pub vae_path: Option<String>,
    /// Text encoder (pipeline folder or repo with `text_encoder/` and `tokenizer/`) for a
    /// `name_or_path` without one, such as a BFL transformer file.
    pub te_name_or_path: Option<String>,
    /// Pipeline folder or repo the text encoder and VAE come from when `name_or_path` is a lone
    /// transformer file (ai-toolkit's key for the same).
    pub extras_name_or_path: Option<String>,
    /// Quantized transformer weights (`qtype`), as ai-toolkit's `quantize`.
    pub quantize: bool,
    /// Quantized text-encoder weights. Defaults to `quantize`.
    pub quantize_te: Option<bool>,
    /// Quantization type (`flux2_ops::quant::QType` names), read with `quantize`.
    pub qtype: String,
    /// Text-encoder quantization type, read with `quantize_te`; absent: `qtype` (what ai-toolkit's
    /// FLUX.2 model does, which ignores `qtype_te`).
    pub qtype_te: Option<String>,
    /// The VAE (and text encoder) on the device only while they work (`train/vae_slot.rs`).
    pub low_vram: bool,
    /// Keep a share of the transformer's blocks (and of the text encoder's layers) in host memory and
    /// upload them ahead of use (`flux2_ops::offload`).
    pub layer_offloading: bool,
    /// Share of the transformer's blocks offloaded (0-1, ai-toolkit's default 1), with `layer_offloading`.
    pub layer_offloading_transformer_percent: f64,
    /// Share of the text encoder's layers offloaded (0-1, default 1), with `layer_offloading`.
    pub layer_offloading_text_encoder_percent: f64,
    pub model_kwargs: ModelKwargs,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            name_or_path: None,
            arch: None,
            vae_path: None,
            te_name_or_path: None,
            extras_name_or_path: None,
            quantize: false,
            quantize_te: None,
            qtype: "qfloat8".into(),
            qtype_te: None,
            low_vram: false,
            layer_offloading: false,
            layer_offloading_transformer_percent: 1.0,
            layer_offloading_text_encoder_percent: 1.0,
            model_kwargs: ModelKwargs::default(),
        }
    }
}

/// `model.model_kwargs:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelKwargs {
    /// Size control images to the target's resolution instead of 1024^2: not supported yet.
    pub match_target_res: bool,
    /// Text-encoder hidden states stacked into the prompt embedding (this project's key; default the
    /// FLUX.2 layers 10, 20, 30). Tiny test pipelines have fewer layers.
    pub text_encoder_out_layers: Option<Vec<usize>>,
    /// Prompt tokens after padding/truncation (this project's key; default 512 as in the pipeline).
    pub max_sequence_length: Option<usize>,
}

/// Sample image file format (`sample.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    #[default]
    #[serde(alias = "jpeg")]
    Jpg,
    Png,
    Webp,
}

/// `sample:` — images generated during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleConfig {
    /// `flowmatch` (FLUX.2's Euler flow-matching sampler). Default here `flowmatch`.
    pub sampler: String,
    /// Sample every N steps (0 = never during training).
    pub sample_every: u32,
    /// No periodic samples before this step.
    pub sample_start_step: u32,
    pub width: u32,
    pub height: u32,
    /// Negative prompt: FLUX.2 [dev] is guidance-distilled and uses none; accepted and ignored.
    #[serde(deserialize_with = "lenient::string_or_false")]
    pub neg: String,
    /// Seed of the first prompt.
    pub seed: u64,
    /// Prompt `i` uses `seed + i` (otherwise all use `seed`).
    pub walk_seed: bool,
    /// Distilled guidance fed to the transformer's guidance embedding.
    pub guidance_scale: f64,
    /// Denoising steps per sample.
    pub sample_steps: u32,
    /// LoRA strength while sampling.
    #[serde(deserialize_with = "lenient::multiplier")]
    pub network_multiplier: f64,
    /// Sample image format (ai-toolkit's key is `format`).
    pub format: ImageFormat,
    /// Legacy prompt list; folded into `samples` after loading.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "lenient::null_default")]
    pub prompts: Vec<String>,
    /// One entry per sample image.
    #[serde(deserialize_with = "lenient::null_default")]
    pub samples: Vec<SampleItem>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            sampler: "flowmatch".into(),
            sample_every: 100,
            sample_start_step: 0,
            width: 512,
            height: 512,
            neg: String::new(),
            seed: 0,
            walk_seed: false,
            guidance_scale: 7.0,
            sample_steps: 20,
            network_multiplier: 1.0,
            format: ImageFormat::Jpg,
            prompts: Vec::new(),
            samples: Vec::new(),
        }
    }
}

/// `sample.samples[i]`: a prompt with optional per-image overrides of the `sample:` values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleItem {
    /// The prompt; `[trigger]` is replaced by the trigger word. ai-toolkit's inline flags (`--w 768`,
    /// `--h`, `--seed`/`--d`, `--cfg`/`--l`, `--steps`/`--s`, `--m`/`--network_multiplier`, `--n`) are
    /// read too.
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neg: Option<String>,
    /// Fixed seed for this prompt (otherwise from `sample.seed` / `walk_seed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_steps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f64")]
    pub network_multiplier: Option<f64>,
    /// Reference (control) image for edit LoRAs; `ctrl_img_1..3` for several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctrl_img: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctrl_img_1: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctrl_img_2: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctrl_img_3: Option<PathBuf>,
}

/// `logging:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// Write a loss-log line every N steps (ai-toolkit default 100).
    pub log_every: u32,
    /// Print extra detail.
    pub verbose: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { log_every: 100, verbose: false }
    }
}
