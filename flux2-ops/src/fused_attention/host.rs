//! The fused attention on host memory for the CPU backend (`Flex`): per (batch, head), heads spread over
//! the cores, blocks of 128 query rows; products through the `gemm` crate (Burn's CPU matmul kernels),
//! the softmax and `dS` chains as one loop over each score block, all in f32 whatever the storage type.
//!
//! The tensor-op version ([`super::tiled_forward`], [`super::tiled_backward`]) spends most of a CPU
//! training step in broadcast element-wise passes over the score blocks, each a strided iteration with
//! its own allocation; here they are one pass over a buffer that is reused, and nothing of size [Lq, Lk]
//! exists. Roundings follow the tensor-op version where it rounds to the storage type: the probabilities
//! and `dS` are rounded as the matmul operands they are there.

use burn::tensor::DType;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use rayon::prelude::*;

use super::ranges;
use crate::host_tensor::{Rounding, exp, read, write};

/// A [B, H, L, d] tensor's values in f32, row-major, with its dims and dtype.
struct Heads {
    v: Vec<f32>,
    dims: [usize; 4],
    dtype: DType,
}

impl Heads {
    fn read<B: Backend>(t: FloatTensor<B>) -> Self {
        let (v, dims, dtype) = read::<B, 4>(t);
        Self { v, dims, dtype }
    }

    /// Rows of batch-head `bh`.
    fn head(&self, bh: usize) -> &[f32] {
        let n = self.dims[2] * self.dims[3];
        &self.v[bh * n..(bh + 1) * n]
    }
}

/// Query rows per score block: [128, Lk] f32 scores stay in cache-sized buffers, one per head in flight.
const QUERY_BLOCK: usize = 128;

/// A row-major view of a matrix in a slice: element (r, c) at `r * rs + c * cs`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn rows(data: &'a [f32], width: usize) -> Self {
        Self { data, rs: width, cs: 1 }
    }

    fn transposed(data: &'a [f32], width: usize) -> Self {
        Self { data, rs: 1, cs: width }
    }
}

/// `c` (m x n, row-major) = `a` (m x k) `b` (k x n), or `c +=` that when `accumulate`: the `gemm` crate's
/// kernels (those of Burn's CPU matmul), single-threaded (heads run in parallel).
fn product(c: &mut [f32], (m, n, k): (usize, usize, usize), a: View, b: View, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |v: View, rows: usize, cols: usize| (rows - 1) * v.rs + (cols - 1) * v.cs;
    assert!(c.len() >= m * n, "attention product: output of {} for {m} x {n}", c.len());
    if k > 0 {
        assert!(last(a, m, k) < a.data.len() && last(b, k, n) < b.data.len(), "attention product: operand too short");
    }
    // SAFETY: every index the kernel reads or writes is below the lengths asserted above (row/column
    // strides as given, the output contiguous row-major), and the slices do not alias (`c` is borrowed
    // mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `(out, lse)`: out in q's dtype, lse [B, H, Lq, 1] f32 (natural log of the scaled scores' sum).
pub(super) fn forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = B::float_device(&q);
    let (q, k, v) = (Heads::read::<B>(q), Heads::read::<B>(k), Heads::read::<B>(v));
    let [b, h, lq, d] = q.dims;
    let lk = k.dims[2];
    let rounding = Rounding::of(q.dtype);
    let mut out = vec![0.0f32; b * h * lq * d];
    let mut lse = vec![f32::NEG_INFINITY; b * h * lq];
    if lq == 0 || lk == 0 || d == 0 {
        // Nothing to attend to (or nothing asked): a zero output, an empty sum's log.
        return (
            write::<B>(out, &[b, h, lq, d], q.dtype, &device),
            write::<B>(lse, &[b, h, lq, 1], DType::F32, &device),
        );
    }
    out.par_chunks_mut(lq * d).zip(lse.par_chunks_mut(lq)).enumerate().for_each(|(bh, (out, lse))| {
        let (qh, kh, vh) = (q.head(bh), k.head(bh), v.head(bh));
        let mut s = vec![0.0f32; QUERY_BLOCK.min(lq) * lk];
        for (q0, qn) in ranges(lq, QUERY_BLOCK) {
            let s = &mut s[..qn * lk];
            product(s, (qn, lk, d), View::rows(&qh[q0 * d..], d), View::transposed(kh, d), false);
            let mut sums = vec![0.0f32; qn];
            for (r, row) in s.chunks_exact_mut(lk).enumerate() {
                // scale > 0: the largest scaled score is the scaled largest score, bit for bit.
                let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
                row.iter_mut().for_each(|x| *x = exp(*x * scale - m));
                let l: f32 = row.iter().sum();
                rounding.round_all(row);
                sums[r] = l;
                lse[q0 + r] = m + l.ln();
            }
            let o = &mut out[q0 * d..(q0 + qn) * d];
            product(o, (qn, d, lk), View::rows(s, lk), View::rows(vh, d), false);
            for (row, l) in o.chunks_exact_mut(d).zip(&sums) {
                row.iter_mut().for_each(|x| *x /= l);
            }
        }
    });
    (write::<B>(out, &[b, h, lq, d], q.dtype, &device), write::<B>(lse, &[b, h, lq, 1], DType::F32, &device))
}

