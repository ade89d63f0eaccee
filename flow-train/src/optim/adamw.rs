//! AdamW exactly as `torch.optim.AdamW` computes it (single-tensor path, f32 state):
//!
//! ```text
//! p  <- p * (1 - lr * wd)                       decoupled weight decay, before the moments
//! m  <- m + (1 - b1) * (g - m)                  torch's lerp (weight < 0.5 branch)
//! v  <- v * b2 + ((1 - b2) * g) * g             addcmul
//! p  <- p + (-lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
//!
//! Scalars are f64 (Python) rounded to f32 per op, so results agree with PyTorch's CPU kernels to
//! about one f32 rounding per op (PyTorch may fuse the lerp into an FMA).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::{AdamWSettings, Optimizer, OptimizerState, check_inputs, f32_data, pow, take_f32, zeros};
use crate::error::Result;

/// `torch.optim.AdamW` with f32 moments (8 bytes of state per parameter).
pub struct AdamW<B: Backend> {
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    shapes: Vec<[usize; 2]>,
    device: B::Device,
    /// Updates done (torch's `state["step"]`, the same for every tensor).
    step: u64,
    exp_avg: Vec<Tensor<B, 2>>,
    exp_avg_sq: Vec<Tensor<B, 2>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(settings: &AdamWSettings, shapes: &[[usize; 2]], device: &B::Device) -> Self {
        AdamW {
            betas: settings.betas,
            eps: settings.eps,
            weight_decay: settings.weight_decay,
            shapes: shapes.to_vec(),
            device: device.clone(),
            step: 0,
            exp_avg: shapes.iter().map(|s| zeros(*s, device)).collect(),
            exp_avg_sq: shapes.iter().map(|s| zeros(*s, device)).collect(),
        }
    }
}

impl<B: Backend> Optimizer<B> for AdamW<B> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn step(&mut self, lr: f64, params: Vec<Tensor<B, 2>>, grads: Vec<Tensor<B, 2>>) -> Result<Vec<Tensor<B, 2>>> {
        check_inputs(self.name(), &self.shapes, &params, &grads)?;
        self.step += 1;
        let [b1, b2] = self.betas;
        let bias_correction1 = 1.0 - pow(b1, self.step);
        let bias_correction2_sqrt = (1.0 - pow(b2, self.step)).powf(0.5);
        let step_size = lr / bias_correction1;
        let mut out = Vec::with_capacity(params.len());
        for (i, (mut p, g)) in params.into_iter().zip(grads).enumerate() {
            if self.weight_decay != 0.0 {
                p = p.mul_scalar(1.0 - lr * self.weight_decay);
            }
            let m = self.exp_avg[i].clone();
            let m = m.clone() + (g.clone() - m).mul_scalar(1.0 - b1);
            let v = self.exp_avg_sq[i].clone().mul_scalar(b2) + g.clone().mul_scalar(1.0 - b2) * g;
            let denom = v.clone().sqrt().div_scalar(bias_correction2_sqrt).add_scalar(self.eps);
            out.push(p + m.clone().mul_scalar(-step_size) / denom);
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
        }
        Ok(out)
    }

    fn state_bytes(&self) -> u64 {
        self.shapes.iter().map(|s| 8 * (s[0] * s[1]) as u64).sum()
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = std::collections::BTreeMap::new();
        for (i, (m, v)) in self.exp_avg.iter().zip(&self.exp_avg_sq).enumerate() {
            tensors.insert(format!("{i}.exp_avg"), f32_data(m));
            tensors.insert(format!("{i}.exp_avg_sq"), f32_data(v));
        }
        OptimizerState { tensors, scalars: serde_json::json!({"optimizer": self.name(), "step": self.step}) }
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        state.expect_optimizer(self.name())?;
        let step = state.u64("step")?;
        let mut exp_avg = Vec::with_capacity(self.shapes.len());
        let mut exp_avg_sq = Vec::with_capacity(self.shapes.len());
        for (i, s) in self.shapes.iter().enumerate() {
            exp_avg.push(take_f32(&mut state, &format!("{i}.exp_avg"), *s, &self.device)?);
            exp_avg_sq.push(take_f32(&mut state, &format!("{i}.exp_avg_sq"), *s, &self.device)?);
        }
        state.expect_consumed()?;
        (self.step, self.exp_avg, self.exp_avg_sq) = (step, exp_avg, exp_avg_sq);
        Ok(())
    }
}
