//! Quantizing one weight matrix on the host, exactly as the reference quantizers do it (see [`QType`]),
//! including their arithmetic dtype and `torch.round`'s ties-to-even (`f32::round_ties_even`): every intermediate (scale, `w / scale`, `1 / scale`, ...) is
//! rounded to the weight's dtype after each operation, as PyTorch computes bf16 tensors.

use rayon::prelude::*;

use super::fp8::{E4M3_MAX, f32_to_e4m3};
use super::qtype::QType;

/// A quantized [out, in] matrix on the host: one code per weight (row-major, unpacked), and per row
/// `in / group` scales (and zero points for the unsigned types), scales already rounded to the weight's
/// dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct HostQuantized {
    pub qtype: QType,
    pub shape: [usize; 2],
    pub group: usize,
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    /// Unsigned types only: the zero point of each group.
    pub zero_points: Vec<u8>,
}

/// Rounding to the arithmetic dtype: bf16 (FLUX.2's weights) or none (f32 weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Bf16,
    F16,
    F32,
}

impl Arith {
    fn r(self, x: f32) -> f32 {
        match self {
            Arith::Bf16 => half::bf16::from_f32(x).to_f32(),
            Arith::F16 => half::f16::from_f32(x).to_f32(),
            Arith::F32 => x,
        }
    }
}

/// Quantizes `weights` ([out, in], row-major, values already in the weight's dtype) to `qtype`.
pub fn quantize(weights: &[f32], shape: [usize; 2], qtype: QType, arith: Arith) -> HostQuantized {
    let [out, inp] = shape;
    let group = qtype.group(inp);
    let groups_per_row = inp.div_ceil(group);
    let rows: Vec<(Vec<u8>, Vec<f32>, Vec<u8>)> = (0..out)
        .into_par_iter()
        .map(|r| {
            let row = &weights[r * inp..(r + 1) * inp];
            let mut codes = Vec::with_capacity(inp);
            let mut scales = Vec::with_capacity(groups_per_row);
            let mut zeros = Vec::new();
            for chunk in row.chunks(group) {
                let (scale, zero) = quantize_group(chunk, qtype, arith, &mut codes);
                scales.push(scale);
                if let Some(zero) = zero {
                    zeros.push(zero);
                }
            }
            (codes, scales, zeros)
        })
        .collect();
    let mut q = HostQuantized {
        qtype,
        shape,
        group,
        codes: Vec::with_capacity(out * inp),
        scales: Vec::with_capacity(out * groups_per_row),
        zero_points: Vec::new(),
    };
    for (codes, scales, zeros) in rows {
        q.codes.extend(codes);
        q.scales.extend(scales);
        q.zero_points.extend(zeros);
    }
    q
}

/// One group's codes (appended to `codes`), its scale and, for unsigned types, its zero point.
fn quantize_group(w: &[f32], qtype: QType, a: Arith, codes: &mut Vec<u8>) -> (f32, Option<u8>) {
    let absmax = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    match qtype {
        QType::QFloat8 => {
            // quanto: scale = absmax / 448; q = clamp(w / scale, ±448).to(e4m3).
            let scale = a.r(absmax / E4M3_MAX);
            codes.extend(w.iter().map(|&x| {
                let q = if scale == 0.0 { 0.0 } else { a.r(x / scale) };
                f32_to_e4m3(q.clamp(-E4M3_MAX, E4M3_MAX))
            }));
            (scale, None)
        }
        QType::Float8 => {
            // torchao: scale = max(absmax / 448, eps); q = clamp(w * (1 / scale), ±448).to(e4m3).
            let scale = a.r(absmax / E4M3_MAX).max(a.r(f32::EPSILON));
            let recip = a.r(1.0 / scale);
            codes.extend(w.iter().map(|&x| f32_to_e4m3(a.r(x * recip).clamp(-E4M3_MAX, E4M3_MAX))));
            (scale, None)
        }
        QType::QInt8 => {
            // quanto: scale = absmax / 127; q = clamp(round(w / scale), -128, 127).
            let scale = a.r(absmax / 127.0);
            codes.extend(w.iter().map(|&x| {
                let q = if scale == 0.0 { 0.0 } else { f32::round_ties_even(a.r(x / scale)) };
                q.clamp(-128.0, 127.0) as i8 as u8
            }));
            (scale, None)
        }
        QType::Int8 => {
            // torchao: scale = max(absmax / 127.5, eps); q = clamp(round(w * (1 / scale)), -128, 127).
            let scale = a.r(absmax / 127.5).max(a.r(f32::EPSILON));
            let recip = a.r(1.0 / scale);
            codes.extend(w.iter().map(|&x| f32::round_ties_even(a.r(x * recip)).clamp(-128.0, 127.0) as i8 as u8));
            (scale, None)
        }
        QType::UInt(bits) => {
            // torchao uintx / ai-toolkit UIntXQuantizer: asymmetric over [min(min, 0), max(max, 0)].
            let qmax = f32::from((1u16 << bits) as u16 - 1);
            let min_neg = w.iter().fold(0f32, |m, &x| m.min(x));
            let max_pos = w.iter().fold(0f32, |m, &x| m.max(x));
            let scale = a.r(a.r(max_pos - min_neg) / qmax).max(a.r(f32::EPSILON));
            let zero = (-f32::round_ties_even(a.r(min_neg / scale))).clamp(0.0, qmax);
            let recip = a.r(1.0 / scale);
            codes.extend(w.iter().map(|&x| (f32::round_ties_even(a.r(x * recip)) + zero).clamp(0.0, qmax) as u8));
            (scale, Some(zero as u8))
        }
    }
}

