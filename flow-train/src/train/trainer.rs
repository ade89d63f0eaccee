//! The training loop: datasets and caches, the adapter, the optimizer, the steps, checkpoints, sample
//! previews, the loss log and plot, resume and Ctrl-C.
//!
//! Randomness: every draw of a step (noise, timesteps, caption dropout, LoRA dropout) comes from a
//! stream derived from (run seed, batch number), never from state carried between steps. Resuming
//! at step `n` therefore replays exactly what an uninterrupted run does after step `n`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use dataset_buckets::{Batch, CacheOptions, Caches, DatasetSet, Rng, SampleRef, Stream};
use flux2_dit::Flux2Transformer;
use flux2_vae::Vae;
use lora_adapters::{AdapterHandle, LoraMetadata, SaveOptions, trainable};
use mistral_encoder::MistralEncoder;

use super::checkpoint::{self, StateFile, TrainingState};
use super::clip::clip_grad_norm;
use super::encoders::{PromptBank, from_cached};
use super::loss_log::{LossLog, LossRecord};
use super::plot::write_plot;
use super::previews::{self, PreparedPrompt};
use super::prompt_cache::{self, PromptDisk};
use super::run_lock;
use super::step::{LossOptions, StepLosses, TrainBatch, batch_loss};
use super::vae_slot::{SlotLatents, VaeLoader, VaeSlot};
use crate::error::{Error, Result};
use crate::job::{ImageFormat, LoadedJob, TextEncoderPlan, TrainJob};
use crate::optim::{Optimizer, OptimizerState, build_optimizer};
use crate::pipeline::{
    ModelFiles, PendingTransformer, PipelineOptions, ReferenceImage, check_compatible, check_text_encoder,
    options_text_encoder, options_vae, resolve_model,
};
use crate::{TimestepSampler, gaussian_noise};

/// Name of the trained adapter inside the model.
pub const ADAPTER: &str = "lora";

/// The models the trainer composes. The transformer trains on `B` (autodiff); the VAE and text encoder
/// only run forward, on the inner backend.
///
/// The transformer's weights are loaded last, by [`train`], once the text encoder has encoded every
/// caption and been freed, so the two largest models never share the device (FLUX.2 [dev] in bf16:
/// 64 GB transformer + 36 GB of the text encoder's first 30 layers). Its config is read at load, and
/// the pipeline is checked then.
pub struct TrainModels<B: AutodiffBackend> {
    transformer: PendingTransformer,
    pub vae: Vae<B::InnerBackend>,
    /// `None` only when every caption embedding is already in memory (not the case at start-up).
    pub text_encoder: Option<MistralEncoder<B::InnerBackend>>,
    /// Names the checkpoint for cache keys and LoRA metadata (path, dtype).
    pub identity: String,
    dtype: burn::tensor::DType,
    /// The transformer's base storage (`model.quantize` + `qtype`, `layer_offloading`).
    storage: flux2_dit::BaseStorage,
    /// With cached text embeddings the encoder is not loaded at start: where to load it from when a
    /// caption is missing from the disk cache.
    deferred_text_encoder: Option<(ModelFiles, PipelineOptions)>,
    /// `model.low_vram`: where to re-read the VAE from after dropping it between uses.
    parked_vae: Option<(ModelFiles, PipelineOptions)>,
    device: B::Device,
}

impl<B: AutodiffBackend> TrainModels<B> {
    /// Opens the job's pipeline (`model:` panel: local folder, Hub repo id or BFL file; `train.dtype`;
    /// text-encoder layers and length; random weights when the plan says so): the VAE and text
    /// encoder loaded on the inner backend, the transformer's config read and checked against them.
    pub fn load(job: &LoadedJob, device: &B::Device) -> Result<Self> {
        let plan = &job.plan;
        let options = PipelineOptions::for_model(&plan.model);
        let files = resolve_model(&plan.model.name_or_path, &options.source_options())?;
        let pending = PendingTransformer::open(&files, options.random_weights)?;
        // Cached embeddings: the encoder loads only if some caption is not on disk yet (train()).
        let defer = plan.train.text_encoder == TextEncoderPlan::CachedEmbeddings;
        let text_encoder =
            if defer { None } else { options_text_encoder::<B::InnerBackend>(&files, &options, device)? };
        let vae = options_vae::<B::InnerBackend>(&files, &options, device)?;
        check_compatible(&files, &pending.config, &vae, text_encoder.as_ref())?;
        // Latents and embeddings of random weights must never be taken for the real model's.
        let random = plan.model.random_weights.map(|seed| format!(" random-weights seed {seed}")).unwrap_or_default();
        // Embeddings of a quantized text encoder differ from the dense one's: part of every cache key.
        let te_qtype = plan.model.quantize_te.map(|q| format!(" te-{q}")).unwrap_or_default();
        Ok(TrainModels {
            transformer: pending,
            vae,
            text_encoder,
            identity: format!("{} {:?}{te_qtype}{random}", plan.model.name_or_path, plan.model.dtype),
            dtype: options.dtype,
            storage: options.transformer_storage::<B::InnerBackend>(),
            deferred_text_encoder: defer.then(|| (files.clone(), options.clone())),
            parked_vae: plan.model.low_vram.then(|| (files.clone(), options.clone())),
            device: device.clone(),
        })
    }

