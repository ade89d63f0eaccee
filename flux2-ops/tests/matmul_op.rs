//! The registered-GEMM matmul path (`flux2_ops::matmul`) and its autodiff op, checked on the CPU by
//! registering `Autodiff<Flex>` (whose GEMM is Burn's own): the forward and both input gradients must
//! equal Burn's autodiff matmul, an untracked operand (a frozen weight) gets no gradient, and the frozen
//! Linear of the model trains its input the same way. On CUDA the same op runs cuBLAS
//! (`examples/examples/fused_attention_check.rs` compares it there).

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use flux2_ops::Linear;
use flux2_ops::matmul::{is_registered, matmul, register};

type B = Autodiff<Flex>;

fn max_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

fn random<const D: usize>(shape: [usize; D]) -> Tensor<Flex, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

#[test]
fn registered_matmul_matches_burn_forward_and_gradients() {
    // CPU backends keep Burn's matmul unless registered (this binary never registers NdArray).
    assert!(!is_registered::<Autodiff<burn::backend::NdArray>>());
    register::<B>();
    assert!(is_registered::<B>());

    // Batched 3-d product with a transposed right operand (the attention's K^T view).
    let a0 = random([3, 5, 7]);
    let b0 = random([3, 6, 7]);
    let w = random([3, 5, 6]);
    let run = |fast: bool| {
        let a = Tensor::<B, 3>::from_inner(a0.clone()).require_grad();
        let b = Tensor::<B, 3>::from_inner(b0.clone()).require_grad();
        let bt = b.clone().swap_dims(1, 2);
        let out = if fast { matmul(a.clone(), bt) } else { a.clone().matmul(bt) };
        let grads = (out.clone() * Tensor::from_inner(w.clone())).sum().backward();
        (out.inner(), a.grad(&grads).expect("lhs grad"), b.grad(&grads).expect("rhs grad"))
    };
    let (out_fast, da_fast, db_fast) = run(true);
    let (out_ref, da_ref, db_ref) = run(false);
    assert!(max_diff(out_fast, out_ref) < 1e-6);
    assert!(max_diff(da_fast, da_ref) < 1e-5);
    assert!(max_diff(db_fast, db_ref) < 1e-5);
}

#[test]
fn frozen_linear_gets_input_gradient_only() {
    register::<B>();
    let weight = random([4, 6]);
    let layer = Linear::<B>::new(Tensor::from_inner(weight.clone()));
    let x0 = random([2, 3, 6]);
    let x = Tensor::<B, 3>::from_inner(x0.clone()).require_grad();
    let y = layer.forward(x.clone());
    let grads = y.clone().sum().backward();
    let dx = x.grad(&grads).expect("input grad");
    assert!(layer.weight.val().grad(&grads).is_none(), "the frozen weight must get no gradient");
    // Reference: y = x W^T, dy = 1 => dx = 1 W.
    let y_ref = x0.clone().reshape([6, 6]).matmul(weight.clone().transpose()).reshape([2, 3, 4]);
    assert!(max_diff(y.inner(), y_ref) < 1e-5);
    let dx_ref = Tensor::<Flex, 2>::ones([6, 4], &Default::default()).matmul(weight).reshape([2, 3, 6]);
    assert!(max_diff(dx, dx_ref) < 1e-5);
}

#[test]
fn registered_low_rank_op_matches_two_matmuls_and_their_gradients() {
    register::<B>();
    let (x0, a0, b0, w) = (random([9, 12]), random([3, 12]), random([7, 3]), random([9, 7]));
    let factor = 0.37;
    let run = |fused: bool| {
        let x = Tensor::<B, 2>::from_inner(x0.clone()).require_grad();
        let a = Tensor::<B, 2>::from_inner(a0.clone()).require_grad();
        let b = Tensor::<B, 2>::from_inner(b0.clone()).require_grad();
        let out = if fused {
            flux2_ops::matmul::low_rank(x.clone(), a.clone(), b.clone(), factor)
        } else {
            x.clone().matmul(a.clone().transpose()).matmul(b.clone().transpose()) * factor
        };
        let grads = (out.clone() * Tensor::from_inner(w.clone())).sum().backward();
        let g = |t: &Tensor<B, 2>| t.grad(&grads).expect("gradient");
        [out.inner(), g(&x), g(&a), g(&b)]
    };
    for (fused, plain) in run(true).into_iter().zip(run(false)) {
        assert!(max_diff(fused, plain) < 1e-5);
    }
}
