//! The fused attention on CUDA: the algorithm of [`crate::fused_attention`] (query blocks, probabilities
//! recomputed in backward from the log-sum-exp) with cuBLAS products and the kernels of `kernels.cu`, all
//! queued on one stream with one host wait per call instead of dozens of Burn kernels per block.
//!
//! Per query block of `qn` rows (all batch-heads at once): forward `S = scale Q Kᵀ` (f32), a row kernel
//! writes `P = exp(S - lse)` and the log-sum-exp, then `O = P V`. Backward: `D = rowsum(dO ∘ O)` once;
//! per block `S` and `dP = dO Vᵀ` (f32), a kernel writes `P` and `dS = P (dP - D) scale`, then
//! `dV += Pᵀ dO`, `dK += dSᵀ Q` (f32 accumulators over blocks) and `dQ = dS K`. Scores are never rounded
//! below f32; `P` and `dS` are stored in the input dtype as the matmul operands they are (as in
//! FlashAttention). Keys longer than one key block use the generic tiled path (online softmax).

use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, FloatDType};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::tensor::CubeTensor;
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::device::{Buffers, contiguous, device, empty, suffix, wait_for_cubecl};
use super::gemm::{Matrix, gemm};
use crate::fused_attention::{AttentionBlocks, ranges, tiled_backward, tiled_forward};
use crate::primitive::{unwrap, wrap};

type Cuda = burn::backend::Cuda;
type T = CubeTensor<CudaRuntime>;

/// Whether the fast path applies: one key block, same float dtype everywhere.
fn supported(q: &T, k: &T, v: &T, blocks: AttentionBlocks) -> bool {
    let lk = k.meta.shape()[2];
    suffix(q.dtype).is_some() && k.dtype == q.dtype && v.dtype == q.dtype && lk <= blocks.key && lk > 0
}

fn dims(q: &T, k: &T) -> (usize, usize, usize, usize, usize) {
    let s = q.meta.shape();
    (s[0], s[1], s[2], k.meta.shape()[2], s[3])
}

/// One 256-thread block per score row.
fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

