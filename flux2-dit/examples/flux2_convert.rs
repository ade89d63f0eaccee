//! Converts a FLUX.2 transformer checkpoint between the diffusers and BFL layouts.
//!
//! ```text
//! cargo run --release -p flux2-dit --example flux2_convert -- <input> <output> --to diffusers|bfl [--dtype f32|bf16] [--prefix model.diffusion_model.]
//! ```
//! `<input>` is anything `flux2_dit::load` accepts. For `--to diffusers`, `<output>` is a folder
//! (`config.json` + `diffusion_pytorch_model.safetensors`); for `--to bfl`, a `.safetensors` file (a
//! `config.json` is written beside it). Weights stream through one tensor at a time.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::backend::Flex;
use burn::tensor::DType;
use flux2_dit::{Checkpoint, save_bfl_file, save_diffusers_folder};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: flux2_convert <input> <output> --to diffusers|bfl [--dtype f32|bf16] [--prefix P]";
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a)
        .collect();
    let [input, output] = positional.as_slice() else { return Err(usage.into()) };
    let to = flag("--to").ok_or(usage)?;
    let dtype = match flag("--dtype").as_deref() {
        None | Some("bf16") => DType::BF16,
        Some("f32") => DType::F32,
        Some(other) => return Err(format!("--dtype {other}: expected f32 or bf16")),
    };
    let checkpoint = Checkpoint::open(&PathBuf::from(input)).map_err(|e| e.to_string())?;
    eprintln!("{input}: {:?} layout, {} parameters", checkpoint.source.layout, checkpoint.config.parameter_count());
    let model = checkpoint.load::<Flex>(dtype, &Default::default()).map_err(|e| e.to_string())?;
    let output = PathBuf::from(output);
    match to.as_str() {
        "diffusers" => save_diffusers_folder(&model, &output, dtype),
        "bfl" => {
            let config = output.with_file_name("config.json");
            std::fs::write(&config, model.config.to_json_string()).map_err(|e| format!("{}: {e}", config.display()))?;
            save_bfl_file(&model, &output, &flag("--prefix").unwrap_or_default(), dtype)
        }
        other => return Err(format!("--to {other}: expected diffusers or bfl")),
    }
    .map_err(|e| e.to_string())?;
    eprintln!("wrote {}", output.display());
    Ok(())
}