    /// The transformer's config (known from load, before its weights are).
    pub fn transformer_config(&self) -> &flux2_dit::Flux2Config {
        &self.transformer.config
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Continue from the newest complete checkpoint in the output folder, if any.
    pub resume: bool,
    /// Stop after this many optimizer steps in this process (tests; the schedule still spans
    /// `train.steps`). Saves a checkpoint when it stops.
    pub stop_after: Option<u32>,
    /// Set (e.g. by Ctrl-C) to save and stop after the current step.
    pub interrupt: Arc<AtomicBool>,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { resume: true, stop_after: None, interrupt: Arc::new(AtomicBool::new(false)), progress: true }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub output_dir: PathBuf,
    /// Step the run started from (0, or the resumed checkpoint's).
    pub start_step: u32,
    /// Steps completed in total.
    pub steps: u32,
    /// The LoRA written last (final, or the checkpoint of an interrupted run).
    pub lora: PathBuf,
    pub first_loss: Option<f32>,
    /// Mean loss over the last 10% of logged steps.
    pub final_loss: Option<f32>,
    pub seconds: f64,
    pub interrupted: bool,
    /// Images trained on by this process (every accumulated batch's items).
    pub items: u64,
    /// Whether the text encoder was loaded: false when every caption came from the disk cache.
    pub text_encoder_loaded: bool,
    /// Times the VAE was re-read after being dropped (`model.low_vram`; 0 otherwise).
    pub vae_reloads: u32,
    /// Bytes of transformer weights held in host memory (`model.layer_offloading`; 0 on the CPU
    /// backends, where offloading is off).
    pub offloaded_bytes: u64,
    /// This process trained no step but completed the final save (LoRA, samples, pruning) of a run
    /// that stopped inside it.
    pub completed_final: bool,
}

fn batches_per_update(plan: &TrainJob) -> u32 {
    plan.train.accumulation.batches_per_step.max(1) * plan.train.accumulation.steps_per_update.max(1)
}

/// Total optimizer updates of the job.
pub fn total_updates(plan: &TrainJob) -> u32 {
    let per = plan.train.accumulation.steps_per_update.max(1);
    plan.train.steps.div_ceil(per)
}

fn seed_of(plan: &TrainJob, output: &Path) -> u64 {
    if let Some(seed) = plan.seed {
        return seed;
    }
    // A resumed run keeps the seed its first start drew.
    if let Some((_, dir)) = checkpoint::list_states(output).pop()
        && let Ok((state, _)) = checkpoint::load_state(&dir)
    {
        return state.file.seed;
    }
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Replaces the trigger word (whole string occurrences) by the DOP class.
fn class_caption(caption: &str, trigger: Option<&str>, class: &str) -> String {
    match trigger {
        Some(t) if !t.is_empty() => caption.replace(t, class),
        _ => caption.to_string(),
    }
}

pub(crate) fn bar(total: u64, visible: bool, template: &str) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Everything a step needs besides the model.
struct Data<'a, B: AutodiffBackend> {
    set: &'a DatasetSet,
    caches: &'a Caches,
    vae: &'a VaeSlot<B::InnerBackend>,
    vae_identity: String,
    bank: PromptBank<B::InnerBackend>,
    /// The current epoch's batches of the main stream, and of the regularization stream if any.
    main: Option<(u64, Vec<Batch>)>,
    reg: Option<Option<(u64, Vec<Batch>)>>,
    seed: u64,
    trigger: Option<String>,
    dop_class: Option<String>,
    reg_weight: f32,
    /// `unload_text_encoder`: every item trains on the trigger word's embedding.
    trigger_only: bool,
    /// `train.batch_size` (a dataset's own `batch_size` wins, see `dataset_buckets::Sampler`).
    batch_size: usize,
}

impl<'a, B: AutodiffBackend> Data<'a, B> {
    /// The batches of the run's datasets (`train.batch_size`), with a regularization stream when
    /// there are regularization datasets; an error when the training datasets make no batch.
    fn new(
        plan: &TrainJob,
        set: &'a DatasetSet,
        caches: &'a Caches,
        vae: &'a VaeSlot<B::InnerBackend>,
        vae_identity: String,
        bank: PromptBank<B::InnerBackend>,
        seed: u64,
    ) -> Result<Self> {
        let batch_size = plan.train.batch_size as usize;
        if set.sampler(Stream::Main, batch_size).batches_per_epoch() == 0 {
            return Err(Error::Invalid("the training datasets produced no batches (no images found?)".into()));
        }
        Ok(Data {
            set,
            caches,
            vae,
            vae_identity,
            bank,
            main: None,
            reg: (!set.sampler(Stream::Reg, batch_size).is_empty()).then_some(None),
            seed,
            trigger: plan.trigger_word.clone(),
            dop_class: plan.train.dop.as_ref().map(|d| d.class.clone()),
            reg_weight: plan.train.reg_weight,
            trigger_only: plan.train.text_encoder == TextEncoderPlan::TriggerOnly,
            batch_size,
        })
    }

    /// Batch number `n` of the run: main and regularization batches alternate when a reg stream exists.
    /// Epoch `e` of a stream is the same list whenever it is drawn, so only the current one is kept.
    fn batch(&mut self, n: u64) -> Result<(Batch, bool)> {
        let use_reg = self.reg.is_some() && n % 2 == 1;
        let k = if self.reg.is_some() { n / 2 } else { n };
        let (stream, cache) = match (&mut self.reg, use_reg) {
            (Some(reg), true) => (Stream::Reg, reg),
            _ => (Stream::Main, &mut self.main),
        };
        let sampler = self.set.sampler(stream, self.batch_size);
        let per_epoch = sampler.batches_per_epoch().max(1) as u64;
        let (epoch, index) = (k / per_epoch, (k % per_epoch) as usize);
        if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *cache = Some((epoch, sampler.epoch(epoch)));
        }
        let batch =
            cache.as_ref().and_then(|(_, batches)| batches.get(index)).cloned().ok_or_else(|| {
                Error::Invalid(format!("the {stream:?} datasets produced no batches (no images found?)"))
            })?;
        Ok((batch, use_reg))
    }

