//! 4-axis rotary position embedding with interleaved pairs (BFL layout).
//!
//! Each token has ids (t, h, w, l); axis a rotates head dims [offset_a, offset_a + dim_a) with
//! frequencies theta^(-2j/dim_a). The tables are built on the host in f64 from the ids exactly as the
//! reference does, then applied in f32.

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

use crate::norm::RmsNorm;
use crate::position_ids::PositionIds;

/// cos/sin tables for one token sequence, [S, head_dim] each, f32.
#[derive(Debug, Clone)]
pub struct RopeTable<B: Backend> {
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
}

impl<B: Backend> RopeTable<B> {
    /// Tables for `ids` (the joint sequence: text first, then image and reference tokens).
    pub fn new(ids: &PositionIds, axes_dims: &[usize], theta: f64, device: &B::Device) -> Self {
        let head_dim: usize = axes_dims.iter().sum();
        let n = ids.len();
        let mut cos = Vec::with_capacity(n * head_dim);
        let mut sin = Vec::with_capacity(n * head_dim);
        for id in ids.rows() {
            for (axis, &dim) in axes_dims.iter().enumerate() {
                let pos = id.get(axis).copied().unwrap_or(0) as f32 as f64;
                for j in 0..dim / 2 {
                    let freq = 1.0 / theta.powf((2 * j) as f64 / dim as f64);
                    let angle = pos * freq;
                    let (c, s) = (angle.cos() as f32, angle.sin() as f32);
                    cos.extend_from_slice(&[c, c]);
                    sin.extend_from_slice(&[s, s]);
                }
            }
        }
        let make = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [n, head_dim]), (device, DType::F32));
        Self { cos: make(cos), sin: make(sin) }
    }

    pub fn len(&self) -> usize {
        self.cos.shape().dims::<2>()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates x [B, H, S, head_dim]: out[2j] = x[2j] cos - x[2j+1] sin, out[2j+1] = x[2j+1] cos + x[2j] sin.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.apply_at(x, 0)
    }

    /// `apply(norm(x))` for the S tokens at `offset..offset + S` of the table (one stream of the joint
    /// sequence): one fused kernel where the backend has it ([`flux2_ops::fused_norm`]), else the
    /// composition.
    pub fn norm_apply(&self, norm: &RmsNorm<B>, x: Tensor<B, 4>, offset: usize) -> Tensor<B, 4> {
        flux2_ops::fused_norm::rms_norm_rope(x, &norm.weight.val(), &self.cos, &self.sin, offset, norm.eps)
            .unwrap_or_else(|x| self.apply_at(norm.forward(x), offset))
    }

    /// [`Self::apply`] with the table rows `offset..offset + S`.
    fn apply_at(&self, x: Tensor<B, 4>, offset: usize) -> Tensor<B, 4> {
        let dtype = x.dtype();
        let [b, h, s, d] = x.shape().dims();
        let x = x.cast(DType::F32);
        let pairs: Tensor<B, 5> = x.clone().reshape([b, h, s, d / 2, 2]);
        let real = pairs.clone().narrow(4, 0, 1);
        let imag = pairs.narrow(4, 1, 1);
        let rotated: Tensor<B, 4> = Tensor::cat(vec![imag.neg(), real], 4).reshape([b, h, s, d]);
        let rows =
            |t: &Tensor<B, 2>| if offset == 0 && s == self.len() { t.clone() } else { t.clone().narrow(0, offset, s) };
        let cos = rows(&self.cos).unsqueeze::<4>();
        let sin = rows(&self.sin).unsqueeze::<4>();
        (x * cos + rotated * sin).cast(dtype)
    }
}
