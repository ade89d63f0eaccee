//! Every key of an ai-toolkit job file this trainer knows, and what it does with it.
//!
//! Each key is one of:
//! * **supported** — a typed field in [`super::schema`] with a documented default;
//! * **ignored** — recognised, has no effect here (UI bookkeeping, PyTorch-only tuning, or a key that
//!   only matters together with another, unsupported key); reported as a note with the reason;
//! * **unsupported** — recognised but not implemented: an error naming the key path when it is set to
//!   anything but its ai-toolkit default, silent otherwise (ai-toolkit's UI writes many of them at
//!   their defaults);
//! * **unknown** — anything else: a warning with the full key path (and the closest known key), never
//!   silently dropped.
//!
//! Paths use `[]` for "any list index": `config.process[].datasets[].flip_x`. The defaults and meanings
//! come from ai-toolkit's `toolkit/config_modules.py` and job classes (read, not copied).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_yaml::Value;

use super::diagnostics::Diagnostic;

/// The value an unsupported key may keep without stopping the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Inert {
    /// `false` (or `null`).
    False,
    /// `true` (or `null`).
    True,
    /// `null`, `""`, `[]` or `{}`.
    Empty,
    /// This number (or `null`).
    Num(f64),
    /// This string, compared case-insensitively (or `null`).
    Str(&'static str),
}

impl Inert {
    /// Whether `value` leaves the feature off.
    pub fn accepts(self, value: &Value) -> bool {
        if value.is_null() {
            return true;
        }
        match self {
            Inert::False => value.as_bool() == Some(false),
            Inert::True => value.as_bool() == Some(true),
            Inert::Empty => match value {
                Value::String(s) => s.is_empty(),
                Value::Sequence(s) => s.is_empty(),
                Value::Mapping(m) => m.is_empty(),
                _ => false,
            },
            Inert::Num(x) => value.as_f64() == Some(x),
            Inert::Str(s) => value.as_str().is_some_and(|v| v.eq_ignore_ascii_case(s)),
        }
    }
}

