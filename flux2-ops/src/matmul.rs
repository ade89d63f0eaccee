//! Matrix products through the backend's fastest GEMM, with their own autodiff op.
//!
//! Burn 0.21's CUDA matmul reaches about an eighth of cuBLAS on bf16 (docs/performance.md), and FLUX.2's
//! step time is mostly GEMMs: the frozen base Linears and the attention tiles. [`MatmulBackend`] lets a
//! backend supply its own GEMM ([`crate::cuda::gemm`] does for CUDA); `Autodiff<B>` gets an op whose backward
//! uses the same GEMM for both input gradients (Burn's own autodiff matmul would call Burn's kernel).
//!
//! Model code calls [`matmul`], which looks the backend up in a registry (the model is generic over
//! `B: Backend`) and falls back to `Tensor::matmul`. Only backends with a faster GEMM are registered:
//! CUDA and its `Autodiff` wrappers under the `cuda` feature; the CPU backends keep Burn's matmul and its
//! exact results.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

use crate::backend_registry::{OpMap, OpRegistry};

/// A backend with its own GEMM for `lhs @ rhs` over the last two dims (batch dims equal, same dtype),
/// and for the LoRA delta `(x Aᵀ · factor) Bᵀ` with its gradients (on CUDA: both products, or all four
/// gradient products, in one round trip between cubecl's stream and cuBLAS instead of one per product).
pub trait MatmulBackend: Backend {
    /// Defaults to Burn's matmul.
    fn fast_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }

    /// `(out, down)` with `down = x Aᵀ · factor` [rows, r] and `out = down Bᵀ` [rows, out], for x
    /// [rows, in], a [r, in], b [out, r].
    fn low_rank_forward(
        x: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        factor: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        low_rank_forward_products::<Self>(x, a, b, factor)
    }

    /// `[dx, da, db]` of [`MatmulBackend::low_rank_forward`]'s `out` for its gradient `g` [rows, out].
    fn low_rank_backward(
        x: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        down: FloatTensor<Self>,
        g: FloatTensor<Self>,
        factor: f32,
    ) -> [FloatTensor<Self>; 3] {
        low_rank_backward_products::<Self>(x, a, b, down, g, factor)
    }
}

/// [`MatmulBackend::low_rank_forward`] as separate `fast_matmul` calls (the default, and the CUDA
/// fallback for dtypes cuBLAS does not take).
pub(crate) fn low_rank_forward_products<B: MatmulBackend>(
    x: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    factor: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let down = B::fast_matmul(x, B::float_transpose(a));
    let down = B::float_mul_scalar(down, burn::tensor::Scalar::from(factor));
    (B::fast_matmul(down.clone(), B::float_transpose(b)), down)
}

/// [`MatmulBackend::low_rank_backward`] as separate `fast_matmul` calls.
pub(crate) fn low_rank_backward_products<B: MatmulBackend>(
    x: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    down: FloatTensor<B>,
    g: FloatTensor<B>,
    factor: f32,
) -> [FloatTensor<B>; 3] {
    let db = B::fast_matmul(B::float_transpose(g.clone()), down);
    let g_down = B::float_mul_scalar(B::fast_matmul(g, b), burn::tensor::Scalar::from(factor));
    let da = B::fast_matmul(B::float_transpose(g_down.clone()), x);
    [B::fast_matmul(g_down, a), da, db]
}

/// Keeps only what the gradients need: `rhs` for `d lhs = g rhsᵀ` when `lhs` is tracked, `lhs` for
/// `d rhs = lhsᵀ g` when `rhs` is tracked. For a frozen Linear that is the weight alone, which the model
/// holds anyway.
#[derive(Debug)]
struct MatmulBackward;

impl<B: MatmulBackend> Backward<B, 2> for MatmulBackward {
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_lhs, node_rhs] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (lhs, rhs) = ops.state;
        if let (Some(node), Some(rhs)) = (node_lhs, rhs) {
            grads.register::<B>(node.id, B::fast_matmul(grad.clone(), B::float_transpose(rhs)));
        }
        if let (Some(node), Some(lhs)) = (node_rhs, lhs) {
            grads.register::<B>(node.id, B::fast_matmul(B::float_transpose(lhs), grad));
        }
    }
}

