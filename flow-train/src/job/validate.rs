//! Value checks on a loaded [`JobFile`]: ranges, required keys and combinations, each error naming the
//! key path and the bad value. Keys that are recognised but unsupported are reported earlier, by the
//! key table ([`super::keys`]).

use super::diagnostics::Diagnostic;
use super::schema::{JobFile, ProcessConfig};
use crate::TimestepConfig;

/// Process types that mean "train" in ai-toolkit (`ui_trainer` is the UI's old name).
pub const TRAINER_TYPES: &[&str] = &["diffusion_trainer", "sd_trainer", "ui_trainer"];

/// Appends every problem found in `file` to `out`.
pub fn validate(file: &JobFile, out: &mut Vec<Diagnostic>) {
    if file.job.trim() != "extension" {
        out.push(Diagnostic::error(
            "job",
            format!("{} is not supported: ai-toolkit trainer jobs are `job: extension`", file.job),
        ));
    }
    let name = &file.config.name;
    if name.trim().is_empty() {
        push_once(out, Diagnostic::error("config.name", "must not be empty (it names the output folder and files)"));
    } else if name.contains(['/', '\\']) {
        out.push(Diagnostic::error("config.name", format!("{name}: must not contain / or \\ (it is a folder name)")));
    }
    if file.config.process.is_empty() {
        push_once(out, Diagnostic::error("config.process", "empty: one training process is needed"));
    }
    for (i, p) in file.config.process.iter().enumerate() {
        let path = format!("config.process[{i}]");
        if i > 0 {
            out.push(Diagnostic::error(
                &path,
                "only one process per job is supported; run the others as separate jobs",
            ));
            continue;
        }
        process(p, &path, out);
    }
}

/// Adds `d` unless an error for the same path is already there.
fn push_once(out: &mut Vec<Diagnostic>, d: Diagnostic) {
    if !out.iter().any(|o| o.severity == d.severity && o.path == d.path) {
        out.push(d);
    }
}

fn finite_positive(out: &mut Vec<Diagnostic>, path: String, v: f64) {
    if !(v.is_finite() && v > 0.0) {
        push_once(out, Diagnostic::error(path, format!("{v} must be a number > 0")));
    }
}

fn finite_non_negative(out: &mut Vec<Diagnostic>, path: String, v: f64) {
    if !(v.is_finite() && v >= 0.0) {
        push_once(out, Diagnostic::error(path, format!("{v} must be a number >= 0")));
    }
}

fn at_least_one(out: &mut Vec<Diagnostic>, path: String, v: u64) {
    if v == 0 {
        push_once(out, Diagnostic::error(path, "0 is not allowed: must be at least 1"));
    }
}