pub(crate) fn forward(q: T, k: T, v: T, scale: f32, blocks: AttentionBlocks) -> (T, T) {
    if super::flash::applies(&q, &k, &v) {
        return super::flash::forward(q, k, v, scale);
    }
    if !supported(&q, &k, &v, blocks) {
        let (out, lse) = tiled_forward::<Cuda>(wrap(q), wrap(k), wrap(v), scale, blocks);
        return (unwrap(out), unwrap(lse));
    }
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let (b, h, lq, lk, d) = dims(&q, &k);
    let (dt, bh) = (q.dtype, b * h);
    let qmax = blocks.query.clamp(1, lq.max(1));
    let out = empty(&q, &[b, h, lq, d], dt);
    let lse = empty(&q, &[b, h, lq, 1], DType::F32);
    let s = empty(&q, &[bh, qmax, lk, 1], DType::F32);
    let p = empty(&q, &[bh, qmax, lk, 1], dt);
    let mut buf = Buffers::new();
    let (qp, kp, vp, op, lp, sp, pp) =
        (buf.ptr(&q), buf.ptr(&k), buf.ptr(&v), buf.ptr(&out), buf.ptr(&lse), buf.ptr(&s), buf.ptr(&p));
    wait_for_cubecl(&q.client);
    let guard = device(q.device.index);
    let mut dev = guard.lock();
    let softmax = dev.kernel(&format!("softmax_rows_{}", suffix(dt).expect("checked by supported")));
    for (qs, qn) in ranges(lq, qmax) {
        let (n_i, qn_i, lq_i, qs_i) = (lk as i32, qn as i32, lq as i32, qs as i32);
        // SAFETY: all buffers are held in `buf` until after the stream sync below; inputs are complete.
        unsafe {
            gemm(
                &dev.blas,
                (qn, lk, d, bh),
                scale,
                Matrix::row_major(qp, dt, d, lq * d).offset(qs * d),
                Matrix::transposed(kp, dt, d, lk * d),
                0.0,
                Matrix::row_major(sp, DType::F32, lk, qn * lk),
            );
        }
        let mut a = dev.stream.launch_builder(&softmax);
        a.arg(&sp).arg(&pp).arg(&lp).arg(&n_i).arg(&qn_i).arg(&lq_i).arg(&qs_i);
        // SAFETY: `bh * qn` rows of `lk` scores in `s` and `p`; lse indices stay below `bh * lq`.
        unsafe { a.launch(per_row(bh * qn)) }.unwrap_or_else(|e| panic!("softmax_rows launch: {e}"));
        unsafe {
            gemm(
                &dev.blas,
                (qn, d, lk, bh),
                1.0,
                Matrix::row_major(pp, dt, lk, qn * lk),
                Matrix::row_major(vp, dt, d, lk * d),
                0.0,
                Matrix::row_major(op, dt, d, lq * d).offset(qs * d),
            );
        }
    }
    dev.synchronize();
    drop(dev);
    drop(buf);
    (out, lse)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(q: T, k: T, v: T, out: T, lse: T, grad_out: T, scale: f32, blocks: AttentionBlocks) -> [T; 3] {
    let dt = q.dtype;
    let cast = |t: T, to: DType| if t.dtype == to { t } else { Cuda::float_cast(t, FloatDType::from(to)) };
    let grad_out = contiguous(cast(grad_out, dt));
    let out = contiguous(cast(out, dt));
    let lse = contiguous(cast(lse, DType::F32));
    if super::flash::applies(&q, &k, &v) {
        return super::flash::backward(q, k, v, out, lse, grad_out, scale);
    }
    if !supported(&q, &k, &v, blocks) {
        return tiled_backward::<Cuda>(wrap(q), wrap(k), wrap(v), wrap(out), wrap(lse), wrap(grad_out), scale, blocks)
            .map(unwrap::<Cuda, 4>);
    }
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let (b, h, lq, lk, d) = dims(&q, &k);
    let bh = b * h;
    let qmax = blocks.query.clamp(1, lq.max(1));
    let delta = empty(&q, &[b, h, lq, 1], DType::F32);
    let dq = empty(&q, &[b, h, lq, d], dt);
    let dk = empty(&q, &[b, h, lk, d], DType::F32);
    let dv = empty(&q, &[b, h, lk, d], DType::F32);
    let s = empty(&q, &[bh, qmax, lk, 1], DType::F32);
    let dp = empty(&q, &[bh, qmax, lk, 1], DType::F32);
    let p = empty(&q, &[bh, qmax, lk, 1], dt);
    let ds = empty(&q, &[bh, qmax, lk, 1], dt);
    let mut buf = Buffers::new();
    let (qp, kp, vp, op, lp, gp) =
        (buf.ptr(&q), buf.ptr(&k), buf.ptr(&v), buf.ptr(&out), buf.ptr(&lse), buf.ptr(&grad_out));
    let (deltap, dqp, dkp, dvp) = (buf.ptr(&delta), buf.ptr(&dq), buf.ptr(&dk), buf.ptr(&dv));
    let (sp, dpp, pp, dsp) = (buf.ptr(&s), buf.ptr(&dp), buf.ptr(&p), buf.ptr(&ds));
    wait_for_cubecl(&q.client);
    let guard = device(q.device.index);
    let mut dev = guard.lock();
    let sfx = suffix(dt).expect("checked by supported");
    let delta_kernel = dev.kernel(&format!("attention_delta_{sfx}"));
    let ds_kernel = dev.kernel(&format!("attention_ds_{sfx}"));
    let rows = (bh * lq) as i64;
    let d_i = d as i32;
    {
        let cfg = LaunchConfig {
            grid_dim: ((bh * lq).div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut a = dev.stream.launch_builder(&delta_kernel);
        a.arg(&gp).arg(&op).arg(&deltap).arg(&rows).arg(&d_i);
        // SAFETY: `rows` rows of width `d` in both inputs and one f32 per row in `delta`.
        unsafe { a.launch(cfg) }.unwrap_or_else(|e| panic!("attention_delta launch: {e}"));
    }
    for (qs, qn) in ranges(lq, qmax) {
        let (n_i, qn_i, lq_i, qs_i) = (lk as i32, qn as i32, lq as i32, qs as i32);
        let accumulate = if qs == 0 { 0.0 } else { 1.0 };
        let q_tile = Matrix::row_major(qp, dt, d, lq * d).offset(qs * d);
        let do_tile = Matrix::row_major(gp, dt, d, lq * d).offset(qs * d);
        let scores = |ptr| Matrix::row_major(ptr, DType::F32, lk, qn * lk);
        // SAFETY: all buffers are held in `buf` until after the stream sync below; inputs are complete.
        unsafe {
            gemm(&dev.blas, (qn, lk, d, bh), scale, q_tile, Matrix::transposed(kp, dt, d, lk * d), 0.0, scores(sp));
            gemm(&dev.blas, (qn, lk, d, bh), 1.0, do_tile, Matrix::transposed(vp, dt, d, lk * d), 0.0, scores(dpp));
        }
        let mut a = dev.stream.launch_builder(&ds_kernel);
        a.arg(&sp).arg(&dpp).arg(&lp).arg(&deltap).arg(&pp).arg(&dsp);
        a.arg(&n_i).arg(&qn_i).arg(&lq_i).arg(&qs_i).arg(&scale);
        // SAFETY: as for the forward's row kernel, plus `delta` of `bh * lq` rows.
        unsafe { a.launch(per_row(bh * qn)) }.unwrap_or_else(|e| panic!("attention_ds launch: {e}"));
        let acc = |ptr| Matrix::row_major(ptr, DType::F32, d, lk * d);
        unsafe {
            // dV += Pᵀ dO and dK += dSᵀ Q over [lk, d]; dQ = dS K for this block's rows.
            gemm(
                &dev.blas,
                (lk, d, qn, bh),
                1.0,
                Matrix::transposed(pp, dt, lk, qn * lk),
                do_tile,
                accumulate,
                acc(dvp),
            );
            gemm(
                &dev.blas,
                (lk, d, qn, bh),
                1.0,
                Matrix::transposed(dsp, dt, lk, qn * lk),
                q_tile,
                accumulate,
                acc(dkp),
            );
            gemm(
                &dev.blas,
                (qn, d, lk, bh),
                1.0,
                Matrix::row_major(dsp, dt, lk, qn * lk),
                Matrix::row_major(kp, dt, d, lk * d),
                0.0,
                Matrix::row_major(dqp, dt, d, lq * d).offset(qs * d),
            );
        }
    }
    dev.synchronize();
    drop(dev);
    drop(buf);
    [dq, cast(dk, dt), cast(dv, dt)]
}

/// cuBLAS products and NVRTC row kernels on one stream (`cuda::attention`).
impl crate::fused_attention::FusedAttentionBackend for Cuda {
    const SCORE_BLOCK_ELEMENTS: usize = crate::fused_attention::SCORE_BLOCK_ELEMENTS;

    fn fused_attention_forward(
        q: FloatTensor<Cuda>,
        k: FloatTensor<Cuda>,
        v: FloatTensor<Cuda>,
        scale: f32,
        blocks: AttentionBlocks,
    ) -> (FloatTensor<Cuda>, FloatTensor<Cuda>) {
        forward(q, k, v, scale, blocks)
    }

    fn fused_attention_backward(
        q: FloatTensor<Cuda>,
        k: FloatTensor<Cuda>,
        v: FloatTensor<Cuda>,
        out: FloatTensor<Cuda>,
        lse: FloatTensor<Cuda>,
        grad_out: FloatTensor<Cuda>,
        scale: f32,
        blocks: AttentionBlocks,
    ) -> [FloatTensor<Cuda>; 3] {
        backward(q, k, v, out, lse, grad_out, scale, blocks)
    }
}
