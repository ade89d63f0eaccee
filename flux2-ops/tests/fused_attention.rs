//! The fused attention against plain matmul-softmax-matmul under autodiff, on both CPU implementations:
//! `Flex` runs the host row loops (`fused_attention/host.rs`), `NdArray` the generic tensor-op version
//! (tiled forward with online softmax over key blocks, recomputing backward). Outputs and dq, dk, dv agree
//! to 2e-5 relative (max |difference| over max |reference|; f32, only summation order differs), for lengths
//! that are not multiples of the block sizes, with several key blocks and with query length != key length;
//! bf16 inputs on the host loops to 3e-2 of the f32 reference.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Distribution, Tensor};
use flux2_ops::attention::scaled_dot_product;
use flux2_ops::fused_attention::{
    AttentionBlocks, FusedAttentionBackend, fused_attention_with, inspect, is_registered,
};

type B = Autodiff<Flex>;

/// Relative tolerance for f32 (outputs and gradients are O(1); observed errors are ~1e-7).
const TOL: f32 = 2e-5;

fn plain<A: AutodiffBackend>(q: Tensor<A, 4>, k: Tensor<A, 4>, v: Tensor<A, 4>, scale: f32) -> Tensor<A, 4> {
    softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3).matmul(v)
}

fn rel<A: AutodiffBackend>(a: &Tensor<A, 4>, b: &Tensor<A, 4>) -> f32 {
    let a = a.clone().inner().cast(DType::F32);
    let b = b.clone().inner().cast(DType::F32);
    let diff: f32 = (a - b.clone()).abs().max().into_scalar().elem();
    let norm: f32 = b.abs().max().into_scalar().elem();
    diff / norm
}

use burn::tensor::ElementConversion;

fn inputs<A: AutodiffBackend>(shape_q: [usize; 4], shape_k: [usize; 4]) -> [Tensor<A::InnerBackend, 4>; 3] {
    let device = Default::default();
    let n = Distribution::Normal(0.0, 1.0);
    // Scores of several units, so the softmax is far from uniform and errors would show.
    let q = Tensor::random(shape_q, n, &device).mul_scalar(1.5);
    let k = Tensor::random(shape_k, n, &device).mul_scalar(1.5);
    let v = Tensor::random(shape_k, n, &device);
    [q, k, v]
}

/// Forward and the three gradients of both implementations for `sum(out * w)` with a random `w`, the
/// fused one on inputs in `dtype`, the plain one in f32 on the same (rounded) values.
fn compare<A>(shape_q: [usize; 4], shape_k: [usize; 4], blocks: AttentionBlocks, dtype: DType) -> [f32; 4]
where
    A: AutodiffBackend + FusedAttentionBackend,
    A::Device: Default,
{
    let [q0, k0, v0] = inputs::<A>(shape_q, shape_k).map(|t| t.cast(dtype));
    let w: Tensor<A, 4> = Tensor::random(shape_q, Distribution::Normal(0.0, 1.0), &Default::default());
    let scale = 1.0 / (shape_q[3] as f32).sqrt();
    let run = |fused: bool| {
        let cast = |t: &Tensor<A::InnerBackend, 4>| if fused { t.clone() } else { t.clone().cast(DType::F32) };
        let q = Tensor::<A, 4>::from_inner(cast(&q0)).require_grad();
        let k = Tensor::<A, 4>::from_inner(cast(&k0)).require_grad();
        let v = Tensor::<A, 4>::from_inner(cast(&v0)).require_grad();
        let out = if fused {
            fused_attention_with(q.clone(), k.clone(), v.clone(), scale, blocks)
        } else {
            plain(q.clone(), k.clone(), v.clone(), scale)
        };
        let grads = out.clone().cast(DType::F32).mul(w.clone()).sum().backward();
        let g = |t: &Tensor<A, 4>| Tensor::<A, 4>::from_inner(t.grad(&grads).expect("gradient"));
        [out, g(&q), g(&k), g(&v)]
    };
    let reference = run(false);
    let fused = run(true);
    [0, 1, 2, 3].map(|i| rel(&fused[i], &reference[i]))
}

/// Both CPU implementations on one f32 case.
fn compare_both(shape_q: [usize; 4], shape_k: [usize; 4], blocks: AttentionBlocks, case: &str) {
    assert_close(compare::<B>(shape_q, shape_k, blocks, DType::F32), &format!("{case} (Flex, host loops)"), TOL);
    let tiled = compare::<Autodiff<NdArray>>(shape_q, shape_k, blocks, DType::F32);
    assert_close(tiled, &format!("{case} (NdArray, tensor ops)"), TOL);
}

