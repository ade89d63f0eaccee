//! AdamW with 8-bit moments: bitsandbytes' `AdamW8bit` (`Optimizer2State("adam", optim_bits=8)`), whose
//! CUDA kernel `kOptimizerStatic8bit2StateBlockwise` this follows step for step, in f32:
//!
//! ```text
//! m = decode(codes1) * absmax1[block] ;  v = decode(codes2) * absmax2[block]
//! m = m * b1 + (1 - b1) * g              v = v * b2 + ((1 - b2) * g) * g
//! absmax1 = max |m| per block            absmax2 = max v per block
//! p = p + (-lr * c2 / c1) * (m / (sqrt(v) + c2 * eps))     c1 = 1 - b1^t, c2 = sqrt(1 - b2^t)
//! p = p * (1 - lr * wd)                  decoupled weight decay, after the step (bitsandbytes order)
//! codes = encode(m / absmax1), encode(v / absmax2)
//! ```
//!
//! The step uses the fresh f32 moments; only what is stored is rounded to 8 bits, so the update equals
//! AdamW's up to the rounding of the moments carried from the previous step. Tensors with fewer than
//! `min_8bit_size` elements keep f32 moments with the kernel `kOptimizer32bit2State` arithmetic
//! (`v * b2 + (1 - b2) * (g * g)`), as bitsandbytes does.
//!
//! Where this differs from bitsandbytes: the block size is a setting (default 2048 here, 256 in
//! bitsandbytes 0.50); the kernel's fast-math `__powf`/`__fdividef` are exact here; a non-finite gradient
//! element is not skipped (the trainer stops on non-finite gradients before the optimizer runs); the
//! codes of an all-zero block differ (they decode to 0 either way).
//!
//! State: 2 bytes per parameter plus 8 bytes per block (two f32 absmax) for quantized tensors, 8 bytes
//! per parameter for the small ones. Everything runs on the device; nothing is read back per step.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor};

use super::blockwise_quant::DynamicCode;
use super::{Optimizer, OptimizerState, check_inputs, f32_data, take_f32, zeros};
use crate::error::{Error, Result};
use crate::job::{Adam8bitSettings, OptimizerPlan};

/// One tensor's moments.
enum Moments<B: Backend> {
    /// 8-bit codes (u8, one per element) and f32 absmax per block, for the first and second moment.
    Quantized { codes1: Tensor<B, 1, Int>, absmax1: Tensor<B, 1>, codes2: Tensor<B, 1, Int>, absmax2: Tensor<B, 1> },
    /// f32 moments (tensors below `min_8bit_size`).
    Full { exp_avg: Tensor<B, 2>, exp_avg_sq: Tensor<B, 2> },
}

/// bitsandbytes' AdamW8bit.
pub struct AdamW8bit<B: Backend> {
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    settings: Adam8bitSettings,
    shapes: Vec<[usize; 2]>,
    device: B::Device,
    step: u64,
    signed: DynamicCode<B>,
    unsigned: DynamicCode<B>,
    moments: Vec<Moments<B>>,
}

fn u8_zeros<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::zeros([n], (device, DType::U8))
}

impl<B: Backend> AdamW8bit<B> {
    pub fn new(
        plan: &OptimizerPlan,
        settings: &Adam8bitSettings,
        shapes: &[[usize; 2]],
        device: &B::Device,
    ) -> Result<Self> {
        if settings.block_size == 0 {
            return Err(Error::InvalidValue { what: "adamw8bit block_size", reason: "must be at least 1".into() });
        }
        let mut this = AdamW8bit {
            betas: plan.betas,
            eps: plan.eps,
            weight_decay: plan.weight_decay,
            settings: *settings,
            shapes: shapes.to_vec(),
            device: device.clone(),
            step: 0,
            signed: DynamicCode::new(true, device),
            unsigned: DynamicCode::new(false, device),
            moments: Vec::new(),
        };
        // bitsandbytes starts from zero codes and zero scales (decoding to 0).
        this.moments = shapes
            .iter()
            .map(|s| {
                let n = s[0] * s[1];
                if this.quantized(n) {
                    let blocks = this.blocks(n);
                    Moments::Quantized {
                        codes1: u8_zeros(n, device),
                        absmax1: zeros([blocks], device),
                        codes2: u8_zeros(n, device),
                        absmax2: zeros([blocks], device),
                    }
                } else {
                    Moments::Full { exp_avg: zeros(*s, device), exp_avg_sq: zeros(*s, device) }
                }
            })
            .collect();
        Ok(this)
    }

    fn quantized(&self, n: usize) -> bool {
        n >= self.settings.min_8bit_size
    }

    fn blocks(&self, n: usize) -> usize {
        n.div_ceil(self.settings.block_size)
    }

    /// `codes` followed by `pad` entries of `code` (the kernel's out-of-range load value).
    fn padded(codes: Tensor<B, 1, Int>, pad: usize, code: i64, device: &B::Device) -> Tensor<B, 1, Int> {
        if pad == 0 {
            return codes;
        }
        Tensor::cat(vec![codes, Tensor::full([pad], code, (device, DType::U8))], 0)
    }
}

