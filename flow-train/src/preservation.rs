//! Differential output preservation (DOP): keep the base model's behaviour on the class word.
//!
//! A LoRA trained on "photo of sks dog" also drifts what "photo of a dog" produces. DOP counters
//! that with three transformer passes per step on the *same* noisy latents and timesteps:
//!
//! 1. prior: LoRA off, no gradient, caption with the trigger word replaced by the preservation
//!    class (e.g. "photo of dog");
//! 2. main: LoRA on, the item's own caption, the normal flow-matching loss;
//! 3. preservation: LoRA on, the class caption again, penalised by [`dop_preservation_loss`]
//!    against the prior.
//!
//! One backward pass of `main + preservation` (ai-toolkit `diff_output_preservation`, default
//! multiplier 1.0). This module holds the loss term; running the passes is the trainer's job.

use burn::tensor::{Tensor, backend::Backend};

use crate::error::{Error, Result};

/// ai-toolkit's default `diff_output_preservation_multiplier`.
pub const DEFAULT_DOP_MULTIPLIER: f32 = 1.0;

/// `multiplier * mean((preservation_pred - prior_pred)^2)` over all elements and the batch, with
/// the prior detached (it is the base model's fixed output). Not weighted by timestep weights or
/// per-item loss multipliers, as in ai-toolkit. Returns a `[1]` tensor to add to the main loss.
pub fn dop_preservation_loss<B: Backend, const D: usize>(
    preservation_pred: Tensor<B, D>,
    prior_pred: Tensor<B, D>,
    multiplier: f32,
) -> Result<Tensor<B, 1>> {
    if !multiplier.is_finite() || multiplier < 0.0 {
        return Err(Error::InvalidValue {
            what: "DOP multiplier",
            reason: format!("must be finite and >= 0, got {multiplier}"),
        });
    }
    if preservation_pred.dims() != prior_pred.dims() {
        return Err(Error::ShapeMismatch {
            what: "DOP: preservation_pred vs prior_pred",
            left: preservation_pred.dims().to_vec(),
            right: prior_pred.dims().to_vec(),
        });
    }
    Ok((preservation_pred - prior_pred.detach()).square().mean() * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type A = Autodiff<Flex>;

    fn t3(v: Vec<f32>) -> Tensor<A, 3> {
        Tensor::from_data(TensorData::new(v, [2, 1, 2]), &Default::default())
    }

    #[test]
    fn value_and_gradients() {
        let pres = t3(vec![1.0, 2.0, 3.0, 4.0]).require_grad();
        let prior = t3(vec![0.0, 2.0, 1.0, 4.0]).require_grad();
        let loss = dop_preservation_loss(pres.clone(), prior.clone(), 0.5).unwrap();
        // mean(1, 0, 4, 0) = 1.25, times 0.5
        assert_eq!(loss.clone().into_data().iter::<f32>().next().unwrap(), 0.625);
        let grads = loss.backward();
        let g: Vec<f32> = pres.grad(&grads).unwrap().into_data().iter::<f32>().collect();
        // 0.5 * 2 * d / 4
        assert_eq!(g, vec![0.25, 0.0, 0.5, 0.0]);
        assert!(prior.grad(&grads).is_none(), "prior must be detached");
    }

    #[test]
    fn matches_ai_toolkit() {
        use crate::reference::{formula_tensor, max_rel_err, reference};
        let dop = &reference()["formulas"]["dop"];
        let multiplier = dop["multiplier"].as_f64().unwrap() as f32;
        let (pred, prior) = (formula_tensor::<A>("pred"), formula_tensor::<A>("prior_pred"));
        let loss = dop_preservation_loss(pred, prior, multiplier).unwrap();
        let got: Vec<f32> = loss.into_data().iter::<f32>().collect();
        let rel = max_rel_err(&got, &[dop["loss"].as_f64().unwrap() as f32]);
        assert!(rel < 1e-5, "DOP loss: relative error {rel:e}");
    }

    #[test]
    fn errors() {
        let a = t3(vec![0.0; 4]);
        let b: Tensor<A, 3> = Tensor::from_data(TensorData::new(vec![0.0f32; 2], [1, 1, 2]), &Default::default());
        assert!(dop_preservation_loss(a.clone(), b, 1.0).is_err());
        assert!(dop_preservation_loss(a.clone(), a, -1.0).is_err());
    }
}
