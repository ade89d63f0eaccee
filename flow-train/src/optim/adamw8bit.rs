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
//! State: 2 bytes per parameter plus 12 bytes per block (two f32 absmax and the block's f32 count of
//! valid values) for quantized tensors, 8 bytes per parameter for the small ones. Everything runs on the
//! device; nothing is read back per step.
//!
//! All quantized tensors share one flat, block-aligned buffer per moment (each tensor padded to whole
//! blocks, so no block straddles two tensors, as in bitsandbytes), and the small ones one flat f32
//! buffer: a step is one concatenation of the gradients and parameters, ~60 ops on the whole buffer and
//! views back into the tensors, instead of ~50 small ops per tensor. Measured on an H200 for a rank-32
//! FLUX.2 LoRA's 195 M parameters in 320 tensors (`cuda::step_time_on_cuda_for_a_rank_32_lora` in
//! `tests/optimizers.rs`): 90 ms per step, against 734 ms with per-tensor ops (AdamW: 39 ms).

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::blockwise_quant::DynamicCode;
use super::{AdamW8bitSettings, Optimizer, OptimizerState, check_inputs, f32_data, take_f32, zeros};
use crate::error::{Error, Result};

/// Where one trainable tensor lives in the flat buffers.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Index of the tensor in the parameter list.
    index: usize,
    shape: [usize; 2],
    /// Start in the group's flat buffer (elements; a multiple of the block size for quantized tensors).
    offset: usize,
    /// Elements of the tensor.
    n: usize,
    /// Blocks of the tensor (quantized group only).
    blocks: usize,
}

/// The quantized group: every tensor with at least `min_8bit_size` elements.
struct Quantized<B: Backend> {
    segments: Vec<Segment>,
    total_blocks: usize,
    /// Codes of the first / second moment, `[total_blocks * block_size]` u8 (padding holds the kernel's
    /// pad codes 128 / 0).
    codes1: Tensor<B, 1, Int>,
    codes2: Tensor<B, 1, Int>,
    /// Scales, `[total_blocks]` f32.
    absmax1: Tensor<B, 1>,
    absmax2: Tensor<B, 1>,
    /// Valid values per block, `[total_blocks, 1]` f32: the block size except in a tensor's last block;
    /// positions at or past it are padding.
    valid: Tensor<B, 2>,
}

/// The f32 group: the small tensors, one flat buffer per moment.
struct Full<B: Backend> {
    segments: Vec<Segment>,
    exp_avg: Tensor<B, 1>,
    exp_avg_sq: Tensor<B, 1>,
}

/// bitsandbytes' AdamW8bit.
pub struct AdamW8bit<B: Backend> {
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    settings: AdamW8bitSettings,
    shapes: Vec<[usize; 2]>,
    device: B::Device,
    step: u64,
    signed: DynamicCode<B>,
    unsigned: DynamicCode<B>,
    quantized: Option<Quantized<B>>,
    full: Option<Full<B>>,
}

fn u8_full<B: Backend>(n: usize, code: i64, device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::full([n], code, (device, DType::U8))
}

/// `pieces` (flat tensors) laid out at `segments`' offsets, zero-padded to `len` (one concatenation).
fn gather<B: Backend>(pieces: Vec<Tensor<B, 1>>, segments: &[Segment], len: usize, device: &B::Device) -> Tensor<B, 1> {
    let max_gap = segments
        .iter()
        .enumerate()
        .map(|(k, s)| segments.get(k + 1).map_or(len, |next| next.offset) - (s.offset + s.n))
        .max()
        .unwrap_or(0);
    let pad = (max_gap > 0).then(|| zeros::<B, 1>([max_gap], device));
    let mut parts = Vec::with_capacity(2 * segments.len());
    for (k, (piece, s)) in pieces.into_iter().zip(segments).enumerate() {
        parts.push(piece);
        let gap = segments.get(k + 1).map_or(len, |next| next.offset) - (s.offset + s.n);
        if let (true, Some(pad)) = (gap > 0, &pad) {
            parts.push(pad.clone().narrow(0, 0, gap));
        }
    }
    Tensor::cat(parts, 0)
}

