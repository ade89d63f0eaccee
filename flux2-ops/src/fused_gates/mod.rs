//! The transformer's two gating chains as single ops, for backends with kernels for them (CUDA:
//! `cuda/gates.rs`; CPU backends: the row loops of [`host`]):
//!
//! - [`swiglu`]: `silu(gate) * up` of the MLPs, reading both halves from the Linear's output in place;
//! - [`gated_residual`]: `x + gate * y`, every block's residual update with its [B, 1, D] gate.
//!
//! As tensor ops both are strided element-wise passes (the halves are narrowed views, the gate is
//! broadcast over tokens) with a bf16 rounding after each; here each is one pass that rounds where the
//! composition's last two ops do (`silu` before the product, the product before the sum). The
//! dispatchers give the input back (`Err`) when `B` has no kernel or the shapes or dtypes do not fit, and
//! the caller runs the composition, which stays the definition (flux2-dit's blocks).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor};

use crate::primitive::{is_kernel_float, unwrap, wrap};

#[cfg(any(feature = "flex", feature = "ndarray"))]
mod host;

/// A backend with kernels for the two chains (numerics in the module docs).
pub trait FusedGateBackend: Backend {
    /// `t` [rows, width] contiguous: `silu(t[:, start..start + n]) * t[:, start + n..start + 2n]`, [rows, n].
    fn swiglu(t: FloatTensor<Self>, start: usize, n: usize) -> FloatTensor<Self>;

    /// The gradient of `t` [rows, width] (zero outside the two ranges) for the output gradient [rows, n].
    fn swiglu_backward(t: FloatTensor<Self>, start: usize, n: usize, grad: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x + gate * y` for x, y [B, S, D] and gate [B, 1, D], one dtype; with `x` absent, `gate * y`
    /// (the gradient of y).
    fn gated_residual(x: Option<FloatTensor<Self>>, gate: FloatTensor<Self>, y: FloatTensor<Self>)
    -> FloatTensor<Self>;
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: FusedGateBackend> Backward<B, 1> for SwigluBackward {
    type State = (FloatTensor<B>, usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (t, start, n) = ops.state;
        if let Some(node) = node {
            grads.register::<B>(node.id, B::swiglu_backward(t, start, n, grad));
        }
    }
}

#[derive(Debug)]
struct GatedResidualBackward;

impl<B: FusedGateBackend> Backward<B, 3> for GatedResidualBackward {
    /// gate and y (each kept only when the other's gradient needs it).
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gate, node_y] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (gate, y) = ops.state;
        if let (Some(node), Some(y)) = (node_gate, y) {
            // Σ over tokens of g · y, [B, 1, D].
            let dtype = wrap::<B, 3>(y.clone()).dtype();
            let g = (wrap::<B, 3>(grad.clone()).cast(DType::F32) * wrap::<B, 3>(y).cast(DType::F32)).sum_dim(1);
            grads.register::<B>(node.id, unwrap(g.cast(dtype)));
        }
        if let (Some(node), Some(gate)) = (node_y, gate) {
            grads.register::<B>(node.id, B::gated_residual(None, gate, grad.clone()));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, grad);
        }
    }
}

impl<B: FusedGateBackend, C: CheckpointStrategy> FusedGateBackend for Autodiff<B, C> {
    fn swiglu(t: FloatTensor<Self>, start: usize, n: usize) -> FloatTensor<Self> {
        match SwigluBackward.prepare::<C>([t.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::swiglu(t.primitive.clone(), start, n);
                prep.finish((t.primitive, start, n), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(t.primitive, start, n)),
        }
    }

    fn swiglu_backward(t: FloatTensor<Self>, start: usize, n: usize, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::swiglu_backward(t.primitive, start, n, grad.primitive))
    }

    fn gated_residual(
        x: Option<FloatTensor<Self>>,
        gate: FloatTensor<Self>,
        y: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let Some(x) = x else {
            return Self::from_inner(B::gated_residual(None, gate.primitive, y.primitive));
        };
        let parents = [x.node.clone(), gate.node.clone(), y.node.clone()];
        let (gate_tracked, y_tracked) = (!gate.node.requirement.is_none(), !y.node.requirement.is_none());
        match GatedResidualBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::gated_residual(Some(x.primitive), gate.primitive.clone(), y.primitive.clone());
                let state = (y_tracked.then_some(gate.primitive), gate_tracked.then_some(y.primitive));
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gated_residual(Some(x.primitive), gate.primitive, y.primitive)),
        }
    }
}

type GatedResidualFn<B> = fn(Option<FloatTensor<B>>, FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>;

/// The registry's entry: both ops as plain functions of `B`.
struct Entry<B: Backend> {
    swiglu: fn(FloatTensor<B>, usize, usize) -> FloatTensor<B>,
    gated_residual: GatedResidualFn<B>,
}

fn entry<B: FusedGateBackend>() -> Entry<B> {
    Entry { swiglu: B::swiglu, gated_residual: B::gated_residual }
}

crate::backend_registry::fused_registry!(FusedGateBackend);

/// The CPU backends run [`host`]'s row loops.
#[cfg(any(feature = "flex", feature = "ndarray"))]
macro_rules! host_backend {
    ($b:ty) => {
        impl FusedGateBackend for $b {
            fn swiglu(t: FloatTensor<Self>, start: usize, n: usize) -> FloatTensor<Self> {
                host::swiglu::<Self>(t, start, n, None)
            }

            fn swiglu_backward(
                t: FloatTensor<Self>,
                start: usize,
                n: usize,
                grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                host::swiglu::<Self>(t, start, n, Some(grad))
            }

            fn gated_residual(
                x: Option<FloatTensor<Self>>,
                gate: FloatTensor<Self>,
                y: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                host::gated_residual::<Self>(x, gate, y)
            }
        }
    };
}
#[cfg(feature = "flex")]
host_backend!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
host_backend!(burn::backend::NdArray);

/// `silu(t[.., start..start + n]) * t[.., start + n..start + 2n]` over the last dimension of `t`
/// [B, S, W]; `Err(t)` when `B` has no kernel or the ranges do not fit.
pub fn swiglu<B: Backend>(t: Tensor<B, 3>, start: usize, n: usize) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let Some(entry) = REGISTRY.get::<B, Entry<B>>() else { return Err(t) };
    let [b, s, w] = t.shape().dims();
    if start + 2 * n > w || n == 0 || b * s == 0 || !is_kernel_float(t.dtype()) {
        return Err(t);
    }
    let out = (entry.swiglu)(unwrap(t.reshape([b * s, w])), start, n);
    Ok(wrap::<B, 2>(out).reshape([b, s, n]))
}

/// `x + gate * y` for x, y [B, S, D] and gate [B, 1, D] of one dtype; `Err((x, y))` when `B` has no kernel
/// or the shapes or dtypes do not fit.
pub fn gated_residual<B: Backend>(
    x: Tensor<B, 3>,
    gate: &Tensor<B, 3>,
    y: Tensor<B, 3>,
) -> Result<Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 3>)> {
    let Some(entry) = REGISTRY.get::<B, Entry<B>>() else { return Err((x, y)) };
    let [b, s, d] = x.shape().dims();
    let fits = y.shape().dims::<3>() == [b, s, d]
        && gate.shape().dims::<3>() == [b, 1, d]
        && y.dtype() == x.dtype()
        && gate.dtype() == x.dtype()
        && is_kernel_float(x.dtype());
    if !fits || b * s * d == 0 {
        return Err((x, y));
    }
    Ok(wrap((entry.gated_residual)(Some(unwrap(x)), unwrap(gate.clone()), unwrap(y))))
}
