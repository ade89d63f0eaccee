//! The optimizers a LoRA job can pick (`train.optimizer`), each reproducing the Python implementation
//! ai-toolkit runs, in f32, with Burn tensor ops on the parameters' device:
//!
//! | name | reference | state per parameter |
//! |---|---|---|
//! | `adamw` | `torch.optim.AdamW` | 8 bytes (two f32 moments) |
//! | `adamw8bit` | bitsandbytes `AdamW8bit` (block-wise dynamic 8-bit moments) | 2 bytes + 12 bytes per block |
//! | `adafactor` | transformers `Adafactor` | 4 bytes per row + column (+ 4 with `beta1`) |
//! | `prodigy` | prodigyopt 1.1 `Prodigy` | 16 bytes (12 for a tensor starting at zero, like LoRA's up factor) |
//! | `lion` | lion-pytorch `Lion` | 4 bytes (one f32 moment) |
//!
//! [`OptimizerPlan`] says which to build and with what settings, one variant per optimizer (the job
//! layer translates `train.optimizer` into it); [`build_optimizer`] builds it.
//!
//! The trainer owns the parameter list: it passes the trainable tensors (inner backend, f32, 2-D; a
//! 1-D tensor as `[1, n]`) in the same order and shapes every step and gets the updated ones back.
//! Gradient clipping, non-finite checks and the learning-rate schedule are the trainer's; `lr` arrives
//! already scheduled. [`Optimizer::state`] / [`Optimizer::load_state`] carry everything needed to
//! continue bit for bit ([`OptimizerState`], one safetensors file).
//!
//! `tools/optim/gen_optimizer_reference.py` writes the reference numbers the tests compare against.

mod adafactor;
mod adamw;
mod adamw8bit;
mod blockwise_quant;
mod lion;
mod plan;
mod prodigy;
mod state;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

pub use adafactor::Adafactor;
pub use adamw::AdamW;
pub use adamw8bit::AdamW8bit;
pub use blockwise_quant::{DynamicCode, dynamic_map};
pub use lion::Lion;
pub use plan::{
    ADAM_EPS, AdafactorSettings, AdamW8bitSettings, AdamWSettings, LionSettings, OptimizerKind, OptimizerPlan,
    ProdigySettings,
};
pub use prodigy::Prodigy;
pub use state::OptimizerState;

use crate::error::{Error, Result};

/// One optimizer over a fixed list of trainable tensors.
pub trait Optimizer<B: Backend>: Send {
    /// Name as the job file spells it (e.g. "adamw8bit").
    fn name(&self) -> &'static str;
    /// One update with learning rate `lr` (already scheduled). `params[i]`/`grads[i]` are the i-th trainable
    /// tensor, same order and shapes every call (LoRA factors are 2-D; a 1-D tensor is passed as [1, n]).
    /// Tensors are on the inner (non-autodiff) backend, f32. Returns the updated params in the same order.
    fn step(&mut self, lr: f64, params: Vec<Tensor<B, 2>>, grads: Vec<Tensor<B, 2>>) -> Result<Vec<Tensor<B, 2>>>;
    /// Bytes of optimizer state currently held (for the start-up memory line).
    fn state_bytes(&self) -> u64;
    /// Complete state for a checkpoint (bit-exact resume): named tensors + JSON scalars (step count, Prodigy's d, ...).
    fn state(&self) -> OptimizerState;
    /// Restores `state()` output; errors name the missing/mismatched key or shape.
    fn load_state(&mut self, state: OptimizerState) -> Result<()>;
}

/// The optimizer of `plan` for trainable tensors of `shapes` (state allocated on `device`, zeros).
pub fn build_optimizer<B: Backend>(
    plan: &OptimizerPlan,
    shapes: &[[usize; 2]],
    device: &B::Device,
) -> Result<Box<dyn Optimizer<B>>> {
    if let Some(i) = shapes.iter().position(|s| s[0] * s[1] == 0) {
        return Err(Error::InvalidValue {
            what: "optimizer",
            reason: format!("trainable tensor {i} has shape {:?}: no elements", shapes[i]),
        });
    }
    check_betas(plan)?;
    Ok(match plan {
        OptimizerPlan::AdamW(s) => Box::new(AdamW::new(s, shapes, device)),
        OptimizerPlan::AdamW8bit(s) => Box::new(AdamW8bit::new(s, shapes, device)?),
        OptimizerPlan::Adafactor(s) => Box::new(Adafactor::new(s, shapes, device)),
        OptimizerPlan::Prodigy(s) => Box::new(Prodigy::new(s, shapes, device)?),
        OptimizerPlan::Lion(s) => Box::new(Lion::new(s, shapes, device)),
    })
}

/// Rejects betas the update math cannot use (the job check reports these with key paths first).
fn check_betas(plan: &OptimizerPlan) -> Result<()> {
    if let Some(betas) = plan.betas()
        && betas.iter().any(|b| !(0.0..1.0).contains(b))
    {
        return Err(Error::InvalidValue { what: "optimizer betas", reason: format!("{betas:?} must be in [0, 1)") });
    }
    Ok(())
}

/// Checks one step's inputs against the shapes the optimizer was built for.
fn check_inputs<B: Backend>(
    name: &'static str,
    shapes: &[[usize; 2]],
    params: &[Tensor<B, 2>],
    grads: &[Tensor<B, 2>],
) -> Result<()> {
    if params.len() != shapes.len() || grads.len() != shapes.len() {
        return Err(Error::InvalidValue {
            what: "optimizer step",
            reason: format!(
                "{name} was built for {} tensors, got {} parameters and {} gradients",
                shapes.len(),
                params.len(),
                grads.len()
            ),
        });
    }
    for (i, ((p, g), s)) in params.iter().zip(grads).zip(shapes).enumerate() {
        if p.dims() != *s || g.dims() != *s {
            return Err(Error::InvalidValue {
                what: "optimizer step",
                reason: format!(
                    "tensor {i}: parameter {:?} / gradient {:?}, but {name}'s state is for {s:?}",
                    p.dims(),
                    g.dims()
                ),
            });
        }
    }
    Ok(())
}

/// An f32 zero tensor on `device` (state is f32 whatever the device's default float type).
fn zeros<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::zeros(shape, (device, DType::F32))
}

/// Host copy of a state tensor, f32.
fn f32_data<B: Backend, const D: usize>(t: &Tensor<B, D>) -> TensorData {
    t.to_data().convert_dtype(DType::F32)
}

/// A state tensor from a checkpoint: `key` taken from `state` with `shape`, f32, on `device`.
fn take_f32<B: Backend, const D: usize>(
    state: &mut OptimizerState,
    key: &str,
    shape: [usize; D],
    device: &B::Device,
) -> Result<Tensor<B, D>> {
    let data = state.take(key, &shape, DType::F32)?;
    Ok(Tensor::from_data(data, (device, DType::F32)))
}

/// `base ** step` as Python computes it (libm `pow` in f64). Update scalars are computed in f64 like
/// the reference's Python-side arithmetic and rounded to f32 when applied (Burn, like PyTorch, converts
/// a scalar to the tensor's dtype before the op).
fn pow(base: f64, step: u64) -> f64 {
    base.powf(step as f64)
}