/// `[dq, dk, dv]` in the dtypes of q, k, v, recomputing the probabilities block by block from q, k and
/// the saved lse (`dS = P (dO Vᵀ - rowsum(dO O)) scale`, then `dV += Pᵀ dO`, `dK += dSᵀ Q`, `dQ = dS K`).
pub(super) fn backward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad_out: FloatTensor<B>,
    scale: f32,
) -> [FloatTensor<B>; 3] {
    let device = B::float_device(&q);
    let (q, k, v) = (Heads::read::<B>(q), Heads::read::<B>(k), Heads::read::<B>(v));
    let (out, lse, dout) = (Heads::read::<B>(out), Heads::read::<B>(lse), Heads::read::<B>(grad_out));
    let [b, h, lq, d] = q.dims;
    let lk = k.dims[2];
    let rounding = Rounding::of(q.dtype);
    let (mut dq, mut dk, mut dv) =
        (vec![0.0f32; b * h * lq * d], vec![0.0f32; b * h * lk * d], vec![0.0f32; b * h * lk * d]);
    let zeros = |v: Vec<f32>, len: usize, dtype: DType| write::<B>(v, &[b, h, len, d], dtype, &device);
    if lq == 0 || lk == 0 || d == 0 {
        return [zeros(dq, lq, q.dtype), zeros(dk, lk, k.dtype), zeros(dv, lk, v.dtype)];
    }
    let grads = dq.par_chunks_mut(lq * d).zip(dk.par_chunks_mut(lk * d)).zip(dv.par_chunks_mut(lk * d));
    grads.enumerate().for_each(|(bh, ((dq, dk), dv))| {
        let (qh, kh, vh) = (q.head(bh), k.head(bh), v.head(bh));
        let (oh, doh, lh) = (out.head(bh), dout.head(bh), &lse.v[bh * lq..(bh + 1) * lq]);
        let block = QUERY_BLOCK.min(lq) * lk;
        let (mut p, mut ds) = (vec![0.0f32; block], vec![0.0f32; block]);
        for (q0, qn) in ranges(lq, QUERY_BLOCK) {
            let (p, ds) = (&mut p[..qn * lk], &mut ds[..qn * lk]);
            let (qb, dob) = (&qh[q0 * d..(q0 + qn) * d], &doh[q0 * d..(q0 + qn) * d]);
            product(p, (qn, lk, d), View::rows(qb, d), View::transposed(kh, d), false);
            product(ds, (qn, lk, d), View::rows(dob, d), View::transposed(vh, d), false);
            for r in 0..qn {
                let i = q0 + r;
                let delta = dot(&doh[i * d..(i + 1) * d], &oh[i * d..(i + 1) * d]);
                let (pr, dsr) = (&mut p[r * lk..(r + 1) * lk], &mut ds[r * lk..(r + 1) * lk]);
                for (s, dp) in pr.iter_mut().zip(dsr.iter_mut()) {
                    let prob = exp(*s * scale - lh[i]);
                    *dp = prob * (*dp - delta) * scale;
                    *s = prob;
                }
                rounding.round_all(pr);
                rounding.round_all(dsr);
            }
            product(dv, (lk, d, qn), View::transposed(p, lk), View::rows(dob, d), q0 > 0);
            product(dk, (lk, d, qn), View::transposed(ds, lk), View::rows(qb, d), q0 > 0);
            product(&mut dq[q0 * d..(q0 + qn) * d], (qn, d, lk), View::rows(ds, lk), View::rows(kh, d), false);
        }
    });
    [
        write::<B>(dq, &[b, h, lq, d], q.dtype, &device),
        write::<B>(dk, &[b, h, lk, d], k.dtype, &device),
        write::<B>(dv, &[b, h, lk, d], v.dtype, &device),
    ]
}
