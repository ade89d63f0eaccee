//! Memory held by the autodiff graph between forward and backward, measured with a counting allocator
//! (this file is its own test binary, with a single test, so no other test allocates meanwhile).
//!
//! L = 2048 tokens, one head of 8: the [L, L] f32 score matrix is 16 MiB while q, k, v and the output are
//! 64 KiB each. Plain matmul-softmax-matmul under `Autodiff<Flex>` keeps at least one [L, L] tensor alive
//! until backward; the fused op keeps O(L·d) and its tiled backward never allocates [L, L] at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, Tensor};
use flux2_ops::fused_attention::{AttentionBlocks, fused_attention_with};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

type B = Autodiff<Flex>;
const L: usize = 2048;
const SCORES: usize = L * L * 4;

/// (bytes retained from before the forward to after it, peak bytes above the start during forward+backward)
fn measure(fused: bool) -> (usize, usize) {
    let device = Default::default();
    let n = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<B, 4>::random([1, 1, L, 8], n, &device).require_grad();
    let k = Tensor::<B, 4>::random([1, 1, L, 8], n, &device).require_grad();
    let v = Tensor::<B, 4>::random([1, 1, L, 8], n, &device).require_grad();
    let start = LIVE.load(Ordering::SeqCst);
    PEAK.store(start, Ordering::SeqCst);
    let out = if fused {
        fused_attention_with(q.clone(), k.clone(), v.clone(), 0.35, AttentionBlocks { query: 128, key: 1024 })
    } else {
        softmax(q.clone().matmul(k.clone().swap_dims(2, 3)).mul_scalar(0.35), 3).matmul(v.clone())
    };
    let loss = out.sum();
    let retained = LIVE.load(Ordering::SeqCst).saturating_sub(start);
    let grads = loss.backward();
    assert!(q.grad(&grads).is_some() && k.grad(&grads).is_some() && v.grad(&grads).is_some());
    let peak = PEAK.load(Ordering::SeqCst).saturating_sub(start);
    (retained, peak)
}

#[test]
fn fused_graph_holds_no_score_matrix() {
    let (plain_retained, plain_peak) = measure(false);
    let (fused_retained, fused_peak) = measure(true);
    eprintln!(
        "plain: retained {plain_retained} B, peak {plain_peak} B; fused: retained {fused_retained} B, peak {fused_peak} B; [L,L] = {SCORES} B"
    );
    // The measurement sees the score matrix when it is there ...
    assert!(plain_retained >= SCORES, "plain attention retained only {plain_retained} B");
    // ... and the fused graph keeps far less than one [L, L] tensor, at every moment.
    assert!(fused_retained < SCORES / 8, "fused attention retained {fused_retained} B");
    assert!(fused_peak < SCORES / 2, "fused attention peaked at {fused_peak} B");
}