    fn train_batch(&mut self, n: u64, device: &B::Device, dop: bool) -> Result<TrainBatch<B>> {
        let (batch, is_reg) = self.batch(n)?;
        let encoder = SlotLatents { slot: self.vae, device: device.clone(), identity: self.vae_identity.clone() };
        let dataset = self.set.dataset(batch.dataset)?;
        let multiplier = dataset.config().loss_multiplier * if is_reg { self.reg_weight } else { 1.0 };
        let mut latents = Vec::new();
        let mut texts = Vec::new();
        let mut class_texts = Vec::new();
        let mut controls: Vec<Vec<Tensor<B, 4>>> = Vec::new();
        for (pos, &r) in batch.samples.iter().enumerate() {
            let z = self.caches.latent(self.set, r, &encoder)?;
            latents.push(from_cached::<B, 3>(&z, device)?.unsqueeze_dim::<4>(0));
            let mut rng = Rng::derive(self.seed, "caption", &[n, pos as u64]);
            let mut caption = self.set.step_caption(r, &mut rng)?;
            if self.trigger_only {
                caption.text = self.trigger.clone().unwrap_or_default();
            }
            texts.push(from_cached::<B, 2>(&*self.bank.embed(&caption.text)?, device)?.unsqueeze_dim::<3>(0));
            if dop && let Some(class) = &self.dop_class {
                let c = class_caption(&caption.text, self.trigger.as_deref(), class);
                class_texts.push(from_cached::<B, 2>(&*self.bank.embed(&c)?, device)?.unsqueeze_dim::<3>(0));
            }
            let item_controls = self.caches.control_latents(self.set, r, &encoder)?;
            for (k, c) in item_controls.iter().enumerate() {
                if controls.len() <= k {
                    controls.push(Vec::new());
                }
                controls[k].push(from_cached::<B, 3>(c, device)?.unsqueeze_dim::<4>(0));
            }
        }
        let mut stacked_controls = Vec::new();
        for (k, items) in controls.into_iter().enumerate() {
            if items.len() != batch.samples.len() || items.windows(2).any(|w| w[0].dims() != w[1].dims()) {
                return Err(Error::Invalid(format!(
                    "dataset {}: control image {k} differs in size (or presence) between the items of a batch; \
                     use batch_size 1 for this edit dataset",
                    dataset.config().folder_path.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
                )));
            }
            stacked_controls.push(Tensor::cat(items, 0));
        }
        Ok(TrainBatch {
            latents: Tensor::cat(latents, 0),
            text: Tensor::cat(texts, 0),
            preservation_text: (!class_texts.is_empty()).then(|| Tensor::cat(class_texts, 0)),
            controls: stacked_controls,
            loss_multipliers: vec![multiplier; batch.samples.len()],
            network_weight: dataset.config().network_weight,
        })
    }
}

