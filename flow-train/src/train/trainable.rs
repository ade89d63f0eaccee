//! The trainable tensors: every LoRA factor of one named adapter, in a fixed order (the model's Linear
//! order, A then B), so optimizer state, EMA and checkpoints line up across steps and runs.

use burn::module::Param;
use burn::tensor::{ElementConversion, Tensor};
use burn::tensor::backend::AutodiffBackend;
use flux2_dit::Flux2Transformer;

use crate::error::{Error, Result};

/// Keys of the trainable tensors: `<BFL module>.lora_A` / `.lora_B`, in order.
pub fn keys<B: AutodiffBackend>(model: &Flux2Transformer<B>, adapter: &str) -> Vec<String> {
    model
        .linears()
        .into_iter()
        .filter(|(_, l)| l.adapters.iter().any(|a| a.name == adapter))
        .flat_map(|(path, _)| [format!("{path}.lora_A"), format!("{path}.lora_B")])
        .collect()
}

/// Current values on the inner backend (no autodiff graph), in key order.
pub fn values<B: AutodiffBackend>(model: &Flux2Transformer<B>, adapter: &str) -> Vec<Tensor<B::InnerBackend, 2>> {
    model
        .linears()
        .into_iter()
        .flat_map(|(_, l)| l.adapters.iter().filter(|a| a.name == adapter).collect::<Vec<_>>())
        .flat_map(|a| [a.down.val().inner(), a.up.val().inner()])
        .collect()
}

/// Gradients of the factors after `backward()`, in key order. A factor without gradient (its layer
/// did not take part in the loss) gets zeros, so every optimizer sees a full, stable list.
pub fn gradients<B: AutodiffBackend>(
    model: &Flux2Transformer<B>,
    adapter: &str,
    grads: &B::Gradients,
) -> Vec<Tensor<B::InnerBackend, 2>> {
    let grad = |p: &Param<Tensor<B, 2>>| {
        let value = p.val();
        value.grad(grads).unwrap_or_else(|| value.inner().zeros_like())
    };
    model
        .linears()
        .into_iter()
        .flat_map(|(_, l)| l.adapters.iter().filter(|a| a.name == adapter).collect::<Vec<_>>())
        .flat_map(|a| [grad(&a.down), grad(&a.up)])
        .collect()
}

/// Writes new values (key order) back as trainable parameters, keeping their ids.
pub fn set_values<B: AutodiffBackend>(
    model: &mut Flux2Transformer<B>,
    adapter: &str,
    values: Vec<Tensor<B::InnerBackend, 2>>,
) -> Result<()> {
    let expected = keys(model, adapter).len();
    if values.len() != expected {
        return Err(Error::Invalid(format!(
            "adapter `{adapter}`: {} tensors given, the model has {expected} LoRA factors",
            values.len()
        )));
    }
    let mut values = values.into_iter();
    let put = |p: &mut Param<Tensor<B, 2>>, v: Tensor<B::InnerBackend, 2>| -> Result<()> {
        if v.dims() != p.val().dims() {
            return Err(Error::Invalid(format!(
                "adapter `{adapter}`: a factor of shape {:?} was given for one of shape {:?}",
                v.dims(),
                p.val().dims()
            )));
        }
        *p = Param::initialized(p.id, Tensor::from_inner(v).require_grad());
        Ok(())
    };
    for (_, linear) in model.linears_mut() {
        for a in linear.adapters.iter_mut().filter(|a| a.name == adapter) {
            let (Some(down), Some(up)) = (values.next(), values.next()) else {
                return Err(Error::Invalid(format!("adapter `{adapter}`: too few tensors")));
            };
            put(&mut a.down, down)?;
            put(&mut a.up, up)?;
        }
    }
    Ok(())
}

/// Global L2 norm of a gradient list (f32 on the host: one sync per step).
pub fn global_norm<B: burn::tensor::backend::Backend>(grads: &[Tensor<B, 2>]) -> f64 {
    grads
        .iter()
        .map(|g| g.clone().square().sum().into_scalar().elem::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// Scales gradients so their global norm is at most `max_norm` (torch `clip_grad_norm_`: factor
/// `max_norm / (norm + 1e-6)`, applied only when below 1). Returns the norm before clipping.
pub fn clip_grad_norm<B: burn::tensor::backend::Backend>(grads: &mut [Tensor<B, 2>], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 {
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            for g in grads.iter_mut() {
                *g = g.clone() * factor;
            }
        }
    }
    norm
}
