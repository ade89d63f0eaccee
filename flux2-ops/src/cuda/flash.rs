//! One-kernel attention on CUDA (`flash.cu`): the FlashAttention-2 algorithm for head dim 128 in bf16/f16 on
//! cards of compute capability 8.0 or later. Scores and probabilities live in registers and shared memory
//! only, so one launch does the forward and three (delta, dQ, dK/dV) the backward, where the block path of
//! [`super::attention`] writes f32 score blocks through memory and runs five cuBLAS products per block.
//!
//! The backward splits FlashAttention-2's single loop in two kernels: dK/dV with a key tile per thread
//! block (looping over queries) and dQ with a query tile per block (looping over keys). That recomputes
//! `Q Kᵀ` and `dO Vᵀ` once more (7 products instead of 5) but needs no atomics and is deterministic.
//! Results follow the block path's conventions: the same `lse` (natural log of the scaled scores), f32
//! statistics and accumulators, probabilities rounded to the input type as the value product's operand.
//!
//! Opt-in until checked on a GPU: `FLUX2_FAST_KERNELS=1` ([`super::fast_kernels`]).

use burn::tensor::DType;
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::tensor::CubeTensor;
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::device::{Buffers, contiguous, device, empty, suffix, wait_for_cubecl};

type T = CubeTensor<CudaRuntime>;

/// The head dimension the kernels are written for (FLUX.2's).
const HEAD_DIM: usize = 128;
/// Rows of the output a thread block owns (4 warps x 16).
const ROWS_PER_BLOCK: usize = 64;

/// Whether the one-kernel path serves these inputs: bf16 or f16 everywhere, head dim 128, a card with
/// `mma.sync` for 16-bit types.
pub(super) fn applies(q: &T, k: &T, v: &T) -> bool {
    let (sq, sk) = (q.meta.shape(), k.meta.shape());
    matches!(q.dtype, DType::BF16 | DType::F16)
        && k.dtype == q.dtype
        && v.dtype == q.dtype
        && sq[3] == HEAD_DIM
        && sk[3] == HEAD_DIM
        && sq[2] > 0
        && sk[2] > 0
        && super::fast_kernels()
        && device(q.device.index).lock().capability.0 >= 8
}

fn grid(rows: usize, bh: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, bh as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn dims(q: &T, k: &T) -> (usize, usize, usize) {
    let (sq, sk) = (q.meta.shape(), k.meta.shape());
    (sq[0] * sq[1], sq[2], sk[2])
}

/// `(out, lse)` of `softmax(scale q kᵀ) v`, as [`super::attention::forward`].
pub(super) fn forward(q: T, k: T, v: T, scale: f32) -> (T, T) {
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let (bh, lq, lk) = dims(&q, &k);
    let s = q.meta.shape();
    let out = empty(&q, &[s[0], s[1], lq, HEAD_DIM], q.dtype);
    let lse = empty(&q, &[s[0], s[1], lq, 1], DType::F32);
    let mut buf = Buffers::new();
    let (qp, kp, vp, op, lp) = (buf.ptr(&q), buf.ptr(&k), buf.ptr(&v), buf.ptr(&out), buf.ptr(&lse));
    wait_for_cubecl(&q.client);
    let guard = device(q.device.index);
    let mut dev = guard.lock();
    let kernel = dev.flash_kernel(&format!("flash_forward_{}", suffix(q.dtype).expect("checked by applies")));
    let (lq_i, lk_i) = (lq as i32, lk as i32);
    let mut a = dev.stream.launch_builder(&kernel);
    a.arg(&qp).arg(&kp).arg(&vp).arg(&op).arg(&lp).arg(&lq_i).arg(&lk_i).arg(&scale);
    // SAFETY: contiguous [bh, lq | lk, 128] inputs and outputs and [bh, lq] lse, held in `buf` until the sync.
    unsafe { a.launch(grid(lq, bh)) }.unwrap_or_else(|e| panic!("flash_forward launch: {e}"));
    dev.synchronize();
    drop(dev);
    drop(buf);
    (out, lse)
}

/// `[dq, dk, dv]` in the input dtype; `out`, `lse`, `grad_out` as the forward left them (cast by the caller).
pub(super) fn backward(q: T, k: T, v: T, out: T, lse: T, grad_out: T, scale: f32) -> [T; 3] {
    let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
    let (out, lse, grad_out) = (contiguous(out), contiguous(lse), contiguous(grad_out));
    let (bh, lq, lk) = dims(&q, &k);
    let (sq, sk) = (q.meta.shape(), k.meta.shape());
    let dt = q.dtype;
    let delta = empty(&q, &[sq[0], sq[1], lq, 1], DType::F32);
    let dq = empty(&q, &[sq[0], sq[1], lq, HEAD_DIM], dt);
    let dk = empty(&q, &[sk[0], sk[1], lk, HEAD_DIM], dt);
    let dv = empty(&q, &[sk[0], sk[1], lk, HEAD_DIM], dt);
    let mut buf = Buffers::new();
    let (qp, kp, vp, op, lp, gp) =
        (buf.ptr(&q), buf.ptr(&k), buf.ptr(&v), buf.ptr(&out), buf.ptr(&lse), buf.ptr(&grad_out));
    let (deltap, dqp, dkp, dvp) = (buf.ptr(&delta), buf.ptr(&dq), buf.ptr(&dk), buf.ptr(&dv));
    wait_for_cubecl(&q.client);
    let guard = device(q.device.index);
    let mut dev = guard.lock();
    let sfx = suffix(dt).expect("checked by applies");
    let delta_kernel = dev.kernel(&format!("attention_delta_{sfx}"));
    let dq_kernel = dev.flash_kernel(&format!("flash_dq_{sfx}"));
    let dkdv_kernel = dev.flash_kernel(&format!("flash_dkdv_{sfx}"));
    let (rows, d_i, lq_i, lk_i) = ((bh * lq) as i64, HEAD_DIM as i32, lq as i32, lk as i32);
    let cfg =
        LaunchConfig { grid_dim: ((bh * lq).div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut a = dev.stream.launch_builder(&delta_kernel);
    a.arg(&gp).arg(&op).arg(&deltap).arg(&rows).arg(&d_i);
    // SAFETY: `rows` rows of 128 values in both inputs and one f32 per row in `delta`.
    unsafe { a.launch(cfg) }.unwrap_or_else(|e| panic!("attention_delta launch: {e}"));
    let mut a = dev.stream.launch_builder(&dq_kernel);
    a.arg(&qp).arg(&kp).arg(&vp).arg(&gp).arg(&lp).arg(&deltap).arg(&dqp).arg(&lq_i).arg(&lk_i).arg(&scale);
    // SAFETY: as the forward, plus `delta` [bh, lq] (written above on the same stream) and dq like q.
    unsafe { a.launch(grid(lq, bh)) }.unwrap_or_else(|e| panic!("flash_dq launch: {e}"));
    let mut a = dev.stream.launch_builder(&dkdv_kernel);
    a.arg(&qp).arg(&kp).arg(&vp).arg(&gp).arg(&lp).arg(&deltap).arg(&dkp).arg(&dvp).arg(&lq_i).arg(&lk_i).arg(&scale);
    // SAFETY: as above; dk and dv like k.
    unsafe { a.launch(grid(lk, bh)) }.unwrap_or_else(|e| panic!("flash_dkdv launch: {e}"));
    dev.synchronize();
    drop(dev);
    drop(buf);
    [dq, dk, dv]
}
