//! From the file's schema to what the trainer runs: a [`TrainJob`] built from this workspace's types
//! (`lora_adapters::LoraConfig`/`Targets`/`LoraLayout`, `dataset_buckets::DatasetConfig`/`LoadOptions`,
//! this crate's `TimestepConfig`/`LossType`), with names mapped to enums and derived values computed.

use flux2_ops::quant::QType;
use std::collections::BTreeMap;
use std::path::PathBuf;

use dataset_buckets::{DatasetConfig, LoadOptions};
use lora_adapters::{LoraConfig, LoraLayout, Targets};
use serde::Serialize;

use super::diagnostics::Diagnostic;
use super::optimizer::resolve_optimizer;
use super::schema::{ImageFormat, JobFile, Precision, ProcessConfig};
use crate::optim::OptimizerPlan;
use crate::{LossType, TimestepConfig};

/// ai-toolkit's warmup when `constant_with_warmup` is given no `num_warmup_steps`.
pub const DEFAULT_WARMUP_STEPS: u32 = 1000;
/// torch `LinearLR`'s default `start_factor`.
pub const LINEAR_DEFAULT_START_FACTOR: f64 = 1.0 / 3.0;

/// Everything the trainer needs, resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainJob {
    /// `config.name`.
    pub name: String,
    /// `<training_folder>/<name>`: checkpoints, samples, loss log, the job copy.
    pub output_dir: PathBuf,
    pub device: DeviceSpec,
    /// `training_seed`; `None`: the trainer draws one and records it.
    pub seed: Option<u64>,
    pub trigger_word: Option<String>,
    pub model: ModelPlan,
    /// The adapter to create (`seed` is the run seed, or 0 until the trainer draws one).
    pub lora: LoraConfig,
    pub save: SavePlan,
    /// Training datasets then regularization datasets, in file order.
    pub datasets: Vec<DatasetConfig>,
    /// Job-level dataset options (seed, trigger word, FLUX.2 divisibility 16).
    pub dataset_options: LoadOptions,
    pub train: TrainPlan,
    pub sample: SamplePlan,
    /// Loss-log interval in steps.
    pub log_every: u32,
    /// `meta:` as written (with `[name]` replaced), for the LoRA file's metadata.
    pub meta: BTreeMap<String, serde_json::Value>,
}

/// Where to run (`device`). Serializes as the text it parses from (`auto`, `cpu`, `cuda:0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first GPU backend built in, else the CPU.
    Auto,
    Cpu,
    /// A GPU by index (`cuda` = `cuda:0`).
    Cuda {
        index: usize,
    },
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda { index } => write!(f, "cuda:{index}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl DeviceSpec {
    /// Parses `auto`, `cpu`, `cuda`, `cuda:N`, `gpu`, `gpu:N`.
    pub fn parse(text: &str) -> Result<DeviceSpec, String> {
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" | "" => return Ok(DeviceSpec::Auto),
            "cpu" => return Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => return Ok(DeviceSpec::Cuda { index: 0 }),
            _ => {}
        }
        if let Some(idx) = t.strip_prefix("cuda:").or_else(|| t.strip_prefix("gpu:"))
            && let Ok(index) = idx.parse()
        {
            return Ok(DeviceSpec::Cuda { index });
        }
        if t == "mps" {
            return Err("mps (Apple GPU) is not supported; use cpu, cuda or cuda:N".into());
        }
        Err(format!("{text} is not a device; use auto, cpu, cuda or cuda:N"))
    }
}

