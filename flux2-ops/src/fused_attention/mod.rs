//! Memory-lean attention for training: a Burn backend extension with its own autodiff op.
//!
//! Burn 0.21's `attention` under `Autodiff` falls back to matmul-softmax-matmul and keeps the
//! [B, H, Lq, Lk] probabilities for backward: about 2 GB per FLUX.2 block at 1024² in bf16. Here the forward
//! walks query blocks (and, for long keys, key blocks with an online softmax), so no [Lq, Lk] tensor ever
//! exists, and returns the per-row log-sum-exp. The autodiff op saves only q, k, v, the output and the
//! log-sum-exp (O(L·d)); its backward recomputes the probabilities block by block from them (the
//! FlashAttention-2 backward: `D = rowsum(dO ∘ O)`, `P = exp(S - lse)`, `dS = P ∘ (dO Vᵀ - D)`).
//!
//! The default implementations use only tensor ops (matmul, exp, reductions), so every backend gets them;
//! a backend with a dedicated kernel overrides [`FusedAttentionBackend::fused_attention_forward`] and
//! [`FusedAttentionBackend::fused_attention_backward`]. Softmax statistics (scores, exponentials, the
//! log-sum-exp, the accumulators) are kept in f32 whatever the input dtype; the two matmul operands per
//! product stay in the input dtype (bf16 runs on tensor cores).
//!
//! The model code is generic over `B: Backend`, so [`crate::attention::scaled_dot_product`] reaches this op
//! through a registry keyed by the backend type ([`register`]); the backends compiled into this crate are
//! registered on first use.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor};

use crate::backend_registry::{OpMap, OpRegistry, for_builtin_backends};
use crate::matmul::matmul;
use crate::primitive::{unwrap, wrap};

#[cfg(feature = "flex")]
mod host;

/// Query/key block sizes of the tiled computation. Only peak memory and speed depend on them; results
/// agree with the untiled computation to rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionBlocks {
    /// Query rows per block.
    pub query: usize,
    /// Key rows per block; keys longer than this use the online (rescaled) softmax across key blocks.
    pub key: usize,
}

/// Elements of one f32 score block [B, H, query, key] that [`AttentionBlocks::for_shape`] aims for on a
/// GPU: 2^26 (256 MiB) keeps the matmuls large enough to fill it while the backward's few live
/// score-sized temporaries stay around 1 GiB.
pub const SCORE_BLOCK_ELEMENTS: usize = 1 << 26;

/// The CPU backends' score block: 2^22 (16 MiB). A CPU matmul is as fast on [240, 4160] blocks as on
/// larger ones, and the backward's temporaries then stay near 64 MiB instead of 1 GiB: with block
/// checkpointing they were most of a CPU training step's peak memory.
pub const CPU_SCORE_BLOCK_ELEMENTS: usize = 1 << 22;

/// Keys up to this length are processed as one block (plain softmax per query block, no rescaling).
pub const MAX_KEY_BLOCK: usize = 16_384;

impl AttentionBlocks {
    /// Blocks for a [batch, heads, lq, d] x [batch, heads, lk, d] attention: all keys at once up to
    /// [`MAX_KEY_BLOCK`], and as many query rows as fit in [`SCORE_BLOCK_ELEMENTS`] (a multiple of 16,
    /// at least 16).
    pub fn for_shape(batch: usize, heads: usize, lq: usize, lk: usize) -> Self {
        Self::for_budget(batch, heads, lq, lk, SCORE_BLOCK_ELEMENTS)
    }

    /// [`Self::for_shape`] aiming for score blocks of `elements` (a backend's
    /// [`FusedAttentionBackend::SCORE_BLOCK_ELEMENTS`]).
    pub fn for_budget(batch: usize, heads: usize, lq: usize, lk: usize, elements: usize) -> Self {
        let key = lk.clamp(1, MAX_KEY_BLOCK);
        let rows = elements / (batch.max(1) * heads.max(1) * key);
        let query = if rows >= lq { lq.max(1) } else { (rows / 16 * 16).max(16) };
        Self { query, key }
    }
}

/// A backend that provides fused (tiled, recomputing) attention over [B, H, L, d] tensors, no mask.
///
/// `scale` multiplies the scores (1/sqrt(d) for standard attention). The log-sum-exp tensor is
/// [B, H, Lq, 1] in f32: `lse = ln Σ_j exp(scale · q·k_j)`.
pub trait FusedAttentionBackend: Backend {
    /// Elements of one f32 score block that [`fused_attention`] sizes its blocks for: peak memory
    /// against matmul size ([`CPU_SCORE_BLOCK_ELEMENTS`] unless a backend says otherwise).
    const SCORE_BLOCK_ELEMENTS: usize = CPU_SCORE_BLOCK_ELEMENTS;

