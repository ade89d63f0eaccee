//! Adafactor as transformers' `Adafactor` computes it (the class ai-toolkit copies), for 2-D tensors
//! (factored second moment):
//!
//! ```text
//! t      <- t + 1
//! lr_t    = relative_step ? min(warmup_init ? 1e-6 t : 1e-2, 1/sqrt(t)) : lr
//! lr_t    = scale_parameter ? max(eps2, RMS(p)) * lr_t : lr_t
//! b2t     = 1 - t^decay_rate
//! u       = g^2 + eps1
//! R      <- R * b2t + (1 - b2t) * mean_cols(u)          row statistics   [rows]
//! C      <- C * b2t + (1 - b2t) * mean_rows(u)          column statistics [cols]
//! u       = g / sqrt(R / mean(R)) / sqrt(C)             rank-1 estimate of g / sqrt(E[g^2])
//! u       = lr_t * u / max(RMS(u) / clip_threshold, 1)
//! m      <- m * b1 + (1 - b1) * u; u = m                only with beta1
//! p      <- p - wd * lr_t * p - u
//! ```
//!
//! A 1-D tensor arrives as `[1, n]`; its single row statistic cancels (`R / mean(R) = 1`), which is
//! exactly transformers' unfactored update for a 1-D parameter. All of it stays on the device: the RMS
//! values and the learning rate under `scale_parameter` are device scalars broadcast into the update,
//! as in PyTorch. State: 4 bytes per row and per column (+ 4 per parameter with `beta1`).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::{Optimizer, OptimizerState, check_inputs, f32_data, take_f32, zeros};
use crate::error::Result;
use crate::job::{AdafactorSettings, OptimizerPlan};

/// transformers' Adafactor.
pub struct Adafactor<B: Backend> {
    s: AdafactorSettings,
    weight_decay: f64,
    shapes: Vec<[usize; 2]>,
    device: B::Device,
    step: u64,
    /// Row statistics `[rows]` per tensor.
    row: Vec<Tensor<B, 1>>,
    /// Column statistics `[cols]` per tensor.
    col: Vec<Tensor<B, 1>>,
    /// First moment, with `beta1` only.
    exp_avg: Option<Vec<Tensor<B, 2>>>,
}

/// `||x|| / sqrt(numel)` as a `[1, 1]` device scalar.
fn rms<B: Backend>(x: &Tensor<B, 2>) -> Tensor<B, 2> {
    let n = x.dims()[0] * x.dims()[1];
    x.clone().square().sum().sqrt().div_scalar((n as f64).powf(0.5)).reshape([1, 1])
}

impl<B: Backend> Adafactor<B> {
    pub fn new(plan: &OptimizerPlan, settings: &AdafactorSettings, shapes: &[[usize; 2]], device: &B::Device) -> Self {
        Adafactor {
            s: *settings,
            weight_decay: plan.weight_decay,
            shapes: shapes.to_vec(),
            device: device.clone(),
            step: 0,
            row: shapes.iter().map(|s| zeros([s[0]], device)).collect(),
            col: shapes.iter().map(|s| zeros([s[1]], device)).collect(),
            exp_avg: settings.beta1.map(|_| shapes.iter().map(|s| zeros(*s, device)).collect()),
        }
    }

    /// The step size before `scale_parameter` (Python float in transformers).
    fn relative_lr(&self, lr: f64) -> f64 {
        if !self.s.relative_step {
            return lr;
        }
        let t = self.step as f64;
        let min_step = if self.s.warmup_init { 1e-6 * t } else { 1e-2 };
        min_step.min(1.0 / t.sqrt())
    }
}