fn process(p: &ProcessConfig, path: &str, out: &mut Vec<Diagnostic>) {
    let k = |key: &str| format!("{path}.{key}");
    if !TRAINER_TYPES.contains(&p.kind.as_str()) {
        push_once(
            out,
            Diagnostic::error(
                k("type"),
                format!("{} is not supported: only LoRA training (`diffusion_trainer` / `sd_trainer`)", p.kind),
            ),
        );
    }
    if p.training_folder.as_os_str().is_empty() {
        out.push(Diagnostic::error(k("training_folder"), "must not be empty"));
    }
    let triggers = std::iter::once((k("trigger_word"), p.trigger_word.as_deref())).chain(
        p.datasets
            .iter()
            .enumerate()
            .map(|(i, d)| (k(&format!("datasets[{i}].trigger_word")), d.trigger_word.as_deref())),
    );
    for (key, word) in triggers {
        if let Some(w) = word.filter(|w| w.len() > MAX_TRIGGER_BYTES) {
            out.push(Diagnostic::error(
                key,
                format!("{} bytes long; a trigger word is at most {MAX_TRIGGER_BYTES} bytes", w.len()),
            ));
        }
    }

    // ---- model ----
    match p.model.name_or_path.as_deref().map(str::trim) {
        None | Some("") => push_once(
            out,
            Diagnostic::error(
                k("model.name_or_path"),
                "missing: a FLUX.2 [dev] diffusers folder, BFL file or Hugging Face repo id (black-forest-labs/FLUX.2-dev)",
            ),
        ),
        Some(_) => {}
    }
    match p.model.arch.as_deref() {
        Some("flux2") => {}
        Some(other) => push_once(
            out,
            Diagnostic::error(
                k("model.arch"),
                format!("{other} is not supported: this trainer trains FLUX.2 [dev] (`arch: flux2`)"),
            ),
        ),
        None => push_once(
            out,
            Diagnostic::error(
                k("model.arch"),
                "missing: write `arch: flux2` (without it ai-toolkit assumes Stable Diffusion 1)",
            ),
        ),
    }

    // ---- target ----
    let net = &p.network;
    if !matches!(net.kind.to_ascii_lowercase().as_str(), "lora" | "locon") {
        push_once(
            out,
            Diagnostic::error(
                k("network.type"),
                format!("{} is not supported yet (implemented: lora; see docs/user-guide.md)", net.kind),
            ),
        );
    }
    at_least_one(out, k("network.linear"), net.linear as u64);
    if net.linear as u64 > MAX_RANK {
        push_once(
            out,
            Diagnostic::error(
                k("network.linear"),
                format!("{} is larger than any FLUX.2 layer allows (at most {MAX_RANK})", net.linear),
            ),
        );
    }
    if let Some(a) = net.linear_alpha.filter(|_| net.linear > 0) {
        finite_positive(out, k("network.linear_alpha"), a);
    }
    if let Some(d) = net.dropout
        && !(0.0..1.0).contains(&d)
    {
        out.push(Diagnostic::error(k("network.dropout"), format!("{d} must be in [0, 1)")));
    }
    for (key, list) in [
        ("only_if_contains", &net.network_kwargs.only_if_contains),
        ("ignore_if_contains", &net.network_kwargs.ignore_if_contains),
    ] {
        if let Some(i) = list.iter().position(|s| s.trim().is_empty()) {
            out.push(Diagnostic::error(
                format!("{path}.network.network_kwargs.{key}[{i}]"),
                "an empty pattern matches every module; remove it",
            ));
        }
    }
    if !net.transformer_only {
        push_once(
            out,
            Diagnostic::error(
                k("network.transformer_only"),
                "false is not supported yet (text-encoder adapters are not trained; see docs/user-guide.md)",
            ),
        );
    }

    // ---- save ----
    at_least_one(out, k("save.max_step_saves_to_keep"), u64::from(p.save.max_step_saves_to_keep));

    // ---- datasets ----
    if p.datasets.is_empty() {
        out.push(Diagnostic::error(
            k("datasets"),
            "missing or empty: at least one dataset (`- folder_path: ...`) is needed",
        ));
    } else if p.datasets.iter().all(|d| d.is_reg) {
        out.push(Diagnostic::error(
            k("datasets"),
            "every dataset has is_reg: true; at least one training dataset is needed",
        ));
    }
    for (i, d) in p.datasets.iter().enumerate() {
        if let Err(e) = d.validate(i) {
            let (key, message) = match &e {
                dataset_buckets::Error::Config { key, message, .. } => {
                    (format!("{path}.datasets[{i}].{key}"), message.clone())
                }
                other => (format!("{path}.datasets[{i}]"), other.to_string()),
            };
            push_once(out, Diagnostic::error(key, message));
        }
    }
    let cached = p.datasets.iter().filter(|d| d.cache_text_embeddings).count();
    if cached > 0 && cached < p.datasets.len() {
        let i = p.datasets.iter().position(|d| !d.cache_text_embeddings).unwrap_or(0);
        out.push(Diagnostic::error(
            format!("{path}.datasets[{i}].cache_text_embeddings"),
            "false while other datasets cache text embeddings: set it on all of them (or train.cache_text_embeddings: true)",
        ));
    }

    // ---- training ----
    let t = &p.train;
    at_least_one(out, k("train.batch_size"), u64::from(t.batch_size));
    at_least_one(out, k("train.steps"), u64::from(t.steps));
    at_least_one(out, k("train.gradient_accumulation"), u64::from(t.gradient_accumulation));
    match t.gradient_accumulation_steps {
        -1 => out.push(Diagnostic::error(
            k("train.gradient_accumulation_steps"),
            "-1 is not supported yet (accumulating a whole epoch; use gradient_accumulation: N; see docs/user-guide.md)",
        )),
        n if n < 1 => out.push(Diagnostic::error(k("train.gradient_accumulation_steps"), format!("{n} must be at least 1"))),
        n if n > 1 && t.gradient_accumulation > 1 => out.push(Diagnostic::error(
            k("train.gradient_accumulation_steps"),
            format!("{n} together with gradient_accumulation: {}: the two are mutually exclusive (as in ai-toolkit)", t.gradient_accumulation),
        )),
        _ => {}
    }
    if !t.train_unet {
        out.push(Diagnostic::error(
            k("train.train_unet"),
            "false leaves nothing to train: the LoRA sits on the transformer",
        ));
    }
    if t.train_text_encoder {
        out.push(Diagnostic::error(
            k("train.train_text_encoder"),
            "true is not supported yet (text-encoder LoRAs are not trained; see docs/user-guide.md)",
        ));
    }
    if !t.noise_scheduler.eq_ignore_ascii_case("flowmatch") {
        out.push(Diagnostic::error(
            k("train.noise_scheduler"),
            format!("{} is not supported: FLUX.2 trains with flow matching, write `flowmatch`", t.noise_scheduler),
        ));
    }
    finite_positive(out, k("train.lr"), t.lr);
    if let Some(lr) = t.unet_lr {
        finite_positive(out, k("train.unet_lr"), lr);
    }
    if let Some(wd) = t.optimizer_params.weight_decay {
        finite_non_negative(out, k("train.optimizer_params.weight_decay"), wd);
    }
    for (j, b) in t.optimizer_params.betas.iter().flatten().enumerate() {
        if !(0.0..1.0).contains(b) {
            out.push(Diagnostic::error(
                format!("{path}.train.optimizer_params.betas[{j}]"),
                format!("{b} must be in [0, 1)"),
            ));
        }
    }
    finite_non_negative(out, k("train.max_grad_norm"), t.max_grad_norm);
    let timesteps = TimestepConfig {
        timestep_type: t.timestep_type,
        bias: t.content_or_style,
        min_denoising_steps: t.min_denoising_steps,
        max_denoising_steps: t.max_denoising_steps,
    };
    if let Err(e) = timesteps.index_range() {
        out.push(Diagnostic::error(k("train.min_denoising_steps"), e.to_string()));
    }
    finite_non_negative(out, k("train.noise_offset"), t.noise_offset);
    if !(t.ema_config.ema_decay > 0.0 && t.ema_config.ema_decay < 1.0) {
        out.push(Diagnostic::error(
            k("train.ema_config.ema_decay"),
            format!("{} must be in (0, 1)", t.ema_config.ema_decay),
        ));
    }
    finite_non_negative(out, k("train.diff_output_preservation_multiplier"), t.diff_output_preservation_multiplier);
    if !t.differential_guidance_scale.is_finite() {
        out.push(Diagnostic::error(
            k("train.differential_guidance_scale"),
            format!("{} must be a finite number", t.differential_guidance_scale),
        ));
    }
    finite_non_negative(out, k("train.reg_weight"), t.reg_weight);
    if t.diff_output_preservation {
        if t.diff_output_preservation_class.trim().is_empty() {
            out.push(Diagnostic::error(
                k("train.diff_output_preservation_class"),
                "empty while diff_output_preservation is on: name the class the trigger stands for (`person`, `dog`, ...)",
            ));
        }
        let has_trigger = p.trigger_word.as_deref().is_some_and(|w| !w.trim().is_empty())
            || p.datasets
                .iter()
                .filter(|d| !d.is_reg)
                .all(|d| d.trigger_word.as_deref().is_some_and(|w| !w.trim().is_empty()));
        if !has_trigger {
            out.push(Diagnostic::error(
                k("train.diff_output_preservation"),
                "true needs a trigger word (trigger_word, or on every dataset): the preservation prompt replaces it with the class",
            ));
        }
    }
    if t.unload_text_encoder && t.cache_text_embeddings {
        out.push(Diagnostic::warning(
            k("train.unload_text_encoder"),
            "true together with cache_text_embeddings: captions are not used, every image trains on the trigger word alone",
        ));
    }
    if t.do_differential_guidance && t.differential_guidance_scale == 1.0 {
        out.push(Diagnostic::warning(
            k("train.differential_guidance_scale"),
            "1.0 makes differential guidance a no-op",
        ));
    }

    // ---- sample ----
    let s = &p.sample;
    let sampling = !t.disable_sampling;
    if !s.sampler.eq_ignore_ascii_case("flowmatch") {
        out.push(Diagnostic::warning(
            k("sample.sampler"),
            format!("{}: FLUX.2 samples with its flow-matching Euler scheduler; the value is ignored", s.sampler),
        ));
    }
    size(out, &k("sample.width"), s.width);
    size(out, &k("sample.height"), s.height);
    steps(out, k("sample.sample_steps"), s.sample_steps);
    finite_non_negative(out, k("sample.guidance_scale"), s.guidance_scale);
    if !s.network_multiplier.is_finite() {
        out.push(Diagnostic::error(
            k("sample.network_multiplier"),
            format!("{} must be a finite number", s.network_multiplier),
        ));
    }
    for (i, item) in s.samples.iter().enumerate() {
        let ip = format!("{path}.sample.samples[{i}]");
        if item.prompt.trim().is_empty() {
            out.push(Diagnostic::warning(format!("{ip}.prompt"), "empty prompt"));
        }
        if let Some(w) = item.width {
            size(out, &format!("{ip}.width"), w);
        }
        if let Some(h) = item.height {
            size(out, &format!("{ip}.height"), h);
        }
        if let Some(n) = item.sample_steps {
            steps(out, format!("{ip}.sample_steps"), n);
        }
        if let Some(g) = item.guidance_scale {
            finite_non_negative(out, format!("{ip}.guidance_scale"), g);
        }
    }
    if sampling && s.samples.is_empty() && s.sample_every > 0 {
        out.push(Diagnostic::warning(k("sample.samples"), "no prompts: no sample images will be made"));
    }

    // ---- logging ----
    at_least_one(out, k("logging.log_every"), u64::from(p.logging.log_every));
}

