//! Compares flux2-vae with a diffusers fixture folder (see `tools/fixtures/gen_vae.py`):
//!
//!     cargo run --release -p flux2-vae --example vae_parity -- <dir> [<dir>...] [--device cpu|cuda:N]
//!         [--dtype f32|bf16|f16] [--band-elements N] [--conv backend|shifted-matmul]
//!
//! Default: f32 on the CPU backend `burn::backend::Flex` (`cuda:N` needs `--features cuda`). Prints one
//! line per output and `rel_err=<max over all outputs>` last; exits 1 above the tolerance (1e-4 for f32,
//! 1e-1 for bf16/f16, about what PyTorch's own bf16 run gives on the tiny fixtures), 2 on errors.

use std::process::ExitCode;

use burn::backend::Flex;
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use flux2_vae::LoadOptions;
use flux2_vae::parity::{Comparison, run_fixture};

fn run<B: Backend>(dir: &str, device: &B::Device, dtype: DType) -> flux2_vae::Result<Vec<Comparison>> {
    run_fixture::<B>(dir, device, &LoadOptions::default().with_dtype(dtype))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let valued = ["--device", "--dtype", "--band-elements", "--conv"];
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let dirs: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !valued.contains(&args[i - 1].as_str())))
        .map(|(_, a)| a)
        .collect();
    if dirs.is_empty() {
        eprintln!(
            "usage: parity <fixture dir>... [--device cpu|cuda:N] [--dtype f32|bf16|f16] [--band-elements N] [--conv backend|shifted-matmul]"
        );
        return ExitCode::from(2);
    }
    if let Some(n) = flag("--band-elements").and_then(|n| n.parse().ok()) {
        flux2_vae::set_band_elements(n);
    }
    if flag("--conv").as_deref() == Some("shifted-matmul") {
        flux2_vae::set_conv_algorithm(flux2_vae::ConvAlgorithm::ShiftedMatmul);
    }
    let (dtype, tolerance) = match flag("--dtype").as_deref() {
        None | Some("f32") => (DType::F32, 1e-4),
        Some("bf16") => (DType::BF16, 1e-1),
        Some("f16") => (DType::F16, 1e-1),
        Some(other) => {
            eprintln!("--dtype {other}: expected f32, bf16 or f16");
            return ExitCode::from(2);
        }
    };
    let device = flag("--device").unwrap_or_else(|| "cpu".into());
    let mut worst = 0f64;
    for dir in dirs {
        let start = std::time::Instant::now();
        let result = match device.as_str() {
            "cpu" => run::<Flex>(dir, &Default::default(), dtype),
            #[cfg(feature = "cuda")]
            d if d.starts_with("cuda:") => match d["cuda:".len()..].parse::<usize>() {
                Ok(i) => run::<burn::backend::Cuda>(dir, &burn::backend::cuda::CudaDevice::new(i), dtype),
                Err(_) => {
                    eprintln!("--device {d}: expected cuda:N");
                    return ExitCode::from(2);
                }
            },
            other => {
                let hint = if cfg!(feature = "cuda") { " or cuda:N" } else { " (cuda:N needs --features cuda)" };
                eprintln!("--device {other}: expected cpu{hint}");
                return ExitCode::from(2);
            }
        };
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{dir}: error: {e}");
                return ExitCode::from(2);
            }
        };
        for c in &results {
            println!("{dir}: {:<8} shape={:?} rel_err={:.3e} max_abs={:.3e}", c.name, c.shape, c.rel_err, c.max_abs);
            // Not `f64::max`: it drops NaN, and a NaN output must fail the check.
            if c.rel_err.is_nan() || c.rel_err > worst {
                worst = c.rel_err;
            }
        }
        println!("{dir}: device={device} dtype={dtype:?} time={:.2}s", start.elapsed().as_secs_f64());
    }
    println!("tolerance={tolerance:e}");
    println!("rel_err={worst:e}");
    if worst.is_finite() && worst <= tolerance { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
