//! One LoRA training step of a FLUX.2 [dev] slice, timed (issue 9; numbers in docs/performance.md).
//!
//! ```sh
//! cargo run --release --features cuda -p examples --example bench_train_step              # full width, cuda:0
//! cargo run --release -p examples --example bench_train_step -- --small --device cpu       # CI-sized smoke run
//! ```
//! Options: `--small`, `--full` (the whole FLUX.2 [dev]: 8 double + 48 single blocks), `--double N`,
//! `--single N`, `--img HxW` (image token grid), `--txt N` (text tokens), `--ckpt` (block-level
//! gradient checkpointing, `flux2_dit::BlockCheckpointing`, what `gradient_checkpointing: true`
//! selects), `--qtype Q` (quantized base Linears, as `model.quantize`; docs/memory.md), `--offload P`
//! (the first share P of the blocks in host memory, uploaded ahead of use, as `layer_offloading`),
//! `--device cpu|cuda:N`, `--dtype bf16|f32` (base weights; adapters are f32), `--steps N`
//! (timed, default 12), `--warmup N` (default 3), `--breakdown` (phase timings plus micro-benchmarks
//! of the step's matmuls, attention and a square matmul ceiling), `--load FILE` (the base weights read
//! from a checkpoint whose config is the benchmarked one, through `Checkpoint::load_with` with the same
//! `--qtype`/`--offload` storage, instead of random weights: with a file from `sparse_checkpoint` this
//! measures loading's peak host memory at the real size, issue 17, `tools/bench/host_rss.sh`).
//!
//! Default (the slice): D=6144 (48 heads x 128), F=18432, 2 double + 6 single blocks, 64x64 = 4096
//! image + 512 text tokens, batch 1, LoRA rank 32 (alpha 32) on every Linear inside the blocks, random bf16 base weights,
//! the trainer's AdamW (`flow_train::optim::AdamW`, f32 moments; lr 1e-4, betas 0.9/0.999, eps 1e-8, weight
//! decay 1e-2) over the f32 factors, walked by `lora_adapters::trainable` as the trainer walks them, loss = MSE of the
//! prediction against a random target. The step is forward, backward, optimizer, then a device sync; the
//! median over the timed steps is reported. On CUDA the weights are drawn on the device
//! (`Flux2Transformer::random_on_device`: seconds for 32B parameters), on the CPU by `RandomSource`.
//!
//! Host memory: after building and after the timed steps, the process's peak resident set (`VmHWM`,
//! which counts the touched pages of a memory-mapped checkpoint) and anonymous resident memory
//! (`RssAnon`), from `/proc/self/status` (Linux; "n/a" elsewhere).
//!
//! Memory (CUDA): after the timed steps, one more step runs with the allocator sampled (after a device
//! sync) at every point where the step's memory can peak: after every block of the forward, after the
//! forward, after every recomputed block before its backward (with `--ckpt`), after the backward and
//! after the optimizer. "peak in use" is the maximum of cubecl's `bytes_in_use` over those samples,
//! "peak reserved" of `bytes_reserved` (what the pools hold from the driver); PyTorch's twin reports
//! `max_memory_allocated` / `max_memory_reserved`.
//!
//! FLOPs are counted analytically ("model FLOPs", no recompute): a frozen Linear (T tokens, i -> o) costs
//! 2·T·i·o forward and 2·T·i·o backward (input gradient only); its LoRA branch 2·T·r·(i+o) forward and
//! twice that backward (input and factor gradients); attention 4·H·L²·d forward and twice that
//! backward. Norms, RoPE, modulation and the optimizer are not counted.

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Distribution, Tensor};
use flow_train::optim::{AdamW, AdamWSettings, Optimizer};
use flux2_dit::{
    BaseStorage, BlockCheckpointing, Checkpoint, Flux2Config, Flux2Transformer, PositionIds, RandomSource,
};
use flux2_ops::host_memory::HostMemory;
use lora_adapters::{LoraConfig, Targets, inject, trainable};