impl<B: Backend> Optimizer<B> for Adafactor<B> {
    fn name(&self) -> &'static str {
        "adafactor"
    }

    fn step(&mut self, lr: f64, params: Vec<Tensor<B, 2>>, grads: Vec<Tensor<B, 2>>) -> Result<Vec<Tensor<B, 2>>> {
        check_inputs(self.name(), &self.shapes, &params, &grads)?;
        self.step += 1;
        let rel = self.relative_lr(lr);
        let beta2t = 1.0 - (self.step as f64).powf(self.s.decay_rate);
        let [eps1, eps2] = self.s.eps;
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.into_iter().zip(grads).enumerate() {
            let [rows, cols] = self.shapes[i];
            // transformers: lr_t = max(eps2, RMS(p)) * rel, a 0-dim tensor when the RMS wins, else a float.
            let lr_t = self.s.scale_parameter.then(|| {
                let r = rms(&p);
                let floor = Tensor::<B, 2>::full([1, 1], eps2 * rel, (&self.device, DType::F32));
                floor.mask_where(r.clone().greater_elem(eps2), r.mul_scalar(rel))
            });
            let u = g.clone().square().add_scalar(eps1);
            let row =
                self.row[i].clone().mul_scalar(beta2t) + u.clone().mean_dim(1).reshape([rows]).mul_scalar(1.0 - beta2t);
            let col = self.col[i].clone().mul_scalar(beta2t) + u.mean_dim(0).reshape([cols]).mul_scalar(1.0 - beta2t);
            let r_factor = (row.clone() / row.clone().mean()).sqrt().recip().reshape([rows, 1]);
            let c_factor = col.clone().sqrt().recip().reshape([1, cols]);
            let u = r_factor * c_factor * g;
            let u = u.clone() / (rms(&u).div_scalar(self.s.clip_threshold)).clamp_min(1.0);
            let mut u = match &lr_t {
                Some(lr_t) => u * lr_t.clone(),
                None => u.mul_scalar(rel),
            };
            if let (Some(beta1), Some(exp_avg)) = (self.s.beta1, self.exp_avg.as_mut()) {
                let m = exp_avg[i].clone().mul_scalar(beta1) + u.mul_scalar(1.0 - beta1);
                exp_avg[i] = m.clone();
                u = m;
            }
            let p = match (self.weight_decay != 0.0, lr_t) {
                (false, _) => p,
                (true, Some(lr_t)) => p.clone() + p * lr_t.mul_scalar(-self.weight_decay),
                (true, None) => p.clone() + p.mul_scalar(-self.weight_decay * rel),
            };
            out.push(p - u);
            self.row[i] = row;
            self.col[i] = col;
        }
        Ok(out)
    }

    fn state_bytes(&self) -> u64 {
        let factors: u64 = self.shapes.iter().map(|s| 4 * (s[0] + s[1]) as u64).sum();
        let first: u64 =
            if self.exp_avg.is_some() { self.shapes.iter().map(|s| 4 * (s[0] * s[1]) as u64).sum() } else { 0 };
        factors + first
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = std::collections::BTreeMap::new();
        for (i, (r, c)) in self.row.iter().zip(&self.col).enumerate() {
            tensors.insert(format!("{i}.exp_avg_sq_row"), f32_data(r));
            tensors.insert(format!("{i}.exp_avg_sq_col"), f32_data(c));
        }
        for (i, m) in self.exp_avg.iter().flatten().enumerate() {
            tensors.insert(format!("{i}.exp_avg"), f32_data(m));
        }
        OptimizerState { tensors, scalars: serde_json::json!({"optimizer": self.name(), "step": self.step}) }
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        state.expect_optimizer(self.name())?;
        let step = state.u64("step")?;
        let (mut row, mut col) = (Vec::new(), Vec::new());
        let mut exp_avg = self.exp_avg.as_ref().map(|_| Vec::new());
        for (i, s) in self.shapes.iter().enumerate() {
            row.push(take_f32(&mut state, &format!("{i}.exp_avg_sq_row"), [s[0]], &self.device)?);
            col.push(take_f32(&mut state, &format!("{i}.exp_avg_sq_col"), [s[1]], &self.device)?);
            if let Some(m) = exp_avg.as_mut() {
                m.push(take_f32(&mut state, &format!("{i}.exp_avg"), *s, &self.device)?);
            }
        }
        state.expect_consumed()?;
        (self.step, self.row, self.col, self.exp_avg) = (step, row, col, exp_avg);
        Ok(())
    }
}
