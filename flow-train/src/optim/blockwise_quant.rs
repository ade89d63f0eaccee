//! bitsandbytes' block-wise dynamic 8-bit quantization, on the device with Burn tensor ops.
//!
//! A value `x` of a block is stored as the index (one byte) of the entry of a fixed 256-entry code
//! table nearest to `x / absmax`, with one f32 `absmax = max |x|` per block. The table is the "dynamic"
//! map of `bitsandbytes.functional.create_dynamic_map`: a sign bit (signed map), then a run of zero bits
//! whose length is a decimal exponent (1e-6 .. 1), then a linear fraction whose precision grows as the
//! exponent shrinks. Small values keep their relative precision, which is what Adam's moments need
//! (their magnitudes span many decades inside one block). The signed map codes the first moment, the
//! unsigned map (same layout, the sign bit spent on one more fraction bit) the second.
//!
//! Encoding replicates the CUDA kernels' `quantize_2D` (used by the 8-bit optimizers): a 7-level binary
//! search over the sorted table, then the nearer of the two bracketing entries by comparing with their
//! midpoint (a tie keeps the searched pivot); for the signed map a negative value that rounded to the
//! table's zero is moved to the smallest negative entry, so the first moment never loses its sign. The
//! search runs as 8 gathers from the 256-entry table over the whole block tensor (no per-element host
//! work); decoding is one gather and a multiply by the block scale.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, IntDType, Tensor, TensorData};

/// Index of the table's 0.0 in the signed map (127 negative entries precede it).
pub const SIGNED_ZERO_CODE: i64 = 127;
/// The code bitsandbytes' kernels load for the padding past a tensor's last element (signed map; the
/// unsigned map pads with code 0): it takes part in the last block's absmax as in the kernel.
pub const SIGNED_PAD_CODE: i64 = 128;

/// `torch.linspace(start, end, steps)` for f32 as PyTorch's CPU kernel computes it: the first half
/// counts up from `start`, the second half down from `end`, with an f32 step, each value one fused
/// multiply-add (the kernel is scalar code that the compiler contracts to FMA in PyTorch's AVX2 build;
/// measured: this reproduces torch 2.15's values bit for bit, and with them bitsandbytes' map).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| if i < half { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - 1 - i) as f32, end) })
        .collect()
}

/// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)`: 256 sorted f32 values
/// in [-1, 1] (signed) or [0, 1] (unsigned), including 0 and 1.
pub fn dynamic_map(signed: bool) -> [f32; 256] {
    const MAX_EXPONENT_BITS: i32 = 7;
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..MAX_EXPONENT_BITS {
        // Fraction bits left at this exponent (the unsigned map has one more).
        let items = if signed { (1usize << i) + 1 } else { (1usize << (i + 1)) + 1 };
        let boundaries = linspace_f32(0.1, 1.0, items);
        let scale = 10f64.powi(-(MAX_EXPONENT_BITS - 1) + i) as f32;
        for w in boundaries.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            if signed {
                data.push(-scale * mean);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    debug_assert_eq!(data.len(), 256);
    data.sort_by(f32::total_cmp);
    let mut map = [0f32; 256];
    map.copy_from_slice(&data);
    map
}

/// One code table on the device.
#[derive(Clone, Debug)]
pub struct DynamicCode<B: Backend> {
    table: Tensor<B, 1>,
    signed: bool,
}

impl<B: Backend> DynamicCode<B> {
    pub fn new(signed: bool, device: &B::Device) -> Self {
        let table = Tensor::from_data(TensorData::new(dynamic_map(signed).to_vec(), [256]), (device, DType::F32));
        DynamicCode { table, signed }
    }

    /// The padding code of this map (see [`SIGNED_PAD_CODE`]).
    pub fn pad_code(&self) -> i64 {
        Self::pad_code_of(self.signed)
    }

    /// The padding code of the signed or unsigned map.
    pub fn pad_code_of(signed: bool) -> i64 {
        if signed { SIGNED_PAD_CODE } else { 0 }
    }

    /// Values of `codes` (u8, `blocks * block_size` of them) scaled by their block's `absmax`:
    /// `[blocks, block_size]`.
    pub fn decode(&self, codes: Tensor<B, 1, Int>, absmax: Tensor<B, 1>, block_size: usize) -> Tensor<B, 2> {
        let blocks = absmax.dims()[0];
        self.table.clone().select(0, codes).reshape([blocks, block_size]) * absmax.reshape([blocks, 1])
    }

    /// Codes (u8, flat) and per-block absmax of `values` `[blocks, block_size]`.
    pub fn encode(&self, values: Tensor<B, 2>) -> (Tensor<B, 1, Int>, Tensor<B, 1>) {
        let [blocks, block_size] = values.dims();
        let n = blocks * block_size;
        let absmax = values.clone().abs().max_dim(1);
        // A block of zeros (a LoRA factor whose gradient is still zero) has absmax 0: dividing by the
        // smallest normal instead keeps NaN out (the kernel divides 0/0; its codes there decode to 0 too).
        let scaled = (values.clone() / absmax.clone().clamp_min(f32::MIN_POSITIVE)).reshape([n]);
        let mut codes = self.nearest(scaled);
        if self.signed {
            // Keep negative values negative: a negative that rounded to 0.0 (code 127) becomes the
            // smallest negative entry (126). Codes above 127 are positive and never chosen for x < 0.
            let negative = values.reshape([n]).lower_elem(0.0);
            let capped = codes.clone().clamp_max(SIGNED_ZERO_CODE - 1);
            codes = codes.mask_where(negative, capped);
        }
        (codes.cast(IntDType::U8), absmax.reshape([blocks]))
    }

    /// The kernel's `quantize_2D`: index of the entry nearest `x` (in [-1, 1]).
    fn nearest(&self, x: Tensor<B, 1>) -> Tensor<B, 1, Int> {
        let device = x.device();
        let n = x.dims()[0];
        let lookup = |idx: &Tensor<B, 1, Int>| self.table.clone().select(0, idx.clone());
        // Binary search from 127 with steps 64 .. 1; after it the pivot p (even) has x in
        // (table[p-1], table[p+1]] up to the ends of the table.
        let mut pivot = Tensor::<B, 1, Int>::full([n], 127, &device);
        for step in [64i64, 32, 16, 8, 4, 2, 1] {
            let up = x.clone().greater(lookup(&pivot));
            pivot = pivot + up.int().mul_scalar(2 * step).sub_scalar(step);
        }
        let val = lookup(&pivot);
        let upper = lookup(&pivot.clone().add_scalar(1).clamp_max(255));
        let lower = lookup(&pivot.clone().sub_scalar(1).clamp_min(0));
        let above = x.clone().greater(val.clone());
        let go_up = above.clone().bool_and(x.clone().greater((upper + val.clone()).mul_scalar(0.5)));
        let go_down = above.bool_not().bool_and(x.lower((lower + val).mul_scalar(0.5)));
        (pivot + go_up.int() - go_down.int()).clamp(0, 255)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    #[test]
    fn maps_have_bitsandbytes_layout() {
        let signed = dynamic_map(true);
        let unsigned = dynamic_map(false);
        assert!(signed.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert!(unsigned.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!((signed[SIGNED_ZERO_CODE as usize], signed[255]), (0.0, 1.0));
        assert_eq!((unsigned[0], unsigned[255]), (0.0, 1.0));
        assert_eq!(signed.iter().filter(|v| **v < 0.0).count(), 127);
        // Smallest magnitudes: 1e-6 times the first fraction mean (0.55).
        assert!((signed[SIGNED_ZERO_CODE as usize + 1] - 0.55e-6).abs() < 1e-12);
    }

    #[test]
    fn encode_picks_the_nearest_entry_and_keeps_signs() {
        let device = Default::default();
        let code = DynamicCode::<B>::new(true, &device);
        let map = dynamic_map(true);
        // Exact entries, midpoints' neighbours, a tiny negative, and the block's absmax itself.
        let mut values: Vec<f32> = (0..256).map(|i| map[i]).collect();
        values.extend([0.3001, -0.3001, -1e-9, 1e-9, 0.0]);
        values.resize(511, 0.25);
        values.push(-1.0); // the second block's scale is 1 too
        let t = Tensor::<B, 2>::from_data(TensorData::new(values.clone(), [2, 256]), &device);
        let (codes, absmax) = code.encode(t.clone());
        let codes: Vec<i64> = codes.into_data().iter::<i64>().collect();
        assert_eq!(absmax.into_data().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
        for (i, v) in values.iter().enumerate() {
            let c = codes[i] as usize;
            let best = (0..256).min_by(|a, b| (map[*a] - v).abs().total_cmp(&(map[*b] - v).abs())).unwrap();
            if *v < 0.0 && map[best] == 0.0 {
                assert_eq!(c, 126, "value {v}: sign kept");
            } else {
                assert_eq!((map[c] - v).abs(), (map[best] - v).abs(), "value {v}: code {c}, nearest {best}");
            }
        }
        // Round trip through decode.
        let back = code.decode(
            Tensor::from_data(
                TensorData::new(codes.iter().map(|c| *c as u8).collect::<Vec<_>>(), [512]),
                (&device, DType::U8),
            ),
            Tensor::from_data(TensorData::new(vec![1.0f32, 1.0], [2]), &device),
            256,
        );
        let back: Vec<f32> = back.into_data().to_vec().unwrap();
        assert_eq!(&back[..256], &map[..]);
    }
}
