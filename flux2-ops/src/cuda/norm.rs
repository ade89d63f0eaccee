//! The fused normalizations ([`crate::fused_norm`]) on CUDA: one NVRTC kernel per op and direction
//! (`kernels.cu`), on this crate's stream.

use burn::tensor::DType;
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::tensor::CubeTensor;
use cudarc::driver::LaunchConfig;

use super::launch::{Scalar, as_dtype, int, launch};
use crate::fused_norm::FusedNormBackend;

type Cuda = burn::backend::Cuda;
type T = CubeTensor<CudaRuntime>;

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
    let (x, weight) = (as_dtype(x, dtype), as_dtype(weight, dtype));
    let (cos, sin) = (as_dtype(cos, DType::F32), as_dtype(sin, DType::F32));
    let shape = x.meta.shape().to_vec();
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
    launch(name, &inputs, &shape, warp_rows(rows), &scalars)
}

fn layer_norm(name: &str, inputs: Vec<T>, eps: f32) -> T {
    let dtype = inputs[0].dtype;
    let inputs: Vec<T> = inputs.into_iter().map(|t| as_dtype(t, dtype)).collect();
    let shape = inputs[0].meta.shape().to_vec();
    let (b, s, d) = (shape[0], shape[1], shape[2]);
    let scalars = [Scalar::I32(int(s, "sequence")), Scalar::I32(int(d, "width")), Scalar::F32(eps)];
    let refs: Vec<&T> = inputs.iter().collect();
    launch(name, &refs, &shape, block_rows(b * s), &scalars)
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