/// Runs the job: the whole training from the loaded models. It reads like the job file's panels, one
/// phase each: setup (output folder, datasets, caches, the transformer with its adapter, the
/// optimizer), resume, the steps (`train:`), checkpoints (`save:`) and previews (`sample:`).
pub fn train<B: AutodiffBackend>(job: &LoadedJob, models: TrainModels<B>, options: RunOptions) -> Result<TrainSummary> {
    let started = Instant::now();
    let plan = &job.plan;
    let output = plan.output_dir.clone();
    let _lock = open_output(job)?;
    let seed = seed_of(plan, &output);
    let TrainModels {
        transformer,
        vae,
        text_encoder,
        identity,
        dtype,
        storage,
        deferred_text_encoder,
        parked_vae,
        device,
    } = models;

    // ---- setup: datasets, latent cache, prompt embeddings, the transformer ----
    let set = load_datasets(plan, seed)?;
    let caches = Caches::new(CacheOptions { show_progress: options.progress, ..CacheOptions::default() });
    let vae_identity = format!("{identity} vae");
    let vae = vae_slot::<B>(vae, parked_vae, &device);
    caches.build_latents(&set, &SlotLatents { slot: &vae, device: device.clone(), identity: vae_identity.clone() })?;
    vae.park();
    let sample_prompts = sample_prompt_texts(plan);
    let mut bank = prompt_bank::<B>(&set, &transformer.config, text_encoder, deferred_text_encoder, identity, &device)?;
    encode_captions_ahead::<B::InnerBackend>(plan, &set, &mut bank, &sample_prompts, options.progress, &device)?;
    let text_encoder_loaded = bank.used_encoder();
    crate::out_of_memory::set_phase("loading the transformer");
    let model = Flux2Transformer::<B>::from_inner(transformer.load_with(dtype, storage, &device)?);
    let placement = model.storage_report();
    report_offloading::<B>(plan, &placement);
    let offloaded_bytes = placement.host_bytes;
    let mut run = Run::new(plan, model, seed, &device)?;

    // ---- resume ----
    let start_step = if options.resume {
        run.resume(&output, &device)?
    } else {
        // Starting over: the previous run's training states would otherwise count as the newest
        // checkpoints (keep-N) and be resumed from next time.
        checkpoint::clear_states(&output)?;
        0
    };
    run.report(plan, seed);

    // ---- sample previews before the first step ----
    let previews = Previews::prepare(plan, &mut bank, &sample_prompts, &vae, options.progress, &device)?;
    if plan.sample.before_first_step && (start_step == 0 || plan.sample.force_first) {
        previews.render(&mut run, start_step)?;
    }

    // ---- the steps, with checkpoints and previews on their intervals ----
    let mut log = LossLog::open(&output, start_step)?;
    let mut data = Data::new(plan, &set, &caches, &vae, vae_identity, bank, seed)?;
    let checkpoints = Checkpoints { plan, output: &output, seed };
    let total = total_updates(plan);
    let pb = bar(u64::from(total), options.progress, "{bar:30} {pos}/{len} steps {msg} {per_sec} eta {eta}");
    pb.set_position(u64::from(start_step));
    let mut step = start_step;
    let mut items = 0u64;
    let mut last_lora = None;
    while step < total {
        let update = run.step(plan, &mut data, step, seed, &device)?;
        items += update.items;
        step += 1;
        let record = mean_losses(&update.losses, step, update.lr, update.grad_norm, started.elapsed().as_secs_f64());
        pb.set_message(format!("loss {:.4}", record.loss));
        pb.set_position(u64::from(step));
        log.push(record)?;
        if plan.log_every > 0 && step % plan.log_every == 0 {
            // Through `suspend`, so the line also reaches logs when stderr is not a terminal.
            pb.suspend(|| report_window(&log, plan.log_every, step, total));
        }

        let stop_here = options.stop_after.is_some_and(|n| step - start_step >= n);
        let interrupted = options.interrupt.load(Ordering::SeqCst);
        if step < total && (plan.save.every > 0 && step % plan.save.every == 0 || stop_here || interrupted) {
            last_lora = Some(pb.suspend(|| checkpoints.save(&mut run, step, &log))?);
        }
        if step < total && plan.sample.every > 0 && step % plan.sample.every == 0 && step >= plan.sample.start_step {
            pb.suspend(|| previews.render(&mut run, step))?;
        }
        if stop_here || interrupted {
            break;
        }
    }
    pb.finish_and_clear();

    // ---- the final save and previews ----
    let finished = step >= total;
    let final_lora = checkpoints.final_lora();
    // The final save is the run's last state: a run stopped inside it (after the last training
    // state, before the final LoRA) resumes at `total` and completes it here.
    let completes_final = finished && (step > start_step || !final_lora.exists());
    if completes_final {
        last_lora = Some(checkpoints.save_final(&mut run, step, start_step, &log)?);
        if !plan.sample.disabled && plan.sample.every > 0 {
            previews.render(&mut run, step)?;
        }
    }
    write_plot(&output.join("loss.png"), &points(&log))?;
    let records = log.records();
    let tail = (records.len() / 10).max(1);
    Ok(TrainSummary {
        output_dir: output.clone(),
        start_step,
        steps: step,
        lora: last_lora.unwrap_or_else(|| {
            if finished && final_lora.exists() {
                final_lora
            } else {
                output.join(checkpoint::lora_file_name(&plan.name, step))
            }
        }),
        completed_final: completes_final && step == start_step,
        first_loss: records.first().map(|r| r.loss),
        final_loss: (!records.is_empty()).then(|| {
            records[records.len() - tail.min(records.len())..].iter().map(|r| r.loss).sum::<f32>() / tail as f32
        }),
        seconds: started.elapsed().as_secs_f64(),
        interrupted: !finished,
        text_encoder_loaded,
        vae_reloads: vae.reloads(),
        offloaded_bytes,
        items,
    })
}

/// Setup: the output folder, locked for this run (one run per folder), cleared of a crashed save's
/// partial files, with the resolved job copied in (what ran, next to what it produced).
fn open_output(job: &LoadedJob) -> Result<run_lock::RunLock> {
    let output = &job.plan.output_dir;
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    let lock = run_lock::acquire(output)?;
    checkpoint::remove_partial_files(output)?;
    let yaml = serde_yaml::to_string(&job.file).map_err(|e| Error::Invalid(format!("job copy: {e}")))?;
    checkpoint::write_atomic(&output.join("config.yaml"), yaml.as_bytes())?;
    Ok(lock)
}

/// Setup: the `datasets:` panel, seeded with the run seed (bucketing, caption shuffles); problems
/// that skip an image are warnings, not errors.
fn load_datasets(plan: &TrainJob, seed: u64) -> Result<DatasetSet> {
    let mut dataset_options = plan.dataset_options.clone();
    dataset_options.seed = seed;
    let set = DatasetSet::load(&plan.datasets, &dataset_options)?;
    for problem in set.problems() {
        eprintln!("warning: {problem}");
    }
    Ok(set)
}

/// The sample prompts with `[trigger]` replaced, as they are encoded and rendered.
fn sample_prompt_texts(plan: &TrainJob) -> Vec<String> {
    let trigger = plan.trigger_word.as_deref().unwrap_or("");
    plan.sample.prompts.iter().map(|p| p.prompt.replace("[trigger]", trigger).trim().to_string()).collect()
}

/// Setup: unless captions are encoded as they are drawn, every caption a step can draw, its DOP class
/// variant and the sample prompts are encoded now and the text encoder is freed, so its memory is back
/// before the transformer's weights arrive (the two largest models never share the device).
/// The run's VAE: parked between uses with `model.low_vram` (then re-read with the pipeline's options).
fn vae_slot<B: AutodiffBackend>(
    vae: Vae<B::InnerBackend>,
    parked: Option<(ModelFiles, PipelineOptions)>,
    device: &B::Device,
) -> VaeSlot<B::InnerBackend> {
    let park = parked.is_some();
    let load: VaeLoader<B::InnerBackend> = match parked {
        Some((files, options)) => {
            let device = device.clone();
            Box::new(move || options_vae::<B::InnerBackend>(&files, &options, &device))
        }
        None => Box::new(|| Err(Error::Invalid("the VAE was dropped without `model.low_vram`".into()))),
    };
    VaeSlot::new(vae, load, park, device.clone())
}

