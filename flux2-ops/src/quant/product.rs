//! `x Wᵀ` with a quantized base `W`, whose backward dequantizes `W` again for the input gradient
//! instead of keeping the dequantized weight in the graph.
//!
//! With a plain `matmul(x, dequantize(W)ᵀ)` autodiff saves the dequantized bf16 weight for `dx = g W`:
//! a recomputed double block keeps about 2 GB of them until its backward, and without block
//! checkpointing the whole dense model comes back. This op's state is the quantized weight itself
//! (the codes and scales the layer already holds, or one upload of them when offloaded), and its
//! backward runs the same dequantization once more: one more layer-sized kernel per product (1.5 ms
//! for the largest FLUX.2 layer on an H100) for one layer of scratch instead of a block's.
//!
//! Frozen bases only: `W` gets no gradient (the adapters on top have their own ops).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

use super::weight::QuantizedWeight;
use crate::backend_registry::{OpMap, OpRegistry, for_builtin_backends};
use crate::matmul::matmul;

/// A backend's product with a quantized base (see the module docs).
pub trait QuantizedProductBackend: Backend {
    /// `x` [rows, in] times the dequantized `q` [out, in] transposed, in `dtype`.
    fn quantized_product(x: Tensor<Self, 2>, q: &QuantizedWeight<Self>, dtype: DType) -> Tensor<Self, 2> {
        matmul(x, q.dequantize(dtype).transpose())
    }
}

#[cfg(feature = "flex")]
impl QuantizedProductBackend for burn::backend::Flex {}
#[cfg(feature = "ndarray")]
impl QuantizedProductBackend for burn::backend::NdArray {}
#[cfg(feature = "cuda")]
impl QuantizedProductBackend for burn::backend::Cuda {}

#[derive(Debug)]
struct ProductBackward;

impl<B: Backend> Backward<B, 1> for ProductBackward {
    type State = (QuantizedWeight<B>, DType);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (q, dtype) = ops.state;
        if let Some(node) = node {
            let g = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grad));
            let dx = matmul(g, q.dequantize(dtype));
            grads.register::<B>(node.id, dx.into_primitive().tensor());
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> QuantizedProductBackend for Autodiff<B, C> {
    fn quantized_product(x: Tensor<Self, 2>, q: &QuantizedWeight<Self>, dtype: DType) -> Tensor<Self, 2> {
        let inner: QuantizedWeight<B> = q.valid();
        let x = x.into_primitive().tensor();
        let product =
            |x| matmul(Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(x)), inner.dequantize(dtype).transpose());
        let out = match ProductBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = product(x.primitive).into_primitive().tensor();
                prep.finish((inner, dtype), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(product(x.primitive).into_primitive().tensor()),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

type ProductFn<B> = fn(Tensor<B, 2>, &QuantizedWeight<B>, DType) -> Tensor<B, 2>;

static REGISTRY: OpRegistry = OpRegistry::new(builtin);

fn builtin(map: &mut OpMap) {
    #[allow(unused_macros)]
    macro_rules! add {
        ($b:ty) => {
            crate::backend_registry::insert::<$b, ProductFn<$b>>(
                map,
                <$b as QuantizedProductBackend>::quantized_product,
            );
        };
    }
    for_builtin_backends!(add);
    let _ = map;
}

/// Registers `B`'s product (this crate's backends and their autodiff wrappers are registered already).
pub fn register<B: QuantizedProductBackend>() {
    REGISTRY.insert::<B, ProductFn<B>>(B::quantized_product);
}

/// Whether `B` has the product op (else the dequantize-then-matmul fallback).
pub fn is_registered<B: Backend>() -> bool {
    REGISTRY.contains::<B>()
}

/// `x Wᵀ` for the quantized base `q`: through `B`'s op when registered (under autodiff: the weight is
/// dequantized again in the backward instead of being kept), else dequantize-then-matmul.
pub fn quantized_product<B: Backend>(x: Tensor<B, 2>, q: &QuantizedWeight<B>, dtype: DType) -> Tensor<B, 2> {
    match REGISTRY.get::<B, ProductFn<B>>() {
        Some(op) => op(x, q, dtype),
        None => matmul(x, q.dequantize(dtype).transpose()),
    }
}
