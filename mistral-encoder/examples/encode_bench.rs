//! Time of encoding one prompt with the text encoder at full Mistral Small 3.x width (random weights, no
//! download): the FLUX.2 [dev] encode, hidden states 10/20/30 stacked, so layers 31..40 never run.
//!
//! `cargo run --release -p mistral-encoder --features cuda --example encode_bench -- --device cuda:0`
//!
//! Options: `--tokens N` (512), `--layers N` (30: the deepest layer FLUX.2 reads), `--dtype bf16|f32`,
//! `--qtype qfloat8|float8|int8|uint4|...` (quantized Linears, as `quantize_te` does),
//! `--runs N` (5, after one warm-up), `--small` (a 4-layer, 256-wide config for a CPU smoke run).
//! Prints one `encode_ms=<median>` line and the GPU memory in use after the runs (CUDA). The PyTorch twin
//! with the same flags is `tools/bench/encode_bench.py`.

use std::time::Instant;

use burn::tensor::{DType, backend::Backend};
use mistral_encoder::loader::build_text_model;
use mistral_encoder::{LoadPlan, MistralConfig, RandomWeights};

struct Args {
    device: String,
    tokens: usize,
    layers: usize,
    dtype: DType,
    runs: usize,
    small: bool,
    qtype: Option<flux2_ops::quant::QType>,
}

fn parse() -> Result<Args, String> {
    let mut a =
        Args { device: "cpu".into(), tokens: 512, layers: 30, dtype: DType::BF16, runs: 5, small: false, qtype: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| v.parse::<usize>().map_err(|e| format!("{name} {v}: {e}"));
        match flag.as_str() {
            "--device" => a.device = value("--device")?,
            "--tokens" => a.tokens = number(value("--tokens")?, "--tokens")?,
            "--layers" => a.layers = number(value("--layers")?, "--layers")?,
            "--runs" => a.runs = number(value("--runs")?, "--runs")?.max(1),
            "--dtype" => {
                a.dtype = match value("--dtype")?.as_str() {
                    "bf16" => DType::BF16,
                    "f32" => DType::F32,
                    other => return Err(format!("--dtype {other}: expected bf16 or f32")),
                }
            }
            "--small" => a.small = true,
            "--qtype" => a.qtype = Some(flux2_ops::quant::QType::parse(&value("--qtype")?).map_err(|e| e.to_string())?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn run<B: Backend>(args: &Args, device: &B::Device) -> Result<(), String> {
    let mut config = MistralConfig::mistral_small_3();
    if args.small {
        config = MistralConfig {
            hidden_size: 256,
            intermediate_size: 512,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 64,
            vocab_size: 1024,
            ..config
        };
    }
    let layers = args.layers.min(config.num_hidden_layers);
    let plan = LoadPlan { layers, final_norm: false, dtype: args.dtype, quantize: args.qtype, offload: 0.0 };
    let started = Instant::now();
    let model = build_text_model::<B, _>(&mut RandomWeights::new::<B>(0, device), "", &config, plan, device)
        .map_err(|e| e.to_string())?;
    B::sync(device).map_err(|e| format!("{e:?}"))?;
    eprintln!("built {layers} of {} layers in {:.1} s", config.num_hidden_layers, started.elapsed().as_secs_f64());
    let tokens = args.tokens;
    // Left padding as FLUX.2 pads: a 100-token prompt in a `tokens`-long row.
    let real = tokens.min(100);
    let ids: Vec<i64> = (0..tokens).map(|i| ((i * 7919) % (config.vocab_size - 1)) as i64 + 1).collect();
    let mask: Vec<i64> = (0..tokens).map(|i| i64::from(i >= tokens - real)).collect();
    // FLUX.2's hidden states 10/20/30 (the small config's 1/2/3), never the final normed output.
    let flux2 = if args.small { [1, 2, 3] } else { [10, 20, 30] };
    let requested: Vec<usize> = flux2.into_iter().map(|l| l.min(layers)).collect();
    let mut times = Vec::new();
    for run in 0..=args.runs {
        let t = Instant::now();
        let out = model.stacked_hidden_states(&ids, &mask, 1, tokens, &requested).map_err(|e| e.to_string())?;
        B::sync(device).map_err(|e| format!("{e:?}"))?;
        if run > 0 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        if run == args.runs {
            eprintln!("output {:?}", out.dims());
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "encode_ms={:.1} (median of {}; min {:.1}, max {:.1}) tokens={tokens} layers={layers} dtype={:?}",
        times[times.len() / 2],
        times.len(),
        times[0],
        times[times.len() - 1],
        args.dtype
    );
    Ok(())
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result =
        if args.device == "cpu" { run::<burn::backend::Flex>(&args, &Default::default()) } else { cuda(&args) };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "cuda")]
fn cuda(args: &Args) -> Result<(), String> {
    let index = args
        .device
        .strip_prefix("cuda:")
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or(format!("--device {}: expected cpu or cuda:N", args.device))?;
    run::<burn::backend::Cuda>(args, &burn::backend::cuda::CudaDevice::new(index))?;
    if let Some((free, total)) = flux2_ops::cuda::device::memory_info(index) {
        println!(
            "gpu_in_use_gib={:.2} (device total {:.1} GiB, incl. the allocator's reserve)",
            (total - free) as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn cuda(args: &Args) -> Result<(), String> {
    Err(format!("--device {}: this build has no CUDA (add --features cuda)", args.device))
}
