//! Quantizing and dequantizing on the weights' device, for backends that have kernels for it.
//!
//! The generic path ([`super::QuantizedWeight`]) reads each weight back to the host to quantize it and
//! dequantizes with a chain of Burn ops (integer casts, a table lookup, f32 products): exact, but the host
//! round trip makes loading a 32B model take minutes and the chain's f32 intermediates make the scratch of
//! the largest layer several times its bf16 size. A [`QuantBackend`] does both in one kernel each on the
//! device (CUDA: `cuda/kernels.cu`), with the same arithmetic, so its codes equal the host quantizer's and
//! its dequantized weights equal the generic path's bit for bit. Backends without one are not registered
//! and keep the generic path.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Int, Tensor};

use super::qtype::QType;
use crate::backend_registry::{OpMap, OpRegistry};
use crate::primitive::{is_kernel_float, wrap};

/// How one quantized matrix is laid out: what the dequantizing kernel needs besides its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantLayout {
    pub qtype: QType,
    pub out_features: usize,
    pub in_features: usize,
    /// Inputs per scale.
    pub group: usize,
    /// Two codes per byte (types of 4 bits or fewer with an even width).
    pub packed: bool,
}

impl QuantLayout {
    pub fn new(qtype: QType, out_features: usize, in_features: usize) -> Self {
        let packed = qtype.bits() <= 4 && in_features.is_multiple_of(2);
        Self { qtype, out_features, in_features, group: qtype.group(in_features), packed }
    }

    pub fn groups(&self) -> usize {
        self.in_features.div_ceil(self.group)
    }
}

/// Codes (u8), scales and, for the unsigned types, zero points (both f32, [out, groups]) of one weight.
pub type DeviceQuantized<B> = (IntTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>);

/// A backend that quantizes and dequantizes on its device.
pub trait QuantBackend: Backend {
    /// `weight` [out, in] (f32, f16 or bf16) quantized with the arithmetic of its dtype.
    fn quantize_weight(weight: FloatTensor<Self>, layout: QuantLayout) -> DeviceQuantized<Self>;

    /// The weight [out, in] in the dtype of `scales` (and `zeros`, which have the same dtype).
    fn dequantize_weight(
        codes: IntTensor<Self>,
        scales: FloatTensor<Self>,
        zeros: Option<FloatTensor<Self>>,
        layout: QuantLayout,
    ) -> FloatTensor<Self>;
}

/// Quantized bases never train: under autodiff both ops run on the inner backend and their results are
/// untracked constants.
impl<B: QuantBackend, C: CheckpointStrategy> QuantBackend for Autodiff<B, C> {
    fn quantize_weight(weight: FloatTensor<Self>, layout: QuantLayout) -> DeviceQuantized<Self> {
        let (codes, scales, zeros) = B::quantize_weight(Self::inner(weight), layout);
        (codes, Self::from_inner(scales), zeros.map(Self::from_inner))
    }

    fn dequantize_weight(
        codes: IntTensor<Self>,
        scales: FloatTensor<Self>,
        zeros: Option<FloatTensor<Self>>,
        layout: QuantLayout,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::dequantize_weight(codes, Self::inner(scales), zeros.map(Self::inner), layout))
    }
}

type QuantizeFn<B> = fn(FloatTensor<B>, QuantLayout) -> DeviceQuantized<B>;
type DequantizeFn<B> = fn(IntTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>, QuantLayout) -> FloatTensor<B>;

struct Entry<B: Backend> {
    quantize: QuantizeFn<B>,
    dequantize: DequantizeFn<B>,
}

impl<B: Backend> Clone for Entry<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for Entry<B> {}

static REGISTRY: OpRegistry = OpRegistry::new(builtin);

fn builtin(map: &mut OpMap) {
    crate::backend_registry::cuda_entries!(map, entry);
}

/// Registers `B`'s kernels (the CUDA backend and its autodiff wrappers are registered already).
pub fn register<B: QuantBackend>() {
    REGISTRY.insert::<B, Entry<B>>(entry::<B>());
}

fn entry<B: QuantBackend>() -> Entry<B> {
    Entry { quantize: B::quantize_weight, dequantize: B::dequantize_weight }
}

/// Whether `B` quantizes on its device.
pub fn is_registered<B: Backend>() -> bool {
    REGISTRY.contains::<B>()
}

/// [`QuantBackend::quantize_weight`] when `B` has it and the dtype is one its kernels take; scales and zero
/// points come back in the weight's dtype (the reference's).
#[allow(clippy::type_complexity)]
pub(crate) fn quantize<B: Backend>(
    weight: &Tensor<B, 2>,
    qtype: QType,
) -> Option<(Tensor<B, 2, Int>, Tensor<B, 2>, Option<Tensor<B, 2>>)> {
    let dtype = weight.dtype();
    if !is_kernel_float(dtype) {
        return None;
    }
    let ops = REGISTRY.get::<B, Entry<B>>()?;
    let [out, inp] = weight.dims();
    let (codes, scales, zeros) =
        (ops.quantize)(weight.clone().into_primitive().tensor(), QuantLayout::new(qtype, out, inp));
    let scales = wrap::<B, 2>(scales).cast(dtype);
    Some((Tensor::from_primitive(codes), scales, zeros.map(|z| wrap::<B, 2>(z).cast(dtype))))
}

/// [`QuantBackend::dequantize_weight`] when `B` has it and the scales are already in `dtype` (else the
/// generic path, whose rounding differs).
pub(crate) fn dequantize<B: Backend>(
    codes: &Tensor<B, 2, Int>,
    scales: &Tensor<B, 2>,
    zeros: Option<&Tensor<B, 2>>,
    layout: QuantLayout,
    dtype: DType,
) -> Option<Tensor<B, 2>> {
    let same = scales.dtype() == dtype && zeros.is_none_or(|z| z.dtype() == dtype);
    if !same || !is_kernel_float(dtype) {
        return None;
    }
    let ops = REGISTRY.get::<B, Entry<B>>()?;
    let out = (ops.dequantize)(
        codes.clone().into_primitive(),
        scales.clone().into_primitive().tensor(),
        zeros.map(|z| z.clone().into_primitive().tensor()),
        layout,
    );
    Some(wrap(out))
}
