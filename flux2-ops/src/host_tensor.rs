//! Tensors as host `f32` vectors for the CPU twins of the kernels (`fused_attention/host.rs`,
//! `fused_norm/host.rs`, `fused_gates/host.rs`): read a tensor's values, write results back in a storage
//! dtype, and round an intermediate to that dtype as a cast in the tensor-op composition would.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

/// The values of a rank-`D` float tensor in f32, row-major, with its dims and dtype.
pub(crate) fn read<B: Backend, const D: usize>(t: FloatTensor<B>) -> (Vec<f32>, [usize; D], DType) {
    let t = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(t));
    let (dims, dtype) = (t.dims(), t.dtype());
    let values = t.into_data().convert::<f32>().into_vec::<f32>();
    (values.unwrap_or_else(|e| panic!("reading tensor values on the host: {e:?}")), dims, dtype)
}

/// A tensor of `dims` holding `values` in `dtype` on `device`.
pub(crate) fn write<B: Backend>(values: Vec<f32>, dims: &[usize], dtype: DType, device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(values, dims.to_vec()).convert_dtype(dtype), device)
}

/// Rounding of an f32 value to `dtype` and back (identity for f32).
pub(crate) fn rounding(dtype: DType) -> fn(f32) -> f32 {
    match dtype {
        DType::BF16 => |x| half::bf16::from_f32(x).to_f32(),
        DType::F16 => |x| half::f16::from_f32(x).to_f32(),
        _ => |x| x,
    }
}
