//! The transformer's two normalization chains as single kernels (CUDA: `cuda/norm.rs`; CPU backends: the
//! row loops of [`host`]):
//!
//! - [`rms_norm_rope`]: per-head RMSNorm of queries or keys, then the interleaved-pair rotary embedding;
//! - [`modulated_layer_norm`]: `(1 + scale) LayerNorm(x) + shift`, the modulated input of every block.
//!
//! Written as tensor ops (flux2-dit's `norm.rs`, `rope.rs`, `modulation.rs`) each is a chain of about ten
//! element-wise kernels over f32 copies of a [tokens, 6144] activation, and autodiff saves most of the
//! intermediates: on the GPU the chains cost more time than the attention they feed. Here the forward reads
//! its input once and writes its output once; the backward recomputes the statistics from the saved input.
//!
//! The tensor-op compositions stay the definition: these kernels reproduce them, intermediate roundings to
//! the storage type included (the normalized value is rounded before the rotation or the modulation, as the
//! compositions' casts do), and backends without kernels run them. The dispatchers return their input
//! unchanged (`Err`) when `B` has no kernel or when the op cannot serve the call (a trainable RMSNorm
//! weight, mixed dtypes), so the caller falls back to the composition.

#[cfg(any(feature = "flex", feature = "ndarray"))]
mod host;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor};

use crate::primitive::{is_kernel_float, unwrap, wrap};

/// A backend with kernels for the two chains (see the module docs for the numerics).
pub trait FusedNormBackend: Backend {
    /// x [rows = B·H·S, d] contiguous in the storage dtype, weight [d] (same dtype), cos/sin [P, d] f32
    /// tables of which row `offset + (r mod seq)` rotates row r: `rope(RMSNorm(x) · weight)`.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_rope(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        seq: usize,
        offset: usize,
        eps: f32,
    ) -> FloatTensor<Self>;

    /// The input gradient of [`Self::rms_norm_rope`] (the weight is frozen).
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_rope_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        seq: usize,
        offset: usize,
        eps: f32,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// x [B, S, D], shift and scale [B, 1, D], all one dtype: `(1 + scale) LayerNorm(x) + shift`.
    fn modulated_layer_norm(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;

    /// The input gradient of [`Self::modulated_layer_norm`] (shift and scale gradients are reductions
    /// over tokens, computed by the autodiff op with tensor ops when they are needed).
    fn modulated_layer_norm_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f32,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// The RoPE op's saved input and constants.
#[derive(Clone, Debug)]
struct RopeState<B: Backend> {
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    seq: usize,
    offset: usize,
    eps: f32,
}

#[derive(Debug)]
struct RmsNormRopeBackward;

impl<B: FusedNormBackend> Backward<B, 1> for RmsNormRopeBackward {
    type State = RopeState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let s = ops.state;
        if let Some(node) = node {
            let dx = B::rms_norm_rope_backward(s.x, s.weight, s.cos, s.sin, s.seq, s.offset, s.eps, grad);
            grads.register::<B>(node.id, dx);
        }
    }
}

/// The LayerNorm op's saved input and scale (which of x, shift and scale want gradients, the parents say).
#[derive(Clone, Debug)]
struct LayerNormState<B: Backend> {
    x: FloatTensor<B>,
    scale: FloatTensor<B>,
    eps: f32,
}

#[derive(Debug)]
struct ModulatedLayerNormBackward;

impl<B: FusedNormBackend> Backward<B, 3> for ModulatedLayerNormBackward {
    type State = LayerNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_shift, node_scale] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let dtype = wrap::<B, 3>(s.scale.clone()).dtype();
        // Gradients of the [B, 1, D] shift and scale: sums over tokens of g and of g · LayerNorm(x).
        if let Some(node) = node_shift {
            let g = wrap::<B, 3>(grad.clone()).cast(DType::F32).sum_dim(1).cast(dtype);
            grads.register::<B>(node.id, unwrap(g));
        }
        if let Some(node) = node_scale {
            let normalized = layer_norm_f32(wrap::<B, 3>(s.x.clone()), f64::from(s.eps));
            let g = (wrap::<B, 3>(grad.clone()).cast(DType::F32) * normalized).sum_dim(1).cast(dtype);
            grads.register::<B>(node.id, unwrap(g));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::modulated_layer_norm_backward(s.x, s.scale, s.eps, grad));
        }
    }
}

/// Affine-free LayerNorm over the last dimension, computed and returned in f32: the definition the
/// modulated LayerNorm reproduces (flux2-dit's `norm::layer_norm` casts it back to the storage type) and
/// the factor of the scale gradient here.
pub fn layer_norm_f32<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let x = x.cast(DType::F32);
    let centered = x.clone() - x.mean_dim(D - 1);
    let var = centered.clone().square().mean_dim(D - 1);
    centered / (var + eps).sqrt()
}

