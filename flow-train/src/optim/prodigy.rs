//! Prodigy (Mishchenko & Defazio), as prodigyopt 1.1's `Prodigy.step` computes it: Adam whose step size
//! `d * lr` is estimated on the fly from how far the parameters moved along the gradients.
//!
//! Per step k (0-based), with D-statistics on every `slice_p`-th element (`g_s`, `p_s`):
//!
//! ```text
//! dlr  = d * lr * (bias correction ? sqrt(1 - b2^(k+1)) / (1 - b1^(k+1)) : 1)
//! num  = num * b3 + sum_tensors (d / d0) * dlr * <g_s, p0 - p_s>          (host f64)
//! m   <- m * b1 + d (1 - b1) g ;  v <- v * b2 + d^2 (1 - b2) g^2
//! s   <- s * b3 + (d / d0) * (safeguard_warmup ? d : dlr) * g_s
//! den  = sum_tensors |s|_1                                                (host f64)
//! if den == 0: stop here (no parameter change, k unchanged)
//! d_hat = d_coef * num / den ; d = max(d, d_hat) while d == d0 ; d_max = max(d_max, d_hat)
//! d    = min(d_max, d * growth_rate)
//! p   <- p - wd * dlr * p  (decouple) ;  p <- p - dlr * m / (sqrt(v) + d * eps)
//! ```
//!
//! `p0` is the first parameter value; an all-zero start (LoRA's up factor) keeps no copy, as prodigyopt
//! does. The D statistics need two numbers per tensor on the host each step (`<g_s, p0 - p_s>` and
//! `|s|_1`); they are reduced on the device and read in one transfer of `2 * tensors` floats, which
//! also synchronises the device once per step. Everything else stays on the device.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Slice, Tensor};

use super::{Optimizer, OptimizerState, ProdigySettings, check_inputs, f32_data, pow, take_f32, zeros};
use crate::error::{Error, Result};

/// prodigyopt's Prodigy.
pub struct Prodigy<B: Backend> {
    s: ProdigySettings,
    betas: [f64; 2],
    beta3: f64,
    eps: f64,
    weight_decay: f64,
    shapes: Vec<[usize; 2]>,
    device: B::Device,
    /// Updates done (prodigyopt's `k`).
    k: u64,
    d: f64,
    d_max: f64,
    d_numerator: f64,
    /// Last estimate and denominator (reported, not needed to continue; kept for the checkpoint).
    d_hat: f64,
    d_denom: f64,
    /// First moment (absent with `beta1 = 0`).
    exp_avg: Option<Vec<Tensor<B, 2>>>,
    exp_avg_sq: Vec<Tensor<B, 2>>,
    /// `s`, flat over the sliced elements.
    s_acc: Vec<Tensor<B, 1>>,
    /// Initial sliced parameters; `None` inside: the tensor started at zero. Outer `None`: before the
    /// first step.
    p0: Option<Vec<Option<Tensor<B, 1>>>>,
}

impl<B: Backend> Prodigy<B> {
    pub fn new(settings: &ProdigySettings, shapes: &[[usize; 2]], device: &B::Device) -> Result<Self> {
        let s = *settings;
        if !(s.d0 > 0.0 && s.d_coef > 0.0 && s.growth_rate > 0.0 && s.slice_p >= 1) {
            return Err(Error::InvalidValue {
                what: "prodigy settings",
                reason: format!("d0, d_coef, growth_rate must be > 0 and slice_p >= 1, got {s:?}"),
            });
        }
        let [b1, b2] = s.betas;
        Ok(Prodigy {
            s,
            betas: s.betas,
            beta3: s.beta3.unwrap_or_else(|| b2.sqrt()),
            eps: s.eps,
            weight_decay: s.weight_decay,
            shapes: shapes.to_vec(),
            device: device.clone(),
            k: 0,
            d: s.d0,
            d_max: s.d0,
            d_numerator: 0.0,
            d_hat: s.d0,
            d_denom: 0.0,
            exp_avg: (b1 > 0.0).then(|| shapes.iter().map(|sh| zeros(*sh, device)).collect()),
            exp_avg_sq: shapes.iter().map(|sh| zeros(*sh, device)).collect(),
            s_acc: shapes.iter().map(|sh| zeros([sliced_len(sh, s.slice_p)], device)).collect(),
            p0: None,
        })
    }

    /// Every `slice_p`-th element of the flattened tensor (prodigyopt's `flatten()[::slice_p]`).
    fn sliced(&self, t: Tensor<B, 2>) -> Tensor<B, 1> {
        let [r, c] = t.dims();
        let flat = t.reshape([r * c]);
        if self.s.slice_p == 1 { flat } else { flat.slice([Slice::new(0, None, self.s.slice_p as isize)]) }
    }
}