/// The caption embeddings' source: with cached text embeddings, a bank on the first caching dataset's
/// `_t_e_cache/prompts` that loads the encoder only on a miss; otherwise the encoder loaded at start.
fn prompt_bank<B: AutodiffBackend>(
    set: &DatasetSet,
    transformer: &flux2_dit::Flux2Config,
    text_encoder: Option<MistralEncoder<B::InnerBackend>>,
    deferred: Option<(ModelFiles, PipelineOptions)>,
    identity: String,
    device: &B::Device,
) -> Result<PromptBank<B::InnerBackend>> {
    let Some((files, options)) = deferred else { return Ok(PromptBank::new(text_encoder, identity)) };
    let load = {
        let (files, options, transformer, device) =
            (files.clone(), options.clone(), transformer.clone(), device.clone());
        move || -> Result<MistralEncoder<B::InnerBackend>> {
            crate::out_of_memory::set_phase("loading the text encoder");
            let encoder = options_text_encoder::<B::InnerBackend>(&files, &options, &device)?
                .ok_or_else(|| Error::Invalid(format!("model `{}`: no text encoder to load", files.name)))?;
            check_text_encoder(&files, &transformer, &encoder)?;
            Ok(encoder)
        }
    };
    let folder = set
        .datasets()
        .iter()
        .find(|d| d.config().cache_text_embeddings)
        .and_then(|d| d.config().folder().map(|f| f.join(prompt_cache::FOLDER)));
    match folder {
        Some(dir) => {
            let layers = options.out_layers();
            let length = options.max_sequence_length.unwrap_or(mistral_encoder::DEFAULT_MAX_SEQUENCE_LENGTH);
            let disk = PromptDisk::new(dir, &identity, &layers, length);
            Ok(PromptBank::with_disk(disk, Box::new(load), identity))
        }
        None => Ok(PromptBank::new(Some(load()?), identity)),
    }
}

