//! Between Burn's typed tensors and the float primitives a backend extension receives, and the float
//! dtypes this crate's kernels store: the few lines every op module (fused attention, fused element-wise
//! ops, quantized weights, their CUDA implementations) needs, once.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// A float primitive as a rank-`D` tensor.
pub(crate) fn wrap<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A float tensor's primitive.
pub(crate) fn unwrap<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// Whether the kernels take values stored as `dtype` (f32, f16, bf16).
pub(crate) fn is_kernel_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}
