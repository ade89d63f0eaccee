//! The fused attention (tiled forward, recomputing backward) against plain matmul-softmax-matmul under
//! `Autodiff<Flex>`: outputs and dq, dk, dv agree to 2e-5 relative (max |difference| over max |reference|;
//! f32, only summation order differs), for lengths that are not multiples of the block sizes, with
//! several key blocks (online softmax) and with query length != key length.

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::softmax;
use burn::tensor::{Distribution, Tensor};
use flux2_ops::attention::scaled_dot_product;
use flux2_ops::fused_attention::{AttentionBlocks, fused_attention_with, inspect, is_registered};

type B = Autodiff<Flex>;

/// Relative tolerance for f32 (outputs and gradients are O(1); observed errors are ~1e-7).
const TOL: f32 = 2e-5;

fn plain(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, scale: f32) -> Tensor<B, 4> {
    softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3).matmul(v)
}

fn rel(a: &Tensor<B, 4>, b: &Tensor<B, 4>) -> f32 {
    let a = a.clone().inner();
    let b = b.clone().inner();
    let diff: f32 = (a - b.clone()).abs().max().into_scalar();
    let norm: f32 = b.abs().max().into_scalar();
    diff / norm
}

fn inputs(shape_q: [usize; 4], shape_k: [usize; 4]) -> [Tensor<burn::backend::Flex, 4>; 3] {
    let device = Default::default();
    let n = Distribution::Normal(0.0, 1.0);
    // Scores of several units, so the softmax is far from uniform and errors would show.
    let q = Tensor::random(shape_q, n, &device).mul_scalar(1.5);
    let k = Tensor::random(shape_k, n, &device).mul_scalar(1.5);
    let v = Tensor::random(shape_k, n, &device);
    [q, k, v]
}

/// Forward and the three gradients of both implementations for `sum(out * w)` with a random `w`.
fn compare(shape_q: [usize; 4], shape_k: [usize; 4], blocks: AttentionBlocks) -> [f32; 4] {
    let [q0, k0, v0] = inputs(shape_q, shape_k);
    let w: Tensor<B, 4> = Tensor::random(shape_q, Distribution::Normal(0.0, 1.0), &Default::default());
    let scale = 1.0 / (shape_q[3] as f32).sqrt();
    let run = |fused: bool| {
        let q = Tensor::<B, 4>::from_inner(q0.clone()).require_grad();
        let k = Tensor::<B, 4>::from_inner(k0.clone()).require_grad();
        let v = Tensor::<B, 4>::from_inner(v0.clone()).require_grad();
        let out = if fused {
            fused_attention_with(q.clone(), k.clone(), v.clone(), scale, blocks)
        } else {
            plain(q.clone(), k.clone(), v.clone(), scale)
        };
        let grads = out.clone().mul(w.clone()).sum().backward();
        let g = |t: &Tensor<B, 4>| Tensor::<B, 4>::from_inner(t.grad(&grads).expect("gradient"));
        [out, g(&q), g(&k), g(&v)]
    };
    let reference = run(false);
    let fused = run(true);
    [0, 1, 2, 3].map(|i| rel(&fused[i], &reference[i]))
}

fn assert_close(errs: [f32; 4], case: &str) {
    eprintln!("{case}: rel_err out/dq/dk/dv = {errs:?}");
    for (name, e) in ["out", "dq", "dk", "dv"].iter().zip(errs) {
        assert!(e <= TOL, "{case}: {name} rel_err {e:e} > {TOL:e}");
    }
}

#[test]
fn one_block_matches_plain_attention() {
    let errs = compare([2, 3, 24, 16], [2, 3, 24, 16], AttentionBlocks { query: 64, key: 64 });
    assert_close(errs, "single block");
}

#[test]
fn odd_lengths_and_key_blocks_match_plain_attention() {
    // 37 = 4 x 8 + 5 query rows, 37 = 3 x 11 + 4 keys: ragged last blocks, online softmax over 4 key blocks.
    let errs = compare([2, 3, 37, 16], [2, 3, 37, 16], AttentionBlocks { query: 8, key: 11 });
    assert_close(errs, "37 tokens, blocks 8x11");
}

#[test]
fn cross_lengths_match_plain_attention() {
    let errs = compare([1, 2, 13, 8], [1, 2, 29, 8], AttentionBlocks { query: 5, key: 7 });
    assert_close(errs, "13 queries x 29 keys, blocks 5x7");
}

#[test]
fn model_attention_uses_the_fused_op_and_saves_no_score_matrix() {
    assert!(is_registered::<B>(), "Autodiff<Flex> must be registered (flux2-dit feature `flex`)");
    let l = 40;
    let [q0, k0, v0] = inputs([1, 2, l, 8], [1, 2, l, 8]);
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
    assert!(b.query >= 16 && b.query % 16 == 0, "{b:?}");
    assert_eq!(AttentionBlocks::for_shape(2, 4, 30, 30), AttentionBlocks { query: 30, key: 30 });
}
