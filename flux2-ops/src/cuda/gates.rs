//! The fused gates ([`crate::fused_gates`]) on CUDA: one grid-stride NVRTC kernel per op (`kernels.cu`).

use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::tensor::CubeTensor;

use super::launch::{Scalar, as_dtype, elements, int, launch};
use crate::fused_gates::FusedGateBackend;

type Cuda = burn::backend::Cuda;
type T = CubeTensor<CudaRuntime>;

fn swiglu_scalars(t: &T, start: usize, n: usize) -> [Scalar; 4] {
    let s = t.meta.shape();
    [
        Scalar::I64(s[0] as i64),
        Scalar::I32(int(s[1], "width")),
        Scalar::I32(int(start, "start")),
        Scalar::I32(int(n, "width")),
    ]
}

impl FusedGateBackend for Cuda {
    fn swiglu(t: T, start: usize, n: usize) -> T {
        let dtype = t.dtype;
        let t = as_dtype(t, dtype);
        let rows = t.meta.shape()[0];
        launch("swiglu", &[&t], &[rows, n], elements(rows * n), &swiglu_scalars(&t, start, n))
    }

    fn swiglu_backward(t: T, start: usize, n: usize, grad: T) -> T {
        let dtype = t.dtype;
        let (t, grad) = (as_dtype(t, dtype), as_dtype(grad, dtype));
        let shape = t.meta.shape().to_vec();
        let cfg = elements(shape.iter().product());
        launch("swiglu_backward", &[&t, &grad], &shape, cfg, &swiglu_scalars(&t, start, n))
    }

    fn gated_residual(x: Option<T>, gate: T, y: T) -> T {
        let dtype = y.dtype;
        let (gate, y) = (as_dtype(gate, dtype), as_dtype(y, dtype));
        let x = x.map(|x| as_dtype(x, dtype));
        let shape = y.meta.shape().to_vec();
        let (seq, d, n) = (shape[1], shape[2], shape.iter().product::<usize>());
        let scalars = [
            Scalar::I64(n as i64),
            Scalar::I32(int(seq, "sequence")),
            Scalar::I32(int(d, "width")),
            Scalar::I32(i32::from(x.is_some())),
        ];
        // Without x the kernel reads no x: y's buffer stands in for the pointer.
        let inputs = [x.as_ref().unwrap_or(&y), &gate, &y];
        launch("gated_residual", &inputs, &shape, elements(n), &scalars)
    }
}
