//! The fused element-wise ops of `flux2_ops::fused_norm` and `flux2_ops::fused_gates` (per-head RMSNorm +
//! RoPE, modulated LayerNorm, SwiGLU, gated residual) against the tensor-op compositions they replace,
//! forward and every gradient, on the GPU (the cases of `flux2_test_support::fused_op_cases`, plus
//! FLUX.2 [dev]'s full-size shapes; the CPU runs them in
//! `flux2-dit/tests/fused_ops.rs`):
//!
//! ```sh
//! FLUX2_FAST_KERNELS=1 cargo run --release -p examples --features cuda --example fused_ops_check -- --device cuda:0
//! ```
//! The CUDA kernels are opt-in (`FLUX2_FAST_KERNELS=1`) until this check has passed on a GPU; without it
//! every case fails with "no fused ... for this backend". Exits with status 1 on any failure.

use flux2_test_support::fused_op_cases;

fn main() {
    let device = std::env::args().skip_while(|a| a != "--device").nth(1).unwrap_or_else(|| "cuda:0".into());
    let results = run(&device);
    let mut ok = true;
    for (r, tol) in &results {
        ok &= r.passes(*tol);
        println!("{}", r.line(*tol));
    }
    if !ok {
        std::process::exit(1);
    }
}

#[cfg(feature = "cuda")]
fn run(device: &str) -> Vec<(fused_op_cases::CaseResult, [f32; 2])> {
    let Some(index) = device.strip_prefix("cuda:").and_then(|i| i.parse().ok()) else {
        eprintln!("--device {device}: expected cuda:N (the CPU runs these cases in cargo test)");
        std::process::exit(2);
    };
    let device = burn::backend::cuda::CudaDevice::new(index);
    let dtypes = [burn::tensor::DType::F32, burn::tensor::DType::BF16];
    fused_op_cases::all::<burn::backend::Autodiff<burn::backend::Cuda>>(&device, &dtypes, true)
}

#[cfg(not(feature = "cuda"))]
fn run(device: &str) -> Vec<(fused_op_cases::CaseResult, [f32; 2])> {
    eprintln!("--device {device}: this build has no CUDA (build with --features cuda)");
    std::process::exit(2);
}
