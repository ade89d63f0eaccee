//! Loading streams the checkpoint: the heap never holds a second copy of the weights. A counting global
//! allocator records the peak heap while a ~100 MB f32 diffusers checkpoint (memory-mapped, so the file
//! itself is not heap) loads on the CPU backend; the peak must stay below the loaded model plus a few of
//! its largest tensors, far under the two model sizes a second full copy would need.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::DType;
use flux2_dit::{Flux2Config, Flux2Transformer, RandomSource, load, save_diffusers_folder};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn loading_holds_the_model_once_plus_a_few_tensors() {
    // D = 512 (4 heads x 128), MLP 3x, 2 double + 4 single blocks: ~25 M parameters, ~100 MB in f32,
    // largest tensor (a single block's fused linear1) ~9 MB.
    let config = Flux2Config {
        in_channels: 32,
        num_layers: 2,
        num_single_layers: 4,
        attention_head_dim: 128,
        num_attention_heads: 4,
        joint_attention_dim: 256,
        timestep_guidance_channels: 256,
        axes_dims_rope: vec![32, 32, 32, 32],
        ..Flux2Config::dev()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let device = Default::default();
    let model_bytes = {
        let model = Flux2Transformer::<Flex>::from_source(&config, &mut RandomSource::new(3), DType::F32, &device)
            .expect("random model");
        save_diffusers_folder(&model, dir.path(), DType::F32).expect("save");
        model.num_params() * 4
    };
    let inner = config.inner_dim();
    let mlp = (inner as f64 * config.mlp_ratio) as usize;
    let largest = (3 * inner + 2 * mlp) * inner * 4;

    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let model = load::<Flex>(dir.path(), DType::F32, &device).expect("load");
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let held = CURRENT.load(Ordering::Relaxed) - before;
    assert_eq!(model.num_params() * 4, model_bytes);
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "model {:.1} MiB, largest tensor {:.1} MiB, peak heap while loading {:.1} MiB, held after {:.1} MiB",
        mib(model_bytes),
        mib(largest),
        mib(peak),
        mib(held)
    );
    assert!(model_bytes > 20 * largest / 2, "the check needs a model much larger than its largest tensor");
    let bound = model_bytes + 3 * largest + (8 << 20);
    assert!(
        peak <= bound,
        "peak heap {:.1} MiB while loading exceeds model + 3 largest tensors + 8 MiB = {:.1} MiB",
        mib(peak),
        mib(bound)
    );
}