fn encode_captions_ahead<B: Backend>(
    plan: &TrainJob,
    set: &DatasetSet,
    bank: &mut PromptBank<B>,
    sample_prompts: &[String],
    progress: bool,
    device: &B::Device,
) -> Result<()> {
    if plan.train.text_encoder == TextEncoderPlan::Live {
        return Ok(());
    }
    let trigger = plan.trigger_word.as_deref();
    let mut captions: Vec<String> = sample_prompts.to_vec();
    captions.push(trigger.unwrap_or_default().to_string());
    for d in set.datasets().iter().filter(|_| plan.train.text_encoder == TextEncoderPlan::CachedEmbeddings) {
        let rules = d.caption_rules();
        if d.config().caption_dropout_rate > 0.0 {
            captions.push(rules.dropout_caption());
        }
        for si in 0..d.samples().len() {
            captions.push(set.caption(SampleRef { dataset: d.index(), sample: si })?.to_string());
        }
    }
    if let Some(dop) = &plan.train.dop {
        let variants: Vec<String> = captions.iter().map(|c| class_caption(c, trigger, &dop.class)).collect();
        captions.extend(variants);
    }
    captions.sort();
    captions.dedup();
    let pb = bar(captions.len() as u64, progress, "encoding captions {bar:30} {pos}/{len} {per_sec} eta {eta}");
    for c in &captions {
        bank.embed(c)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    bank.free_encoder();
    // Hand the encoder's memory back before the transformer's weights arrive.
    B::memory_cleanup(device);
    Ok(())
}

/// Logs the mean loss of the last `every` steps (the `logging:` panel's `log_every`).
fn report_window(log: &LossLog, every: u32, step: u32, total: u32) {
    let window = &log.records()[log.records().len().saturating_sub(every as usize)..];
    let Some(last) = window.last() else { return };
    let mean = window.iter().map(|r| r.loss).sum::<f32>() / window.len() as f32;
    eprintln!(
        "step {step}/{total}: loss {mean:.4} (mean of {}), lr {:.3e}, grad norm {:.3}",
        window.len(),
        last.lr,
        last.grad_norm
    );
}

/// What training changes: the transformer with its adapter, the optimizer over the adapter's factors
/// (in `lora_adapters::trainable`'s order), and the EMA copy of the factors when EMA is on. The phases
/// that change or read the trained weights are its methods.
struct Run<B: AutodiffBackend> {
    model: Flux2Transformer<B>,
    adapter: AdapterHandle,
    /// The factors' keys: saved with every training state, compared on resume.
    keys: Vec<String>,
    optimizer: Box<dyn Optimizer<B::InnerBackend>>,
    ema: Option<Vec<Tensor<B::InnerBackend, 2>>>,
}

/// One optimizer update's outcome, for the loss log.
struct Update {
    losses: Vec<StepLosses>,
    lr: f64,
    grad_norm: f64,
    /// Images trained on (every accumulated batch's items).
    items: u64,
}

impl<B: AutodiffBackend> Run<B> {
    /// Setup: the `network:` panel's adapter (seeded by the run seed) and the optimizer for its factors.
    fn new(plan: &TrainJob, mut model: Flux2Transformer<B>, seed: u64, device: &B::Device) -> Result<Self> {
        let mut lora_config = plan.lora.clone();
        lora_config.seed = seed;
        let adapter = lora_adapters::inject(&mut model, ADAPTER, &lora_config)?;
        let keys = trainable::keys(&model, ADAPTER);
        let optimizer = build_optimizer(&plan.train.optimizer, &trainable::shapes(&model, ADAPTER), device)?;
        let ema = plan.train.ema_decay.map(|_| trainable::values(&model, ADAPTER));
        Ok(Run { model, adapter, keys, optimizer, ema })
    }

    /// Resume: the newest complete training state in `output` (factors, optimizer state, EMA), when
    /// there is one and it belongs to this adapter layout. Returns the step to continue from (0: none).
    fn resume(&mut self, output: &Path, device: &B::Device) -> Result<u32> {
        let Some((step, dir)) = checkpoint::list_states(output).pop() else {
            return Ok(0);
        };
        let (state, optimizer_file) = checkpoint::load_state(&dir)?;
        if state.file.keys != self.keys {
            return Err(Error::Invalid(format!(
                "{}: the checkpoint's LoRA layers differ from this job's network settings; \
                 use a new training folder or name to start over",
                dir.display()
            )));
        }
        let to_device = |d: &TensorData| Tensor::<B::InnerBackend, 2>::from_data(d.clone(), device);
        trainable::set_values(&mut self.model, ADAPTER, state.adapter.iter().map(to_device).collect())?;
        self.optimizer.load_state(OptimizerState::load(&optimizer_file)?)?;
        if let (Some(e), Some(saved)) = (&mut self.ema, &state.ema) {
            *e = saved.iter().map(to_device).collect();
        }
        eprintln!("resuming from {} (step {step})", dir.display());
        Ok(step)
    }

    /// The start-up line: adapter size, optimizer and its state memory, seed.
    fn report(&self, plan: &TrainJob, seed: u64) {
        let params: usize = trainable::shapes(&self.model, ADAPTER).iter().map(|s| s[0] * s[1]).sum();
        let state = self.optimizer.state_bytes();
        eprintln!(
            "{}: {} LoRA layers, {params} trainable parameters ({} f32); optimizer {}: state {} ({:.2} bytes/parameter); seed {seed}",
            plan.name,
            self.keys.len() / 2,
            human_bytes(params as u64 * 4),
            self.optimizer.name(),
            human_bytes(state),
            state as f64 / params.max(1) as f64,
        );
        let m = &plan.model;
        if m.quantize.is_some() || m.quantize_te.is_some() || m.low_vram {
            let q =
                |q: Option<flux2_ops::quant::QType>| q.map_or_else(|| "not quantized".to_string(), |q| q.to_string());
            eprintln!(
                "memory: transformer {}, text encoder {}; {}",
                q(m.quantize),
                q(m.quantize_te),
                if m.low_vram {
                    "low_vram: the VAE is on the device only while it caches latents or renders previews (dropped and re-read from its file in between); the text encoder is freed after encoding captions"
                } else {
                    "the VAE stays on the device"
                }
            );
        }
    }

    /// Step: one optimizer update (`train:` panel): the accumulated batches' losses and gradients
    /// (averaged), clipping, the scheduled learning rate, the update, the EMA. Every draw comes from
    /// streams derived from (seed, batch number), so a resumed run replays an uninterrupted one.
    fn step(
        &mut self,
        plan: &TrainJob,
        data: &mut Data<'_, B>,
        step: u32,
        seed: u64,
        device: &B::Device,
    ) -> Result<Update> {
        let loss_options = LossOptions {
            loss_type: plan.train.loss,
            differential_guidance: plan.train.differential_guidance,
            dop_multiplier: plan.train.dop.as_ref().map(|d| d.multiplier),
        };
        let micro = batches_per_update(plan);
        let mut grads_sum: Option<Vec<Tensor<B::InnerBackend, 2>>> = None;
        let mut losses = Vec::new();
        let mut items = 0u64;
        for m in 0..micro {
            let n = u64::from(step) * u64::from(micro) + u64::from(m);
            let batch = data.train_batch(n, device, loss_options.dop_multiplier.is_some())?;
            let [b, c, h, w] = batch.latents.dims();
            items += b as u64;
            let mut noise_rng = Rng::with_stream(seed, 2 * n);
            let noise = gaussian_noise::<B, 4>(&mut noise_rng, [b, c, h, w], device);
            let noise = crate::apply_noise_offset(noise, plan.train.noise_offset, 1, &mut noise_rng)?;
            let mut sampler =
                TimestepSampler::with_rng(plan.train.timesteps.clone(), Rng::with_stream(seed, 2 * n + 1))?;
            let timesteps = sampler.sample(b, h * w)?;
            // Draws made on the device (LoRA dropout masks, drawn where the activations are instead of
            // copying activation-sized masks from the host) come from the backend's generator, seeded
            // per micro-step from the run's Rng: reproducible from the job seed, and a resume re-seeds it.
            let step_seed = Rng::derive(seed, "device", &[n]).next_u64();
            B::seed(device, step_seed);
            self.adapter.set_multiplier(batch.network_weight);
            let checkpointing = plan.train.gradient_checkpointing;
            crate::out_of_memory::set_phase(format!("training step {} forward", step + 1));
            let result = batch_loss(
                &self.model,
                &self.adapter,
                &batch,
                noise,
                &timesteps,
                &loss_options,
                step_seed,
                checkpointing,
            );
            self.adapter.set_multiplier(1.0);
            let (loss, values) = result?;
            crate::out_of_memory::set_phase(format!("training step {} backward", step + 1));
            let grads = loss.backward();
            let g = trainable::gradients(&self.model, ADAPTER, &grads);
            grads_sum = Some(match grads_sum {
                None => g,
                Some(acc) => acc.into_iter().zip(g).map(|(a, b)| a + b).collect(),
            });
            losses.push(values);
        }
        let mut grads = grads_sum.unwrap_or_default();
        if micro > 1 {
            grads = grads.into_iter().map(|g| g / f64::from(micro)).collect();
        }
        let grad_norm = clip_grad_norm(&mut grads, plan.train.max_grad_norm);
        if !grad_norm.is_finite() {
            // Stop before the optimizer folds NaN/inf into every factor and its state; the last
            // checkpoint is intact.
            return Err(Error::Invalid(format!(
                "step {}: the LoRA gradients are not finite (norm {grad_norm}) although the loss was; \
                 lower the learning rate or use fp32/bf16 instead of fp16, then resume from the last checkpoint",
                step + 1
            )));
        }
        let lr = plan.train.lr_schedule.lr_at(plan.train.optimizer.lr(), step);
        crate::out_of_memory::set_phase(format!("training step {} optimizer update", step + 1));
        let updated = self.optimizer.step(lr, trainable::values(&self.model, ADAPTER), grads)?;
        if let (Some(e), Some(decay)) = (&mut self.ema, plan.train.ema_decay) {
            *e = e.iter().zip(&updated).map(|(a, p)| a.clone() * decay + p.clone() * (1.0 - decay)).collect();
        }
        trainable::set_values(&mut self.model, ADAPTER, updated)?;
        Ok(Update { losses, lr, grad_norm, items })
    }

    /// Runs `f` with the weights a save holds: the EMA weights when EMA is on (the trained ones restored
    /// after), else the model as is.
    fn with_saved_weights<T>(&mut self, f: impl FnOnce(&Flux2Transformer<B>) -> T) -> Result<T> {
        match &self.ema {
            None => Ok(f(&self.model)),
            Some(ema) => {
                let trained = trainable::values(&self.model, ADAPTER);
                trainable::set_values(&mut self.model, ADAPTER, ema.clone())?;
                let out = f(&self.model);
                trainable::set_values(&mut self.model, ADAPTER, trained)?;
                Ok(out)
            }
        }
    }

    /// Writes the LoRA file (the EMA weights when EMA is on, else the trained ones).
    fn save_lora(&mut self, path: &Path, options: &SaveOptions) -> Result<()> {
        Ok(self.with_saved_weights(|m| lora_adapters::save(m, ADAPTER, path, options))??)
    }
}

/// Save: the `save:` panel. Step checkpoints (LoRA file + training state + keep-N + loss plot) and
/// the final LoRA.
struct Checkpoints<'a> {
    plan: &'a TrainJob,
    output: &'a Path,
    seed: u64,
}

