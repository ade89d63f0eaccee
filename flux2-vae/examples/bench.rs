//! Time and peak memory of one encode or decode at full FLUX.2 width (random weights, CPU backend Flex):
//!
//!     cargo run --release -p flux2-vae --example bench -- --mode encode --size 1024 [--bf16]
//!         [--tile 512 --overlap 128] [--band-elements N]
//!
//! One mode per process so the peak resident set size (VmHWM, Linux) belongs to that mode alone.
//! Prints live heap bytes (counting allocator: what the computation needs) after building the model and
//! at the peak, and the same for the resident set size (adds what the system allocator keeps cached).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{DType, Distribution, Tensor};
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let mode = get("--mode").unwrap_or_else(|| "encode".into());
    let size: usize = get("--size").and_then(|s| s.parse().ok()).unwrap_or(1024);
    let dtype = if args.iter().any(|a| a == "--bf16") { DType::BF16 } else { DType::F32 };
    let tiles = get("--tile").and_then(|t| t.parse().ok()).map(|tile_size| TileOptions {
        tile_size,
        overlap: get("--overlap").and_then(|o| o.parse().ok()).unwrap_or(128),
    });
    if let Some(n) = get("--band-elements").and_then(|n| n.parse().ok()) {
        flux2_vae::set_band_elements(n);
    }
    let device = Default::default();
    let parts = if mode == "encode" { Parts::EncoderOnly } else { Parts::DecoderOnly };
    let vae = Vae::<Flex>::random(VaeConfig::flux2(), &device, dtype, parts, 0).expect("random VAE");
    let weights_rss = status_kib("VmRSS:");
    let weights_heap = LIVE.load(Ordering::Relaxed);
    PEAK.store(weights_heap, Ordering::Relaxed);
    let start = Instant::now();
    let dims = match mode.as_str() {
        "encode" => {
            let image = Tensor::<Flex, 4>::random([1, 3, size, size], Distribution::Uniform(-1.0, 1.0), &device);
            let out = match &tiles {
                Some(t) => vae.encode_image_tiled(image, t),
                None => vae.encode_image(image),
            }
            .expect("encode");
            out.dims()
        }
        "decode" => {
            let f = vae.config().latent_scale_factor();
            let latents = Tensor::<Flex, 4>::random([1, 128, size / f, size / f], Distribution::Normal(0.0, 1.0), &device);
            let out = match &tiles {
                Some(t) => vae.decode_latents_tiled(latents, t),
                None => vae.decode_latents(latents),
            }
            .expect("decode");
            out.dims()
        }
        other => panic!("--mode encode|decode, not {other}"),
    };
    println!(
        "mode={mode} size={size} dtype={dtype:?} tiles={tiles:?} out={dims:?} time={:.1}s \
         heap_weights={} heap_peak={} rss_after_weights={} peak_rss={}",
        start.elapsed().as_secs_f64(),
        mib(Some(weights_heap as u64 / 1024)),
        mib(Some(PEAK.load(Ordering::Relaxed) as u64 / 1024)),
        mib(weights_rss),
        mib(status_kib("VmHWM:"))
    );
}
