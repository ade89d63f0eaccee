//! Tensors as host `f32` vectors for the CPU twins of the kernels (`fused_attention/host.rs`,
//! `fused_norm/host.rs`, `fused_gates/host.rs`): read a tensor's values, write results back in a storage
//! dtype, and round an intermediate to that dtype as a cast in the tensor-op composition would.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorData};

use crate::primitive::wrap;

/// The values of a rank-`D` float tensor in f32, row-major, with its dims and dtype. Half types widen in
/// a plain loop over the slice (`TensorData::convert` goes element by element through a generic
/// conversion: 3% of a bf16 CPU step).
pub(crate) fn read<B: Backend, const D: usize>(t: FloatTensor<B>) -> (Vec<f32>, [usize; D], DType) {
    let t = wrap::<B, D>(t);
    let (dims, dtype) = (t.dims(), t.dtype());
    let data = t.into_data();
    let values = match dtype {
        DType::BF16 => data.as_slice::<half::bf16>().map(|s| s.iter().map(|v| v.to_f32()).collect()),
        DType::F16 => data.as_slice::<half::f16>().map(|s| s.iter().map(|v| v.to_f32()).collect()),
        _ => data.convert::<f32>().into_vec::<f32>(),
    };
    (values.unwrap_or_else(|e| panic!("reading tensor values on the host: {e:?}")), dims, dtype)
}

/// A tensor of `dims` holding `values` in `dtype` on `device` (rounded to nearest even, as
/// `TensorData::convert_dtype` rounds, in a loop that vectorizes).
pub(crate) fn write<B: Backend>(values: Vec<f32>, dims: &[usize], dtype: DType, device: &B::Device) -> FloatTensor<B> {
    let data = match dtype {
        DType::BF16 => {
            let bits = |x: f32| half::bf16::from_bits((Rounding::Bf16.round(x).to_bits() >> 16) as u16);
            TensorData::new(values.into_iter().map(bits).collect::<Vec<_>>(), dims.to_vec())
        }
        _ => TensorData::new(values, dims.to_vec()).convert_dtype(dtype),
    };
    B::float_from_data(data, device)
}

/// Rounding of an f32 intermediate to a storage dtype and back, inlined where it is used: a function
/// pointer per element (what this replaced) cost 15% of a bf16 CPU step. The match on the variant is
/// loop-invariant, so the compiler hoists it out of the loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rounding {
    /// f32 storage: no rounding.
    Exact,
    /// bf16: round to nearest even on the upper 16 bits, as `half::bf16::from_f32`, branch-free.
    Bf16,
    /// f16 (through `half`).
    F16,
}

impl Rounding {
    pub(crate) fn of(dtype: DType) -> Self {
        match dtype {
            DType::BF16 => Self::Bf16,
            DType::F16 => Self::F16,
            _ => Self::Exact,
        }
    }

    #[inline(always)]
    pub(crate) fn round(self, x: f32) -> f32 {
        match self {
            Self::Exact => x,
            Self::Bf16 => {
                let u = x.to_bits();
                let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1)) & 0xffff_0000;
                // NaN stays a (quiet) NaN; infinities and overflow to infinity come out of the addition.
                f32::from_bits(if x.is_nan() { (u | 0x0040_0000) & 0xffff_0000 } else { rounded })
            }
            Self::F16 => half::f16::from_f32(x).to_f32(),
        }
    }

    /// Every value rounded (a loop per variant, so each vectorizes).
    pub(crate) fn round_all(self, values: &mut [f32]) {
        match self {
            Self::Exact => {}
            Self::Bf16 => values.iter_mut().for_each(|x| *x = Self::Bf16.round(*x)),
            Self::F16 => values.iter_mut().for_each(|x| *x = Self::F16.round(*x)),
        }
    }
}

/// e^x in f32 to about 2 ulp, branch-free so that loops over it vectorize (libm's `expf` is a call per
/// element): x = k ln 2 + r with k rounded to nearest through the 1.5·2^23 trick, e^r by Cephes'
/// degree-6 polynomial on |r| <= ln 2 / 2, 2^k from the exponent bits. Below -87.3 (where e^x leaves the
/// normal range) it gives 0, above 88.7 the largest finite value's neighbourhood is clamped.
pub(crate) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let xc = x.clamp(-87.3, 88.7);
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let k = t - MAGIC;
    let r = xc - k * 0.693_359_4 + k * 2.121_944_4e-4; // ln 2 in two parts (Cephes C1, -C2)
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes' 5.0000001201e-1, which is 0.5 in f32
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits(((t.to_bits().wrapping_sub(0x4B40_0000) as i32 + 127) as u32) << 23);
    if x < -87.3 { 0.0 } else { er * scale }
}

#[cfg(test)]
mod tests {
    use super::Rounding;

    #[test]
    fn bf16_rounding_is_half_s() {
        // Every 9973rd bit pattern: both signs, subnormals, ties, the edge of overflow.
        for v in (0..u32::MAX).step_by(9973).map(f32::from_bits).filter(|v| !v.is_nan()) {
            assert_eq!(Rounding::Bf16.round(v).to_bits(), half::bf16::from_f32(v).to_f32().to_bits(), "{v:e}");
        }
        for v in [f32::INFINITY, f32::NEG_INFINITY, f32::MAX, 0.0, -0.0, 1.0e-40] {
            assert_eq!(Rounding::Bf16.round(v).to_bits(), half::bf16::from_f32(v).to_f32().to_bits(), "{v:e}");
        }
        assert!(Rounding::Bf16.round(f32::NAN).is_nan());
    }

    /// The fast half-type paths of `write` and `read` store and load exactly what Burn's conversions do.
    #[test]
    fn write_and_read_match_burn_conversions() {
        use burn::backend::Flex;
        use burn::tensor::{DType, TensorData};
        let mut values: Vec<f32> = (0..u32::MAX).step_by(99991).map(f32::from_bits).filter(|v| !v.is_nan()).collect();
        values.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MAX, 0.0, -0.0, 1.0e-40, 65520.0]);
        let n = values.len();
        for dtype in [DType::BF16, DType::F16, DType::F32] {
            let ours = super::write::<Flex>(values.clone(), &[n], dtype, &Default::default());
            let burn = TensorData::new(values.clone(), [n]).convert_dtype(dtype);
            let (back, dims, read_dtype) = super::read::<Flex, 1>(ours);
            assert_eq!((dims, read_dtype), ([n], dtype));
            let expected: Vec<f32> = burn.convert::<f32>().into_vec().unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(&expected), "{dtype:?}");
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (super::exp(x), x.exp());
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.001_37;
        }
        assert!(worst <= 2.5e-7, "max relative error {worst:e}");
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp(-100.0), 0.0);
        assert_eq!(super::exp(0.0), 1.0);
    }
}
