//! Strided-batched cuBLAS products, described in row-major terms, and `matmul` on Burn's CUDA tensors.
//!
//! Row-major `C = A B` is column-major `Cᵀ = Bᵀ Aᵀ`, so cuBLAS gets the operands swapped with `m` and `n`
//! exchanged; a row-major view is `N` to cuBLAS and a transposed (column-major) one `T`. Accumulation is
//! f32 (`CUBLAS_COMPUTE_32F`, no TF32), so f32 products are more exact than Burn's TF32 ones.

use std::ffi::c_void;

use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cudarc::cublas::{result as cublas, sys, CudaBlas};

use super::device::{device, wait_for_cubecl, Buffers};
use crate::gemm_layout::{operand, Operand};

/// Burn's CUDA backend with its default element types.
type Cuda = burn::backend::Cuda;

/// One operand or result of a batched product: a device address, its element type and its
/// [`Operand`] layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Matrix {
    pub ptr: u64,
    pub dtype: DType,
    pub layout: Operand,
}

impl Matrix {
    pub fn row_major(ptr: u64, dtype: DType, ld: usize, batch_stride: usize) -> Self {
        Self { ptr, dtype, layout: Operand { col_major: false, ld, batch_stride } }
    }

    /// The transpose of a row-major matrix stored at `ptr` with leading dimension `ld`.
    pub fn transposed(ptr: u64, dtype: DType, ld: usize, batch_stride: usize) -> Self {
        Self { ptr, dtype, layout: Operand { col_major: true, ld, batch_stride } }
    }

    /// The same matrix `elements` further on (a row block).
    pub fn offset(self, elements: usize) -> Self {
        Self { ptr: self.ptr + (elements * self.dtype.size()) as u64, ..self }
    }
}

pub(crate) fn cuda_type(dtype: DType) -> Option<sys::cudaDataType> {
    match dtype {
        DType::F32 => Some(sys::cudaDataType::CUDA_R_32F),
        DType::F16 => Some(sys::cudaDataType::CUDA_R_16F),
        DType::BF16 => Some(sys::cudaDataType::CUDA_R_16BF),
        _ => None,
    }
}

fn int(x: usize) -> i32 {
    i32::try_from(x).unwrap_or_else(|_| panic!("cuBLAS: dimension {x} over i32"))
}

/// Queues `C = alpha A B + beta C` for `batch` products of A [m, k], B [k, n], C [m, n] (C row-major) on
/// the handle's stream.
///
/// # Safety
/// The addresses must be live device buffers covering what the layouts and sizes describe, not written
/// by other streams until the handle's stream is synchronised.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    blas: &CudaBlas,
    (m, n, k, batch): (usize, usize, usize, usize),
    alpha: f32,
    a: Matrix,
    b: Matrix,
    beta: f32,
    c: Matrix,
) {
    let op = |col_major: bool| {
        if col_major { sys::cublasOperation_t::CUBLAS_OP_T } else { sys::cublasOperation_t::CUBLAS_OP_N }
    };
    let ty = |x: &Matrix| cuda_type(x.dtype).unwrap_or_else(|| panic!("cuBLAS: unsupported dtype {:?}", x.dtype));
    assert!(!c.layout.col_major, "cuBLAS: results are written row-major");
    unsafe {
        cublas::gemm_strided_batched_ex(
            *blas.handle(),
            op(b.layout.col_major),
            op(a.layout.col_major),
            int(n),
            int(m),
            int(k),
            (&alpha as *const f32).cast::<c_void>(),
            b.ptr as *const c_void,
            ty(&b),
            int(b.layout.ld),
            b.layout.batch_stride as i64,
            a.ptr as *const c_void,
            ty(&a),
            int(a.layout.ld),
            a.layout.batch_stride as i64,
            (&beta as *const f32).cast::<c_void>(),
            c.ptr as *mut c_void,
            ty(&c),
            int(c.layout.ld),
            c.layout.batch_stride as i64,
            int(batch),
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .unwrap_or_else(|e| {
            panic!("cuBLAS GEMM [{m}x{k}] x [{k}x{n}] x {batch} ({:?}, {:?} -> {:?}): {e:?}", a.dtype, b.dtype, c.dtype)
        });
    }
}

/// The operand as cuBLAS can read it, copying to a contiguous tensor when the view has no cuBLAS form.
fn prepared(t: CubeTensor<CudaRuntime>) -> (CubeTensor<CudaRuntime>, Operand) {
    if let Some(op) = operand(t.meta.shape(), t.meta.strides()) {
        return (t, op);
    }
    let t = into_contiguous(t);
    let op = operand(t.meta.shape(), t.meta.strides()).expect("a contiguous tensor is a row-major operand");
    (t, op)
}

/// `lhs @ rhs` over the last two dims (equal batch dims, equal float dtypes) with cuBLAS; other dtypes
/// and empty products go to Burn's matmul.
pub fn matmul(lhs: FloatTensor<Cuda>, rhs: FloatTensor<Cuda>) -> FloatTensor<Cuda> {
    let dtype = lhs.dtype;
    if cuda_type(dtype).is_none() || rhs.dtype != dtype {
        return <Cuda as FloatTensorOps<Cuda>>::float_matmul(lhs, rhs);
    }
    let ls = lhs.meta.shape().to_vec();
    let rs = rhs.meta.shape().to_vec();
    let d = ls.len();
    assert!(
        d >= 2 && rs.len() == d && ls[..d - 2] == rs[..d - 2] && ls[d - 1] == rs[d - 2],
        "cuBLAS matmul: shapes {ls:?} and {rs:?} do not form a batched product"
    );
    let (m, k, n) = (ls[d - 2], ls[d - 1], rs[d - 1]);
    let batch: usize = ls[..d - 2].iter().product();
    if batch * m * n * k == 0 {
        return <Cuda as FloatTensorOps<Cuda>>::float_matmul(lhs, rhs);
    }
    let mut out_shape = ls.clone();
    out_shape[d - 1] = n;
    let (lhs, a) = prepared(lhs);
    let (rhs, b) = prepared(rhs);
    let client = lhs.client.clone();
    let out_handle = client.empty(batch * m * n * dtype.size());
    let out = CubeTensor::new_contiguous(client.clone(), lhs.device.clone(), Shape::from(out_shape), out_handle, dtype);

    let mut buffers = Buffers::new();
    let a = Matrix { ptr: buffers.ptr(&lhs), dtype, layout: a };
    let b = Matrix { ptr: buffers.ptr(&rhs), dtype, layout: b };
    let c = Matrix::row_major(buffers.ptr(&out), dtype, n, m * n);
    wait_for_cubecl(&client);
    let guard = device(lhs.device.index);
    let dev = guard.lock();
    // SAFETY: the buffers are held until after the stream sync; their producers finished at the wait.
    unsafe { gemm(&dev.blas, (m, n, k, batch), 1.0, a, b, 0.0, c) };
    dev.synchronize();
    drop(buffers);
    out
}
