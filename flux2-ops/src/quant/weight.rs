//! A quantized weight on the device, and its dequantization for one product.

use burn::module::Module;
use burn::tensor::{DType, Int, IntDType, Tensor, TensorData, backend::Backend};

use super::device::QuantLayout;
use super::fp8::e4m3_to_f32;
use super::qtype::QType;
use super::quantizer::HostQuantized;

/// Codes, scales (and zero points) of one [out, in] matrix, kept on the device in their small form.
/// Codes are one byte each, or two per byte for types of 4 bits or fewer (low nibble = even column).
#[derive(Module, Debug)]
pub struct QuantizedWeight<B: Backend> {
    /// u8 [out, in] or, packed, [out, in / 2].
    pub codes: Tensor<B, 2, Int>,
    /// [out, groups] in the compute dtype (the reference's scale dtype for bf16 models).
    pub scales: Tensor<B, 2>,
    /// Unsigned types: [out, groups] (small integers, exact in any float dtype).
    pub zero_points: Option<Tensor<B, 2>>,
    #[module(skip)]
    pub qtype: QType,
    pub out_features: usize,
    pub in_features: usize,
    pub packed: bool,
}

impl<B: Backend> QuantizedWeight<B> {
    /// Uploads host codes; scales and zero points in `dtype` (the model's compute dtype).
    pub fn from_host(q: &HostQuantized, dtype: DType, device: &B::Device) -> Self {
        let [out, inp] = q.shape;
        let layout = QuantLayout { group: q.group, ..QuantLayout::new(q.qtype, out, inp) };
        let groups = layout.groups();
        let codes = if layout.packed {
            let bytes: Vec<u8> = q.codes.chunks_exact(2).map(|p| p[0] | (p[1] << 4)).collect();
            TensorData::new(bytes, [out, inp / 2])
        } else {
            TensorData::new(q.codes.clone(), [out, inp])
        };
        let floats = |values: Vec<f32>| {
            Tensor::<B, 2>::from_data(TensorData::new(values, [out, groups]), (device, DType::F32)).cast(dtype)
        };
        let zero_points =
            (!q.zero_points.is_empty()).then(|| floats(q.zero_points.iter().map(|&z| f32::from(z)).collect()));
        Self::from_parts(Tensor::from_data(codes, (device, DType::U8)), floats(q.scales.clone()), zero_points, layout)
    }

    /// Quantizes `weight` [out, in] to `qtype` with the arithmetic of the weight's dtype: on the device
    /// where the backend has kernels for it ([`super::device`]), else read back to the host one layer at
    /// a time. A failed read-back (a device error) is an error, not a
    /// silently empty weight.
    pub fn quantize(weight: Tensor<B, 2>, qtype: QType) -> Result<Self, String> {
        let dtype = weight.dtype();
        let device = weight.device();
        let [out, inp] = weight.dims();
        if let Some((codes, scales, zero_points)) = super::device::quantize(&weight, qtype) {
            return Ok(Self::from_parts(codes, scales, zero_points, QuantLayout::new(qtype, out, inp)));
        }
        let arith = match dtype {
            DType::BF16 => super::Arith::Bf16,
            DType::F16 => super::Arith::F16,
            _ => super::Arith::F32,
        };
        let data = weight.cast(DType::F32).try_into_data().map_err(|e| format!("reading the weight back: {e:?}"))?;
        let values: Vec<f32> = data.to_vec().map_err(|e| format!("reading the weight back: {e:?}"))?;
        let host = super::quantize(&values, [out, inp], qtype, arith);
        Ok(Self::from_host(&host, dtype, &device))
    }

    /// A weight from its device tensors (codes as `layout` packs them; scales and zero points [out, groups]).
    pub fn from_parts(
        codes: Tensor<B, 2, Int>,
        scales: Tensor<B, 2>,
        zero_points: Option<Tensor<B, 2>>,
        layout: QuantLayout,
    ) -> Self {
        QuantizedWeight {
            codes,
            scales,
            zero_points,
            qtype: layout.qtype,
            out_features: layout.out_features,
            in_features: layout.in_features,
            packed: layout.packed,
        }
    }

    /// What the dequantizing kernels need to know besides the tensors.
    pub fn layout(&self) -> QuantLayout {
        QuantLayout { packed: self.packed, ..QuantLayout::new(self.qtype, self.out_features, self.in_features) }
    }

    /// The code values as floats [out, in]: fp8 codes decoded, int8 codes signed, unsigned as stored.
    fn code_values(&self) -> Tensor<B, 2> {
        let (out, inp) = (self.out_features, self.in_features);
        let codes = if self.packed {
            let c = self.codes.clone().cast(IntDType::I32);
            let hi = c.clone().div_scalar(16);
            let lo = c - hi.clone().mul_scalar(16);
            let both: Tensor<B, 3, Int> = Tensor::stack(vec![lo, hi], 2);
            both.reshape([out, inp])
        } else {
            self.codes.clone().cast(IntDType::I32)
        };
        let device = codes.device();
        match self.qtype {
            QType::QFloat8 | QType::Float8 => {
                let table: Vec<f32> =
                    (0..=255u8).map(|c| if c & 0x7f == 0x7f { 0.0 } else { e4m3_to_f32(c) }).collect();
                let table = Tensor::<B, 1>::from_data(TensorData::new(table, [256]), (&device, DType::F32));
                table.select(0, codes.reshape([out * inp])).reshape([out, inp])
            }
            QType::QInt8 | QType::Int8 => {
                let c = codes.float();
                let negative = c.clone().greater_equal_elem(128.0).float();
                c - negative * 256.0
            }
            QType::UInt(_) => codes.float(),
        }
    }

    /// The weight [out, in] in `dtype`: `code * scale`, or `(code - zero) * scale` per group. A fresh
    /// tensor of one layer's size, for one product.
    pub fn dequantize(&self, dtype: DType) -> Tensor<B, 2> {
        let layout = self.layout();
        if let Some(w) = super::device::dequantize(&self.codes, &self.scales, self.zero_points.as_ref(), layout, dtype)
        {
            return w;
        }
        let (out, inp) = (self.out_features, self.in_features);
        let groups = self.scales.dims()[1];
        let group = inp / groups.max(1);
        let values: Tensor<B, 3> = self.code_values().reshape([out, groups, group]);
        let values = match &self.zero_points {
            Some(zero) => values - zero.clone().cast(DType::F32).reshape([out, groups, 1]),
            None => values,
        };
        let scales = self.scales.clone().cast(DType::F32).reshape([out, groups, 1]);
        (values * scales).reshape([out, inp]).cast(dtype)
    }
}