    /// Output [B, H, Lq, d] (dtype of q) and log-sum-exp [B, H, Lq, 1] (f32).
    fn fused_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        blocks: AttentionBlocks,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (out, lse) = tiled_forward::<Self>(wrap(q), wrap(k), wrap(v), scale, blocks);
        (unwrap(out), unwrap(lse))
    }

    /// Gradients [dq, dk, dv] (dtypes of q, k, v) from the saved forward quantities and the output
    /// gradient, recomputing the probabilities block by block.
    #[allow(clippy::too_many_arguments)]
    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        scale: f32,
        blocks: AttentionBlocks,
    ) -> [FloatTensor<Self>; 3] {
        tiled_backward::<Self>(wrap(q), wrap(k), wrap(v), wrap(out), wrap(lse), wrap(grad_out), scale, blocks)
            .map(unwrap)
    }

    /// The attention output alone; under `Autodiff` this is the differentiable op.
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        blocks: AttentionBlocks,
    ) -> FloatTensor<Self> {
        Self::fused_attention_forward(q, k, v, scale, blocks).0
    }
}

/// Splits `0..len` into consecutive ranges of at most `block` (the last one shorter when `len` is not a
/// multiple).
pub(crate) fn ranges(len: usize, block: usize) -> Vec<(usize, usize)> {
    let block = block.max(1);
    (0..len).step_by(block).map(|s| (s, block.min(len - s))).collect()
}

/// Online-softmax forward over query blocks x key blocks using tensor ops only.
pub fn tiled_forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    blocks: AttentionBlocks,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let dtype = q.dtype();
    let [_, _, lq, _] = q.shape().dims();
    let [_, _, lk, _] = k.shape().dims();
    let key_ranges = ranges(lk, blocks.key);
    // Transposed keys per block, shared by every query block.
    let kt: Vec<Tensor<B, 4>> = key_ranges.iter().map(|&(s, n)| k.clone().narrow(2, s, n).swap_dims(2, 3)).collect();
    let vs: Vec<Tensor<B, 4>> = key_ranges.iter().map(|&(s, n)| v.clone().narrow(2, s, n)).collect();
    let mut outs = Vec::new();
    let mut lses = Vec::new();
    for (qs, qn) in ranges(lq, blocks.query) {
        let qi = q.clone().narrow(2, qs, qn);
        // Running max, running denominator, unnormalised output accumulator (all f32).
        let mut state: Option<(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>)> = None;
        for (ktj, vj) in kt.iter().zip(&vs) {
            let s = matmul(qi.clone(), ktj.clone()).cast(DType::F32).mul_scalar(scale);
            let mj = s.clone().max_dim(3);
            state = Some(match state {
                None => {
                    let p = s.sub(mj.clone()).exp();
                    let l = p.clone().sum_dim(3);
                    let acc = matmul(p.cast(dtype), vj.clone()).cast(DType::F32);
                    (mj, l, acc)
                }
                Some((m, l, acc)) => {
                    let m_new = m.clone().max_pair(mj);
                    let alpha = m.sub(m_new.clone()).exp();
                    let p = s.sub(m_new.clone()).exp();
                    let l = l.mul(alpha.clone()).add(p.clone().sum_dim(3));
                    let acc = acc.mul(alpha).add(matmul(p.cast(dtype), vj.clone()).cast(DType::F32));
                    (m_new, l, acc)
                }
            });
        }
        let (m, l, acc) = state.expect("at least one key block (lk > 0)");
        outs.push(acc.div(l.clone()).cast(dtype));
        lses.push(m.add(l.log()));
    }
    (Tensor::cat(outs, 2), Tensor::cat(lses, 2))
}