impl HostQuantized {
    /// The weights back, in f32: `code * scale` (signed and float types) or `(code - zero) * scale`.
    pub fn dequantize(&self) -> Vec<f32> {
        let [_, inp] = self.shape;
        let groups_per_row = inp.div_ceil(self.group);
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let g = (i / inp) * groups_per_row + (i % inp) / self.group;
                let scale = self.scales[g];
                match self.qtype {
                    QType::QFloat8 | QType::Float8 => super::fp8::e4m3_to_f32(c) * scale,
                    QType::QInt8 | QType::Int8 => f32::from(c as i8) * scale,
                    QType::UInt(_) => (f32::from(c) - f32::from(self.zero_points[g])) * scale,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(out: usize, inp: usize) -> Vec<f32> {
        let mut rng = crate::Rng::new(5);
        (0..out * inp).map(|_| half::bf16::from_f32(rng.normal() as f32 * 0.05).to_f32()).collect()
    }

    /// Each type reconstructs the weights to within its resolution, with the scale layout it promises.
    #[test]
    fn every_type_reconstructs_within_its_resolution() {
        let (out, inp) = (16, 192);
        let w = weights(out, inp);
        for (qtype, tolerance) in [
            (QType::QFloat8, 0.04),
            (QType::Float8, 0.04),
            (QType::QInt8, 0.01),
            (QType::Int8, 0.01),
            (QType::UInt(8), 0.01),
            (QType::UInt(4), 0.15),
        ] {
            let q = quantize(&w, [out, inp], qtype, Arith::Bf16);
            assert_eq!(q.codes.len(), out * inp);
            assert_eq!(q.scales.len(), out * inp.div_ceil(qtype.group(inp)), "{qtype}");
            let back = q.dequantize();
            let err = crate::relative_error_slices(&back, &w).expect("same length");
            assert!(err < tolerance, "{qtype}: relative error {err}");
            assert!(err > 0.0, "{qtype}: quantization is lossy");
        }
    }

    #[test]
    fn zero_rows_stay_zero_and_uint_zero_points_cover_one_signed_group() {
        let w = vec![0.0f32; 2 * 64];
        for qtype in [QType::QFloat8, QType::Float8, QType::QInt8, QType::Int8, QType::UInt(4)] {
            assert!(quantize(&w, [2, 64], qtype, Arith::Bf16).dequantize().iter().all(|v| *v == 0.0), "{qtype}");
        }
        let w: Vec<f32> = (0..64).map(|i| i as f32 - 20.0).collect();
        let q = quantize(&w, [1, 64], QType::UInt(4), Arith::F32);
        // scale = 63 / 15 = 4.2, zero = round(20 / 4.2) = 5.
        assert_eq!(q.scales, [4.2]);
        assert_eq!(q.zero_points, [5]);
        assert_eq!((q.codes[0], q.codes[63]), (0, 15));
    }
}