impl<B: Backend> AdamW8bit<B> {
    pub fn new(settings: &AdamW8bitSettings, shapes: &[[usize; 2]], device: &B::Device) -> Result<Self> {
        let bs = settings.block_size;
        if bs == 0 {
            return Err(Error::InvalidValue { what: "adamw8bit block_size", reason: "must be at least 1".into() });
        }
        let (mut q_segments, mut f_segments) = (Vec::new(), Vec::new());
        let (mut q_blocks, mut f_len) = (0usize, 0usize);
        for (index, shape) in shapes.iter().enumerate() {
            let n = shape[0] * shape[1];
            if n >= settings.min_8bit_size {
                let blocks = n.div_ceil(bs);
                q_segments.push(Segment { index, shape: *shape, offset: q_blocks * bs, n, blocks });
                q_blocks += blocks;
            } else {
                f_segments.push(Segment { index, shape: *shape, offset: f_len, n, blocks: 0 });
                f_len += n;
            }
        }
        // bitsandbytes starts from zero codes and zero scales (decoding to 0); padding holds the pad codes.
        let quantized = (!q_segments.is_empty()).then(|| {
            let mut valid = vec![bs as f32; q_blocks];
            for s in &q_segments {
                valid[s.offset / bs + s.blocks - 1] = (s.n - (s.blocks - 1) * bs) as f32;
            }
            let valid = Tensor::from_data(TensorData::new(valid, [q_blocks, 1]), (device, DType::F32));
            let mut q = Quantized {
                segments: q_segments,
                total_blocks: q_blocks,
                codes1: u8_full(q_blocks * bs, 0, device),
                codes2: u8_full(q_blocks * bs, 0, device),
                absmax1: zeros([q_blocks], device),
                absmax2: zeros([q_blocks], device),
                valid,
            };
            q.codes1 = Self::with_pad_codes(&q, q.codes1.clone(), DynamicCode::<B>::pad_code_of(true), bs, device);
            q
        });
        let full = (!f_segments.is_empty()).then(|| Full {
            segments: f_segments,
            exp_avg: zeros([f_len], device),
            exp_avg_sq: zeros([f_len], device),
        });
        Ok(AdamW8bit {
            betas: settings.adam.betas,
            eps: settings.adam.eps,
            weight_decay: settings.adam.weight_decay,
            settings: *settings,
            shapes: shapes.to_vec(),
            device: device.clone(),
            step: 0,
            signed: DynamicCode::new(true, device),
            unsigned: DynamicCode::new(false, device),
            quantized,
            full,
        })
    }