/// The base model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelPlan {
    /// Local diffusers folder, BFL file/folder, or Hugging Face repo id (resolved by the loader).
    pub name_or_path: String,
    /// VAE source: `vae_path`, else `extras_name_or_path`, else the VAE of `name_or_path`.
    pub vae_path: Option<String>,
    /// Text-encoder source: `te_name_or_path`, else `extras_name_or_path`, else `name_or_path`'s.
    pub text_encoder_path: Option<String>,
    /// Precision of the frozen weights and activations (`train.dtype`).
    pub dtype: Precision,
    /// Text-encoder layers stacked into prompt embeddings (`None`: FLUX.2's 10, 20, 30).
    pub text_encoder_out_layers: Option<Vec<usize>>,
    /// Prompt length in tokens (`None`: 512).
    pub max_sequence_length: Option<usize>,
    /// `Some(seed)`: every model with seeded random weights drawn from its `config.json` instead of
    /// its weight files (`flux2-train train --random-weights`; not a job key). A rehearsal of the
    /// job's memory and speed at the real size; what it trains is meaningless.
    pub random_weights: Option<u64>,
    /// Quantized transformer Linears (`quantize` + `qtype`).
    pub quantize: Option<QType>,
    /// `low_vram`: the VAE is on the device only while it works (dropped and re-read in between); the
    /// text encoder is freed after encoding the captions in any case.
    pub low_vram: bool,
    /// Quantized text-encoder Linears (`quantize_te` + `qtype_te`, else `qtype`).
    pub quantize_te: Option<QType>,
    /// Share of the transformer's blocks in host memory (`layer_offloading` +
    /// `layer_offloading_transformer_percent`; 0 without offloading).
    pub offload_transformer: f64,
    /// Share of the text encoder's layers in host memory (`layer_offloading_text_encoder_percent`).
    pub offload_text_encoder: f64,
}

/// Checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SavePlan {
    /// Every N steps (0: only the final save).
    pub every: u32,
    /// Newest step checkpoints kept.
    pub keep: u32,
    pub dtype: Precision,
    pub layout: LoraLayout,
}

/// How gradients are accumulated. Gradients are averaged over the accumulated batches (ai-toolkit
/// sums them, which scales the effective learning rate with the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Accumulation {
    /// `gradient_accumulation`: batches drawn within one step (`steps` counts optimizer updates).
    pub batches_per_step: u32,
    /// `gradient_accumulation_steps` (legacy): an optimizer update every N steps (`steps` counts
    /// batches).
    pub steps_per_update: u32,
}

/// Learning-rate schedule over optimizer steps, as ai-toolkit builds it (torch / diffusers semantics).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum LrSchedule {
    Constant,
    /// Linear ramp from 0 over `warmup_steps`, then constant.
    ConstantWithWarmup {
        warmup_steps: u32,
    },
    /// Half cosine from the base rate to `eta_min` over `total_steps` (torch `CosineAnnealingLR`).
    Cosine {
        total_steps: u32,
        eta_min: f64,
    },
    /// Factor moving linearly from `start_factor` to `end_factor` over `total_steps` (torch
    /// `LinearLR`; its default 1/3 -> 1 is a warmup, not a decay).
    Linear {
        start_factor: f64,
        end_factor: f64,
        total_steps: u32,
    },
}

impl LrSchedule {
    /// Learning rate at optimizer step `step` (0-based) for base rate `base`.
    pub fn lr_at(&self, base: f64, step: u32) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::ConstantWithWarmup { warmup_steps } => {
                if step < warmup_steps {
                    base * f64::from(step) / f64::from(warmup_steps.max(1))
                } else {
                    base
                }
            }
            LrSchedule::Cosine { total_steps, eta_min } => {
                let t = f64::from(step.min(total_steps)) / f64::from(total_steps.max(1));
                eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
            LrSchedule::Linear { start_factor, end_factor, total_steps } => {
                let t = f64::from(step.min(total_steps)) / f64::from(total_steps.max(1));
                base * (start_factor + (end_factor - start_factor) * t)
            }
        }
    }
}

/// Differential Output Preservation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DopPlan {
    pub multiplier: f32,
    /// Replaces the trigger word in the preservation prompt.
    pub class: String,
}

/// Where prompt embeddings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoderPlan {
    /// Encode captions as they are drawn (needed when they change per step).
    Live,
    /// Encode each caption once into the cache, then free the encoder.
    CachedEmbeddings,
    /// `unload_text_encoder`: encode the trigger word (or "") once, free the encoder, train every
    /// image on it.
    TriggerOnly,
}

/// The optimisation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainPlan {
    pub steps: u32,
    pub batch_size: u32,
    pub accumulation: Accumulation,
    pub gradient_checkpointing: bool,
    /// The optimizer and its settings (base learning rate included).
    pub optimizer: OptimizerPlan,
    /// Global gradient-norm clip (`train.max_grad_norm`); 0 = none. The trainer clips before any optimizer.
    pub max_grad_norm: f64,
    pub lr_schedule: LrSchedule,
    pub timesteps: TimestepConfig,
    pub loss: LossType,
    pub noise_offset: f32,
    /// EMA decay of the adapters, when on.
    pub ema_decay: Option<f64>,
    pub dop: Option<DopPlan>,
    /// Differential-guidance scale, when on.
    pub differential_guidance: Option<f32>,
    pub text_encoder: TextEncoderPlan,
    /// Loss multiplier of regularization items.
    pub reg_weight: f32,
}

