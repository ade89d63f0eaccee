//! `flux2-train train <job>` and `flux2-train demo`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use flow_train::job::{DeviceSpec, LoadedJob, load_job};
use flow_train::train::{RunOptions, TrainModels, TrainSummary, train};

/// Arguments of `train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// ai-toolkit job file (`.yaml`, `.yml`, `.json` or `.toml`).
    pub job: PathBuf,
    /// Start over instead of resuming from the newest checkpoint in the output folder.
    #[arg(long)]
    pub fresh: bool,
    /// Check the job file and print the plan, without loading models.
    #[arg(long)]
    pub check: bool,
    /// Run on this device instead of the job's `device` (cpu, cuda, cuda:N).
    #[arg(long)]
    pub device: Option<String>,
    /// Rehearse the job at the real size: every model gets seeded random weights drawn from its
    /// `config.json`, so the model folder needs configs and tokenizer only (`flux2-train configs`
    /// writes FLUX.2 [dev]'s). Shows whether the job fits the GPU, and its speed, without the weight
    /// files; what it trains is meaningless.
    #[arg(long, value_name = "SEED", num_args = 0..=1, default_missing_value = "0")]
    pub random_weights: Option<u64>,
}

/// Arguments of `configs`.
#[derive(clap::Args, Debug)]
pub struct ConfigsArgs {
    /// The folder to write (created if missing).
    pub dir: PathBuf,
}

/// Arguments of `demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the demo pipeline, images and outputs go.
    #[arg(long, default_value = flow_train::demo::DEMO_ROOT)]
    pub root: PathBuf,
    /// Start over instead of resuming.
    #[arg(long)]
    pub fresh: bool,
    /// Run on this device instead of the demo job's cpu (cuda, cuda:N with a `--features cuda` build).
    #[arg(long)]
    pub device: Option<String>,
}

/// Ctrl-C sets the flag; the trainer saves a checkpoint after the current step and stops. A second
/// Ctrl-C exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit now)");
    });
    flag
}

fn run_on<B: AutodiffBackend>(job: &LoadedJob, device: &B::Device, resume: bool) -> Result<TrainSummary, String> {
    use flow_train::out_of_memory;
    let memory = || match job.plan.device {
        #[cfg(feature = "cuda")]
        DeviceSpec::Auto => flux2_ops::cuda::device::memory_info(0),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda { index } => flux2_ops::cuda::device::memory_info(index),
        _ => None,
    };
    // A failed GPU allocation panics inside cubecl; the guard turns it into one message (see
    // flow_train::out_of_memory).
    out_of_memory::guard(
        || {
            out_of_memory::set_phase("loading the models");
            let models = TrainModels::<B>::load(job, device).map_err(|e| e.to_string())?;
            let options = RunOptions { resume, interrupt: interrupt_flag(), ..RunOptions::default() };
            train(job, models, options).map_err(|e| e.to_string())
        },
        memory,
    )
    .map_err(|oom| format!("{oom}\n{}", oom.training_advice()))?
}

