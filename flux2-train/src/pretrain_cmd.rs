//! `flux2-train pretrain-demo`: the recipe of the demo's base pipeline (see `flow_train::demo::pretrain`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::backend::Autodiff;
use flow_train::demo::{PretrainOptions, pretrain};

#[derive(clap::Args, Debug)]
pub struct PretrainArgs {
    /// The pipeline folder to write (diffusers layout).
    #[arg(long, default_value = "output/demo-base")]
    pub out: PathBuf,
    /// Autoencoder steps.
    #[arg(long, default_value_t = PretrainOptions::default().vae_steps)]
    pub vae_steps: usize,
    /// Images per autoencoder step.
    #[arg(long, default_value_t = PretrainOptions::default().vae_batch)]
    pub vae_batch: usize,
    /// Transformer steps.
    #[arg(long, default_value_t = PretrainOptions::default().transformer_steps)]
    pub transformer_steps: usize,
    /// Painted training scenes.
    #[arg(long, default_value_t = PretrainOptions::default().images)]
    pub images: usize,
    /// Images per step.
    #[arg(long, default_value_t = PretrainOptions::default().batch)]
    pub batch: usize,
    #[arg(long, default_value_t = PretrainOptions::default().seed)]
    pub seed: u64,
}

pub fn run(args: PretrainArgs) -> Result<ExitCode, String> {
    let options = PretrainOptions {
        vae_steps: args.vae_steps,
        vae_batch: args.vae_batch,
        transformer_steps: args.transformer_steps,
        images: args.images,
        batch: args.batch,
        seed: args.seed,
        ..PretrainOptions::default()
    };
    let start = Instant::now();
    let report = pretrain::<Autodiff<burn::backend::Flex>>(&args.out, &options, &Default::default())
        .map_err(|e| e.to_string())?;
    eprintln!(
        "pretrained the demo pipeline into {} in {:.0} s: autoencoder loss {:.4} ({:.0} s), data set encoded ({:.0} s), transformer loss {:.4} ({:.0} s)",
        args.out.display(),
        start.elapsed().as_secs_f64(),
        report.vae_loss,
        report.seconds[0],
        report.seconds[1],
        report.transformer_loss,
        report.seconds[2],
    );
    Ok(ExitCode::SUCCESS)
}
