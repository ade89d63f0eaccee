//! Rotary position embedding in the Hugging Face ("rotate-half") layout.
//!
//! Mistral checkpoints in HF format permute q/k rows so that RoPE pairs dimension `i` with `i + d/2`
//! (not the interleaved `2i, 2i+1` of Meta's layout or of the FLUX.2 transformer). For position `p`:
//! `out = x * cos(p w) + rotate_half(x) * sin(p w)` with `rotate_half([x1, x2]) = [-x2, x1]`,
//! `w_i = theta^(-2i/d)` for i < d/2, the table repeated over both halves.
//!
//! The tables are computed on the host in f32 the way transformers does (f32 inverse frequencies, f32
//! product with the position) and only then cast to the model dtype, so bf16 runs see the same rounded
//! angles as PyTorch. Positions are 0..L over the padded sequence: FLUX.2 passes no position ids, so
//! left-padding shifts the real tokens to higher positions, and we must do the same.

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

/// Cos/sin tables for one sequence length, shaped [1, 1, L, head_dim] to broadcast over batch and heads.
#[derive(Debug, Clone)]
pub struct RopeTables<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
}

/// Inverse frequencies `1 / theta^(2i/d)`, rounded like transformers' f32 computation.
pub fn inverse_frequencies(theta: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let power = (theta as f32 as f64).powf(exponent as f64) as f32;
            1.0f32 / power
        })
        .collect()
}

/// Host-side [L, head_dim] cos and sin tables (f32).
pub fn host_tables(theta: f64, head_dim: usize, seq_len: usize) -> (Vec<f32>, Vec<f32>) {
    let inv = inverse_frequencies(theta, head_dim);
    let mut cos = Vec::with_capacity(seq_len * head_dim);
    let mut sin = Vec::with_capacity(seq_len * head_dim);
    for pos in 0..seq_len {
        let angles: Vec<f32> = inv.iter().map(|w| pos as f32 * w).collect();
        // The same d/2 angles fill both halves of the head (HF's `cat((freqs, freqs))`).
        for _half in 0..2 {
            cos.extend(angles.iter().map(|a| (*a as f64).cos() as f32));
            sin.extend(angles.iter().map(|a| (*a as f64).sin() as f32));
        }
    }
    (cos, sin)
}

impl<B: Backend> RopeTables<B> {
    /// Tables for positions `0..seq_len`, cast to `dtype` (the activations' dtype).
    pub fn new(theta: f64, head_dim: usize, seq_len: usize, dtype: DType, device: &B::Device) -> Self {
        let (cos, sin) = host_tables(theta, head_dim, seq_len);
        let shape = [1, 1, seq_len, head_dim];
        let cos = Tensor::<B, 4>::from_data(TensorData::new(cos, shape), (device, DType::F32)).cast(dtype);
        let sin = Tensor::<B, 4>::from_data(TensorData::new(sin, shape), (device, DType::F32)).cast(dtype);
        Self { cos, sin }
    }

    /// Rotates [B, heads, L, head_dim] queries or keys.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let rotated = rotate_half(x.clone());
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// `[x1, x2] -> [-x2, x1]` over the last dimension.
pub fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn frequencies_follow_theta() {
        let inv = inverse_frequencies(1e9, 8);
        assert_eq!(inv.len(), 4);
        assert_eq!(inv[0], 1.0);
        assert!((inv[1] as f64 - 1e9f64.powf(-0.25)).abs() < 1e-9);
    }

    #[test]
    fn rotation_matches_hand_computation() {
        let device = Default::default();
        let theta = 100.0;
        let tables = RopeTables::<B>::new(theta, 4, 3, DType::F32, &device);
        let x = Tensor::<B, 4>::from_data(TensorData::new([1.0f32, 2.0, 3.0, 4.0].repeat(3), [1, 1, 3, 4]), &device);
        let y = tables.apply(x).into_data().to_vec::<f32>().unwrap();
        let w = [1.0f64, 1.0 / 10.0]; // theta^(-2i/4) for i = 0, 1
        for p in 0..3 {
            let (c0, s0) = ((p as f64 * w[0]).cos(), (p as f64 * w[0]).sin());
            let (c1, s1) = ((p as f64 * w[1]).cos(), (p as f64 * w[1]).sin());
            // pairs (x0, x2) and (x1, x3) rotate together
            let want = [1.0 * c0 - 3.0 * s0, 2.0 * c1 - 4.0 * s1, 3.0 * c0 + 1.0 * s0, 4.0 * c1 + 2.0 * s1];
            for d in 0..4 {
                assert!(
                    (y[p * 4 + d] as f64 - want[d]).abs() < 1e-5,
                    "pos {p} dim {d}: {} vs {}",
                    y[p * 4 + d],
                    want[d]
                );
            }
        }
    }
}
