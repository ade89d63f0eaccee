//! `flux2-train`: train FLUX.2 LoRAs from ai-toolkit job files, and sample images with them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod pretrain_cmd;
mod quantize_cmd;
mod sample_cmd;
mod train_cmd;

/// FLUX.2 [dev] LoRA trainer (Burn, no Python).
#[derive(Parser, Debug)]
#[command(name = "flux2-train", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a LoRA from an ai-toolkit job file (YAML, JSON or TOML). Resumes from the newest
    /// checkpoint in the job's output folder unless --fresh.
    Train(train_cmd::TrainArgs),
    /// Train the embedded demo: a tiny FLUX.2 pipeline and painted images generated on the spot
    /// (no downloads), a LoRA on CPU in minutes; writes the LoRA, samples, loss log and plot.
    Demo(train_cmd::DemoArgs),
    /// Generate one image from a FLUX.2 model (diffusers folder, Hugging Face repo or BFL file), with
    /// optional LoRAs and reference images; equal to diffusers' Flux2Pipeline for the same inputs.
    Sample(sample_cmd::SampleArgs),
    /// Write FLUX.2 [dev]'s pipeline folder with configs and tokenizer but no weights: the model of
    /// a `train --random-weights` rehearsal at the real size.
    Configs(train_cmd::ConfigsArgs),
    /// Write a bf16 transformer (or text encoder) once as a float8 file in ComfyUI's layout: half the
    /// bytes to read on every later run, and no quantizing while loading.
    Quantize(quantize_cmd::QuantizeArgs),
    /// Pretrain the demo's tiny base pipeline on painted shapes (the recipe of the weights the demo
    /// ships): the VAE as an autoencoder, then the whole transformer; CPU, minutes.
    PretrainDemo(pretrain_cmd::PretrainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train_cmd::run(args),
        Command::Demo(args) => train_cmd::run_demo(args),
        Command::Sample(args) => sample_cmd::run(args).map(|()| ExitCode::SUCCESS),
        Command::Configs(args) => train_cmd::run_configs(args),
        Command::Quantize(args) => quantize_cmd::run(args),
        Command::PretrainDemo(args) => pretrain_cmd::run(args),
    };
    match result {
        Ok(status) => status,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
