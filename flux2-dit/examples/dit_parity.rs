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
use burn::tensor::DType;
use flux2_test_support::dit_fixture::{TOLERANCE, run_fixture_dtype};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let dirs: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a)
        .collect();
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
        Err(format!(
            "--device {device}: expected cpu{}",
            if cfg!(feature = "cuda") { " or cuda:N" } else { " (rebuild with --features cuda for cuda:N)" }
        ))
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