/// What a key is to this trainer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyClass {
    /// A mapping whose own keys are listed in the table.
    Section,
    /// A list of mappings whose keys are listed under `<path>[]`.
    SectionList,
    /// A mapping taken as is (`meta`).
    Free,
    /// Typed, implemented (or, where the user guide says so, pending the trainer loop) as documented.
    Supported,
    /// Recognised, no effect here; the text says why.
    Ignored(&'static str),
    /// Recognised, not implemented: an error unless the value is `inert`.
    Unsupported { inert: Inert, why: &'static str },
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    pub path: &'static str,
    pub class: KeyClass,
}

const fn sup(path: &'static str) -> KeySpec {
    KeySpec { path, class: KeyClass::Supported }
}
const fn sec(path: &'static str) -> KeySpec {
    KeySpec { path, class: KeyClass::Section }
}
const fn list(path: &'static str) -> KeySpec {
    KeySpec { path, class: KeyClass::SectionList }
}
const fn ign(path: &'static str, why: &'static str) -> KeySpec {
    KeySpec { path, class: KeyClass::Ignored(why) }
}
const fn uns(path: &'static str, inert: Inert, why: &'static str) -> KeySpec {
    KeySpec { path, class: KeyClass::Unsupported { inert, why } }
}

use Inert::{Empty, False, Num, Str};

/// Why-texts used by several keys.
const NOT_FLUX2: &str = "it is for other model families; this trainer trains FLUX.2 [dev] only";
const VIDEO: &str = "video/audio only";
const LOSS_EXTRA: &str = "extra loss/noise terms beyond the flow-matching loss are not implemented";
const UI: &str = "ai-toolkit UI / PyTorch bookkeeping";

/// The table. Order follows the panels of the user guide.
pub static KEYS: &[KeySpec] = &[
    // ---- job ----
    sup("job"),
    sec("config"),
    KeySpec { path: "meta", class: KeyClass::Free },
    sup("config.name"),
    list("config.process"),
    sup("config.process[].type"),
    sup("config.process[].training_folder"),
    sup("config.process[].device"),
    sup("config.process[].trigger_word"),
    sup("config.process[].training_seed"),
    ign("config.process[].sqlite_db_path", UI),
    ign("config.process[].performance_log_every", "per-step timing printout of ai-toolkit"),
    ign("config.process[].log_dir", "TensorBoard folder of ai-toolkit; the loss log goes to the output folder"),
    ign("config.process[].torch_profiler", UI),
    uns("config.process[].first_sample", Empty, "a separate sample config for the first sample is not implemented"),
    uns("config.process[].guidance", Empty, "guidance (slider-style) training is not implemented"),
    uns("config.process[].slider", Empty, "slider training is not implemented"),
    uns("config.process[].embedding", Empty, "textual-inversion embeddings are not implemented"),
    uns("config.process[].decorator", Empty, "decorator training is not implemented"),
    uns("config.process[].adapter", Empty, "adapter (IP-adapter, control-net, ...) training is not implemented"),
    uns("config.process[].do_lorm", False, "LoRM is not implemented"),
    ign("config.process[].lorm_extract_mode", "only used with do_lorm"),
    ign("config.process[].lorm_extract_mode_param", "only used with do_lorm"),
    sec("config.process[].logging"),
    sup("config.process[].logging.log_every"),
    sup("config.process[].logging.verbose"),
    uns(
        "config.process[].logging.use_wandb",
        False,
        "Weights & Biases logging is not implemented; the loss log is a local file",
    ),
    ign("config.process[].logging.use_ui_logger", UI),
    ign("config.process[].logging.project_name", "only used with use_wandb"),
    ign("config.process[].logging.run_name", "only used with use_wandb"),
    // ---- model ----
    sec("config.process[].model"),
    sup("config.process[].model.name_or_path"),
    sup("config.process[].model.arch"),
    sup("config.process[].model.vae_path"),
    sup("config.process[].model.quantize"),
    sup("config.process[].model.quantize_te"),
    sup("config.process[].model.qtype"),
    sup("config.process[].model.qtype_te"),
    ign("config.process[].model.quantize_kwargs", "only used with quantize"),
    uns("config.process[].model.accuracy_recovery_adapter", Empty, "only used with quantize"),
    sup("config.process[].model.low_vram"),
    sup("config.process[].model.layer_offloading"),
    uns(
        "config.process[].model.auto_memory",
        False,
        "automatic memory management is not implemented; use layer_offloading with its percentages",
    ),
    sup("config.process[].model.layer_offloading_transformer_percent"),
    sup("config.process[].model.layer_offloading_text_encoder_percent"),
    ign("config.process[].model.compile", "torch.compile switch; Burn compiles its own kernels"),
    ign("config.process[].model.block_compile", "torch.compile switch; Burn compiles its own kernels"),
    ign("config.process[].model.compile_mode", "torch.compile switch"),
    ign("config.process[].model.compile_fullgraph", "torch.compile switch"),
    ign("config.process[].model.compile_dynamic", "torch.compile switch"),
    ign("config.process[].model.cache_size_limit", "torch.compile switch"),
    sec("config.process[].model.model_kwargs"),
    uns(
        "config.process[].model.model_kwargs.match_target_res",
        False,
        "control images are capped at 1024x1024 pixels as in the FLUX.2 pipeline",
    ),
    sup("config.process[].model.model_kwargs.text_encoder_out_layers"),
    sup("config.process[].model.model_kwargs.max_sequence_length"),
    ign("config.process[].model.dtype", "ai-toolkit overwrites it with train.dtype"),
    sup("config.process[].model.te_name_or_path"),
    sup("config.process[].model.extras_name_or_path"),
    uns("config.process[].model.model_paths", Empty, "per-component paths are not implemented"),
    uns("config.process[].model.lora_path", Empty, "merging a LoRA into the base before training is not implemented"),
    uns("config.process[].model.assistant_lora_path", Empty, "assistant LoRAs are not implemented"),
    uns("config.process[].model.inference_lora_path", Empty, "inference LoRAs are not implemented"),
    uns("config.process[].model.unconditional_lora_path", Empty, "unconditional LoRAs are not implemented"),
    uns("config.process[].model.vae_device", Empty, "all models run on the job's device"),
    uns("config.process[].model.te_device", Empty, "all models run on the job's device"),
    uns("config.process[].model.vae_dtype", Empty, "all models use train.dtype"),
    uns("config.process[].model.te_dtype", Empty, "all models use train.dtype"),
    uns("config.process[].model.split_model_over_gpus", False, "multi-GPU model splitting is not implemented"),
    ign("config.process[].model.split_model_other_module_param_count_scale", "only used with split_model_over_gpus"),
    uns("config.process[].model.in_context", False, "in-context training is not implemented"),
    uns("config.process[].model.refiner_name_or_path", Empty, NOT_FLUX2),
    ign("config.process[].model.refiner_start_at", NOT_FLUX2),
    uns("config.process[].model.use_flux_cfg", False, NOT_FLUX2),
    uns("config.process[].model.attn_masking", False, NOT_FLUX2),
    ign(
        "config.process[].model.only_if_contains",
        "full fine-tune parameter filter; LoRA targets are network.network_kwargs",
    ),
    ign(
        "config.process[].model.ignore_if_contains",
        "full fine-tune parameter filter; LoRA targets are network.network_kwargs",
    ),
    ign("config.process[].model.is_flux", "arch decides the model"),
    ign("config.process[].model.is_v2", "arch decides the model"),
    ign("config.process[].model.is_v3", "arch decides the model"),
    ign("config.process[].model.is_xl", "arch decides the model"),
    ign("config.process[].model.is_pixart", "arch decides the model"),
    ign("config.process[].model.is_pixart_sigma", "arch decides the model"),
    ign("config.process[].model.is_auraflow", "arch decides the model"),
    ign("config.process[].model.is_lumina2", "arch decides the model"),
    ign("config.process[].model.is_ssd", "arch decides the model"),
    ign("config.process[].model.is_vega", "arch decides the model"),
    ign("config.process[].model.is_v_pred", NOT_FLUX2),
    ign("config.process[].model.text_encoder_bits", NOT_FLUX2),
    ign("config.process[].model.use_text_encoder_1", NOT_FLUX2),
    ign("config.process[].model.use_text_encoder_2", NOT_FLUX2),
    ign("config.process[].model.experimental_xl", NOT_FLUX2),
    ign("config.process[].model.unet_path", NOT_FLUX2),
    ign("config.process[].model.unet_sample_size", NOT_FLUX2),
    ign("config.process[].model.latent_space_version", NOT_FLUX2),
    // ---- target (network) ----
    sec("config.process[].network"),
    sup("config.process[].network.type"),
    sup("config.process[].network.linear"),
    sup("config.process[].network.rank"),
    sup("config.process[].network.linear_alpha"),
    sup("config.process[].network.alpha"),
    sup("config.process[].network.dropout"),
    sup("config.process[].network.transformer_only"),
    sec("config.process[].network.network_kwargs"),
    sup("config.process[].network.network_kwargs.only_if_contains"),
    sup("config.process[].network.network_kwargs.ignore_if_contains"),
    ign("config.process[].network.conv", "FLUX.2's transformer blocks have no convolutions"),
    ign("config.process[].network.conv_alpha", "FLUX.2's transformer blocks have no convolutions"),
    ign("config.process[].network.lokr_full_rank", "only used with type: lokr"),
    ign("config.process[].network.lokr_factor", "only used with type: lokr"),
    ign("config.process[].network.old_lokr_format", "only used with type: lokr"),
    ign("config.process[].network.split_multistage_loras", "multi-stage models only"),
    uns("config.process[].network.lorm", Empty, "LoRM is not implemented"),
    uns("config.process[].network.layer_offloading", False, "layer offloading is not implemented"),
    uns(
        "config.process[].network.pretrained_lora_path",
        Empty,
        "starting from an existing LoRA is not implemented yet",
    ),
    uns("config.process[].network.all_layers", False, "only Linear layers get adapters"),
    // ---- save ----
    sec("config.process[].save"),
    sup("config.process[].save.dtype"),
    sup("config.process[].save.save_every"),
    sup("config.process[].save.max_step_saves_to_keep"),
    ign("config.process[].save.save_format", "only changes full-model saves; a LoRA is always one .safetensors file"),
    uns("config.process[].save.push_to_hub", False, "uploading to the Hugging Face Hub is not implemented"),
    ign("config.process[].save.hf_repo_id", "only used with push_to_hub"),
    ign("config.process[].save.hf_private", "only used with push_to_hub"),
    sup("config.process[].save.lora_layout"),
    // ---- training ----
    sec("config.process[].train"),
    sup("config.process[].train.batch_size"),
    sup("config.process[].train.steps"),
    sup("config.process[].train.gradient_accumulation"),
    sup("config.process[].train.gradient_accumulation_steps"),
    sup("config.process[].train.train_unet"),
    sup("config.process[].train.train_text_encoder"),
    sup("config.process[].train.gradient_checkpointing"),
    sup("config.process[].train.noise_scheduler"),
    sup("config.process[].train.optimizer"),
    sup("config.process[].train.lr"),
    sup("config.process[].train.unet_lr"),
    sec("config.process[].train.optimizer_params"),
    sup("config.process[].train.optimizer_params.weight_decay"),
    sup("config.process[].train.optimizer_params.betas"),
    sup("config.process[].train.optimizer_params.eps"),
    sup("config.process[].train.optimizer_params.block_size"),
    sup("config.process[].train.optimizer_params.min_8bit_size"),
    sup("config.process[].train.optimizer_params.clip_threshold"),
    sup("config.process[].train.optimizer_params.decay_rate"),
    sup("config.process[].train.optimizer_params.beta1"),
    sup("config.process[].train.optimizer_params.scale_parameter"),
    sup("config.process[].train.optimizer_params.relative_step"),
    sup("config.process[].train.optimizer_params.warmup_init"),
    sup("config.process[].train.optimizer_params.beta3"),
    sup("config.process[].train.optimizer_params.d0"),
    sup("config.process[].train.optimizer_params.d_coef"),
    sup("config.process[].train.optimizer_params.growth_rate"),
    sup("config.process[].train.optimizer_params.use_bias_correction"),
    sup("config.process[].train.optimizer_params.safeguard_warmup"),
    sup("config.process[].train.optimizer_params.decouple"),
    sup("config.process[].train.optimizer_params.slice_p"),
    sup("config.process[].train.optimizer_params.decoupled_weight_decay"),
    uns("config.process[].train.optimizer_params.amsgrad", False, "AMSGrad is not implemented"),
    uns("config.process[].train.optimizer_params.maximize", False, "maximizing the loss is not supported"),
    uns(
        "config.process[].train.optimizer_params.percentile_clipping",
        Num(100.0),
        "bitsandbytes' percentile clipping is not implemented; use max_grad_norm",
    ),
    uns(
        "config.process[].train.optimizer_params.max_unorm",
        Num(0.0),
        "bitsandbytes' update-norm clipping is not implemented",
    ),
    uns("config.process[].train.optimizer_params.block_wise", Inert::True, "adamw8bit is always block-wise"),
    uns("config.process[].train.optimizer_params.optim_bits", Num(8.0), "use optimizer: adamw for 32-bit state"),
    uns("config.process[].train.optimizer_params.fsdp_in_use", False, "sharded training is not supported"),
    ign(
        "config.process[].train.optimizer_params.is_paged",
        "paging moves bitsandbytes state to CPU memory under CUDA pressure; the state stays on the device here",
    ),
    ign("config.process[].train.optimizer_params.foreach", "PyTorch kernel choice"),
    ign("config.process[].train.optimizer_params.fused", "PyTorch kernel choice"),
    ign("config.process[].train.optimizer_params.use_triton", "lion-pytorch kernel choice"),
    sup("config.process[].train.lr_scheduler"),
    sec("config.process[].train.lr_scheduler_params"),
    sup("config.process[].train.lr_scheduler_params.num_warmup_steps"),
    sup("config.process[].train.lr_scheduler_params.eta_min"),
    sup("config.process[].train.lr_scheduler_params.start_factor"),
    sup("config.process[].train.lr_scheduler_params.end_factor"),
    sup("config.process[].train.lr_scheduler_params.total_iters"),
    ign("config.process[].train.lr_scheduler_params.T_max", "ai-toolkit replaces it with total_iters (= steps)"),
    sup("config.process[].train.max_grad_norm"),
    sup("config.process[].train.min_denoising_steps"),
    sup("config.process[].train.max_denoising_steps"),
    sup("config.process[].train.dtype"),
    sup("config.process[].train.timestep_type"),
    sup("config.process[].train.content_or_style"),
    sup("config.process[].train.loss_type"),
    sup("config.process[].train.noise_offset"),
    sec("config.process[].train.ema_config"),
    sup("config.process[].train.ema_config.use_ema"),
    sup("config.process[].train.ema_config.ema_decay"),
    uns("config.process[].train.ema_config.use_feedback", False, "EMA feedback is not implemented"),
    uns(
        "config.process[].train.ema_config.param_multiplier",
        Num(1.0),
        "EMA parameter multipliers are not implemented",
    ),
    sup("config.process[].train.skip_first_sample"),
    sup("config.process[].train.force_first_sample"),
    sup("config.process[].train.disable_sampling"),
    sup("config.process[].train.diff_output_preservation"),
    sup("config.process[].train.diff_output_preservation_multiplier"),
    sup("config.process[].train.diff_output_preservation_class"),
    sup("config.process[].train.do_differential_guidance"),
    sup("config.process[].train.differential_guidance_scale"),
    sup("config.process[].train.unload_text_encoder"),
    sup("config.process[].train.cache_text_embeddings"),
    sup("config.process[].train.reg_weight"),
    ign(
        "config.process[].train.bypass_guidance_embedding",
        "ai-toolkit's FLUX.2 model does not read it; training feeds guidance 1.0",
    ),
    ign("config.process[].train.switch_boundary_every", "multi-stage (two-transformer) models only"),
    ign("config.process[].train.xformers", "PyTorch attention kernel choice"),
    ign("config.process[].train.sdp", "PyTorch attention kernel choice"),
    ign("config.process[].train.attention_backend", "PyTorch attention kernel choice"),
    ign("config.process[].train.text_encoder_lr", "only used with train_text_encoder"),
    ign("config.process[].train.refiner_lr", NOT_FLUX2),
    ign("config.process[].train.embedding_lr", "only used with an embedding section"),
    ign("config.process[].train.adapter_lr", "only used with an adapter section"),
    ign("config.process[].train.train_refiner", NOT_FLUX2),
    ign("config.process[].train.max_loss_debug", "debug printout of ai-toolkit"),
    ign("config.process[].train.audio_loss_multiplier", VIDEO),
    uns("config.process[].train.start_step", Empty, "the start step comes from the newest checkpoint when resuming"),
    uns("config.process[].train.train_turbo", False, "turbo training is not implemented"),
    ign("config.process[].train.show_turbo_outputs", "only used with train_turbo"),
    uns("config.process[].train.min_snr_gamma", Empty, "SNR weighting is for noise-prediction models"),
    uns("config.process[].train.snr_gamma", Empty, "SNR weighting is for noise-prediction models"),
    uns("config.process[].train.learnable_snr_gos", False, "SNR weighting is for noise-prediction models"),
    uns("config.process[].train.weight_jitter", Num(0.0), "weight jitter is not implemented"),
    uns("config.process[].train.merge_network_on_save", False, "saving a merged full model is not implemented"),
    ign("config.process[].train.merge_network_on_save_strength", "only used with merge_network_on_save"),
    uns("config.process[].train.free_u", False, NOT_FLUX2),
    uns("config.process[].train.adapter_assist_name_or_path", Empty, "adapter assist is not implemented"),
    ign("config.process[].train.adapter_assist_type", "only used with adapter_assist_name_or_path"),
    uns("config.process[].train.match_adapter_assist", False, "adapter assist is not implemented"),
    uns("config.process[].train.match_adapter_chance", Num(0.0), "adapter assist is not implemented"),
    uns("config.process[].train.noise_multiplier", Num(1.0), LOSS_EXTRA),
    uns("config.process[].train.target_noise_multiplier", Num(1.0), LOSS_EXTRA),
    uns("config.process[].train.random_noise_multiplier", Num(0.0), LOSS_EXTRA),
    uns("config.process[].train.random_noise_shift", Num(0.0), LOSS_EXTRA),
    uns("config.process[].train.do_signal_correction_noise", False, LOSS_EXTRA),
    ign("config.process[].train.signal_correction_noise_scale", "only used with do_signal_correction_noise"),
    uns("config.process[].train.do_batch_noise_correction", False, LOSS_EXTRA),
    ign("config.process[].train.batch_noise_correction_scale", "only used with do_batch_noise_correction"),
    uns("config.process[].train.do_signal_amplification", False, LOSS_EXTRA),
    ign("config.process[].train.signal_amplification_strength", "only used with do_signal_amplification"),
    uns("config.process[].train.dynamic_noise_offset", False, LOSS_EXTRA),
    uns("config.process[].train.img_multiplier", Num(1.0), LOSS_EXTRA),
    uns("config.process[].train.noisy_latent_multiplier", Num(1.0), LOSS_EXTRA),
    uns("config.process[].train.latent_multiplier", Num(1.0), LOSS_EXTRA),
    uns("config.process[].train.pred_scaler", Num(1.0), LOSS_EXTRA),
    uns("config.process[].train.match_noise_norm", False, LOSS_EXTRA),
    uns("config.process[].train.correct_pred_norm", False, LOSS_EXTRA),
    ign("config.process[].train.correct_pred_norm_multiplier", "only used with correct_pred_norm"),
    uns("config.process[].train.target_norm_std", Empty, LOSS_EXTRA),
    ign("config.process[].train.target_norm_std_value", "only used with target_norm_std"),
    uns("config.process[].train.t0_loss_target", False, LOSS_EXTRA),
    uns("config.process[].train.t0_velocity_equiv_weight", False, LOSS_EXTRA),
    uns("config.process[].train.do_fft_loss", False, LOSS_EXTRA),
    uns("config.process[].train.do_fft_velocity_equiv_weight", False, LOSS_EXTRA),
    uns("config.process[].train.do_prior_divergence", False, LOSS_EXTRA),
    uns("config.process[].train.do_blank_stabilization", False, LOSS_EXTRA),
    uns(
        "config.process[].train.max_loss",
        Empty,
        "loss clipping is not implemented; a non-finite loss stops with the batch items named",
    ),
    uns(
        "config.process[].train.loss_target",
        Str("noise"),
        "only the flow-matching target (noise - latents) is implemented",
    ),
    uns("config.process[].train.num_train_timesteps", Num(1000.0), "FLUX.2 trains on 1000 timesteps"),
    uns("config.process[].train.linear_timesteps", False, "use timestep_type: weighted or linear"),
    uns("config.process[].train.linear_timesteps2", False, "use timestep_type: weighted or linear"),
    ign("config.process[].train.next_sample_timesteps", "only used with timestep_type: next_sample"),
    uns("config.process[].train.adaptive_scaling_factor", False, "the FLUX.2 latent normalization is fixed"),
    uns("config.process[].train.standardize_images", False, "image standardization is not implemented"),
    uns("config.process[].train.standardize_latents", False, "latent standardization is not implemented"),
    uns("config.process[].train.prompt_dropout_prob", Num(0.0), "use the datasets' caption_dropout_rate"),
    uns("config.process[].train.prompt_saturation_chance", Num(0.0), "prompt saturation is not implemented"),
    uns("config.process[].train.short_and_long_captions", False, "JSON caption files are not supported"),
    uns("config.process[].train.short_and_long_captions_encoder_split", False, NOT_FLUX2),
    uns("config.process[].train.single_item_batching", False, "use gradient_accumulation"),
    uns("config.process[].train.inverted_mask_prior", False, "mask datasets are not supported"),
    ign("config.process[].train.inverted_mask_prior_multiplier", "only used with inverted_mask_prior"),
    uns(
        "config.process[].train.blank_prompt_preservation",
        False,
        "blank-prompt preservation is not implemented; diff_output_preservation is",
    ),
    ign("config.process[].train.blank_prompt_preservation_multiplier", "only used with blank_prompt_preservation"),
    uns("config.process[].train.negative_prompt", Empty, "negative-prompt training is not implemented"),
    ign("config.process[].train.max_negative_prompts", "only used with negative_prompt"),
    uns(
        "config.process[].train.do_cfg",
        False,
        "CFG during training is not implemented (FLUX.2 [dev] is guidance-distilled)",
    ),
    uns(
        "config.process[].train.do_random_cfg",
        False,
        "CFG during training is not implemented (FLUX.2 [dev] is guidance-distilled)",
    ),
    ign("config.process[].train.cfg_scale", "only used with do_cfg"),
    ign("config.process[].train.max_cfg_scale", "only used with do_random_cfg"),
    ign("config.process[].train.cfg_rescale", "only used with do_cfg"),
    uns("config.process[].train.do_paramiter_swapping", False, "parameter swapping is not implemented"),
    ign("config.process[].train.paramiter_swapping_factor", "only used with do_paramiter_swapping"),
    uns("config.process[].train.latent_feature_extractor_path", Empty, "feature-extractor losses are not implemented"),
    ign("config.process[].train.latent_feature_loss_weight", "only used with latent_feature_extractor_path"),
    uns(
        "config.process[].train.diffusion_feature_extractor_path",
        Empty,
        "feature-extractor losses are not implemented",
    ),
    ign("config.process[].train.diffusion_feature_extractor_weight", "only used with diffusion_feature_extractor_path"),
    uns("config.process[].train.optimal_noise_pairing_samples", Num(1.0), "optimal noise pairing is not implemented"),
    uns("config.process[].train.force_consistent_noise", False, "consistent per-image noise is not implemented"),
    uns("config.process[].train.blended_blur_noise", False, "blur-blended noise is not implemented"),
    uns("config.process[].train.do_guidance_loss", False, "the guidance loss is not implemented"),
    ign("config.process[].train.guidance_loss_target", "only used with do_guidance_loss"),
    ign("config.process[].train.do_guidance_loss_cfg_zero", "only used with do_guidance_loss"),
    ign("config.process[].train.guidance_loss_schedule", "only used with do_guidance_loss"),
    ign("config.process[].train.unconditional_prompt", "only used with do_guidance_loss"),
    uns("config.process[].train.validation_config", Empty, "validation runs are not implemented"),
    // ---- datasets (keys of dataset_buckets::DatasetConfig, then ai-toolkit's others) ----
    list("config.process[].datasets"),
    sup("config.process[].datasets[].folder_path"),
    sup("config.process[].datasets[].dataset_path"),
    sup("config.process[].datasets[].caption_ext"),
    sup("config.process[].datasets[].default_caption"),
    sup("config.process[].datasets[].trigger_word"),
    sup("config.process[].datasets[].caption_dropout_rate"),
    sup("config.process[].datasets[].shuffle_tokens"),
    sup("config.process[].datasets[].keep_tokens"),
    sup("config.process[].datasets[].token_dropout_rate"),
    sup("config.process[].datasets[].replacements"),
    sup("config.process[].datasets[].num_repeats"),
    sup("config.process[].datasets[].resolution"),
    sup("config.process[].datasets[].scale"),
    sup("config.process[].datasets[].buckets"),
    sup("config.process[].datasets[].flip_x"),
    sup("config.process[].datasets[].flip_y"),
    sup("config.process[].datasets[].random_crop"),
    sup("config.process[].datasets[].is_reg"),
    sup("config.process[].datasets[].loss_multiplier"),
    sup("config.process[].datasets[].network_weight"),
    sup("config.process[].datasets[].control_path"),
    sup("config.process[].datasets[].control_path_1"),
    sup("config.process[].datasets[].control_path_2"),
    sup("config.process[].datasets[].control_path_3"),
    sup("config.process[].datasets[].control_transparent_color"),
    sup("config.process[].datasets[].cache_latents"),
    sup("config.process[].datasets[].cache_latents_to_disk"),
    sup("config.process[].datasets[].cache_text_embeddings"),
    sup("config.process[].datasets[].batch_size"),
    sup("config.process[].datasets[].type"),
    ign("config.process[].datasets[].num_workers", "loader threads of ai-toolkit"),
    ign("config.process[].datasets[].prefetch_factor", "loader prefetching of ai-toolkit"),
    ign("config.process[].datasets[].bucket_tolerance", "ai-toolkit replaces it with the model's divisibility (16)"),
    ign("config.process[].datasets[].cache_latents_num_workers", "loader threads of ai-toolkit"),
    ign("config.process[].datasets[].fast_image_size", "image headers are always read exactly"),
    ign("config.process[].datasets[].debug", "debug printout of ai-toolkit"),
    ign("config.process[].datasets[].load_image_when_caching_latents", "loader detail of ai-toolkit"),
    ign(
        "config.process[].datasets[].full_size_control_images",
        "control images follow the FLUX.2 reference-image rules",
    ),
    ign("config.process[].datasets[].standardize_images", "has no effect on datasets in ai-toolkit either"),
    ign("config.process[].datasets[].diff_output_preservation", "set from train.diff_output_preservation"),
    ign("config.process[].datasets[].diff_output_preservation_class", "set from train.diff_output_preservation_class"),
    ign("config.process[].datasets[].guidance_type", "slider training only"),
    uns("config.process[].datasets[].mask_path", Empty, "loss masks are not implemented"),
    ign("config.process[].datasets[].mask_min_value", "only used with mask_path"),
    uns("config.process[].datasets[].alpha_mask", False, "loss masks are not implemented"),
    ign("config.process[].datasets[].invert_mask", "only used with mask_path / alpha_mask"),
    uns("config.process[].datasets[].unconditional_path", Empty, "unconditional image pairs are not implemented"),
    uns("config.process[].datasets[].inpaint_path", Empty, "inpainting datasets are not implemented"),
    uns(
        "config.process[].datasets[].controls",
        Empty,
        "automatic controls (depth, pose, ...) are not implemented; use control_path",
    ),
    uns(
        "config.process[].datasets[].control_from_same_folder",
        False,
        "random controls from the same folder are not implemented",
    ),
    ign("config.process[].datasets[].num_controls_from_same_folder", "only used with control_from_same_folder"),
    uns("config.process[].datasets[].clip_image_path", Empty, "CLIP-vision inputs are not used by FLUX.2"),
    uns("config.process[].datasets[].clip_image_from_same_folder", False, "CLIP-vision inputs are not used by FLUX.2"),
    uns("config.process[].datasets[].clip_image_augmentations", Empty, "CLIP-vision inputs are not used by FLUX.2"),
    ign("config.process[].datasets[].clip_image_shuffle_augmentations", "CLIP-vision inputs are not used by FLUX.2"),
    ign("config.process[].datasets[].cache_clip_vision_to_disk", "CLIP-vision inputs are not used by FLUX.2"),
    uns("config.process[].datasets[].augments", Empty, "augmentations are not implemented (flip_x / flip_y are)"),
    uns("config.process[].datasets[].augmentations", Empty, "augmentations are not implemented (flip_x / flip_y are)"),
    ign("config.process[].datasets[].shuffle_augmentations", "only used with augmentations"),
    ign("config.process[].datasets[].replay_transforms", "only used with augmentations"),
    uns("config.process[].datasets[].random_scale", False, "random scaling is not implemented"),
    uns("config.process[].datasets[].square_crop", False, "square cropping is not implemented; images are bucketed"),
    uns("config.process[].datasets[].prior_reg", False, "prior regularization is not implemented; use is_reg datasets"),
    uns("config.process[].datasets[].poi", Empty, "ai-toolkit no longer supports it either"),
    uns("config.process[].datasets[].use_short_captions", False, "JSON caption files are not supported"),
    uns("config.process[].datasets[].caption_type", Empty, "legacy name; write caption_ext"),
    uns("config.process[].datasets[].random_triggers", Empty, "random triggers are not implemented"),
    ign("config.process[].datasets[].random_triggers_max", "only used with random_triggers"),
    uns("config.process[].datasets[].extra_values", Empty, "extra values are not used by FLUX.2"),
    uns("config.process[].datasets[].num_frames", Num(1.0), VIDEO),
    ign("config.process[].datasets[].shrink_video_to_frames", VIDEO),
    ign("config.process[].datasets[].fps", VIDEO),
    ign("config.process[].datasets[].auto_frame_count", VIDEO),
    ign("config.process[].datasets[].trim_auto_frame_count_tail", VIDEO),
    uns("config.process[].datasets[].do_i2v", False, VIDEO),
    uns("config.process[].datasets[].do_audio", False, VIDEO),
    ign("config.process[].datasets[].audio_preserve_pitch", VIDEO),
    ign("config.process[].datasets[].audio_normalize", VIDEO),
    uns("config.process[].datasets[].cache_tensors_to_disk", False, VIDEO),
    // ---- sample ----
    sec("config.process[].sample"),
    sup("config.process[].sample.sampler"),
    sup("config.process[].sample.sample_every"),
    sup("config.process[].sample.sample_start_step"),
    sup("config.process[].sample.width"),
    sup("config.process[].sample.height"),
    ign("config.process[].sample.neg", "FLUX.2 [dev] is guidance-distilled: no negative prompt"),
    sup("config.process[].sample.seed"),
    sup("config.process[].sample.walk_seed"),
    sup("config.process[].sample.guidance_scale"),
    sup("config.process[].sample.sample_steps"),
    sup("config.process[].sample.network_multiplier"),
    sup("config.process[].sample.format"),
    sup("config.process[].sample.prompts"),
    list("config.process[].sample.samples"),
    sup("config.process[].sample.samples[].prompt"),
    sup("config.process[].sample.samples[].width"),
    sup("config.process[].sample.samples[].height"),
    ign("config.process[].sample.samples[].neg", "FLUX.2 [dev] is guidance-distilled: no negative prompt"),
    sup("config.process[].sample.samples[].seed"),
    sup("config.process[].sample.samples[].guidance_scale"),
    sup("config.process[].sample.samples[].sample_steps"),
    sup("config.process[].sample.samples[].network_multiplier"),
    sup("config.process[].sample.samples[].ctrl_img"),
    sup("config.process[].sample.samples[].ctrl_img_1"),
    sup("config.process[].sample.samples[].ctrl_img_2"),
    sup("config.process[].sample.samples[].ctrl_img_3"),
    ign("config.process[].sample.samples[].ctrl_idx", "multi-image models other than FLUX.2"),
    ign("config.process[].sample.samples[].num_frames", VIDEO),
    ign("config.process[].sample.samples[].fps", VIDEO),
    ign("config.process[].sample.samples[].do_cfg_norm", NOT_FLUX2),
    uns("config.process[].sample.num_frames", Num(1.0), VIDEO),
    ign("config.process[].sample.fps", VIDEO),
    ign("config.process[].sample.guidance_rescale", "CFG rescale; FLUX.2 [dev] samples without CFG"),
    ign("config.process[].sample.adapter_conditioning_scale", "only used with an adapter section"),
    ign("config.process[].sample.refiner_start_at", NOT_FLUX2),
    ign("config.process[].sample.extra_values", NOT_FLUX2),
    ign("config.process[].sample.do_cfg_norm", NOT_FLUX2),
];

/// Values of supported keys that ai-toolkit knows but this trainer does not implement: `(path, value,
/// why)`. Checked before the typed read, so the message says "recognised, not supported" rather than
/// "unknown variant".
pub static UNSUPPORTED_VALUES: &[(&str, &str, &str)] = &[
    ("config.process[].train.loss_type", "wavelet", "the wavelet loss is not implemented"),
    ("config.process[].train.loss_type", "stepped", "the stepped loss is not implemented"),
    ("config.process[].train.loss_type", "mean_flow", "the mean-flow loss is not implemented"),
    ("config.process[].train.loss_type", "pixelspace", "the pixel-space loss is not implemented"),
    ("config.process[].train.timestep_type", "next_sample", "next_sample timesteps are not implemented"),
    ("config.process[].train.timestep_type", "one_step", "one_step timesteps are not implemented"),
    ("config.process[].network.type", "lokr", "LoKr adapters are not implemented"),
    ("config.process[].network.type", "lorm", "LoRM is not implemented"),
    ("config.process[].network.type", "dora", "DoRA adapters are not implemented"),
    ("config.process[].save.dtype", "float8", "8-bit LoRA files are not supported"),
    ("config.process[].save.dtype", "e4m3fn", "8-bit LoRA files are not supported"),
    ("config.process[].save.dtype", "8bit", "8-bit LoRA files are not supported"),
];

/// The table as a map from path pattern to class.
pub fn table() -> &'static HashMap<&'static str, KeyClass> {
    static TABLE: OnceLock<HashMap<&'static str, KeyClass>> = OnceLock::new();
    TABLE.get_or_init(|| KEYS.iter().map(|k| (k.path, k.class)).collect())
}

/// The class of a concrete path (`config.process[0].train.lr`), or `None` for an unknown key.
pub fn class_of(path: &str) -> Option<KeyClass> {
    table().get(pattern_of(path).as_str()).copied()
}

/// `config.process[0].datasets[12].x` -> `config.process[].datasets[].x`.
pub fn pattern_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// Walks the parsed file and reports every key that is unknown (warning), ignored (note) or
/// unsupported and set (error), with its full path.
pub(crate) fn classify(root: &Value, out: &mut Vec<Diagnostic>) {
    if let Value::Mapping(map) = root {
        walk_map(map, "", "", out);
    }
}

fn walk_map(map: &serde_yaml::Mapping, pattern: &str, path: &str, out: &mut Vec<Diagnostic>) {
    for (key, value) in map {
        let name = match key {
            Value::String(s) => s.clone(),
            other => {
                let shown = serde_yaml::to_string(other).unwrap_or_default();
                let child = join(path, shown.trim());
                out.push(Diagnostic::warning(child, "unknown key (not a string), ignored"));
                continue;
            }
        };
        let child_pattern = join(pattern, &name);
        let child_path = join(path, &name);
        match table().get(child_pattern.as_str()).copied() {
            None => out.push(Diagnostic::warning(child_path, unknown_message(&child_pattern))),
            Some(KeyClass::Section) => {
                if let Value::Mapping(m) = value {
                    walk_map(m, &child_pattern, &child_path, out);
                }
            }
            Some(KeyClass::SectionList) => {
                if let Value::Sequence(items) = value {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Mapping(m) = item {
                            walk_map(m, &format!("{child_pattern}[]"), &format!("{child_path}[{i}]"), out);
                        }
                    }
                }
            }
            Some(KeyClass::Free) => {}
            Some(KeyClass::Supported) => check_value(&child_pattern, &child_path, value, out),
            Some(KeyClass::Ignored(why)) => {
                // An empty or `false` value asks for nothing: no note.
                if !(Inert::Empty.accepts(value) || Inert::False.accepts(value)) {
                    out.push(Diagnostic::note(child_path, format!("ignored: {why}")));
                }
            }
            Some(KeyClass::Unsupported { inert, why }) => {
                if !inert.accepts(value) {
                    out.push(Diagnostic::error(
                        child_path,
                        format!("{} is not supported yet ({why}; see docs/user-guide.md)", show(value)),
                    ));
                }
            }
        }
    }
}

