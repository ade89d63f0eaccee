//! Gradient clipping over the trainable tensor list (`train.max_grad_norm`), as torch's
//! `clip_grad_norm_` does it. The trainer's, not the optimizer's: ai-toolkit clips before any
//! optimizer, and the norm it measures also goes into the loss log.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

/// Global L2 norm of a gradient list (f32 on the host: one sync per step).
pub fn global_norm<B: Backend>(grads: &[Tensor<B, 2>]) -> f64 {
    grads.iter().map(|g| g.clone().square().sum().into_scalar().elem::<f64>()).sum::<f64>().sqrt()
}

/// Scales gradients so their global norm is at most `max_norm` (torch `clip_grad_norm_`: factor
/// `max_norm / (norm + 1e-6)`, applied only when below 1). Returns the norm before clipping.
pub fn clip_grad_norm<B: Backend>(grads: &mut [Tensor<B, 2>], max_norm: f64) -> f64 {
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
