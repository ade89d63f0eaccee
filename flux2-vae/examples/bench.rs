//! Time and peak memory of one encode or decode at full FLUX.2 width (random weights, deterministic input):
//!
//!     cargo run --release -p flux2-vae --example bench -- --mode encode|decode --size 1024
//!         [--dtype f32|bf16|f16] [--tile 512 --overlap 128] [--band-elements N]
//!         [--device cpu|cuda:N] [--repeat N] [--compare-cpu] [--conv backend|shifted-matmul]
//!
//! One mode per process so the peak resident set size (VmHWM, Linux) belongs to that mode alone. The heap
//! peak covers weights and activations (CPU) or only host-side buffers (GPU). `--compare-cpu` reruns on
//! the CPU backend with the same seeded weights and input and prints the relative difference.
//! Prints live heap bytes (counting allocator: what the computation needs) after building the model and
//! at the peak, and the same for the resident set size (adds what the system allocator keeps cached).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use flux2_vae::{Parts, TileOptions, Vae, VaeConfig};

/// Counts live heap bytes so the report shows what the computation needs, independent of how much
/// freed memory the system allocator keeps mapped (which is what RSS adds on top).
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.0} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "n/a".into())
}

/// Deterministic input values on the host (identical on every backend).
fn host_input(mode: &str, size: usize, f: usize, latent_c: usize) -> TensorData {
    if mode == "encode" {
        let v: Vec<f32> =
            (0..3 * size * size).map(|i| ((i as f32) * 0.013).sin() * ((i % 977) as f32 * 0.031).cos()).collect();
        TensorData::new(v, [1, 3, size, size])
    } else {
        let (h, w) = (size / f, size / f);
        let v: Vec<f32> =
            (0..latent_c * h * w).map(|i| ((i as f32) * 0.37).sin() * 1.7 + ((i % 131) as f32 * 0.11).cos()).collect();
        TensorData::new(v, [1, latent_c, h, w])
    }
}

struct Run {
    dims: [usize; 4],
    values: Vec<f32>,
    seconds: Vec<f64>,
}

fn run<B: Backend>(
    device: &B::Device,
    mode: &str,
    size: usize,
    dtype: DType,
    tiles: Option<TileOptions>,
    repeat: usize,
) -> Run {
    let parts = if mode == "encode" { Parts::EncoderOnly } else { Parts::DecoderOnly };
    let vae = Vae::<B>::random(VaeConfig::flux2(), device, dtype, parts, 0).expect("random VAE");
    let f = vae.config().latent_scale_factor();
    let input =
        Tensor::<B, 4>::from_data(host_input(mode, size, f, vae.config().patchified_channels()), (device, DType::F32));
    let mut seconds = Vec::new();
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let out = match (mode, &tiles) {
            ("encode", Some(t)) => vae.encode_image_tiled(input.clone(), t),
            ("encode", None) => vae.encode_image(input.clone()),
            ("decode", Some(t)) => vae.decode_latents_tiled(input.clone(), t),
            ("decode", None) => vae.decode_latents(input.clone()),
            (other, _) => panic!("--mode encode|decode, not {other}"),
        }
        .expect("VAE run");
        // Reading the result back waits for asynchronous backends.
        let values = out.clone().into_data().to_vec::<f32>().expect("f32 output");
        seconds.push(start.elapsed().as_secs_f64());
        last = Some((out.dims(), values));
    }
    let (dims, values) = last.expect("at least one run");
    Run { dims, values, seconds }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let mode = get("--mode").unwrap_or_else(|| "encode".into());
    let size: usize = get("--size").and_then(|s| s.parse().ok()).unwrap_or(1024);
    let repeat: usize = get("--repeat").and_then(|s| s.parse().ok()).unwrap_or(1);
    let dtype = match get("--dtype").as_deref() {
        Some("bf16") => DType::BF16,
        Some("f16") => DType::F16,
        _ if args.iter().any(|a| a == "--bf16") => DType::BF16,
        _ => DType::F32,
    };
    let tiles = get("--tile").and_then(|t| t.parse().ok()).map(|tile_size| TileOptions {
        tile_size,
        overlap: get("--overlap").and_then(|o| o.parse().ok()).unwrap_or(128),
    });
    if let Some(n) = get("--band-elements").and_then(|n| n.parse().ok()) {
        flux2_vae::set_band_elements(n);
    }
    if get("--conv").as_deref() == Some("shifted-matmul") {
        flux2_vae::set_conv_algorithm(flux2_vae::ConvAlgorithm::ShiftedMatmul);
    }
    let device = get("--device").unwrap_or_else(|| "cpu".into());
    let weights_rss = status_kib("VmRSS:");
    let result = match device.as_str() {
        "cpu" => run::<Flex>(&Default::default(), &mode, size, dtype, tiles, repeat),
        #[cfg(feature = "cuda")]
        d if d.starts_with("cuda:") => {
            let i = d["cuda:".len()..].parse().expect("cuda:N");
            run::<burn::backend::Cuda>(&burn::backend::cuda::CudaDevice::new(i), &mode, size, dtype, tiles, repeat)
        }
        other => panic!(
            "--device {other}: cpu{}",
            if cfg!(feature = "cuda") { " or cuda:N" } else { " (cuda:N needs --features cuda)" }
        ),
    };
    let times: Vec<String> = result.seconds.iter().map(|s| format!("{s:.2}s")).collect();
    println!(
        "device={device} mode={mode} size={size} dtype={dtype:?} tiles={tiles:?} out={:?} time={} \
         heap_peak={} (incl. weights) rss_before={} peak_rss={}",
        result.dims,
        times.join(","),
        mib(Some(PEAK.load(Ordering::Relaxed) as u64 / 1024)),
        mib(weights_rss),
        mib(status_kib("VmHWM:"))
    );
    if device != "cpu" && args.iter().any(|a| a == "--compare-cpu") {
        flux2_vae::set_conv_algorithm(flux2_vae::ConvAlgorithm::Backend);
        let cpu = run::<Flex>(&Default::default(), &mode, size, dtype, tiles, 1);
        let (mut diff, mut norm) = (0f64, 0f64);
        for (a, b) in result.values.iter().zip(&cpu.values) {
            diff += ((a - b) as f64).powi(2);
            norm += (*b as f64).powi(2);
        }
        println!(
            "{device} vs cpu (same weights and input): rel_err={:.3e} (cpu time {:.1}s)",
            (diff / norm).sqrt(),
            cpu.seconds[0]
        );
    }
}