fn assert_close(errs: [f32; 4], case: &str, tol: f32) {
    eprintln!("{case}: rel_err out/dq/dk/dv = {errs:?}");
    for (name, e) in ["out", "dq", "dk", "dv"].iter().zip(errs) {
        assert!(e <= tol, "{case}: {name} rel_err {e:e} > {tol:e}");
    }
}

#[test]
fn one_block_matches_plain_attention() {
    compare_both([2, 3, 24, 16], [2, 3, 24, 16], AttentionBlocks { query: 64, key: 64 }, "single block");
}

#[test]
fn odd_lengths_and_key_blocks_match_plain_attention() {
    // 37 = 4 x 8 + 5 query rows, 37 = 3 x 11 + 4 keys: ragged last blocks, online softmax over 4 key blocks.
    compare_both([2, 3, 37, 16], [2, 3, 37, 16], AttentionBlocks { query: 8, key: 11 }, "37 tokens, blocks 8x11");
}

#[test]
fn cross_lengths_match_plain_attention() {
    compare_both(
        [1, 2, 13, 8],
        [1, 2, 29, 8],
        AttentionBlocks { query: 5, key: 7 },
        "13 queries x 29 keys, blocks 5x7",
    );
}

#[test]
fn bf16_on_the_host_loops_matches_f32_plain_attention() {
    // Head dim 36: not a multiple of the dot product's 8 lanes.
    let errs = compare::<B>([1, 2, 45, 36], [1, 2, 45, 36], AttentionBlocks { query: 64, key: 64 }, DType::BF16);
    assert_close(errs, "bf16 45 tokens x 36 (Flex, host loops)", 3e-2);
}

#[test]
fn model_attention_uses_the_fused_op_and_saves_no_score_matrix() {
    assert!(is_registered::<B>(), "Autodiff<Flex> must be registered (flux2-dit feature `flex`)");
    let l = 40;
    let [q0, k0, v0] = inputs::<B>([1, 2, l, 8], [1, 2, l, 8]);
    let q = Tensor::<B, 4>::from_inner(q0).require_grad();
    let k = Tensor::<B, 4>::from_inner(k0).require_grad();
    let v = Tensor::<B, 4>::from_inner(v0).require_grad();
    inspect::take_saved_shapes();
    let out = scaled_dot_product(q.clone(), k, v);
    let _grads = out.sum().backward();
    let seen = inspect::take_saved_shapes();
    assert_eq!(seen.len(), 1, "one fused backward ran through scaled_dot_product");
    for shape in &seen[0] {
        let elems: usize = shape.iter().product();
        assert!(elems <= 2 * l * 8, "saved tensor {shape:?} is larger than O(L*d)");
        assert!(!(shape[2] == l && shape[3] == l), "saved an [L, L] tensor {shape:?}");
    }
}

#[test]
fn block_policy_bounds_the_score_block() {
    let b = AttentionBlocks::for_shape(1, 48, 4608, 4608);
    assert_eq!(b.key, 4608);
    assert!(48 * b.query * b.key <= flux2_ops::fused_attention::SCORE_BLOCK_ELEMENTS);
    assert!(b.query >= 16 && b.query.is_multiple_of(16), "{b:?}");
    assert_eq!(AttentionBlocks::for_shape(2, 4, 30, 30), AttentionBlocks { query: 30, key: 30 });
}

/// No keys (or no queries) is a degenerate call, not a crash: a zero output and zero gradients.
#[test]
fn empty_lengths_give_zeros_on_the_host_loops() {
    let device = Default::default();
    for (lq, lk) in [(5, 0), (0, 5)] {
        let q = Tensor::<B, 4>::zeros([1, 2, lq, 8], &device).require_grad();
        let k = Tensor::<B, 4>::zeros([1, 2, lk, 8], &device).require_grad();
        let v = Tensor::<B, 4>::zeros([1, 2, lk, 8], &device).require_grad();
        let out = fused_attention_with(q.clone(), k.clone(), v, 0.5, AttentionBlocks { query: 4, key: 4 });
        assert_eq!(out.dims(), [1, 2, lq, 8]);
        let grads = out.sum().backward();
        if lq > 0 {
            let dq: f32 = q.grad(&grads).expect("dq").abs().sum().into_scalar();
            assert_eq!(dq, 0.0);
        }
    }
}