    /// `codes` with every padding position set to `pad_code` (what the kernel loads past a tensor's end).
    fn with_pad_codes(
        q: &Quantized<B>,
        codes: Tensor<B, 1, Int>,
        pad_code: i64,
        bs: usize,
        device: &B::Device,
    ) -> Tensor<B, 1, Int> {
        let position = Tensor::<B, 1, Int>::arange(0..bs as i64, device).float().reshape([1, bs]);
        let padding = position.greater_equal(q.valid.clone()).reshape([q.total_blocks * bs]);
        codes.mask_fill(padding, pad_code)
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
        let device = self.device.clone();
        let update = |p: Tensor<B, 1>, m: Tensor<B, 1>, v: Tensor<B, 1>| {
            let p = p + (m / (v.sqrt().add_scalar(correction2 * eps))).mul_scalar(step_size);
            if self.weight_decay > 0.0 { p.mul_scalar(decay) } else { p }
        };
        let mut params: Vec<Option<Tensor<B, 2>>> = params.into_iter().map(Some).collect();
        let mut grads: Vec<Option<Tensor<B, 2>>> = grads.into_iter().map(Some).collect();
        let mut out: Vec<Option<Tensor<B, 2>>> = vec![None; self.shapes.len()];
        let mut take = |segments: &[Segment], len: usize| {
            let pick = |v: &mut Vec<Option<Tensor<B, 2>>>| -> Vec<Tensor<B, 1>> {
                segments.iter().filter_map(|s| v[s.index].take().map(|t| t.reshape([s.n]))).collect()
            };
            let (p, g) = (pick(&mut params), pick(&mut grads));
            (gather(p, segments, len, &device), gather(g, segments, len, &device))
        };

        if let Some(q) = self.quantized.as_mut() {
            let len = q.total_blocks * bs;
            let (p, g) = take(&q.segments, len);
            let g = g.reshape([q.total_blocks, bs]);
            let m = self.signed.decode(q.codes1.clone(), q.absmax1.clone(), bs).mul_scalar(b1)
                + g.clone().mul_scalar(1.0 - b1);
            let v = self.unsigned.decode(q.codes2.clone(), q.absmax2.clone(), bs).mul_scalar(b2)
                + g.clone().mul_scalar(1.0 - b2) * g;
            let (codes1, absmax1) = self.signed.encode(m.clone());
            let (codes2, absmax2) = self.unsigned.encode(v.clone());
            let p = update(p, m.reshape([len]), v.reshape([len]));
            for s in &q.segments {
                out[s.index] = Some(p.clone().narrow(0, s.offset, s.n).reshape(s.shape));
            }
            q.codes1 = Self::with_pad_codes(q, codes1, self.signed.pad_code(), bs, &device);
            q.codes2 = Self::with_pad_codes(q, codes2, self.unsigned.pad_code(), bs, &device);
            (q.absmax1, q.absmax2) = (absmax1, absmax2);
        }
        if let Some(f) = self.full.as_mut() {
            let len = f.exp_avg.dims()[0];
            let (p, g) = take(&f.segments, len);
            let m = f.exp_avg.clone().mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
            let v = f.exp_avg_sq.clone().mul_scalar(b2) + (g.clone() * g).mul_scalar(1.0 - b2);
            let p = update(p, m.clone(), v.clone());
            for s in &f.segments {
                out[s.index] = Some(p.clone().narrow(0, s.offset, s.n).reshape(s.shape));
            }
            (f.exp_avg, f.exp_avg_sq) = (m, v);
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn state_bytes(&self) -> u64 {
        let q = self
            .quantized
            .as_ref()
            .map_or(0, |q| (2 * q.total_blocks * self.settings.block_size + 12 * q.total_blocks) as u64);
        let f = self.full.as_ref().map_or(0, |f| 8 * f.exp_avg.dims()[0] as u64);
        q + f
    }

    fn state(&self) -> OptimizerState {
        // Per tensor, as bitsandbytes keeps it (codes without padding).
        let mut tensors = BTreeMap::new();
        let bs = self.settings.block_size;
        if let Some(q) = &self.quantized {
            for s in &q.segments {
                let (i, b0) = (s.index, s.offset / bs);
                let codes =
                    |c: &Tensor<B, 1, Int>| c.clone().narrow(0, s.offset, s.n).into_data().convert_dtype(DType::U8);
                tensors.insert(format!("{i}.state1"), codes(&q.codes1));
                tensors.insert(format!("{i}.state2"), codes(&q.codes2));
                tensors.insert(format!("{i}.absmax1"), f32_data(&q.absmax1.clone().narrow(0, b0, s.blocks)));
                tensors.insert(format!("{i}.absmax2"), f32_data(&q.absmax2.clone().narrow(0, b0, s.blocks)));
            }
        }
        if let Some(f) = &self.full {
            for s in &f.segments {
                let piece = |t: &Tensor<B, 1>| f32_data(&t.clone().narrow(0, s.offset, s.n).reshape(s.shape));
                tensors.insert(format!("{}.exp_avg", s.index), piece(&f.exp_avg));
                tensors.insert(format!("{}.exp_avg_sq", s.index), piece(&f.exp_avg_sq));
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
        let bs = self.settings.block_size;
        let device = self.device.clone();
        let mut loaded_q = None;
        if let Some(q) = &self.quantized {
            let (mut c1, mut c2, mut a1, mut a2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for s in &q.segments {
                let i = s.index;
                let mut codes = |key: &str| -> Result<Tensor<B, 1, Int>> {
                    let data = state.take(&format!("{i}.{key}"), &[s.n], DType::U8)?;
                    Ok(Tensor::from_data(data, (&device, DType::U8)))
                };
                let pad = s.blocks * bs - s.n;
                c1.push(codes("state1")?);
                c2.push(codes("state2")?);
                if pad > 0 {
                    c1.push(u8_full(pad, self.signed.pad_code(), &device));
                    c2.push(u8_full(pad, self.unsigned.pad_code(), &device));
                }
                a1.push(take_f32(&mut state, &format!("{i}.absmax1"), [s.blocks], &device)?);
                a2.push(take_f32(&mut state, &format!("{i}.absmax2"), [s.blocks], &device)?);
            }
            loaded_q = Some((Tensor::cat(c1, 0), Tensor::cat(c2, 0), Tensor::cat(a1, 0), Tensor::cat(a2, 0)));
        }
        let mut loaded_f = None;
        if let Some(f) = &self.full {
            let (mut m, mut v) = (Vec::new(), Vec::new());
            for s in &f.segments {
                m.push(take_f32::<B, 2>(&mut state, &format!("{}.exp_avg", s.index), s.shape, &device)?.reshape([s.n]));
                v.push(
                    take_f32::<B, 2>(&mut state, &format!("{}.exp_avg_sq", s.index), s.shape, &device)?.reshape([s.n]),
                );
            }
            loaded_f = Some((Tensor::cat(m, 0), Tensor::cat(v, 0)));
        }
        state.expect_consumed()?;
        if let (Some(q), Some((c1, c2, a1, a2))) = (self.quantized.as_mut(), loaded_q) {
            (q.codes1, q.codes2, q.absmax1, q.absmax2) = (c1, c2, a1, a2);
        }
        if let (Some(f), Some((m, v))) = (self.full.as_mut(), loaded_f) {
            (f.exp_avg, f.exp_avg_sq) = (m, v);
        }
        self.step = step;
        Ok(())
    }
}