impl Checkpoints<'_> {
    /// The LoRA file's layout, dtype and metadata at `step`.
    fn lora_options(&self, step: u32) -> SaveOptions {
        let plan = self.plan;
        SaveOptions {
            layout: plan.save.layout,
            dtype: plan.save.dtype.dtype(),
            metadata: LoraMetadata {
                rank: Some(plan.lora.rank),
                alpha: Some(plan.lora.alpha),
                base_model: Some(plan.model.name_or_path.clone()),
                trigger_word: plan.trigger_word.clone(),
                targets: Some(plan.lora.targets.label()),
                step: Some(u64::from(step)),
                extra: plan
                    .meta
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                    .collect(),
            },
        }
    }

    /// `<output>/<name>.safetensors`: the finished run's LoRA.
    fn final_lora(&self) -> PathBuf {
        self.output.join(format!("{}.safetensors", self.plan.name))
    }

    /// A step checkpoint: the step's LoRA file, then the training state (written last, so a state on
    /// disk always has its LoRA), then keep-N pruning and the loss plot. Returns the LoRA's path.
    fn save<B: AutodiffBackend>(&self, run: &mut Run<B>, step: u32, log: &LossLog) -> Result<PathBuf> {
        crate::out_of_memory::set_phase(format!("saving step {step}"));
        let lora = self.output.join(checkpoint::lora_file_name(&self.plan.name, step));
        run.save_lora(&lora, &self.lora_options(step))?;
        let host = |ts: &[Tensor<B::InnerBackend, 2>]| ts.iter().map(|t| t.to_data()).collect::<Vec<_>>();
        let state = TrainingState {
            file: StateFile {
                step,
                seed: self.seed,
                optimizer: run.optimizer.name().to_string(),
                keys: run.keys.clone(),
                has_ema: run.ema.is_some(),
            },
            adapter: host(&trainable::values(&run.model, ADAPTER)),
            ema: run.ema.as_ref().map(|e| host(e)),
        };
        checkpoint::save_state(self.output, &state, |path| run.optimizer.state().save(path))?;
        checkpoint::prune(self.output, &self.plan.name, self.plan.save.keep)?;
        write_plot(&self.output.join("loss.png"), &points(log))?;
        Ok(lora)
    }

    /// The final save at `step` (= the job's total): the last checkpoint when this process trained
    /// (else only the pruning a stopped final save may have missed), then the final LoRA file.
    fn save_final<B: AutodiffBackend>(
        &self,
        run: &mut Run<B>,
        step: u32,
        start_step: u32,
        log: &LossLog,
    ) -> Result<PathBuf> {
        if step > start_step {
            self.save(run, step, log)?;
        } else {
            checkpoint::prune(self.output, &self.plan.name, self.plan.save.keep)?;
        }
        crash_point("before-final-lora");
        let final_lora = self.final_lora();
        run.save_lora(&final_lora, &self.lora_options(step))?;
        Ok(final_lora)
    }
}

