//! CUDA fast paths (feature `cuda`): cuBLAS GEMMs and a fused attention built from cuBLAS products and
//! two small NVRTC kernels, on Burn's CUDA tensors.
//!
//! Burn 0.21's own bf16 matmul reaches about 94 TFLOP/s on an H200 where cuBLAS reaches 750, and its
//! attention under autodiff is slower still (docs/performance.md). These modules work on the raw device
//! pointers cubecl hands out (`ComputeClient::get_resource`).
//!
//! Ordering: cubecl runs its kernels on streams it does not expose, so each op waits for the tensors'
//! stream (`client.sync()`), queues its work on a stream of its own and waits for that one before the
//! outputs go back to cubecl. The two host waits cost microseconds against products of milliseconds,
//! and they make the results safe whichever cubecl stream reads them next.
//!
//! - [`device`]: per-device context, stream, cuBLAS handle and compiled kernels; device pointers.
//! - [`gemm`]: strided-batched cuBLAS products on row-major operand descriptions; `matmul` for tensors.
//! - [`attention`]: the fused attention's forward and backward for [`crate::fused_attention`]: the one-kernel
//!   [`flash`] path for bf16/f16 at head dim 128, cuBLAS products over query blocks otherwise.
//! - [`norm`], [`gates`]: the fused element-wise chains of [`crate::fused_norm`] and [`crate::fused_gates`]
//!   (one kernel launch each through `launch`).
//! - [`offload`]: page-locked copies and copy-stream uploads for [`crate::offload`].
//! - [`quant`]: quantizing and dequantizing base weights for [`crate::quant::device`].

use std::sync::OnceLock;

pub(crate) mod attention;
pub mod device;
pub(crate) mod flash;
pub(crate) mod gates;
pub mod gemm;
mod launch;
pub(crate) mod norm;
pub(crate) mod offload;
pub(crate) mod quant;

/// Whether the kernels not yet checked on a GPU run: the one-kernel attention ([`flash`]) and the fused
/// element-wise ops ([`norm`], [`gates`]). They were written in a session without a device; their CPU twins
/// pass the CPU tests, but until `tools/bench/kernel_checks.sh` has passed on a GPU they are opt-in:
/// `FLUX2_FAST_KERNELS=1` in the environment.
pub fn fast_kernels() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("FLUX2_FAST_KERNELS").is_ok_and(|v| v == "1"))
}
