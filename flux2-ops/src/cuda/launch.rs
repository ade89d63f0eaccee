//! One kernel launch of `kernels.cu` on this crate's stream for the element-wise ops (`norm`, `gates`):
//! inputs, a fresh output, scalar arguments, then a wait, so the output is complete when cubecl sees it.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, FloatDType};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::tensor::CubeTensor;
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::device::{Buffers, contiguous, device, empty, suffix, wait_for_cubecl};

type Cuda = burn::backend::Cuda;
type T = CubeTensor<CudaRuntime>;

pub(super) fn int(x: usize, what: &str) -> i32 {
    i32::try_from(x).unwrap_or_else(|_| panic!("CUDA kernel argument: {what} {x} over i32"))
}

/// A grid-stride launch over `n` elements: 256 threads a block, enough blocks to fill the device.
pub(super) fn elements(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65_536) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `t` contiguous in `dtype` (gradients may arrive in another float type).
pub(super) fn as_dtype(t: T, dtype: DType) -> T {
    let t = if t.dtype == dtype { t } else { Cuda::float_cast(t, FloatDType::from(dtype)) };
    contiguous(t)
}

/// A kernel's trailing scalar argument.
pub(super) enum Scalar {
    I64(i64),
    I32(i32),
    F32(f32),
}

/// Runs `name_<dtype of inputs[0]>` over `inputs` into a new contiguous tensor of `shape` (that dtype), then
/// the `scalars` (the kernels' argument order: inputs, output, scalars), and waits for it.
pub(super) fn launch(name: &str, inputs: &[&T], shape: &[usize], cfg: LaunchConfig, scalars: &[Scalar]) -> T {
    let x = inputs[0];
    let out = empty(x, shape, x.dtype);
    let mut buf = Buffers::new();
    let ptrs: Vec<u64> = inputs.iter().map(|t| buf.ptr(t)).collect();
    let out_ptr = buf.ptr(&out);
    wait_for_cubecl(&x.client);
    let guard = device(x.device.index);
    let mut dev = guard.lock();
    let kernel = dev.kernel(&format!("{name}_{}", suffix(x.dtype).expect("f32, f16 or bf16 (checked by fused_norm)")));
    let mut a = dev.stream.launch_builder(&kernel);
    for p in &ptrs {
        a.arg(p);
    }
    a.arg(&out_ptr);
    for s in scalars {
        match s {
            Scalar::I64(v) => a.arg(v),
            Scalar::I32(v) => a.arg(v),
            Scalar::F32(v) => a.arg(v),
        };
    }
    // SAFETY: the callers pass contiguous tensors of the shapes the kernel indexes (fused_norm checks them);
    // every buffer is held in `buf` until the stream sync below.
    unsafe { a.launch(cfg) }.unwrap_or_else(|e| panic!("{name} launch: {e}"));
    dev.synchronize();
    drop(dev);
    drop(buf);
    out
}