fn check_value(pattern: &str, path: &str, value: &Value, out: &mut Vec<Diagnostic>) {
    let Some(text) = value.as_str() else { return };
    for (p, v, why) in UNSUPPORTED_VALUES {
        if *p == pattern && text.trim().eq_ignore_ascii_case(v) {
            out.push(Diagnostic::error(path, format!("{text} is not supported yet ({why}; see docs/user-guide.md)")));
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

/// A value as it would be written in the file, on one line.
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Sequence(_) | Value::Mapping(_) => {
            serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}")).replace(',', ", ")
        }
        other => {
            serde_yaml::to_string(other).map(|s| s.trim().replace('\n', " ")).unwrap_or_else(|_| format!("{other:?}"))
        }
    }
}

fn unknown_message(pattern: &str) -> String {
    let (parent, leaf) = match pattern.rfind('.') {
        Some(i) => (&pattern[..i], &pattern[i + 1..]),
        None => ("", pattern),
    };
    let prefix = if parent.is_empty() { String::new() } else { format!("{parent}.") };
    let best = KEYS
        .iter()
        .filter_map(|k| k.path.strip_prefix(prefix.as_str()))
        .filter(|rest| !rest.contains('.') && !rest.contains('['))
        .map(|rest| (edit_distance(leaf, rest), rest))
        .filter(|(d, rest)| *d <= 2.max(leaf.len().min(rest.len()) / 4))
        .min();
    match best {
        Some((_, suggestion)) => format!("unknown key, ignored (did you mean `{suggestion}`?)"),
        None => "unknown key, ignored (not a key this trainer or ai-toolkit reads here)".to_string(),
    }
}

