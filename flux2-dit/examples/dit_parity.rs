//! Parity check against a fixture folder written by `tools/fixtures/gen_dit.py` (or anything in the same
//! layout, see the crate README):
//!
//! `cargo run --release -p flux2-dit --example dit_parity -- <dir> [<dir>...] [--device cpu|cuda:N] [--dtype f32|bf16]`
//!
//! `--device cuda:N` needs `--features cuda`. With `--dtype bf16` the model runs in bf16 and the
//! tolerance is 2e-2 (the f32 reference is compared against a bf16 computation).
//!
//! A `lora.safetensors` in the folder (any layout `lora-adapters` reads) is applied at scale 1.
//! Runs the forward in f32 on the CPU backend and prints `rel_err=<value>` (‖out−ref‖/‖ref‖) last; exits
//! non-zero above 1e-4 or on any error.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{backend::Backend, DType, Tensor};
use flux2_dit::compare::relative_error;
use flux2_dit::{Checkpoint, TensorStore};

pub const TOLERANCE: f64 = 1e-4;

/// Loads the fixture's transformer (applying `lora.safetensors` when present), runs it on the fixture
/// inputs and returns the relative error against `expected.safetensors`.
pub fn run_fixture<B: Backend>(dir: &Path, device: &B::Device) -> Result<f64, String> {
    run_fixture_dtype::<B>(dir, device, DType::F32)
}

/// [`run_fixture`] with the model in `dtype`.
pub fn run_fixture_dtype<B: Backend>(dir: &Path, device: &B::Device, dtype: DType) -> Result<f64, String> {
    let checkpoint = Checkpoint::open(&dir.join("transformer")).map_err(|e| e.to_string())?;
    let mut model = checkpoint.load::<B>(dtype, device).map_err(|e| e.to_string())?;
    let lora = dir.join("lora.safetensors");
    if lora.is_file() {
        lora_adapters::load_into(&mut model, &lora, "fixture", 1.0).map_err(|e| e.to_string())?;
    }
    let mut inputs = TensorStore::open(&[dir.join("inputs.safetensors")]).map_err(|e| e.to_string())?;
    let hidden: Tensor<B, 3> = inputs.read_tensor("hidden_states", device).map_err(|e| e.to_string())?;
    let encoder: Tensor<B, 3> = inputs.read_tensor("encoder_hidden_states", device).map_err(|e| e.to_string())?;
    model.check_inputs(&hidden.shape().dims::<3>(), &encoder.shape().dims::<3>()).map_err(|e| e.to_string())?;
    let timestep: Tensor<B, 1> = inputs.read_tensor("timestep", device).map_err(|e| e.to_string())?;
    let guidance: Option<Tensor<B, 1>> =
        if inputs.contains("guidance") { Some(inputs.read_tensor("guidance", device).map_err(|e| e.to_string())?) } else { None };
    let rope = model.rope(&inputs.read_position_ids("txt_ids").map_err(|e| e.to_string())?, &inputs.read_position_ids("img_ids").map_err(|e| e.to_string())?);
    let out = model.forward(hidden, encoder, timestep, guidance, &rope).cast(DType::F32);

    let mut expected = TensorStore::open(&[dir.join("expected.safetensors")]).map_err(|e| e.to_string())?;
    let reference = expected.read("sample", DType::F32).map_err(|e| e.to_string())?;
    relative_error(&out.into_data(), &reference)
}

#[allow(dead_code)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let dirs: Vec<&String> =
        args.iter().enumerate().filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--"))).map(|(_, a)| a).collect();
    if dirs.is_empty() {
        eprintln!("usage: parity <fixture dir>... [--device cpu|cuda:N] [--dtype f32|bf16]");
        std::process::exit(2);
    }
    let (dtype, tolerance) = match flag("--dtype").as_deref() {
        None | Some("f32") => (DType::F32, TOLERANCE),
        Some("bf16") => (DType::BF16, 2e-2),
        Some(other) => {
            eprintln!("--dtype {other}: expected f32 or bf16");
            std::process::exit(2);
        }
    };
    let device = flag("--device").unwrap_or_else(|| "cpu".into());
    let run = |dir: &Path| -> Result<f64, String> {
        if device == "cpu" {
            return run_fixture_dtype::<Flex>(dir, &Default::default(), dtype);
        }
        #[cfg(feature = "cuda")]
        if let Some(index) = device.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            return run_fixture_dtype::<burn::backend::Cuda>(dir, &burn::backend::cuda::CudaDevice::new(index), dtype);
        }
        Err(format!("--device {device}: expected cpu{}", if cfg!(feature = "cuda") { " or cuda:N" } else { " (rebuild with --features cuda for cuda:N)" }))
    };
    let mut worst = 0f64;
    for dir in dirs {
        match run(Path::new(dir)) {
            Ok(err) => {
                println!("{dir}: rel_err={err:.3e}");
                // Not `f64::max`: it drops NaN, and a NaN output must fail the check.
                if err.is_nan() || err > worst {
                    worst = err;
                }
            }
            Err(e) => {
                eprintln!("{dir}: error: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("rel_err={worst:.6e}");
    if worst.is_nan() || worst > tolerance {
        eprintln!("FAIL: rel_err above {tolerance}");
        std::process::exit(1);
    }
}