/// The longest trigger word: it is inserted into every caption and prompt (a 50 MB one made loading
/// hang).
pub const MAX_TRIGGER_BYTES: usize = 1000;

/// The sampler's limits ([`crate::pipeline::MAX_IMAGE_SIDE`], [`crate::pipeline::MAX_STEPS`]), checked
/// by `--check` before any model loads.
const MAX_SAMPLE_SIDE: u32 = crate::pipeline::MAX_IMAGE_SIDE as u32;
const MAX_SAMPLE_STEPS: u32 = crate::pipeline::MAX_STEPS as u32;

/// The largest LoRA rank accepted from a job: FLUX.2 [dev]'s narrowest adapted layer is 3072 wide.
/// Ranks beyond a layer's own width are refused when the adapter is created, naming the layer.
pub const MAX_RANK: u64 = 3072;

/// Sample sizes: 16 to [`MAX_SAMPLE_SIDE`]; not a multiple of 16 is floored, as ai-toolkit does.
fn size(out: &mut Vec<Diagnostic>, path: &str, v: u32) {
    if v < 16 {
        push_once(out, Diagnostic::error(path, format!("{v} is too small (at least 16 pixels)")));
    } else if v > MAX_SAMPLE_SIDE {
        push_once(out, Diagnostic::error(path, format!("{v} is too large (at most {MAX_SAMPLE_SIDE} pixels)")));
    } else if !v.is_multiple_of(16) {
        out.push(Diagnostic::warning(path, format!("{v} is not a multiple of 16: samples use {}", v / 16 * 16)));
    }
}

fn steps(out: &mut Vec<Diagnostic>, path: String, n: u32) {
    at_least_one(out, path.clone(), u64::from(n));
    if n > MAX_SAMPLE_STEPS {
        push_once(out, Diagnostic::error(path, format!("{n} is too many (at most {MAX_SAMPLE_STEPS})")));
    }
}