/// Levenshtein distance (short strings only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_distance() {
        assert_eq!(pattern_of("config.process[0].datasets[12].flip_x"), "config.process[].datasets[].flip_x");
        assert_eq!(edit_distance("gradient_checkpoint", "gradient_checkpointing"), 3);
        assert_eq!(edit_distance("lr", "lr"), 0);
        assert!(!unknown_message("config.process[].train.learning_rat").contains("`lr`"));
        assert!(unknown_message("config.process[].train.gradiant_checkpointing").contains("gradient_checkpointing"));
    }

    #[test]
    fn table_has_no_duplicates_and_every_parent_is_a_section() {
        let mut seen = std::collections::HashSet::new();
        for k in KEYS {
            assert!(seen.insert(k.path), "duplicate key {}", k.path);
            if let Some(i) = k.path.rfind('.') {
                let parent = k.path[..i].trim_end_matches("[]");
                let class = table().get(parent).copied();
                assert!(
                    matches!(class, Some(KeyClass::Section | KeyClass::SectionList)),
                    "parent of {} is not a section: {class:?}",
                    k.path
                );
            }
        }
        for (p, _, _) in UNSUPPORTED_VALUES {
            assert_eq!(table().get(p), Some(&KeyClass::Supported), "{p}");
        }
    }
}
