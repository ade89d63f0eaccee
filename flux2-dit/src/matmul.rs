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

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

use crate::backend_registry::{OpMap, OpRegistry};

/// A backend with its own GEMM for `lhs @ rhs` over the last two dims (batch dims equal, same dtype).
pub trait MatmulBackend: Backend {
    /// Defaults to Burn's matmul.
    fn fast_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }
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
                let state =
                    (rhs_tracked.then(|| lhs.primitive.clone()), lhs_tracked.then(|| rhs.primitive.clone()));
                prep.finish(state, B::fast_matmul(lhs.primitive, rhs.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fast_matmul(lhs.primitive, rhs.primitive)),
        }
    }
}

// The CPU backends keep Burn's matmul (the default); the impls let them be registered, for tests of the op.
#[cfg(feature = "flex")]
impl MatmulBackend for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl MatmulBackend for burn::backend::NdArray {}

#[cfg(feature = "cuda")]
impl MatmulBackend for burn::backend::Cuda {
    fn fast_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        crate::cuda::gemm::matmul(lhs, rhs)
    }
}

type Entry<B> = fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>;

static REGISTRY: OpRegistry = OpRegistry::new(builtin);

/// CUDA and its `Autodiff` wrappers when the `cuda` feature is on; nothing else by default.
fn builtin(map: &mut OpMap) {
    #[cfg(feature = "cuda")]
    {
        macro_rules! add {
            ($b:ty) => {
                crate::backend_registry::insert::<$b, Entry<$b>>(map, <$b as MatmulBackend>::fast_matmul);
            };
        }
        crate::backend_registry::for_builtin_backends!(@autodiff add, burn::backend::Cuda);
    }
    let _ = map;
}

/// Routes [`matmul`] for backend `B` through `B::fast_matmul` (register the `Autodiff` backend you train
/// with and its inner backend).
pub fn register<B: MatmulBackend>() {
    REGISTRY.insert::<B, Entry<B>>(B::fast_matmul);
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
        Some(gemm) if same_batch && lhs.dtype() == rhs.dtype() => {
            let out = gemm(lhs.into_primitive().tensor(), rhs.into_primitive().tensor());
            debug_assert_eq!(out.rank(), D);
            Tensor::from_primitive(TensorPrimitive::Float(out))
        }
        _ => lhs.matmul(rhs),
    }
}