impl<B: MatmulBackend, C: CheckpointStrategy> MatmulBackend for Autodiff<B, C> {
    fn fast_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        match MatmulBackward.prepare::<C>([lhs.node.clone(), rhs.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = (rhs_tracked.then(|| lhs.primitive.clone()), lhs_tracked.then(|| rhs.primitive.clone()));
                prep.finish(state, B::fast_matmul(lhs.primitive, rhs.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_matmul(lhs.primitive, rhs.primitive)),
        }
    }

    fn low_rank_forward(
        x: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        factor: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let prep = LowRankBackward.prepare::<C>([x.node.clone(), a.node.clone(), b.node.clone()]);
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, down) =
                    B::low_rank_forward(x.primitive.clone(), a.primitive.clone(), b.primitive.clone(), factor);
                let state = LowRankState { x: x.primitive, a: a.primitive, b: b.primitive, down: down.clone(), factor };
                (prep.finish(state, out), Self::from_inner(down))
            }
            OpsKind::UnTracked(prep) => {
                let (out, down) = B::low_rank_forward(x.primitive, a.primitive, b.primitive, factor);
                (prep.finish(out), Self::from_inner(down))
            }
        }
    }
}

/// What the LoRA op keeps for backward: its inputs (the adapter factors and the branch input, which
/// Burn's own matmuls would keep too) and the small [rows, r] intermediate.
#[derive(Clone, Debug)]
struct LowRankState<B: Backend> {
    x: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    down: FloatTensor<B>,
    factor: f32,
}

#[derive(Debug)]
struct LowRankBackward;

impl<B: MatmulBackend> Backward<B, 3> for LowRankBackward {
    type State = LowRankState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let [dx, da, db] = B::low_rank_backward(s.x, s.a, s.b, s.down, grad, s.factor);
        for (node, g) in ops.parents.into_iter().zip([dx, da, db]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

// The CPU backends keep Burn's matmul (the default); the impls let them be registered, for tests of the op.
#[cfg(feature = "flex")]
impl MatmulBackend for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl MatmulBackend for burn::backend::NdArray {}

type MatmulFn<B> = fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>;
type LowRankFn<B> = fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f32) -> (FloatTensor<B>, FloatTensor<B>);

/// The registered ops of one backend.
struct Entry<B: Backend> {
    matmul: MatmulFn<B>,
    low_rank: LowRankFn<B>,
}

impl<B: Backend> Clone for Entry<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for Entry<B> {}

fn entry<B: MatmulBackend>() -> Entry<B> {
    Entry { matmul: B::fast_matmul, low_rank: B::low_rank_forward }
}

static REGISTRY: OpRegistry = OpRegistry::new(builtin);

/// CUDA and its `Autodiff` wrappers when the `cuda` feature is on; nothing else by default.
fn builtin(map: &mut OpMap) {
    crate::backend_registry::cuda_entries!(map, entry);
}

/// Routes [`matmul`] for backend `B` through `B::fast_matmul` (register the `Autodiff` backend you train
/// with and its inner backend).
pub fn register<B: MatmulBackend>() {
    REGISTRY.insert::<B, Entry<B>>(entry::<B>());
}

/// Whether [`matmul`] uses a registered GEMM for `B`.
pub fn is_registered<B: Backend>() -> bool {
    REGISTRY.contains::<B>()
}

/// `lhs @ rhs` over the last two dims: the registered GEMM for `B` when the batch dims match, else Burn's
/// matmul (which also broadcasts).
pub fn matmul<B: Backend, const D: usize>(lhs: Tensor<B, D>, rhs: Tensor<B, D>) -> Tensor<B, D> {
    let same_batch = lhs.shape().dims::<D>()[..D - 2] == rhs.shape().dims::<D>()[..D - 2];
    match REGISTRY.get::<B, Entry<B>>() {
        Some(ops) if same_batch && lhs.dtype() == rhs.dtype() => {
            let out = (ops.matmul)(lhs.into_primitive().tensor(), rhs.into_primitive().tensor());
            debug_assert_eq!(out.rank(), D);
            Tensor::from_primitive(TensorPrimitive::Float(out))
        }
        _ => lhs.matmul(rhs),
    }
}

/// The LoRA delta `(x Aᵀ · factor) Bᵀ` for x [rows, in], `down` = A [r, in], `up` = B [out, r]: the
/// registered op for `B` when all three share a dtype (one differentiable op), else two matmuls.
pub fn low_rank<B: Backend>(x: Tensor<B, 2>, down: Tensor<B, 2>, up: Tensor<B, 2>, factor: f32) -> Tensor<B, 2> {
    let same_dtype = x.dtype() == down.dtype() && x.dtype() == up.dtype();
    match REGISTRY.get::<B, Entry<B>>() {
        Some(ops) if same_dtype => {
            let prim = |t: Tensor<B, 2>| t.into_primitive().tensor();
            let (out, _down) = (ops.low_rank)(prim(x), prim(down), prim(up), factor);
            Tensor::from_primitive(TensorPrimitive::Float(out))
        }
        _ => (x.matmul(down.transpose()) * factor).matmul(up.transpose()),
    }
}