/// One sample image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SamplePrompt {
    /// With `[trigger]` still in it (replaced when sampling).
    pub prompt: String,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub guidance_scale: f32,
    pub steps: u32,
    pub network_multiplier: f32,
    /// Reference images (edit LoRAs), in order.
    pub control_images: Vec<PathBuf>,
}

/// Sampling during training.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SamplePlan {
    /// Every N steps (0: never during training).
    pub every: u32,
    pub start_step: u32,
    /// Sample before the first step (unless resuming, see `force_first`).
    pub before_first_step: bool,
    /// Sample before the first step even when resuming.
    pub force_first: bool,
    /// `disable_sampling`.
    pub disabled: bool,
    pub format: ImageFormat,
    pub prompts: Vec<SamplePrompt>,
}

fn schedule(p: &ProcessConfig, out: &mut Vec<Diagnostic>, path: &str) -> Option<LrSchedule> {
    let t = &p.train;
    let params = &t.lr_scheduler_params;
    let total = params.total_iters.unwrap_or(t.steps);
    let ppath = format!("{path}.train.lr_scheduler_params");
    let s = match t.lr_scheduler.trim().to_ascii_lowercase().as_str() {
        "constant" => LrSchedule::Constant,
        "constant_with_warmup" => {
            let warmup_steps = match params.num_warmup_steps {
                Some(w) => w,
                None => {
                    out.push(Diagnostic::warning(
                        format!("{ppath}.num_warmup_steps"),
                        format!("not set: {DEFAULT_WARMUP_STEPS} warmup steps, as ai-toolkit uses"),
                    ));
                    DEFAULT_WARMUP_STEPS
                }
            };
            if warmup_steps > t.steps {
                out.push(Diagnostic::warning(
                    format!("{ppath}.num_warmup_steps"),
                    format!(
                        "{warmup_steps} is more than train.steps ({}): the full learning rate is never reached",
                        t.steps
                    ),
                ));
            }
            LrSchedule::ConstantWithWarmup { warmup_steps }
        }
        "cosine" => {
            let eta_min = params.eta_min.unwrap_or(0.0);
            if !(eta_min.is_finite() && eta_min >= 0.0) {
                out.push(Diagnostic::error(format!("{ppath}.eta_min"), format!("{eta_min} must be a number >= 0")));
                return None;
            }
            LrSchedule::Cosine { total_steps: total, eta_min }
        }
        "linear" => {
            let start_factor = params.start_factor.unwrap_or(LINEAR_DEFAULT_START_FACTOR);
            let end_factor = params.end_factor.unwrap_or(1.0);
            let mut ok = true;
            if !(start_factor > 0.0 && start_factor <= 1.0) {
                out.push(Diagnostic::error(
                    format!("{ppath}.start_factor"),
                    format!("{start_factor} must be in (0, 1]"),
                ));
                ok = false;
            }
            if !(0.0..=1.0).contains(&end_factor) {
                out.push(Diagnostic::error(format!("{ppath}.end_factor"), format!("{end_factor} must be in [0, 1]")));
                ok = false;
            }
            if !ok {
                return None;
            }
            LrSchedule::Linear { start_factor, end_factor, total_steps: total }
        }
        other => {
            out.push(Diagnostic::error(
                format!("{path}.train.lr_scheduler"),
                format!(
                    "{other} is not supported yet (implemented: constant, constant_with_warmup, cosine, linear; see docs/user-guide.md)"
                ),
            ));
            return None;
        }
    };
    if total == 0 {
        out.push(Diagnostic::error(format!("{ppath}.total_iters"), "must be at least 1"));
        return None;
    }
    Some(s)
}