/// Preview: the `sample:` panel. The prompts' embeddings and reference images, prepared once; images
/// show what a save would hold (the EMA weights when EMA is on).
struct Previews<'a, B: AutodiffBackend> {
    prompts: Vec<PreparedPrompt<B::InnerBackend>>,
    vae: &'a VaeSlot<B::InnerBackend>,
    dir: PathBuf,
    format: ImageFormat,
    progress: bool,
}

impl<'a, B: AutodiffBackend> Previews<'a, B> {
    /// Embeds the sample prompts (from the bank when encoded ahead) and opens their reference images;
    /// none when sampling is disabled.
    fn prepare(
        plan: &TrainJob,
        bank: &mut PromptBank<B::InnerBackend>,
        texts: &[String],
        vae: &'a VaeSlot<B::InnerBackend>,
        progress: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let mut prompts = Vec::new();
        if !plan.sample.disabled {
            for (p, text) in plan.sample.prompts.iter().zip(texts) {
                let embeds = from_cached::<B::InnerBackend, 2>(&*bank.embed(text)?, device)?.unsqueeze_dim::<3>(0);
                let references = p.control_images.iter().map(ReferenceImage::open).collect::<Result<Vec<_>>>()?;
                let mut prompt = p.clone();
                prompt.prompt = text.clone();
                prompts.push(PreparedPrompt { prompt, embeds, references });
            }
        }
        Ok(Previews { prompts, vae, dir: plan.output_dir.join("samples"), format: plan.sample.format, progress })
    }

    /// Renders every prompt at `step` into `samples/`.
    fn render(&self, run: &mut Run<B>, step: u32) -> Result<()> {
        if self.prompts.is_empty() {
            return Ok(());
        }
        crate::out_of_memory::set_phase(format!("sampling previews at step {step}"));
        let pb = bar(self.prompts.len() as u64, self.progress, "sampling {bar:30} {pos}/{len} eta {eta}");
        let inner = run.with_saved_weights(|m| m.valid())?;
        self.vae.with(|vae| {
            previews::render(&inner, vae, &run.adapter, &self.prompts, &self.dir, step, self.format, |i, _| {
                pb.set_position(i as u64)
            })
        })??;
        self.vae.park();
        pb.finish_and_clear();
        Ok(())
    }
}

/// A test-only crash hook: when `FLUX2_TRAIN_CRASH_AT` names this point, the process aborts here (as a
/// `kill -9` would stop it), so tests can stop a child process at exact moments of the run.
fn crash_point(point: &str) {
    if std::env::var_os("FLUX2_TRAIN_CRASH_AT").is_some_and(|p| p == point) {
        eprintln!("FLUX2_TRAIN_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1048576 => format!("{:.1} KiB", b / 1024.0),
        1048576..1073741824 => format!("{:.1} MiB", b / 1048576.0),
        _ => format!("{:.2} GiB", b / 1073741824.0),
    }
}

fn points(log: &LossLog) -> Vec<(u32, f32)> {
    log.records().iter().map(|r| (r.step, r.loss)).collect()
}

fn mean_losses(losses: &[StepLosses], step: u32, lr: f64, grad_norm: f64, elapsed_s: f64) -> LossRecord {
    let n = losses.len().max(1) as f32;
    let loss = losses.iter().map(|l| l.loss).sum::<f32>() / n;
    let preservation =
        losses.iter().map(|l| l.preservation).collect::<Option<Vec<f32>>>().map(|v| v.iter().sum::<f32>() / n);
    LossRecord { step, loss, preservation, lr, grad_norm: grad_norm as f32, elapsed_s }
}

/// The start-up line of `layer_offloading`: what is in host memory, what stays on the device, and the
/// upload traffic per step, or why nothing was offloaded.
fn report_offloading<B: AutodiffBackend>(plan: &TrainJob, r: &flux2_dit::StorageReport) {
    let m = &plan.model;
    if m.offload_transformer == 0.0 && m.offload_text_encoder == 0.0 {
        return;
    }
    let gb = |b: u64| b as f64 / 1e9;
    if !flux2_ops::offload::is_accelerated::<B::InnerBackend>() {
        eprintln!(
            "offloading: nothing offloaded on this backend (host and device memory are the same memory on the CPU; \
             layer_offloading takes effect on CUDA)"
        );
        return;
    }
    if r.host_bytes == 0 {
        eprintln!(
            "offloading: no transformer block offloaded (layer_offloading_transformer_percent {}); text encoder: {:.0}% of its layers",
            m.offload_transformer,
            m.offload_text_encoder * 100.0
        );
        return;
    }
    eprintln!(
        "offloading: transformer blocks 1-{} of {} in host memory ({:.2} GB{}), {:.2} GB of Linear weights on the device; \
         {:.2} GB uploaded per step ({}); text encoder: {:.0}% of its layers",
        r.offloaded_blocks,
        r.blocks,
        gb(r.host_bytes),
        if r.pinned { ", page-locked" } else { "" },
        gb(r.device_bytes),
        gb(if plan.train.gradient_checkpointing { r.upload_bytes_per_step() } else { r.host_bytes }),
        if plan.train.gradient_checkpointing {
            "forward + recompute, each next block uploading while the current one computes"
        } else {
            "without gradient_checkpointing autodiff keeps every uploaded weight until the backward: the saving is lost"
        },
        m.offload_text_encoder * 100.0
    );
}
