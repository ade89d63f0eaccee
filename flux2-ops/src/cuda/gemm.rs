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
use cudarc::cublas::{CudaBlas, result as cublas, sys};

use super::device::{Buffers, device, wait_for_cubecl};
use crate::gemm_layout::{Operand, operand};

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

/// The tensor as a cuBLAS operand (made contiguous first when its view has no cuBLAS form); the tensor and
/// its buffer stay held in `buffers`.
fn as_matrix(t: CubeTensor<CudaRuntime>, buffers: &mut Buffers) -> Matrix {
    let (t, layout) = prepared(t);
    let m = Matrix { ptr: buffers.ptr(&t), dtype: t.dtype, layout };
    buffers.keep(t);
    m
}

/// A new contiguous [rows, cols] tensor like `like`, and its address (held in `buffers`).
fn output(
    like: &CubeTensor<CudaRuntime>,
    rows: usize,
    cols: usize,
    buffers: &mut Buffers,
) -> (CubeTensor<CudaRuntime>, Matrix) {
    let dtype = like.dtype;
    let handle = like.client.empty(rows * cols * dtype.size());
    let t = CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::from(vec![rows, cols]),
        handle,
        dtype,
    );
    let m = Matrix::row_major(buffers.ptr(&t), dtype, cols, 0);
    (t, m)
}

fn dims2(t: &CubeTensor<CudaRuntime>) -> [usize; 2] {
    let s = t.meta.shape();
    assert_eq!(s.len(), 2, "low-rank product: expected a matrix, got shape {:?}", s.to_vec());
    [s[0], s[1]]
}

/// Whether the LoRA products can run here: one float dtype cuBLAS knows, no empty dimension.
fn low_rank_supported(ts: &[&CubeTensor<CudaRuntime>]) -> bool {
    let dtype = ts[0].dtype;
    cuda_type(dtype).is_some() && ts.iter().all(|t| t.dtype == dtype && t.meta.shape().iter().all(|&d| d > 0))
}

/// `(out, down)`: `down = factor · x Aᵀ` [rows, r], `out = down Bᵀ` [rows, out], both products in one
/// round trip (see [`crate::matmul::MatmulBackend::low_rank_forward`]).
pub fn low_rank_forward(
    x: FloatTensor<Cuda>,
    a: FloatTensor<Cuda>,
    b: FloatTensor<Cuda>,
    factor: f32,
) -> (FloatTensor<Cuda>, FloatTensor<Cuda>) {
    let ([rows, inner], [rank, _], [out_features, _]) = (dims2(&x), dims2(&a), dims2(&b));
    if !low_rank_supported(&[&x, &a, &b]) {
        return crate::matmul::low_rank_forward_products::<Cuda>(x, a, b, factor);
    }
    let mut buffers = Buffers::new();
    let client = x.client.clone();
    let index = x.device.index;
    let (down, d) = output(&x, rows, rank, &mut buffers);
    let (out, o) = output(&x, rows, out_features, &mut buffers);
    let xm = as_matrix(x, &mut buffers);
    let at = as_matrix(Cuda::float_transpose(a), &mut buffers);
    let bt = as_matrix(Cuda::float_transpose(b), &mut buffers);
    wait_for_cubecl(&client);
    let guard = device(index);
    let dev = guard.lock();
    // SAFETY: every buffer is held in `buffers` until after the stream sync; the inputs are complete.
    unsafe {
        gemm(&dev.blas, (rows, rank, inner, 1), factor, xm, at, 0.0, d);
        gemm(&dev.blas, (rows, out_features, rank, 1), 1.0, d, bt, 0.0, o);
    }
    dev.synchronize();
    drop(dev);
    drop(buffers);
    (out, down)
}

/// `[dx, da, db]` for the gradient `g` of [`low_rank_forward`]'s output: the four products in one round
/// trip.
pub fn low_rank_backward(
    x: FloatTensor<Cuda>,
    a: FloatTensor<Cuda>,
    b: FloatTensor<Cuda>,
    down: FloatTensor<Cuda>,
    g: FloatTensor<Cuda>,
    factor: f32,
) -> [FloatTensor<Cuda>; 3] {
    let ([rows, inner], [rank, _], [out_features, _]) = (dims2(&x), dims2(&a), dims2(&b));
    if !low_rank_supported(&[&x, &a, &b, &down, &g]) {
        return crate::matmul::low_rank_backward_products::<Cuda>(x, a, b, down, g, factor);
    }
    let mut buffers = Buffers::new();
    let client = x.client.clone();
    let index = x.device.index;
    let (g_down, gd) = output(&x, rows, rank, &mut buffers);
    let (db, dbm) = output(&x, out_features, rank, &mut buffers);
    let (da, dam) = output(&x, rank, inner, &mut buffers);
    let (dx, dxm) = output(&x, rows, inner, &mut buffers);
    let gt = as_matrix(Cuda::float_transpose(g.clone()), &mut buffers);
    let gm = as_matrix(g, &mut buffers);
    let downm = as_matrix(down, &mut buffers);
    let bm = as_matrix(b, &mut buffers);
    let xm = as_matrix(x, &mut buffers);
    let am = as_matrix(a, &mut buffers);
    let gd_t = Matrix::transposed(gd.ptr, gd.dtype, rank, 0);
    wait_for_cubecl(&client);
    let guard = device(index);
    let dev = guard.lock();
    // SAFETY: every buffer is held in `buffers` until after the stream sync; the inputs are complete.
    unsafe {
        gemm(&dev.blas, (out_features, rank, rows, 1), 1.0, gt, downm, 0.0, dbm); // dB = gᵀ down
        gemm(&dev.blas, (rows, rank, out_features, 1), factor, gm, bm, 0.0, gd); // g_down = factor g B
        gemm(&dev.blas, (rank, inner, rows, 1), 1.0, gd_t, xm, 0.0, dam); // dA = g_downᵀ x
        gemm(&dev.blas, (rows, inner, rank, 1), 1.0, gd, am, 0.0, dxm); // dx = g_down A
    }
    dev.synchronize();
    drop(dev);
    drop(buffers);
    drop(g_down);
    [dx, da, db]
}

/// CUDA's GEMMs behind the generic [`MatmulBackend`] extension.
impl crate::matmul::MatmulBackend for Cuda {
    fn fast_matmul(lhs: FloatTensor<Cuda>, rhs: FloatTensor<Cuda>) -> FloatTensor<Cuda> {
        matmul(lhs, rhs)
    }

    fn low_rank_forward(
        x: FloatTensor<Cuda>,
        a: FloatTensor<Cuda>,
        b: FloatTensor<Cuda>,
        factor: f32,
    ) -> (FloatTensor<Cuda>, FloatTensor<Cuda>) {
        low_rank_forward(x, a, b, factor)
    }

    fn low_rank_backward(
        x: FloatTensor<Cuda>,
        a: FloatTensor<Cuda>,
        b: FloatTensor<Cuda>,
        down: FloatTensor<Cuda>,
        g: FloatTensor<Cuda>,
        factor: f32,
    ) -> [FloatTensor<Cuda>; 3] {
        low_rank_backward(x, a, b, down, g, factor)
    }
}