/// Builds the plan of process 0. Returns `None` (with errors in `out`) when a value cannot be mapped;
/// [`super::validate::validate`] has already reported range and combination errors.
pub fn resolve(file: &JobFile, out: &mut Vec<Diagnostic>) -> Option<TrainJob> {
    let p = file.config.process.first()?;
    let path = "config.process[0]";

    let device = match DeviceSpec::parse(&p.device) {
        Ok(d) => Some(d),
        Err(message) => {
            out.push(Diagnostic::error(format!("{path}.device"), message));
            None
        }
    };
    let optimizer = resolve_optimizer(&p.train, path, out);
    let lr_schedule = schedule(p, out, path);
    let mut qtype = |on: bool, key: &str, name: &str| -> Result<Option<QType>, ()> {
        if !on {
            return Ok(None);
        }
        QType::parse(name)
            .map(Some)
            .map_err(|e| out.push(Diagnostic::error(format!("{path}.model.{key}"), e.to_string())))
    };
    let m = &p.model;
    let quantize = qtype(m.quantize, "qtype", &m.qtype);
    let (te_key, te_name) = match &m.qtype_te {
        Some(name) => ("qtype_te", name.as_str()),
        None => ("qtype", m.qtype.as_str()),
    };
    let quantize_te = qtype(m.quantize_te.unwrap_or(m.quantize), te_key, te_name);
    let mut share = |key: &str, value: f64| -> Result<f64, ()> {
        if !m.layer_offloading {
            return Ok(0.0);
        }
        if (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            out.push(Diagnostic::error(
                format!("{path}.model.{key}"),
                format!("{value} is not a share between 0 and 1 (ai-toolkit's UI writes 0.5 for 50%)"),
            ));
            Err(())
        }
    };
    let offload_transformer = share("layer_offloading_transformer_percent", m.layer_offloading_transformer_percent);
    let offload_text_encoder = share("layer_offloading_text_encoder_percent", m.layer_offloading_text_encoder_percent);
    let (device, optimizer, lr_schedule) = (device?, optimizer?, lr_schedule?);
    let (quantize, quantize_te) = (quantize.ok()?, quantize_te.ok()?);
    let (offload_transformer, offload_text_encoder) = (offload_transformer.ok()?, offload_text_encoder.ok()?);

    let net = &p.network;
    let kw = &net.network_kwargs;
    let targets = if kw.only_if_contains.is_empty() && kw.ignore_if_contains.is_empty() {
        Targets::Blocks
    } else {
        Targets::Filtered {
            only_if_contains: kw.only_if_contains.clone(),
            ignore_if_contains: kw.ignore_if_contains.clone(),
        }
    };
    let lora = LoraConfig {
        rank: net.linear,
        alpha: net.linear_alpha.unwrap_or(net.linear as f64) as f32,
        dropout: net.dropout.unwrap_or(0.0),
        targets,
        seed: p.training_seed.unwrap_or(0),
    };

    let t = &p.train;
    let text_encoder = if t.unload_text_encoder {
        TextEncoderPlan::TriggerOnly
    } else if !p.datasets.is_empty() && p.datasets.iter().all(|d| d.cache_text_embeddings) {
        TextEncoderPlan::CachedEmbeddings
    } else {
        TextEncoderPlan::Live
    };
    let train = TrainPlan {
        steps: t.steps,
        batch_size: t.batch_size,
        accumulation: Accumulation {
            batches_per_step: t.gradient_accumulation,
            steps_per_update: u32::try_from(t.gradient_accumulation_steps.max(1)).unwrap_or(1),
        },
        gradient_checkpointing: t.gradient_checkpointing,
        optimizer,
        max_grad_norm: t.max_grad_norm,
        lr_schedule,
        timesteps: TimestepConfig {
            timestep_type: t.timestep_type,
            bias: t.content_or_style,
            min_denoising_steps: t.min_denoising_steps,
            max_denoising_steps: t.max_denoising_steps,
        },
        loss: t.loss_type,
        noise_offset: t.noise_offset as f32,
        ema_decay: t.ema_config.use_ema.then_some(t.ema_config.ema_decay),
        dop: t.diff_output_preservation.then(|| DopPlan {
            multiplier: t.diff_output_preservation_multiplier as f32,
            class: t.diff_output_preservation_class.clone(),
        }),
        differential_guidance: t.do_differential_guidance.then_some(t.differential_guidance_scale as f32),
        text_encoder,
        reg_weight: t.reg_weight as f32,
    };

    let s = &p.sample;
    let prompts = s
        .samples
        .iter()
        .enumerate()
        .map(|(i, item)| SamplePrompt {
            prompt: item.prompt.clone(),
            width: item.width.unwrap_or(s.width),
            height: item.height.unwrap_or(s.height),
            seed: item.seed.unwrap_or(if s.walk_seed { s.seed.wrapping_add(i as u64) } else { s.seed }),
            guidance_scale: item.guidance_scale.unwrap_or(s.guidance_scale) as f32,
            steps: item.sample_steps.unwrap_or(s.sample_steps),
            network_multiplier: item.network_multiplier.unwrap_or(s.network_multiplier) as f32,
            control_images: [&item.ctrl_img, &item.ctrl_img_1, &item.ctrl_img_2, &item.ctrl_img_3]
                .into_iter()
                .flatten()
                .filter(|p| !p.as_os_str().is_empty())
                .cloned()
                .collect(),
        })
        .collect();
    let sample = SamplePlan {
        every: s.sample_every,
        start_step: s.sample_start_step,
        before_first_step: !t.skip_first_sample && !t.disable_sampling,
        force_first: t.force_first_sample && !t.disable_sampling,
        disabled: t.disable_sampling,
        format: s.format,
        prompts,
    };

    let mut datasets: Vec<DatasetConfig> = p.datasets.iter().filter(|d| !d.is_reg).cloned().collect();
    datasets.extend(p.datasets.iter().filter(|d| d.is_reg).cloned());
    let dataset_options = LoadOptions {
        seed: p.training_seed.unwrap_or(0),
        trigger_word: p.trigger_word.clone(),
        ..LoadOptions::default()
    };

    Some(TrainJob {
        name: file.config.name.clone(),
        output_dir: p.training_folder.join(&file.config.name),
        device,
        seed: p.training_seed,
        trigger_word: p.trigger_word.clone(),
        model: ModelPlan {
            name_or_path: p.model.name_or_path.clone().unwrap_or_default(),
            vae_path: p.model.vae_path.clone().or_else(|| p.model.extras_name_or_path.clone()),
            text_encoder_path: p.model.te_name_or_path.clone().or_else(|| p.model.extras_name_or_path.clone()),
            dtype: t.dtype,
            text_encoder_out_layers: p.model.model_kwargs.text_encoder_out_layers.clone(),
            max_sequence_length: p.model.model_kwargs.max_sequence_length,
            random_weights: None,
            quantize,
            quantize_te,
            low_vram: p.model.low_vram,
            offload_transformer,
            offload_text_encoder,
        },
        lora,
        save: SavePlan {
            every: p.save.save_every,
            keep: p.save.max_step_saves_to_keep,
            dtype: p.save.dtype,
            layout: p.save.lora_layout,
        },
        datasets,
        dataset_options,
        train,
        sample,
        log_every: p.logging.log_every,
        meta: file.meta.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_torch_closed_forms() {
        let base = 1e-4;
        assert_eq!(LrSchedule::Constant.lr_at(base, 500), base);
        let w = LrSchedule::ConstantWithWarmup { warmup_steps: 100 };
        assert_eq!(w.lr_at(base, 0), 0.0);
        assert!((w.lr_at(base, 50) - base / 2.0).abs() < 1e-18);
        assert_eq!(w.lr_at(base, 100), base);
        let c = LrSchedule::Cosine { total_steps: 1000, eta_min: 0.0 };
        assert_eq!(c.lr_at(base, 0), base);
        assert!((c.lr_at(base, 500) - base / 2.0).abs() < 1e-15);
        assert!(c.lr_at(base, 1000).abs() < 1e-18);
        let l = LrSchedule::Linear { start_factor: LINEAR_DEFAULT_START_FACTOR, end_factor: 1.0, total_steps: 300 };
        assert!((l.lr_at(base, 0) - base / 3.0).abs() < 1e-18);
        assert!((l.lr_at(base, 300) - base).abs() < 1e-18);
        assert!((l.lr_at(base, 900) - base).abs() < 1e-18);
    }

    #[test]
    fn devices() {
        assert_eq!(DeviceSpec::parse("cuda:1"), Ok(DeviceSpec::Cuda { index: 1 }));
        assert_eq!(DeviceSpec::parse("CUDA"), Ok(DeviceSpec::Cuda { index: 0 }));
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert!(DeviceSpec::parse("mps").unwrap_err().contains("not supported"));
        assert!(DeviceSpec::parse("tpu").is_err());
        assert_eq!(DeviceSpec::Cuda { index: 2 }.to_string(), "cuda:2");
    }
}
