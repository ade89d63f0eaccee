//! Parity against a fixture folder written by `tools/fixtures/gen_text_encoder.py`:
//!
//! `cargo run --release -p mistral-encoder --example text_encoder_parity -- <dir> [--dtype f32|bf16] [--device cpu|cuda:N]`
//!
//! Requires identical input ids and attention mask, prints per-prompt errors and `rel_err=<value>` as the
//! last line (||ours - expected|| / ||expected|| over all embeddings), and exits non-zero when the tokens
//! differ or rel_err exceeds 1e-4 (bf16 compute is not expected to pass that bound). `--device cpu` (default)
//! runs `burn::backend::Flex`; `--device cuda:N` needs `--features cuda`.

#[path = "support/parity_check.rs"]
mod parity_check;

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::DType;

const TOLERANCE: f64 = 1e-4;

fn main() -> ExitCode {
    let mut dir = None;
    let mut dtype = DType::F32;
    let mut device = "cpu".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dtype" => match args.next().as_deref() {
                Some("f32") => dtype = DType::F32,
                Some("bf16") => dtype = DType::BF16,
                other => return usage(&format!("--dtype takes f32 or bf16, got {other:?}")),
            },
            "--device" => match args.next() {
                Some(d) => device = d,
                None => return usage("--device takes cpu or cuda:N"),
            },
            "-h" | "--help" => return usage(""),
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return usage(&format!("unexpected argument {arg:?}")),
        }
    }
    let Some(dir) = dir else {
        return usage("missing fixture folder");
    };

    let started = std::time::Instant::now();
    let result = if device == "cpu" {
        parity_check::check::<burn::backend::Flex>(&dir, dtype, &Default::default())
    } else {
        run_cuda(&dir, dtype, &device)
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!("fixture: {} ({:?} compute, {:.1} s)", dir.display(), dtype, started.elapsed().as_secs_f64());
    println!("embeds: {:?}", report.shape);
    match &report.token_mismatch {
        None => println!("tokens: input_ids and attention_mask identical"),
        Some(diff) => println!("tokens: MISMATCH: {diff}"),
    }
    for (i, e) in report.per_prompt.iter().enumerate() {
        println!("prompt {i}: rel_err {e:.3e}");
    }
    println!("max_abs_err={:.3e}", report.max_abs_err);
    println!("rel_err={:.3e}", report.rel_err);
    if report.token_mismatch.is_some() || report.rel_err.is_nan() || report.rel_err > TOLERANCE {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(feature = "cuda")]
fn run_cuda(dir: &std::path::Path, dtype: DType, device: &str) -> Result<parity_check::ParityReport, String> {
    match device.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
        Some(index) => {
            parity_check::check::<burn::backend::Cuda>(dir, dtype, &burn::backend::cuda::CudaDevice::new(index))
        }
        None => Err(format!("--device {device}: expected cpu or cuda:N")),
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_dir: &std::path::Path, _dtype: DType, device: &str) -> Result<parity_check::ParityReport, String> {
    Err(format!("--device {device}: expected cpu (rebuild with --features cuda for cuda:N)"))
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!("usage: parity <fixture-dir> [--dtype f32|bf16] [--device cpu|cuda:N]");
    ExitCode::from(2)
}