fn run_job(job: &LoadedJob, resume: bool) -> Result<TrainSummary, String> {
    // `gradient_checkpointing` is block-level recomputation inside the trainer (flux2_dit::checkpoint),
    // the same on every backend; Burn's op-level `BalancedCheckpointing` raised memory (docs/performance.md).
    match job.plan.device {
        DeviceSpec::Cpu => run_on::<Autodiff<burn::backend::Flex>>(job, &Default::default(), resume),
        #[cfg(feature = "cuda")]
        DeviceSpec::Auto | DeviceSpec::Cuda { .. } => {
            let index = if let DeviceSpec::Cuda { index } = job.plan.device { index } else { 0 };
            run_on::<Autodiff<burn::backend::Cuda>>(job, &burn::backend::cuda::CudaDevice::new(index), resume)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Auto => {
            eprintln!("device auto: this build has no GPU backend (build with --features cuda); training on the CPU");
            let mut job = job.clone();
            job.plan.device = DeviceSpec::Cpu;
            run_job(&job, resume)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda { .. } => Err(format!(
            "device {}: this build has no CUDA backend; rebuild with `--features cuda` or set `device: cpu`",
            job.plan.device
        )),
    }
}

fn report(summary: &TrainSummary) {
    if summary.completed_final {
        eprintln!(
            "completed the final save of a run that stopped during it (step {}): LoRA {}",
            summary.steps,
            summary.lora.display()
        );
        return;
    }
    if !summary.interrupted && summary.start_step == summary.steps {
        eprintln!(
            "nothing to do: this job already trained its {} steps in {} (run with --fresh to train again)",
            summary.steps,
            summary.output_dir.display()
        );
        return;
    }
    let loss = |l: Option<f32>| l.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    eprintln!(
        "{} steps {}..{} in {:.0} s; loss {} -> {} (mean of the last 10%)\n  LoRA: {}\n  samples: {}\n  loss log: {}\n  loss plot: {}",
        if summary.interrupted { "stopped after" } else { "trained" },
        summary.start_step,
        summary.steps,
        summary.seconds,
        loss(summary.first_loss),
        loss(summary.final_loss),
        summary.lora.display(),
        summary.output_dir.join("samples").display(),
        summary.output_dir.join("loss_log.jsonl").display(),
        summary.output_dir.join("loss.png").display(),
    );
    if !summary.text_encoder_loaded {
        eprintln!("  text encoder: not loaded (every caption embedding came from the disk cache)");
    }
}

fn load(path: &Path, device: Option<&str>) -> Result<LoadedJob, String> {
    let mut job = load_job(path).map_err(|e| e.to_string())?;
    for warning in job.warnings() {
        eprintln!("{warning}");
    }
    if let Some(device) = device {
        job.plan.device = DeviceSpec::parse(device).map_err(|e| format!("--device: {e}"))?;
    }
    Ok(job)
}

/// The exit status of a finished run: 130 after Ctrl-C (what a shell reports for a process stopped by
/// SIGINT), so scripts can tell an interrupted run, which saved a checkpoint, from a completed one.
fn exit_status(summary: &TrainSummary) -> ExitCode {
    if summary.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS }
}

pub fn run(args: TrainArgs) -> Result<ExitCode, String> {
    let mut job = load(&args.job, args.device.as_deref())?;
    if let Some(seed) = args.random_weights {
        eprintln!(
            "--random-weights: every model is drawn at random (seed {seed}) from its config.json; the LoRA it trains is meaningless"
        );
        job.plan.model.random_weights = Some(seed);
    }
    if args.check {
        let plan = serde_json::to_string_pretty(&job.plan).map_err(|e| e.to_string())?;
        println!("{plan}");
        return Ok(ExitCode::SUCCESS);
    }
    let summary = run_job(&job, !args.fresh)?;
    report(&summary);
    Ok(exit_status(&summary))
}

pub fn run_demo(args: DemoArgs) -> Result<ExitCode, String> {
    let device = Default::default();
    let paths = flow_train::demo::prepare(&args.root).map_err(|e| e.to_string())?;
    eprintln!(
        "demo pipeline: {}\ndemo images: {}\njob: {}",
        paths.pipeline.display(),
        paths.dataset.display(),
        paths.job.display()
    );
    let job = load(&paths.job, args.device.as_deref())?;
    let summary = run_job(&job, !args.fresh)?;
    report(&summary);
    if !summary.interrupted {
        eprintln!("sampling the base and the LoRA on the same prompts and seeds...");
        let (result, strip) = flow_train::demo::compare::<burn::backend::Flex>(&paths, &job, &summary.lora, &device)
            .map_err(|e| e.to_string())?;
        eprintln!(
            "  trigger prompts, distance to the nearest training image: {:.3} without the LoRA -> {:.3} with it\n  \
             what the LoRA changes in a sample (same seed): {:.3} on trigger prompts, {:.3} on other prompts\n  \
             before/after: {}",
            result.trigger_before,
            result.trigger_after,
            result.trigger_change,
            result.others_change,
            strip.display()
        );
    }
    Ok(exit_status(&summary))
}

/// `configs`: FLUX.2 [dev]'s pipeline folder without weights, for `train --random-weights`.
pub fn run_configs(args: ConfigsArgs) -> Result<ExitCode, String> {
    use flow_train::demo::{DemoPipelineSpec, write_pipeline_configs};
    write_pipeline_configs(&args.dir, &DemoPipelineSpec::flux2_dev()).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote FLUX.2 [dev]'s configs and tokenizer (no weights) to {}; point a job's model.name_or_path at it and run `train --random-weights`",
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