/// FlashAttention-2 style backward over query blocks x key blocks using tensor ops only.
#[allow(clippy::too_many_arguments)]
pub fn tiled_backward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    out: Tensor<B, 4>,
    lse: Tensor<B, 4>,
    grad_out: Tensor<B, 4>,
    scale: f32,
    blocks: AttentionBlocks,
) -> [Tensor<B, 4>; 3] {
    let (qdt, kdt, vdt) = (q.dtype(), k.dtype(), v.dtype());
    let [_, _, lq, _] = q.shape().dims();
    let [_, _, lk, _] = k.shape().dims();
    let grad_out = grad_out.cast(qdt);
    // D_i = rowsum(dO ∘ O), [B, H, Lq, 1] f32.
    let delta = grad_out.clone().cast(DType::F32).mul(out.cast(DType::F32)).sum_dim(3);
    let key_ranges = ranges(lk, blocks.key);
    let ks: Vec<Tensor<B, 4>> = key_ranges.iter().map(|&(s, n)| k.clone().narrow(2, s, n)).collect();
    let vs: Vec<Tensor<B, 4>> = key_ranges.iter().map(|&(s, n)| v.clone().narrow(2, s, n)).collect();
    let mut dk_acc: Vec<Option<Tensor<B, 4>>> = vec![None; key_ranges.len()];
    let mut dv_acc: Vec<Option<Tensor<B, 4>>> = vec![None; key_ranges.len()];
    let mut dqs = Vec::new();
    let accumulate = |slot: &mut Option<Tensor<B, 4>>, x: Tensor<B, 4>| {
        *slot = Some(match slot.take() {
            None => x,
            Some(a) => a.add(x),
        });
    };
    for (qs, qn) in ranges(lq, blocks.query) {
        let qi = q.clone().narrow(2, qs, qn);
        let doi = grad_out.clone().narrow(2, qs, qn);
        let lse_i = lse.clone().narrow(2, qs, qn);
        let delta_i = delta.clone().narrow(2, qs, qn);
        let mut dq_i: Option<Tensor<B, 4>> = None;
        for (j, (kj, vj)) in ks.iter().zip(&vs).enumerate() {
            let s = matmul(qi.clone(), kj.clone().swap_dims(2, 3)).cast(DType::F32).mul_scalar(scale);
            let p = s.sub(lse_i.clone()).exp();
            let p_lo = p.clone().cast(qdt);
            accumulate(&mut dv_acc[j], matmul(p_lo.swap_dims(2, 3), doi.clone()).cast(DType::F32));
            let dp = matmul(doi.clone(), vj.clone().swap_dims(2, 3)).cast(DType::F32);
            // dS scaled by `scale` once, so dq = dS K and dk = dSᵀ Q.
            let ds = p.mul(dp.sub(delta_i.clone())).mul_scalar(scale).cast(qdt);
            accumulate(&mut dq_i, matmul(ds.clone(), kj.clone()).cast(DType::F32));
            accumulate(&mut dk_acc[j], matmul(ds.swap_dims(2, 3), qi.clone()).cast(DType::F32));
        }
        dqs.push(dq_i.expect("at least one key block (lk > 0)").cast(qdt));
    }
    let collect = |acc: Vec<Option<Tensor<B, 4>>>, dtype: DType| {
        Tensor::cat(acc.into_iter().map(|a| a.expect("every key block visited").cast(dtype)).collect(), 2)
    };
    [Tensor::cat(dqs, 2), collect(dk_acc, kdt), collect(dv_acc, vdt)]
}

/// What the autodiff op keeps for backward: inputs, output and log-sum-exp (O(L·d)); never a score block.
#[derive(Clone, Debug)]
pub struct SavedAttention<B: Backend> {
    pub q: FloatTensor<B>,
    pub k: FloatTensor<B>,
    pub v: FloatTensor<B>,
    pub out: FloatTensor<B>,
    pub lse: FloatTensor<B>,
    pub scale: f32,
    pub blocks: AttentionBlocks,
}

impl<B: Backend> SavedAttention<B> {
    /// Every shape held, for callers that check what the graph retains.
    pub fn shapes(&self) -> Vec<Vec<usize>> {
        use burn::tensor::TensorMetadata;
        [&self.q, &self.k, &self.v, &self.out, &self.lse].iter().map(|t| t.shape().to_vec()).collect()
    }
}

#[derive(Debug)]
struct FusedAttentionBackward;

impl<B: FusedAttentionBackend> Backward<B, 3> for FusedAttentionBackward {
    type State = SavedAttention<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad_out = grads.consume::<B>(&ops.node);
        let s = ops.state;
        inspect::record(&s);
        let [dq, dk, dv] = B::fused_attention_backward(s.q, s.k, s.v, s.out, s.lse, grad_out, s.scale, s.blocks);
        if let Some(node) = node_q {
            grads.register::<B>(node.id, dq);
        }
        if let Some(node) = node_k {
            grads.register::<B>(node.id, dk);
        }
        if let Some(node) = node_v {
            grads.register::<B>(node.id, dv);
        }
    }
}

impl<B: FusedAttentionBackend, C: CheckpointStrategy> FusedAttentionBackend for Autodiff<B, C> {
    const SCORE_BLOCK_ELEMENTS: usize = B::SCORE_BLOCK_ELEMENTS;

