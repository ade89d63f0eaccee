//! The fused normalizations ([`crate::fused_norm`]) on CUDA: one NVRTC kernel per op and direction
//! (`kernels.cu`), on this crate's stream.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, FloatDType};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::tensor::CubeTensor;
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::attention::{contiguous, suffix};
use super::device::{Buffers, device, wait_for_cubecl};
use crate::fused_norm::FusedNormBackend;

type Cuda = burn::backend::Cuda;
type T = CubeTensor<CudaRuntime>;

fn int(x: usize, what: &str) -> i32 {
    i32::try_from(x).unwrap_or_else(|_| panic!("fused normalization: {what} {x} over i32"))
}

/// A new uninitialised contiguous tensor shaped and typed like `like`.
fn empty_like(like: &T) -> T {
    let handle = like.client.empty(like.meta.shape().num_elements() * like.dtype.size());
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), like.meta.shape().clone(), handle, like.dtype)
}

/// `t` contiguous in `dtype` (gradients may arrive in another float type).
fn as_dtype(t: T, dtype: DType) -> T {
    let t = if t.dtype == dtype { t } else { Cuda::float_cast(t, FloatDType::from(dtype)) };
    contiguous(t)
}

/// A kernel's trailing scalar argument.
enum Scalar {
    I64(i64),
    I32(i32),
    F32(f32),
}

/// Runs `name_<dtype>` over `inputs` into a new tensor shaped like `inputs[0]`, then the `scalars`
/// (the kernels' argument order: inputs, output, scalars).
fn launch(name: &str, inputs: &[&T], cfg: LaunchConfig, scalars: &[Scalar]) -> T {
    let x = inputs[0];
    let out = empty_like(x);
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

/// One warp per row, 8 rows per 256-thread block.
fn warp_rows(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.div_ceil(8) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// One 256-thread block per row.
fn block_rows(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

#[allow(clippy::too_many_arguments)]
fn rope(name: &str, x: T, weight: T, cos: T, sin: T, seq: usize, offset: usize, eps: f32, grad: Option<T>) -> T {
    let dtype = x.dtype;
    let (x, weight) = (contiguous(x), as_dtype(weight, dtype));
    let (cos, sin) = (as_dtype(cos, DType::F32), as_dtype(sin, DType::F32));
    let shape = x.meta.shape();
    let (rows, d) = (shape[0], shape[1]);
    let scalars = [
        Scalar::I64(rows as i64),
        Scalar::I32(int(seq, "sequence")),
        Scalar::I32(int(offset, "offset")),
        Scalar::I32(int(d, "width")),
        Scalar::F32(eps),
    ];
    let grad = grad.map(|g| as_dtype(g, dtype));
    let mut inputs = vec![&x, &weight, &cos, &sin];
    if let Some(g) = &grad {
        inputs.push(g);
    }
    launch(name, &inputs, warp_rows(rows), &scalars)
}

fn layer_norm(name: &str, inputs: Vec<T>, eps: f32) -> T {
    let dtype = inputs[0].dtype;
    let inputs: Vec<T> = inputs.into_iter().map(|t| as_dtype(t, dtype)).collect();
    let shape = inputs[0].meta.shape();
    let (b, s, d) = (shape[0], shape[1], shape[2]);
    let scalars = [Scalar::I32(int(s, "sequence")), Scalar::I32(int(d, "width")), Scalar::F32(eps)];
    let refs: Vec<&T> = inputs.iter().collect();
    launch(name, &refs, block_rows(b * s), &scalars)
}

impl FusedNormBackend for Cuda {
    fn rms_norm_rope(x: T, weight: T, cos: T, sin: T, seq: usize, offset: usize, eps: f32) -> T {
        rope("rms_rope", x, weight, cos, sin, seq, offset, eps, None)
    }

    fn rms_norm_rope_backward(x: T, weight: T, cos: T, sin: T, seq: usize, offset: usize, eps: f32, grad: T) -> T {
        rope("rms_rope_backward", x, weight, cos, sin, seq, offset, eps, Some(grad))
    }

    fn modulated_layer_norm(x: T, shift: T, scale: T, eps: f32) -> T {
        layer_norm("modulated_layer_norm", vec![x, shift, scale], eps)
    }

    fn modulated_layer_norm_backward(x: T, scale: T, eps: f32, grad: T) -> T {
        layer_norm("modulated_layer_norm_backward", vec![x, scale, grad], eps)
    }
}
