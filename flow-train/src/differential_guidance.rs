//! Differential guidance: train towards an extrapolated target.
//!
//! `target' = pred.detach() + scale * (target - pred.detach())`: the target is pushed past the true
//! velocity, away from the current prediction, as classifier-free guidance pushes past the
//! conditional prediction. For MSE the loss against `target'` has exactly `scale` times the plain
//! gradient (and `scale^2` times the plain value); for MAE and pseudo-Huber the extrapolation also
//! changes which elements dominate. `scale = 1` is the plain target. Note that a uniform gradient
//! scale is largely normalised away by Adam-style optimizers, so with MSE the effect is close to a
//! learning-rate change rather than a different objective.
//!
//! ai-toolkit applies it only when `do_guidance_loss` is also set (a flaw users hit). Here it is a
//! plain function: a trainer applies it whenever differential guidance is enabled.

use burn::tensor::{Tensor, backend::Backend};

use crate::error::{Error, Result};

/// ai-toolkit's default `differential_guidance_scale`.
pub const DEFAULT_DIFFERENTIAL_GUIDANCE_SCALE: f32 = 3.0;

/// The differential-guidance target. No gradient flows into it (both the prediction copy and the
/// result are detached); pass it as the `target` of [`crate::flow_matching_loss`].
pub fn differential_guidance_target<B: Backend, const D: usize>(
    pred: Tensor<B, D>,
    target: Tensor<B, D>,
    scale: f32,
) -> Result<Tensor<B, D>> {
    if !scale.is_finite() {
        return Err(Error::InvalidValue {
            what: "differential guidance scale",
            reason: format!("must be finite, got {scale}"),
        });
    }
    if pred.dims() != target.dims() {
        return Err(Error::ShapeMismatch {
            what: "differential guidance: pred vs target",
            left: pred.dims().to_vec(),
            right: target.dims().to_vec(),
        });
    }
    let anchor = pred.detach();
    Ok((anchor.clone() + (target.detach() - anchor) * scale).detach())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{LossType, flow_matching_loss};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type A = Autodiff<Flex>;

    fn t2(v: Vec<f32>) -> Tensor<A, 2> {
        Tensor::from_data(TensorData::new(v, [1, 3]), &Default::default())
    }

    fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    #[test]
    fn extrapolates_past_the_target() {
        let pred = t2(vec![1.0, 0.0, -1.0]);
        let target = t2(vec![2.0, 0.0, 1.0]);
        let g = differential_guidance_target(pred.clone(), target.clone(), 3.0).unwrap();
        assert_eq!(values(g), vec![4.0, 0.0, 5.0]);
        let plain = differential_guidance_target(pred, target.clone(), 1.0).unwrap();
        assert_eq!(values(plain), values(target));
    }

    #[test]
    fn gradient_is_scaled_and_does_not_flow_through_the_target() {
        let pred = t2(vec![1.0, 0.0, -1.0]).require_grad();
        let target = t2(vec![2.0, 0.0, 1.0]);
        let g = differential_guidance_target(pred.clone(), target.clone(), 3.0).unwrap();
        let loss = flow_matching_loss(pred.clone(), g, LossType::Mse, &[1.0], &[1.0]).unwrap();
        let grads = loss.total.backward();
        let got = values(pred.grad(&grads).unwrap());
        // d/dp mean((p - g)^2) with g constant = 2 (p - g) / 3 = 2 * scale * (p - target) / 3
        let expect: Vec<f32> = [1.0f32 - 2.0, 0.0, -1.0 - 1.0].iter().map(|d| 2.0 * 3.0 * d / 3.0).collect();
        for (a, b) in got.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn target_and_loss_match_ai_toolkit() {
        use crate::reference::{f32s, formula_tensor, max_abs_err, max_rel_err, reference};
        let f = &reference()["formulas"];
        let dg = &f["differential_guidance"];
        let scale = dg["scale"].as_f64().unwrap() as f32;
        let pred = formula_tensor::<A>("pred");
        let target = differential_guidance_target(pred.clone(), formula_tensor::<A>("target"), scale).unwrap();
        let err = max_abs_err(&values(target.clone()), &f32s(&dg["target"]));
        assert!(err <= 2e-6, "differential guidance target differs from ai-toolkit's by {err:e}");
        let (weights, multipliers) = (f32s(&f["timestep_weights"]), f32s(&f["loss_multipliers"]));
        let loss =
            flow_matching_loss(pred, target, LossType::Mse, &weights, &multipliers).unwrap().check_finite().unwrap();
        let rel = max_rel_err(&loss.per_sample, &f32s(&dg["mse"]["per_sample"]));
        assert!(rel < 1e-5, "loss against the guided target: relative error {rel:e}");
    }

    #[test]
    fn errors() {
        let a = t2(vec![0.0; 3]);
        let b: Tensor<A, 2> = Tensor::from_data(TensorData::new(vec![0.0f32; 2], [1, 2]), &Default::default());
        assert!(differential_guidance_target(a.clone(), b, 3.0).is_err());
        assert!(differential_guidance_target(a.clone(), a, f32::NAN).is_err());
    }
}
