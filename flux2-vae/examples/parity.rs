//! Compares flux2-vae with a diffusers fixture folder (see `tools/fixtures/gen_vae.py`):
//!
//!     cargo run --release -p flux2-vae --example parity -- <dir> [--bf16] [--band-elements N]
//!
//! Runs on the CPU backend `burn::backend::Flex` (f32 unless `--bf16`), prints one line per output and
//! `rel_err=<max over outputs>` last; exits 1 above 1e-4 (f32) / 1e-1 (bf16, about what PyTorch bf16 gives on the tiny fixtures), 2 on errors.

use std::process::ExitCode;

use burn::backend::Flex;
use burn::tensor::DType;
use flux2_vae::LoadOptions;
use flux2_vae::parity::run_fixture;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bf16 = args.iter().any(|a| a == "--bf16");
    let band = args.iter().position(|a| a == "--band-elements").and_then(|i| args.get(i + 1));
    if let Some(n) = band.and_then(|n| n.parse().ok()) {
        flux2_vae::set_band_elements(n);
    }
    let Some(dir) = args.iter().find(|a| !a.starts_with("--") && Some(*a) != band) else {
        eprintln!("usage: parity <fixture dir> [--bf16] [--band-elements N]");
        return ExitCode::from(2);
    };
    let (dtype, tolerance) = if bf16 { (DType::BF16, 1e-1) } else { (DType::F32, 1e-4) };
    let device = Default::default();
    let start = std::time::Instant::now();
    let results = match run_fixture::<Flex>(dir, &device, &LoadOptions::default().with_dtype(dtype)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut worst = 0f64;
    for c in &results {
        println!("{:<8} shape={:?} rel_err={:.3e} max_abs={:.3e}", c.name, c.shape, c.rel_err, c.max_abs);
        worst = worst.max(c.rel_err);
    }
    println!("dtype={dtype:?} time={:.2}s tolerance={tolerance:e}", start.elapsed().as_secs_f64());
    println!("rel_err={worst:e}");
    if worst.is_finite() && worst <= tolerance { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
