//! Lion as lion-pytorch computes it (`update_fn`, f32 state):
//!
//! ```text
//! p <- p * (1 - lr * wd)                 weight decay first (wd / initial lr with decoupled_weight_decay)
//! p <- p + (-lr) * sign(m * b1 + (1 - b1) * g)
//! m <- m * b2 + (1 - b2) * g
//! ```
//!
//! `sign(0) = 0` as torch's `sgn`. One f32 moment: 4 bytes of state per parameter. Updates are ±lr per
//! element, so Lion wants a learning rate 3-10x below AdamW's.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::{LionSettings, Optimizer, OptimizerState, check_inputs, f32_data, take_f32, zeros};
use crate::error::Result;

/// lion-pytorch's Lion.
pub struct Lion<B: Backend> {
    betas: [f64; 2],
    /// Weight decay as applied per step: `weight_decay`, or `weight_decay / lr0` when decoupled.
    weight_decay: f64,
    shapes: Vec<[usize; 2]>,
    device: B::Device,
    step: u64,
    exp_avg: Vec<Tensor<B, 2>>,
}

impl<B: Backend> Lion<B> {
    /// With `decoupled_weight_decay`, the decay is divided by the base rate (lion-pytorch divides by the
    /// rate the optimizer was built with, which ai-toolkit sets to the base rate).
    pub fn new(settings: &LionSettings, shapes: &[[usize; 2]], device: &B::Device) -> Self {
        let s = settings;
        let weight_decay = if s.decoupled_weight_decay { s.weight_decay / s.lr } else { s.weight_decay };
        Lion {
            betas: s.betas,
            weight_decay,
            shapes: shapes.to_vec(),
            device: device.clone(),
            step: 0,
            exp_avg: shapes.iter().map(|s| zeros(*s, device)).collect(),
        }
    }
}

impl<B: Backend> Optimizer<B> for Lion<B> {
    fn name(&self) -> &'static str {
        "lion"
    }

    fn step(&mut self, lr: f64, params: Vec<Tensor<B, 2>>, grads: Vec<Tensor<B, 2>>) -> Result<Vec<Tensor<B, 2>>> {
        check_inputs(self.name(), &self.shapes, &params, &grads)?;
        self.step += 1;
        let [b1, b2] = self.betas;
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.into_iter().zip(grads).enumerate() {
            // lion-pytorch multiplies even when the factor is 1.
            let p = p.mul_scalar(1.0 - lr * self.weight_decay);
            let m = self.exp_avg[i].clone();
            let direction = (m.clone().mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1)).sign();
            out.push(p + direction.mul_scalar(-lr));
            self.exp_avg[i] = m.mul_scalar(b2) + g.mul_scalar(1.0 - b2);
        }
        Ok(out)
    }

    fn state_bytes(&self) -> u64 {
        self.shapes.iter().map(|s| 4 * (s[0] * s[1]) as u64).sum()
    }

    fn state(&self) -> OptimizerState {
        let tensors = self.exp_avg.iter().enumerate().map(|(i, m)| (format!("{i}.exp_avg"), f32_data(m))).collect();
        OptimizerState { tensors, scalars: serde_json::json!({"optimizer": self.name(), "step": self.step}) }
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        state.expect_optimizer(self.name())?;
        let step = state.u64("step")?;
        let mut exp_avg = Vec::with_capacity(self.shapes.len());
        for (i, s) in self.shapes.iter().enumerate() {
            exp_avg.push(take_f32(&mut state, &format!("{i}.exp_avg"), *s, &self.device)?);
        }
        state.expect_consumed()?;
        (self.step, self.exp_avg) = (step, exp_avg);
        Ok(())
    }
}