impl<B: FusedNormBackend, C: CheckpointStrategy> FusedNormBackend for Autodiff<B, C> {
    fn rms_norm_rope(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        seq: usize,
        offset: usize,
        eps: f32,
    ) -> FloatTensor<Self> {
        let (weight, cos, sin) = (weight.primitive, cos.primitive, sin.primitive);
        match RmsNormRopeBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out =
                    B::rms_norm_rope(x.primitive.clone(), weight.clone(), cos.clone(), sin.clone(), seq, offset, eps);
                prep.finish(RopeState { x: x.primitive, weight, cos, sin, seq, offset, eps }, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm_rope(x.primitive, weight, cos, sin, seq, offset, eps)),
        }
    }

    fn rms_norm_rope_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        seq: usize,
        offset: usize,
        eps: f32,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let out = B::rms_norm_rope_backward(
            x.primitive,
            weight.primitive,
            cos.primitive,
            sin.primitive,
            seq,
            offset,
            eps,
            grad.primitive,
        );
        Self::from_inner(out)
    }

    fn modulated_layer_norm(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        let parents = [x.node.clone(), shift.node.clone(), scale.node.clone()];
        match ModulatedLayerNormBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::modulated_layer_norm(x.primitive.clone(), shift.primitive, scale.primitive.clone(), eps);
                prep.finish(LayerNormState { x: x.primitive, scale: scale.primitive, eps }, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::modulated_layer_norm(x.primitive, shift.primitive, scale.primitive, eps))
            }
        }
    }

    fn modulated_layer_norm_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f32,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::modulated_layer_norm_backward(x.primitive, scale.primitive, eps, grad.primitive))
    }
}

type RopeFn<B> =
    fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, usize, usize, f32) -> FloatTensor<B>;
type LayerNormFn<B> = fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f32) -> FloatTensor<B>;

/// The registry's entry: both ops as plain functions of `B`.
struct Entry<B: Backend> {
    rope: RopeFn<B>,
    layer_norm: LayerNormFn<B>,
}

fn entry<B: FusedNormBackend>() -> Entry<B> {
    Entry { rope: B::rms_norm_rope, layer_norm: B::modulated_layer_norm }
}

crate::backend_registry::fused_registry!(FusedNormBackend);

/// The CPU backends run [`host`]'s row loops.
#[cfg(any(feature = "flex", feature = "ndarray"))]
macro_rules! host_backend {
    ($b:ty) => {
        impl FusedNormBackend for $b {
            fn rms_norm_rope(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                cos: FloatTensor<Self>,
                sin: FloatTensor<Self>,
                seq: usize,
                offset: usize,
                eps: f32,
            ) -> FloatTensor<Self> {
                host::rms_norm_rope::<Self>(x, weight, cos, sin, seq, offset, eps, None)
            }

            fn rms_norm_rope_backward(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                cos: FloatTensor<Self>,
                sin: FloatTensor<Self>,
                seq: usize,
                offset: usize,
                eps: f32,
                grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                host::rms_norm_rope::<Self>(x, weight, cos, sin, seq, offset, eps, Some(grad))
            }

            fn modulated_layer_norm(
                x: FloatTensor<Self>,
                shift: FloatTensor<Self>,
                scale: FloatTensor<Self>,
                eps: f32,
            ) -> FloatTensor<Self> {
                host::modulated_layer_norm::<Self>(x, Some(shift), scale, eps, None)
            }

            fn modulated_layer_norm_backward(
                x: FloatTensor<Self>,
                scale: FloatTensor<Self>,
                eps: f32,
                grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                host::modulated_layer_norm::<Self>(x, None, scale, eps, Some(grad))
            }
        }
    };
}
#[cfg(feature = "flex")]
host_backend!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
host_backend!(burn::backend::NdArray);

/// `rope(RMSNorm(x) · weight)` per head for x [B, H, S, d], with the rows `offset..offset + S` of the f32
/// tables cos/sin [P, d]; `Err(x)` when `B` has no kernel or the call does not fit it (a trainable or
/// differently typed weight, non-f32 tables, odd d, tables too short).
pub fn rms_norm_rope<B: Backend>(
    x: Tensor<B, 4>,
    weight: &Tensor<B, 1>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    offset: usize,
    eps: f64,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(entry) = REGISTRY.get::<B, Entry<B>>() else { return Err(x) };
    let [b, h, s, d] = x.shape().dims();
    let [p, td] = cos.shape().dims();
    let fits = d % 2 == 0
        && td == d
        && sin.shape().dims::<2>() == [p, td]
        && offset + s <= p
        && weight.shape().dims::<1>() == [d]
        && weight.dtype() == x.dtype()
        && !weight.is_require_grad()
        && cos.dtype() == DType::F32
        && sin.dtype() == DType::F32
        && is_kernel_float(x.dtype());
    if !fits || b * h * s * d == 0 {
        return Err(x);
    }
    let rows = unwrap(x.reshape([b * h * s, d]));
    let out =
        (entry.rope)(rows, unwrap(weight.clone()), unwrap(cos.clone()), unwrap(sin.clone()), s, offset, eps as f32);
    Ok(wrap::<B, 2>(out).reshape([b, h, s, d]))
}

/// `(1 + scale) LayerNorm(x) + shift` for x [B, S, D] and shift/scale [B, 1, D] of x's dtype; `Err(x)`
/// when `B` has no kernel or the shapes or dtypes do not fit it.
pub fn modulated_layer_norm<B: Backend>(
    x: Tensor<B, 3>,
    shift: &Tensor<B, 3>,
    scale: &Tensor<B, 3>,
    eps: f64,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    let Some(entry) = REGISTRY.get::<B, Entry<B>>() else { return Err(x) };
    let [b, s, d] = x.shape().dims();
    let fits = shift.shape().dims::<3>() == [b, 1, d]
        && scale.shape().dims::<3>() == [b, 1, d]
        && shift.dtype() == x.dtype()
        && scale.dtype() == x.dtype()
        && is_kernel_float(x.dtype());
    if !fits || b * s * d == 0 {
        return Err(x);
    }
    let out = (entry.layer_norm)(unwrap(x), unwrap(shift.clone()), unwrap(scale.clone()), eps as f32);
    Ok(wrap(out))
}