/// Name of the benchmarked adapter inside the model.
const ADAPTER: &str = "bench";

/// AdamW's learning rate (constant: the benchmark has no schedule).
const LR: f64 = 1e-4;

struct Shape {
    config: Flux2Config,
    img_h: usize,
    img_w: usize,
    txt: usize,
    rank: usize,
}

/// The 2 + 6 block slice (`--full` widens it to the whole model).
fn full() -> Shape {
    let mut config = Flux2Config::dev();
    config.num_layers = 2;
    config.num_single_layers = 6;
    Shape { config, img_h: 64, img_w: 64, txt: 512, rank: 32 }
}

fn small() -> Shape {
    Shape { config: examples::small_config(), img_h: 16, img_w: 16, txt: 64, rank: 8 }
}

struct Args {
    small: bool,
    full: bool,
    double: Option<usize>,
    single: Option<usize>,
    img: Option<(usize, usize)>,
    txt: Option<usize>,
    ckpt: bool,
    /// Quantized base Linears (`--qtype qfloat8|float8|int8|uint4|...`, as `model.quantize`).
    qtype: Option<flux2_ops::quant::QType>,
    /// Share of the blocks offloaded to host memory (`--offload 0..1`, as `layer_offloading`).
    offload: f64,
    device: String,
    dtype: DType,
    steps: usize,
    warmup: usize,
    breakdown: bool,
    /// Base weights from this checkpoint instead of random ones (`--load FILE`).
    load: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        small: false,
        full: false,
        double: None,
        single: None,
        img: None,
        txt: None,
        ckpt: false,
        qtype: None,
        offload: 0.0,
        device: "cuda:0".into(),
        dtype: DType::BF16,
        steps: 12,
        warmup: 3,
        breakdown: false,
        load: None,
    };
    let mut it = std::env::args().skip(1);
    let mut device_given = false;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--small" => args.small = true,
            "--full" => args.full = true,
            "--ckpt" => args.ckpt = true,
            "--qtype" => {
                let name = value("--qtype")?;
                args.qtype = Some(flux2_ops::quant::QType::parse(&name).map_err(|e| format!("--qtype: {e}"))?);
            }
            "--offload" => args.offload = value("--offload")?.parse().map_err(|e| format!("--offload: {e}"))?,
            "--double" => args.double = Some(value("--double")?.parse().map_err(|e| format!("--double: {e}"))?),
            "--single" => args.single = Some(value("--single")?.parse().map_err(|e| format!("--single: {e}"))?),
            "--txt" => args.txt = Some(value("--txt")?.parse().map_err(|e| format!("--txt: {e}"))?),
            "--img" => {
                let v = value("--img")?;
                let (h, w) = v.split_once('x').ok_or(format!("--img {v}: expected HxW, e.g. 64x64"))?;
                let parse = |s: &str| s.parse::<usize>().map_err(|e| format!("--img {v}: {e}"));
                args.img = Some((parse(h)?, parse(w)?));
            }
            "--breakdown" => args.breakdown = true,
            "--load" => args.load = Some(value("--load")?.into()),
            "--device" => {
                args.device = value("--device")?;
                device_given = true;
            }
            "--dtype" => {
                args.dtype = match value("--dtype")?.as_str() {
                    "bf16" => DType::BF16,
                    "f32" => DType::F32,
                    other => return Err(format!("--dtype {other}: expected bf16 or f32")),
                }
            }
            "--steps" => args.steps = value("--steps")?.parse().map_err(|e| format!("--steps: {e}"))?,
            "--warmup" => args.warmup = value("--warmup")?.parse().map_err(|e| format!("--warmup: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !cfg!(feature = "cuda") && !device_given {
        args.device = "cpu".into();
    }
    if args.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    if args.small && args.full {
        return Err("--small and --full exclude each other".into());
    }
    if args.img.is_some_and(|(h, w)| h == 0 || w == 0) || args.txt == Some(0) {
        return Err("--img and --txt need at least one token".into());
    }
    Ok(args)
}