impl<B: Backend> Optimizer<B> for AdamW8bit<B> {
    fn name(&self) -> &'static str {
        "adamw8bit"
    }

    fn step(&mut self, lr: f64, params: Vec<Tensor<B, 2>>, grads: Vec<Tensor<B, 2>>) -> Result<Vec<Tensor<B, 2>>> {
        check_inputs(self.name(), &self.shapes, &params, &grads)?;
        self.step += 1;
        // The kernels' f32 scalars.
        let (b1, b2, eps, lr32) = (self.betas[0] as f32, self.betas[1] as f32, self.eps as f32, lr as f32);
        let correction1 = 1.0 - b1.powf(self.step as f32);
        let correction2 = (1.0 - b2.powf(self.step as f32)).sqrt();
        let step_size = -lr32 * correction2 / correction1;
        let decay = 1.0 - lr32 * self.weight_decay as f32;
        let bs = self.settings.block_size;
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.into_iter().zip(grads).enumerate() {
            let [rows, cols] = self.shapes[i];
            let n = rows * cols;
            let (m, v, stored) = match &self.moments[i] {
                Moments::Full { exp_avg, exp_avg_sq } => {
                    let m = exp_avg.clone().mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
                    let v = exp_avg_sq.clone().mul_scalar(b2) + (g.clone() * g).mul_scalar(1.0 - b2);
                    (m.clone(), v.clone(), Moments::Full { exp_avg: m, exp_avg_sq: v })
                }
                Moments::Quantized { codes1, absmax1, codes2, absmax2 } => {
                    let blocks = self.blocks(n);
                    let pad = blocks * bs - n;
                    let g = g.reshape([n]);
                    let g = if pad == 0 { g } else { Tensor::cat(vec![g, zeros([pad], &self.device)], 0) };
                    let g = g.reshape([blocks, bs]);
                    let c1 = Self::padded(codes1.clone(), pad, self.signed.pad_code(), &self.device);
                    let c2 = Self::padded(codes2.clone(), pad, self.unsigned.pad_code(), &self.device);
                    let m = self.signed.decode(c1, absmax1.clone(), bs).mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
                    let v = self.unsigned.decode(c2, absmax2.clone(), bs).mul_scalar(b2)
                        + g.clone().mul_scalar(1.0 - b2) * g;
                    let (codes1, absmax1) = self.signed.encode(m.clone());
                    let (codes2, absmax2) = self.unsigned.encode(v.clone());
                    let real = |t: Tensor<B, 2>| t.reshape([blocks * bs]).narrow(0, 0, n).reshape([rows, cols]);
                    let keep = |c: Tensor<B, 1, Int>| if pad == 0 { c } else { c.narrow(0, 0, n) };
                    let stored = Moments::Quantized { codes1: keep(codes1), absmax1, codes2: keep(codes2), absmax2 };
                    (real(m), real(v), stored)
                }
            };
            let mut p = p + (m / (v.sqrt().add_scalar(correction2 * eps))).mul_scalar(step_size);
            if self.weight_decay > 0.0 {
                p = p.mul_scalar(decay);
            }
            out.push(p);
            self.moments[i] = stored;
        }
        Ok(out)
    }

    fn state_bytes(&self) -> u64 {
        self.shapes
            .iter()
            .map(|s| {
                let n = s[0] * s[1];
                if self.quantized(n) { 2 * n as u64 + 8 * self.blocks(n) as u64 } else { 8 * n as u64 }
            })
            .sum()
    }

    fn state(&self) -> OptimizerState {
        let mut tensors = BTreeMap::new();
        for (i, m) in self.moments.iter().enumerate() {
            match m {
                Moments::Quantized { codes1, absmax1, codes2, absmax2 } => {
                    tensors.insert(format!("{i}.state1"), codes1.to_data().convert_dtype(DType::U8));
                    tensors.insert(format!("{i}.absmax1"), f32_data(absmax1));
                    tensors.insert(format!("{i}.state2"), codes2.to_data().convert_dtype(DType::U8));
                    tensors.insert(format!("{i}.absmax2"), f32_data(absmax2));
                }
                Moments::Full { exp_avg, exp_avg_sq } => {
                    tensors.insert(format!("{i}.exp_avg"), f32_data(exp_avg));
                    tensors.insert(format!("{i}.exp_avg_sq"), f32_data(exp_avg_sq));
                }
            }
        }
        let scalars = serde_json::json!({
            "optimizer": self.name(),
            "step": self.step,
            "block_size": self.settings.block_size,
            "min_8bit_size": self.settings.min_8bit_size,
        });
        OptimizerState { tensors, scalars }
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        state.expect_optimizer(self.name())?;
        state.expect_setting("block_size", self.settings.block_size as u64)?;
        state.expect_setting("min_8bit_size", self.settings.min_8bit_size as u64)?;
        let step = state.u64("step")?;
        let mut moments = Vec::with_capacity(self.shapes.len());
        for (i, s) in self.shapes.iter().enumerate() {
            let n = s[0] * s[1];
            moments.push(if self.quantized(n) {
                let blocks = [self.blocks(n)];
                let mut codes = |key: &str| -> Result<Tensor<B, 1, Int>> {
                    let data = state.take(&format!("{i}.{key}"), &[n], DType::U8)?;
                    Ok(Tensor::from_data(data, (&self.device, DType::U8)))
                };
                let (codes1, codes2) = (codes("state1")?, codes("state2")?);
                Moments::Quantized {
                    codes1,
                    absmax1: take_f32(&mut state, &format!("{i}.absmax1"), blocks, &self.device)?,
                    codes2,
                    absmax2: take_f32(&mut state, &format!("{i}.absmax2"), blocks, &self.device)?,
                }
            } else {
                Moments::Full {
                    exp_avg: take_f32(&mut state, &format!("{i}.exp_avg"), *s, &self.device)?,
                    exp_avg_sq: take_f32(&mut state, &format!("{i}.exp_avg_sq"), *s, &self.device)?,
                }
            });
        }
        state.expect_consumed()?;
        (self.step, self.moments) = (step, moments);
        Ok(())
    }
}