    fn fused_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        blocks: AttentionBlocks,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Both results untracked: callers wanting gradients use `fused_attention`.
        let (out, lse) = B::fused_attention_forward(q.primitive, k.primitive, v.primitive, scale, blocks);
        (Self::from_inner(out), Self::from_inner(lse))
    }

    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        scale: f32,
        blocks: AttentionBlocks,
    ) -> [FloatTensor<Self>; 3] {
        B::fused_attention_backward(
            q.primitive,
            k.primitive,
            v.primitive,
            out.primitive,
            lse.primitive,
            grad_out.primitive,
            scale,
            blocks,
        )
        .map(Self::from_inner)
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        blocks: AttentionBlocks,
    ) -> FloatTensor<Self> {
        let prep = FusedAttentionBackward
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let (out, lse) = B::fused_attention_forward(
                    q.primitive.clone(),
                    k.primitive.clone(),
                    v.primitive.clone(),
                    scale,
                    blocks,
                );
                let state = SavedAttention {
                    q: q.primitive,
                    k: k.primitive,
                    v: v.primitive,
                    out: out.clone(),
                    lse,
                    scale,
                    blocks,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::fused_attention(q.primitive, k.primitive, v.primitive, scale, blocks))
            }
        }
    }
}

/// The CPU backend runs [`host`]'s row loops (NdArray keeps the tensor-op version, which the tests of the
/// generic path use).
#[cfg(feature = "flex")]
impl FusedAttentionBackend for burn::backend::Flex {
    fn fused_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f32,
        _blocks: AttentionBlocks,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        host::forward::<Self>(q, k, v, scale)
    }

    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        scale: f32,
        _blocks: AttentionBlocks,
    ) -> [FloatTensor<Self>; 3] {
        host::backward::<Self>(q, k, v, out, lse, grad_out, scale)
    }
}
#[cfg(feature = "ndarray")]
impl FusedAttentionBackend for burn::backend::NdArray {}
/// softmax(scale · Q Kᵀ) V over [B, H, L, d] with blocks chosen by [`AttentionBlocks::for_budget`] for
/// the backend's [`FusedAttentionBackend::SCORE_BLOCK_ELEMENTS`].
pub fn fused_attention<B: FusedAttentionBackend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, lq, d] = q.shape().dims();
    let lk = k.shape().dims::<4>()[2];
    let scale = 1.0 / (d as f32).sqrt();
    fused_attention_with::<B>(q, k, v, scale, AttentionBlocks::for_budget(b, h, lq, lk, B::SCORE_BLOCK_ELEMENTS))
}

/// [`fused_attention`] with an explicit scale and block sizes.
pub fn fused_attention_with<B: FusedAttentionBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f32,
    blocks: AttentionBlocks,
) -> Tensor<B, 4> {
    wrap(B::fused_attention(unwrap(q), unwrap(k), unwrap(v), scale, blocks))
}

type Entry<B> = fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>;

static REGISTRY: OpRegistry = OpRegistry::new(builtin);

/// The backends compiled into this crate and their `Autodiff` wrappers.
fn builtin(map: &mut OpMap) {
    #[allow(unused_macros)]
    macro_rules! add {
        ($b:ty) => {
            crate::backend_registry::insert::<$b, Entry<$b>>(map, fused_attention::<$b>);
        };
    }
    for_builtin_backends!(add);
    let _ = map;
}

/// Makes [`crate::attention::scaled_dot_product`] (and so the whole model) use the fused attention for
/// backend `B`. Register the autodiff backend you train with (`Autodiff<Inner>`) and the inner one;
/// backends of this crate's enabled features are registered already.
pub fn register<B: FusedAttentionBackend>() {
    REGISTRY.insert::<B, Entry<B>>(fused_attention::<B>);
}

/// Whether `B` runs the fused attention inside the model.
pub fn is_registered<B: Backend>() -> bool {
    REGISTRY.contains::<B>()
}

/// Runs the registered fused attention for `B`, or gives the inputs back when `B` is not registered.
pub(crate) fn dispatch<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, [Tensor<B, 4>; 3]> {
    match REGISTRY.get::<B, Entry<B>>() {
        Some(f) => Ok(f(q, k, v)),
        None => Err([q, k, v]),
    }
}

/// Records the shapes each backward of the autodiff op found in its saved state, so tests can check that
/// the graph held no [Lq, Lk] tensor. Cheap (a few small vectors per attention call), thread-local.
pub mod inspect {
    use super::SavedAttention;
    use burn::tensor::backend::Backend;
    use std::cell::RefCell;

    thread_local! {
        static SEEN: RefCell<Vec<Vec<Vec<usize>>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record<B: Backend>(state: &SavedAttention<B>) {
        SEEN.with(|s| {
            let mut s = s.borrow_mut();
            // Bounded: only the most recent calls matter to a check.
            if s.len() >= 256 {
                s.remove(0);
            }
            s.push(state.shapes());
        });
    }

    /// Takes the saved-state shapes recorded on this thread since the last call.
    pub fn take_saved_shapes() -> Vec<Vec<Vec<usize>>> {
        SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}