/// The benchmarked shape: the preset, then the explicit flags over it.
fn shape(args: &Args) -> Shape {
    let mut shape = if args.small { small() } else { full() };
    if args.full {
        shape.config.num_layers = 8;
        shape.config.num_single_layers = 48;
    }
    if let Some(n) = args.double {
        shape.config.num_layers = n;
    }
    if let Some(n) = args.single {
        shape.config.num_single_layers = n;
    }
    if let Some((h, w)) = args.img {
        (shape.img_h, shape.img_w) = (h, w);
    }
    if let Some(n) = args.txt {
        shape.txt = n;
    }
    shape
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_train_step: {e}");
            std::process::exit(2);
        }
    };
    if args.device == "cpu" {
        run::<Autodiff<burn::backend::Flex>>(&args, &Default::default(), None);
        return;
    }
    #[cfg(feature = "cuda")]
    if let Some(index) = args.device.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok()) {
        let device = burn::backend::cuda::CudaDevice::new(index);
        let probe: MemoryProbe = Box::new(move || cuda_memory(index));
        let guarded = flow_train::out_of_memory::guard(
            || run::<Autodiff<burn::backend::Cuda>>(&args, &device, Some(probe)),
            || flux2_ops::cuda::device::memory_info(index),
        );
        if let Err(oom) = guarded {
            eprintln!("bench_train_step: {oom} Lower the size (--double/--single/--img/--txt) or add --ckpt.");
            std::process::exit(3);
        }
        return;
    }
    eprintln!("bench_train_step: --device {}: expected cpu or cuda:N (cuda needs --features cuda)", args.device);
    std::process::exit(2);
}

/// (bytes in use, bytes reserved by the memory pools) on the device.
type MemoryProbe = Box<dyn Fn() -> (u64, u64)>;

#[cfg(feature = "cuda")]
fn cuda_memory(index: usize) -> (u64, u64) {
    use burn::cubecl::Runtime;
    let client = burn::cubecl::cuda::CudaRuntime::client(&burn::backend::cuda::CudaDevice::new(index));
    match client.memory_usage() {
        Ok(u) => (u.bytes_in_use, u.bytes_reserved),
        Err(_) => (0, 0),
    }
}

fn sync<B: Backend>(device: &B::Device) {
    if let Err(e) = B::sync(device) {
        panic!("device sync failed: {e:?}");
    }
}