fn sliced_len(shape: &[usize; 2], slice_p: usize) -> usize {
    (shape[0] * shape[1]).div_ceil(slice_p)
}

/// Reads `values` (one `[1]` tensor each) to the host in one transfer.
fn read_scalars<B: Backend>(values: Vec<Tensor<B, 1>>) -> Result<Vec<f64>> {
    let data = Tensor::cat(values, 0).into_data();
    data.iter::<f64>().map(Ok).collect()
}

impl<B: Backend> Optimizer<B> for Prodigy<B> {
    fn name(&self) -> &'static str {
        "prodigy"
    }

    fn step(&mut self, lr: f64, params: Vec<Tensor<B, 2>>, grads: Vec<Tensor<B, 2>>) -> Result<Vec<Tensor<B, 2>>> {
        check_inputs(self.name(), &self.shapes, &params, &grads)?;
        if self.p0.is_none() {
            // prodigyopt's `p.any()`: an all-zero tensor keeps a scalar zero instead of a copy.
            let max_abs = read_scalars(params.iter().map(|p| p.clone().abs().max()).collect())?;
            self.p0 =
                Some(params.iter().zip(max_abs).map(|(p, m)| (m != 0.0).then(|| self.sliced(p.clone()))).collect());
        }
        let [b1, b2] = self.betas;
        let (d, d0, b3) = (self.d, self.s.d0, self.beta3);
        let k1 = self.k + 1;
        let bias_correction =
            if self.s.use_bias_correction { (1.0 - pow(b2, k1)).powf(0.5) / (1.0 - pow(b1, k1)) } else { 1.0 };
        let dlr = d * lr * bias_correction;
        let d_numerator = self.d_numerator * b3;

        // Pass 1: moments, s, and the two D statistics per tensor (reduced on the device).
        let mut grads = grads;
        let mut stats = Vec::new();
        if lr > 0.0 {
            let p0 = self.p0.as_deref().unwrap_or_default();
            for (i, (p, g)) in params.iter().zip(grads.iter_mut()).enumerate() {
                if self.weight_decay != 0.0 && !self.s.decouple {
                    *g = g.clone() + p.clone().mul_scalar(self.weight_decay);
                }
                let g_s = self.sliced(g.clone());
                let p_s = self.sliced(p.clone());
                let moved = match &p0[i] {
                    Some(p0) => p0.clone() - p_s,
                    None => p_s.neg(),
                };
                stats.push((g_s.clone() * moved).sum());
                if let Some(exp_avg) = self.exp_avg.as_mut() {
                    exp_avg[i] = exp_avg[i].clone().mul_scalar(b1) + g.clone().mul_scalar(d * (1.0 - b1));
                }
                self.exp_avg_sq[i] =
                    self.exp_avg_sq[i].clone().mul_scalar(b2) + g.clone().mul_scalar(d * d * (1.0 - b2)) * g.clone();
                let alpha = if self.s.safeguard_warmup { (d / d0) * d } else { (d / d0) * dlr };
                self.s_acc[i] = self.s_acc[i].clone().mul_scalar(b3) + g_s.mul_scalar(alpha);
                stats.push(self.s_acc[i].clone().abs().sum());
            }
        }
        let stats = if stats.is_empty() { Vec::new() } else { read_scalars(stats)? };
        let mut delta_numerator = 0.0;
        let mut d_denom = 0.0;
        for pair in stats.chunks(2) {
            delta_numerator += (d / d0) * dlr * pair[0];
            d_denom += pair[1];
        }
        if d_denom == 0.0 {
            // prodigyopt returns before touching the parameters (and before counting the step).
            return Ok(params);
        }
        let mut d_new = d;
        let mut d_hat = d;
        let numerator = d_numerator + delta_numerator;
        if lr > 0.0 {
            d_hat = self.s.d_coef * numerator / d_denom;
            if d_new == d0 {
                d_new = d_new.max(d_hat);
            }
            self.d_max = self.d_max.max(d_hat);
            d_new = self.d_max.min(d_new * self.s.growth_rate);
        }
        (self.d_numerator, self.d_denom, self.d, self.d_hat) = (numerator, d_denom, d_new, d_hat);

        // Pass 2: the update with the new d in the denominator and the old dlr.
        let mut out = Vec::with_capacity(params.len());
        for (i, (mut p, g)) in params.into_iter().zip(grads).enumerate() {
            let denom = self.exp_avg_sq[i].clone().sqrt().add_scalar(d_new * self.eps);
            if self.weight_decay != 0.0 && self.s.decouple {
                p = p.clone() + p.mul_scalar(-self.weight_decay * dlr);
            }
            let step = match &self.exp_avg {
                Some(exp_avg) => exp_avg[i].clone().mul_scalar(-dlr) / denom,
                None => g.mul_scalar(-dlr * d_new) / denom,
            };
            out.push(p + step);
        }
        self.k = k1;
        Ok(out)
    }

    fn state_bytes(&self) -> u64 {
        let mut bytes = 0u64;
        for (i, sh) in self.shapes.iter().enumerate() {
            let n = (sh[0] * sh[1]) as u64;
            let sliced = sliced_len(sh, self.s.slice_p) as u64;
            let first = if self.exp_avg.is_some() { 4 * n } else { 0 };
            // Before the first step p0 is counted at full size (its value decides whether it is kept).
            let p0 = match &self.p0 {
                Some(p0) if p0[i].is_none() => 4,
                _ => 4 * sliced,
            };
            bytes += first + 4 * n + 4 * sliced + p0;
        }
        bytes
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = BTreeMap::new();
        for (i, v) in self.exp_avg_sq.iter().enumerate() {
            tensors.insert(format!("{i}.exp_avg_sq"), f32_data(v));
            tensors.insert(format!("{i}.s"), f32_data(&self.s_acc[i]));
        }
        for (i, m) in self.exp_avg.iter().flatten().enumerate() {
            tensors.insert(format!("{i}.exp_avg"), f32_data(m));
        }
        for (i, p0) in self.p0.iter().flatten().enumerate() {
            if let Some(p0) = p0 {
                tensors.insert(format!("{i}.p0"), f32_data(p0));
            }
        }
        let p0_zero: Option<Vec<bool>> = self.p0.as_ref().map(|v| v.iter().map(Option::is_none).collect());
        let scalars = serde_json::json!({
            "optimizer": self.name(),
            "step": self.k,
            "d": self.d,
            "d_max": self.d_max,
            "d_numerator": self.d_numerator,
            "d_hat": self.d_hat,
            "d_denom": self.d_denom,
            "slice_p": self.s.slice_p,
            "p0_zero": p0_zero,
        });
        OptimizerState { tensors, scalars }
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        state.expect_optimizer(self.name())?;
        state.expect_setting("slice_p", self.s.slice_p as u64)?;
        let k = state.u64("step")?;
        let [d, d_max, d_numerator, d_hat, d_denom] =
            ["d", "d_max", "d_numerator", "d_hat", "d_denom"].map(|key| state.f64(key));
        let p0_zero: Option<Vec<bool>> = match state.scalars.get("p0_zero") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .ok()
                    .filter(|z: &Vec<bool>| z.len() == self.shapes.len())
                    .ok_or_else(|| Error::OptimizerState {
                        key: "p0_zero".into(),
                        reason: format!("expected {} booleans, got {v}", self.shapes.len()),
                    })?,
            ),
        };
        let (mut exp_avg, mut exp_avg_sq, mut s_acc) =
            (self.exp_avg.as_ref().map(|_| Vec::new()), Vec::new(), Vec::new());
        let mut p0 = p0_zero.as_ref().map(|_| Vec::new());
        for (i, sh) in self.shapes.iter().enumerate() {
            let sliced = [sliced_len(sh, self.s.slice_p)];
            if let Some(m) = exp_avg.as_mut() {
                m.push(take_f32(&mut state, &format!("{i}.exp_avg"), *sh, &self.device)?);
            }
            exp_avg_sq.push(take_f32(&mut state, &format!("{i}.exp_avg_sq"), *sh, &self.device)?);
            s_acc.push(take_f32(&mut state, &format!("{i}.s"), sliced, &self.device)?);
            if let (Some(p0), Some(zero)) = (p0.as_mut(), p0_zero.as_ref()) {
                p0.push(if zero[i] {
                    None
                } else {
                    Some(take_f32(&mut state, &format!("{i}.p0"), sliced, &self.device)?)
                });
            }
        }
        state.expect_consumed()?;
        (self.d, self.d_max, self.d_numerator, self.d_hat, self.d_denom) = (d?, d_max?, d_numerator?, d_hat?, d_denom?);
        (self.k, self.exp_avg, self.exp_avg_sq, self.s_acc, self.p0) = (k, exp_avg, exp_avg_sq, s_acc, p0);
        Ok(())
    }
}