/// Analytic model FLOPs of one step (see the file docs) and their split (linears, LoRA, attention).
fn step_flops<B: Backend>(model: &Flux2Transformer<B>, shape: &Shape) -> (f64, f64, f64) {
    let c = &shape.config;
    let (img, txt) = ((shape.img_h * shape.img_w) as f64, shape.txt as f64);
    let r = shape.rank as f64;
    let (mut base, mut lora) = (0.0, 0.0);
    for (path, l) in model.linears() {
        let tokens = if path.starts_with("single_blocks.") {
            img + txt
        } else if path.starts_with("double_blocks.") {
            if path.contains(".txt_") { txt } else { img }
        } else {
            continue;
        };
        let (i, o) = (l.in_features() as f64, l.out_features() as f64);
        base += 4.0 * tokens * i * o;
        if !l.adapters.is_empty() {
            lora += 6.0 * tokens * r * (i + o);
        }
    }
    let l = img + txt;
    let blocks = (c.num_layers + c.num_single_layers) as f64;
    let attention = blocks * 12.0 * c.num_attention_heads as f64 * l * l * c.attention_head_dim as f64;
    (base, lora, attention)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn run<B: AutodiffBackend>(args: &Args, device: &B::Device, memory: Option<MemoryProbe>) {
    let shape = shape(args);
    let c = &shape.config;
    let t0 = Instant::now();
    flow_train::out_of_memory::set_phase("building the model");
    let storage = BaseStorage { quantize: args.qtype, offload: args.offload };
    let mut model = match &args.load {
        Some(path) => load(path, c, args.dtype, storage, device),
        None if memory.is_some() => {
            B::seed(device, 0);
            Flux2Transformer::<B>::random_on_device_with(c, args.dtype, storage, device).map_err(|e| e.to_string())
        }
        None => Flux2Transformer::<B>::from_source_with(c, &mut RandomSource::new(0), args.dtype, storage, device)
            .map_err(|e| e.to_string()),
    }
    .unwrap_or_else(|e| panic!("building the model: {e}"));
    let lora =
        LoraConfig { rank: shape.rank, alpha: shape.rank as f32, dropout: 0.0, targets: Targets::Blocks, seed: 1 };
    inject(&mut model, ADAPTER, &lora).unwrap_or_else(|e| panic!("injecting LoRA: {e}"));
    let adapted = model.linears().iter().filter(|(_, l)| !l.adapters.is_empty()).count();
    let shapes = trainable::shapes(&model, ADAPTER);
    let n_factors: usize = shapes.iter().map(|[r, c]| r * c).sum();
    if let Some(probe) = &memory {
        sync::<B>(device);
        let (u, r) = probe();
        println!("memory after building: in use {:.2} GiB, reserved {:.2} GiB", gib(u), gib(r));
    }
    println!("host memory after building: {}", HostMemory::describe());
    if args.offload > 0.0 {
        let r = model.storage_report();
        println!(
            "offload: {} of {} blocks in host memory ({:.2} GiB, pinned={}), {:.2} GiB of Linear weights on the device",
            r.offloaded_blocks,
            r.blocks,
            gib(r.host_bytes),
            r.pinned,
            gib(r.device_bytes)
        );
    }
    println!(
        "model: D={} heads={}x{} F={} double={} single={} tokens={}+{} rank={} dtype={:?} ckpt={} adapted_linears={adapted} lora_params={n_factors} build={:.1}s fused_attention={} registered_gemm={}",
        c.inner_dim(),
        c.num_attention_heads,
        c.attention_head_dim,
        (c.inner_dim() as f64 * c.mlp_ratio) as usize,
        c.num_layers,
        c.num_single_layers,
        shape.img_h * shape.img_w,
        shape.txt,
        shape.rank,
        args.dtype,
        args.ckpt,
        t0.elapsed().as_secs_f64(),
        flux2_ops::fused_attention::is_registered::<B>(),
        flux2_ops::matmul::is_registered::<B>(),
    );

    let n_img = shape.img_h * shape.img_w;
    let normal = Distribution::Normal(0.0, 1.0);
    // Seeded, so the printed loss is comparable between runs of the same flags.
    B::seed(device, 2);
    let x = Tensor::<B, 3>::random([1, n_img, c.in_channels], normal, device);
    let ctx = Tensor::<B, 3>::random([1, shape.txt, c.joint_attention_dim], normal, device);
    let target = Tensor::<B, 3>::random([1, n_img, c.in_channels], normal, device);
    let t = Tensor::<B, 1>::from_floats([0.7], device);
    let g = Tensor::<B, 1>::from_floats([4.0], device);
    let rope = model.rope(&PositionIds::text(shape.txt), &PositionIds::image(shape.img_h, shape.img_w));
    // The trainer's AdamW (f32 moments: 8 bytes of state per factor element), with the settings above.
    let adamw = AdamWSettings { lr: LR, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 1e-2 };
    let mut opt = AdamW::<B::InnerBackend>::new(&adamw, &shapes, device);

    let mut forward_s = Vec::new();
    let mut backward_s = Vec::new();
    let mut optim_s = Vec::new();
    let mut step_s = Vec::new();
    let peak = std::cell::Cell::new((0u64, 0u64));
    let sample = || {
        if let Some(probe) = &memory {
            sync::<B>(device);
            let (u, r) = probe();
            let (pu, pr) = peak.get();
            peak.set((pu.max(u), pr.max(r)));
        }
    };
    let mut last_loss = 0.0f32;
    // The timed steps, then (CUDA) one untimed step with the allocator sampled inside it.
    let probe_step = usize::from(memory.is_some());
    for i in 0..args.warmup + args.steps + probe_step {
        let probing = i >= args.warmup + args.steps;
        flow_train::out_of_memory::set_phase(format!("training step {} (forward, backward, optimizer)", i + 1));
        let start = Instant::now();
        let phase = |v: &mut Vec<f64>, from: Instant| {
            if args.breakdown && !probing {
                sync::<B>(device);
                v.push(from.elapsed().as_secs_f64());
            }
        };
        let mut tape = args.ckpt.then(|| {
            let tape = BlockCheckpointing::new(&model, 0);
            if probing { tape.observe(sample) } else { tape }
        });
        let pred = match &mut tape {
            Some(tape) => tape.forward(x.clone(), ctx.clone(), t.clone(), Some(g.clone()), &rope),
            None => model.forward(x.clone(), ctx.clone(), t.clone(), Some(g.clone()), &rope),
        };
        let loss = (pred.cast(DType::F32) - target.clone()).square().mean();
        phase(&mut forward_s, start);
        if probing {
            sample();
        }
        let b_start = Instant::now();
        // Consumed whole (map_or_else), so the tape's borrow of the model ends here.
        let grads = tape.map_or_else(|| loss.clone().backward(), |tape| tape.backward(loss.clone()));
        let gs = trainable::gradients(&model, ADAPTER, &grads);
        drop(grads);
        phase(&mut backward_s, b_start);
        if probing {
            sample();
        }
        let o_start = Instant::now();
        let new =
            opt.step(LR, trainable::values(&model, ADAPTER), gs).unwrap_or_else(|e| panic!("optimizer step: {e}"));
        trainable::set_values(&mut model, ADAPTER, new).unwrap_or_else(|e| panic!("updating the factors: {e}"));
        phase(&mut optim_s, o_start);
        sync::<B>(device);
        let secs = start.elapsed().as_secs_f64();
        if probing {
            sample();
            continue;
        }
        if i + 1 == args.warmup + args.steps {
            last_loss = loss.into_scalar_f32();
        }
        if i >= args.warmup {
            step_s.push(secs);
        } else {
            println!("warm-up step {}: {:.1} ms", i + 1, secs * 1e3);
            forward_s.clear();
            backward_s.clear();
            optim_s.clear();
        }
    }
    let (peak_in_use, peak_reserved) = peak.get();
    let step = median(step_s.clone());
    let (base, lora_f, attn) = step_flops(&model, &shape);
    let total = base + lora_f + attn;
    println!(
        "step: median {:.1} ms over {} steps (min {:.1}, max {:.1}); loss {last_loss:.4}",
        step * 1e3,
        step_s.len(),
        step_s.iter().cloned().fold(f64::INFINITY, f64::min) * 1e3,
        step_s.iter().cloned().fold(0.0, f64::max) * 1e3
    );
    println!(
        "flops/step: {:.1} TFLOP (linears {:.1}, lora {:.2}, attention {:.1}); achieved {:.1} TFLOP/s",
        total / 1e12,
        base / 1e12,
        lora_f / 1e12,
        attn / 1e12,
        total / step / 1e12
    );
    if memory.is_some() {
        println!(
            "memory: peak in use {:.2} GiB, peak reserved {:.2} GiB (sampled inside one step)",
            gib(peak_in_use),
            gib(peak_reserved)
        );
    }
    if args.breakdown {
        println!(
            "phases (synced): forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms",
            median(forward_s) * 1e3,
            median(backward_s) * 1e3,
            median(optim_s) * 1e3
        );
        micro::<B>(&model, &shape, args.dtype, device, total, step);
    }
    println!("host memory after the steps: {}", HostMemory::describe());
    println!(
        "RESULT ours_ms={:.3} ours_peak_in_use_gib={:.3} ours_peak_reserved_gib={:.3} ours_tflops={:.2}",
        step * 1e3,
        gib(peak_in_use),
        gib(peak_reserved),
        total / step / 1e12
    );
}

/// The model read from the checkpoint `path` (`--load`), stored as `storage` says; the file's config
/// (from its shapes, or a `config.json` beside it) must be the benchmarked one.
fn load<B: Backend>(
    path: &std::path::Path,
    config: &Flux2Config,
    dtype: DType,
    storage: BaseStorage,
    device: &B::Device,
) -> Result<Flux2Transformer<B>, String> {
    let checkpoint = Checkpoint::open(path).map_err(|e| e.to_string())?;
    let file = &checkpoint.config;
    if file != config {
        return Err(format!(
            "--load {}: its config (D={}, {} double + {} single blocks) is not the benchmarked one (D={}, {} + {}): \
             choose it with --full, --small, --double, --single",
            path.display(),
            file.inner_dim(),
            file.num_layers,
            file.num_single_layers,
            config.inner_dim(),
            config.num_layers,
            config.num_single_layers
        ));
    }
    checkpoint.load_with(dtype, storage, device).map_err(|e| e.to_string())
}

trait ScalarF32 {
    fn into_scalar_f32(self) -> f32;
}

impl<B: Backend> ScalarF32 for Tensor<B, 1> {
    fn into_scalar_f32(self) -> f32 {
        use burn::tensor::ElementConversion;
        self.into_scalar().elem::<f32>()
    }
}

/// Median seconds of `f` over `reps` runs after one warm-up, syncing around each.
fn time<B: Backend>(device: &B::Device, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    sync::<B>(device);
    let mut v = Vec::new();
    for _ in 0..reps {
        let s = Instant::now();
        f();
        sync::<B>(device);
        v.push(s.elapsed().as_secs_f64());
    }
    median(v)
}

/// Where the step's time goes: the same matmuls and attention calls timed alone on the inner backend.
fn micro<B: AutodiffBackend>(
    model: &Flux2Transformer<B>,
    shape: &Shape,
    dtype: DType,
    device: &B::Device,
    flops: f64,
    step: f64,
) {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    let c = &shape.config;
    let normal = Distribution::Normal(0.0, 1.0);
    let (img, txt) = (shape.img_h * shape.img_w, shape.txt);
    let reps = 5;
    // Square-matmul ceiling.
    let n = if shape.config.inner_dim() >= 4096 { 8192 } else { 512 };
    let a = Tensor::<I<B>, 2>::random([n, n], normal, device).cast(dtype);
    let b = Tensor::<I<B>, 2>::random([n, n], normal, device).cast(dtype);
    let s = time::<I<B>>(device, reps, || {
        let _ = a.clone().matmul(b.clone());
    });
    let burn_ceiling = 2.0 * (n as f64).powi(3) / s / 1e12;
    println!("micro: Burn matmul {n}^3 {dtype:?}: {:.2} ms = {burn_ceiling:.1} TFLOP/s", s * 1e3);
    // The model's GEMM path (cuBLAS where registered): the ceiling MFU is measured against.
    let s = time::<I<B>>(device, reps, || {
        let _ = flux2_ops::matmul::matmul(a.clone(), b.clone());
    });
    let ceiling = 2.0 * (n as f64).powi(3) / s / 1e12;
    println!("micro: model matmul {n}^3 {dtype:?}: {:.2} ms = {ceiling:.1} TFLOP/s", s * 1e3);

    // Every base Linear of the blocks: forward x W^T and backward dY W (input gradient).
    let mut linear_s = 0.0;
    let mut linear_flops = 0.0;
    let mut seen: Vec<(usize, usize, usize, f64)> = Vec::new();
    for (path, l) in model.linears() {
        let tokens = if path.starts_with("single_blocks.") {
            img + txt
        } else if path.starts_with("double_blocks.") {
            if path.contains(".txt_") { txt } else { img }
        } else {
            continue;
        };
        let (i, o) = (l.in_features(), l.out_features());
        let secs = if let Some(&(_, _, _, s)) = seen.iter().find(|&&(t, a, b, _)| (t, a, b) == (tokens, i, o)) {
            s
        } else {
            let w = Tensor::<I<B>, 2>::random([o, i], normal, device).cast(dtype);
            let x = Tensor::<I<B>, 2>::random([tokens, i], normal, device).cast(dtype);
            let dy = Tensor::<I<B>, 2>::random([tokens, o], normal, device).cast(dtype);
            let s = time::<I<B>>(device, reps, || {
                let _ = flux2_ops::matmul::matmul(x.clone(), w.clone().transpose());
                let _ = flux2_ops::matmul::matmul(dy.clone(), w.clone());
            });
            println!(
                "micro: linear {tokens}x{i}->{o} fwd+dgrad {:.2} ms = {:.1} TFLOP/s",
                s * 1e3,
                4.0 * (tokens * i * o) as f64 / s / 1e12
            );
            seen.push((tokens, i, o, s));
            s
        };
        linear_s += secs;
        linear_flops += 4.0 * (tokens * i * o) as f64;
    }

    // One attention call forward + backward through the autodiff op, as in the step.
    let l = img + txt;
    let h = c.num_attention_heads;
    let d = c.attention_head_dim;
    let q = Tensor::<B, 4>::random([1, h, l, d], normal, device).cast(dtype);
    let k = Tensor::<B, 4>::random([1, h, l, d], normal, device).cast(dtype);
    let v = Tensor::<B, 4>::random([1, h, l, d], normal, device).cast(dtype);
    let fwd = time::<B>(device, reps, || {
        // No input requires grad: the op runs untracked.
        let _ = flux2_ops::attention::scaled_dot_product(q.clone(), k.clone(), v.clone());
    });
    let fwd_bwd = time::<B>(device, reps, || {
        let q = q.clone().require_grad();
        let k = k.clone().require_grad();
        let v = v.clone().require_grad();
        let out = flux2_ops::attention::scaled_dot_product(q.clone(), k.clone(), v.clone());
        let grads = out.cast(DType::F32).sum().backward();
        let _ = (q.grad(&grads), k.grad(&grads), v.grad(&grads));
    });
    let blocks = c.num_layers + c.num_single_layers;
    let attn_flops = 12.0 * (h * l * l * d) as f64;
    println!(
        "micro: attention [1,{h},{l},{d}] forward {:.2} ms, fwd+bwd {:.2} ms = {:.1} TFLOP/s (model FLOPs)",
        fwd * 1e3,
        fwd_bwd * 1e3,
        attn_flops / fwd_bwd / 1e12
    );
    let attn_s = fwd_bwd * blocks as f64;
    let rest = step - linear_s - attn_s;
    println!(
        "breakdown (step {:.1} ms): base-linear matmuls {:.1} ms ({:.0}%, {:.1} TFLOP/s), attention {:.1} ms ({:.0}%), everything else (LoRA, norms, RoPE, modulation, casts, optimizer) {:.1} ms ({:.0}%)",
        step * 1e3,
        linear_s * 1e3,
        100.0 * linear_s / step,
        linear_flops / linear_s / 1e12,
        attn_s * 1e3,
        100.0 * attn_s / step,
        rest * 1e3,
        100.0 * rest / step
    );
    println!("MFU vs measured matmul ceiling: {:.1}%", 100.0 * flops / step / 1e12 / ceiling);
}
