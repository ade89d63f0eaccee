//! The flow-matching training loss: element loss, per-sample weights, reduction, non-finite check.
//!
//! Reduction follows ai-toolkit's `SDTrainer.calculate_loss`: element-wise loss (in the tensors'
//! float type; ai-toolkit upcasts to f32) times the sample's timestep weight, mean over every
//! non-batch element, times the item's loss multiplier, mean over the batch. Weighting per sample
//! after the mean is the same thing, since both factors are constant within a sample.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `c` of the pseudo-Huber loss `sqrt(d^2 + c^2) - c` (ai-toolkit's value).
pub const PSEUDO_HUBER_C: f32 = 0.01;

/// Element-wise loss between prediction and target (ai-toolkit's `loss_type`; its `wavelet`,
/// `stepped` and `mean_flow` variants are not provided).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Squared error: the flow-matching objective proper.
    #[default]
    Mse,
    /// Absolute error: less sensitive to outliers, weaker gradient near the optimum.
    Mae,
    /// `sqrt(d^2 + c^2) - c` with `c = 0.01`: quadratic for `|d| << c`, linear beyond, so single
    /// outlier elements cannot dominate the step while small errors keep an MSE-like gradient.
    PseudoHuber,
}

/// Element-wise loss of `pred` against `target` (same shape; checked).
pub fn elementwise_loss<B: Backend, const D: usize>(
    pred: Tensor<B, D>,
    target: Tensor<B, D>,
    loss_type: LossType,
) -> Result<Tensor<B, D>> {
    if pred.dims() != target.dims() {
        return Err(Error::ShapeMismatch {
            what: "loss: pred vs target",
            left: pred.dims().to_vec(),
            right: target.dims().to_vec(),
        });
    }
    let d = pred - target;
    Ok(match loss_type {
        LossType::Mse => d.square(),
        LossType::Mae => d.abs(),
        LossType::PseudoHuber => (d.square() + PSEUDO_HUBER_C * PSEUDO_HUBER_C).sqrt() - PSEUDO_HUBER_C,
    })
}

/// A reduced loss, still on the device (no synchronisation yet).
#[derive(Clone, Debug)]
pub struct FlowLoss<B: Backend> {
    /// Scalar (shape `[1]`) to backpropagate: the batch mean of `per_sample`.
    pub total: Tensor<B, 1>,
    /// `[B]`: each item's mean element loss times its timestep weight and loss multiplier.
    pub per_sample: Tensor<B, 1>,
}

/// Host copies of a [`FlowLoss`], for logging.
#[derive(Clone, Debug, PartialEq)]
pub struct LossValues {
    /// The batch loss.
    pub total: f32,
    /// Per-item losses.
    pub per_sample: Vec<f32>,
}

impl<B: Backend> FlowLoss<B> {
    /// Reads the loss back (one device synchronisation) and fails with [`Error::NonFiniteLoss`],
    /// naming the offending batch items, if anything is NaN or infinite. Call it before
    /// `backward()`: a non-finite loss would poison every LoRA weight through the optimizer.
    /// (ai-toolkit silently replaces such a loss with 0; an error lets the trainer decide to skip
    /// the step, lower the learning rate or stop.)
    pub fn check_finite(&self) -> Result<LossValues> {
        let per_sample: Vec<f32> = self.per_sample.to_data().iter::<f32>().collect();
        let total = self.total.to_data().iter::<f32>().next().unwrap_or(f32::NAN);
        let items: Vec<(usize, f32)> =
            per_sample.iter().enumerate().filter(|(_, v)| !v.is_finite()).map(|(i, &v)| (i, v)).collect();
        if !items.is_empty() || !total.is_finite() {
            return Err(Error::NonFiniteLoss { total, items });
        }
        Ok(LossValues { total, per_sample })
    }
}

fn check_batch_values(what: &'static str, values: &[f32], batch: usize) -> Result<()> {
    if values.len() != batch {
        return Err(Error::BatchLengthMismatch { what, expected: batch, got: values.len() });
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Err(Error::InvalidValue { what, reason: format!("must be finite and >= 0, got {bad}") });
    }
    Ok(())
}

/// The training loss of one batch.
///
/// * `pred`, `target`: `[B, ...]`; `target` is detached (it is a constant of the step, e.g.
///   [`crate::flow_target`] or [`crate::differential_guidance_target`]).
/// * `timestep_weights`: one per item ([`crate::TimestepBatch::loss_weights`]; all 1 unless the
///   timestep type is `weighted`).
/// * `loss_multipliers`: one per item (dataset `loss_multiplier`, regularisation weight, ...).
pub fn flow_matching_loss<B: Backend, const D: usize>(
    pred: Tensor<B, D>,
    target: Tensor<B, D>,
    loss_type: LossType,
    timestep_weights: &[f32],
    loss_multipliers: &[f32],
) -> Result<FlowLoss<B>> {
    let dims = pred.dims();
    let batch = dims[0];
    check_batch_values("loss: timestep_weights", timestep_weights, batch)?;
    check_batch_values("loss: loss_multipliers", loss_multipliers, batch)?;
    let options = (&pred.device(), pred.dtype());
    let elements = elementwise_loss(pred, target.detach(), loss_type)?;
    let per_item_elements = dims[1..].iter().product::<usize>();
    let mean = elements.reshape([batch, per_item_elements]).mean_dim(1).reshape([batch]);
    let factor: Vec<f32> = timestep_weights.iter().zip(loss_multipliers).map(|(w, m)| w * m).collect();
    let per_sample = mean * Tensor::<B, 1>::from_data(TensorData::new(factor, [batch]), options);
    Ok(FlowLoss { total: per_sample.clone().mean(), per_sample })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type B = Flex;
    type A = Autodiff<Flex>;

    fn t2<Bk: Backend>(v: Vec<f32>, shape: [usize; 2]) -> Tensor<Bk, 2> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    #[test]
    fn element_losses() {
        let p = t2::<B>(vec![1.0, -2.0, 0.005, 3.0], [1, 4]);
        let t = t2::<B>(vec![0.0, 0.0, 0.0, 3.0], [1, 4]);
        assert_eq!(
            values(elementwise_loss(p.clone(), t.clone(), LossType::Mse).unwrap()),
            vec![1.0, 4.0, 0.000025, 0.0]
        );
        assert_eq!(values(elementwise_loss(p.clone(), t.clone(), LossType::Mae).unwrap()), vec![1.0, 2.0, 0.005, 0.0]);
        let ph = values(elementwise_loss(p, t, LossType::PseudoHuber).unwrap());
        let f = |d: f64| ((d * d + 1e-4).sqrt() - 0.01) as f32;
        for (a, b) in ph.iter().zip([f(1.0), f(-2.0), f(0.005), 0.0]) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // quadratic regime (|d| << c): ~ d^2 / (2c)
        let small =
            elementwise_loss(t2::<B>(vec![0.001], [1, 1]), t2::<B>(vec![0.0], [1, 1]), LossType::PseudoHuber).unwrap();
        assert!((values(small)[0] - 0.001f32.powi(2) / 0.02).abs() < 2e-7);
    }

    #[test]
    fn reduction_weights_and_multipliers() {
        // item 0 mse = mean(1, 9) = 5; item 1 mse = mean(4, 0) = 2
        let p = t2::<B>(vec![1.0, 3.0, 2.0, 0.0], [2, 2]);
        let t = t2::<B>(vec![0.0; 4], [2, 2]);
        let l = flow_matching_loss(p, t, LossType::Mse, &[1.5, 0.5], &[1.0, 2.0]).unwrap();
        let v = l.check_finite().unwrap();
        assert_eq!(v.per_sample, vec![7.5, 2.0]);
        assert_eq!(v.total, 4.75);
    }

    #[test]
    fn losses_match_ai_toolkit() {
        use crate::reference::{f32s, formula_tensor, max_rel_err, reference};
        let f = &reference()["formulas"];
        let pred = formula_tensor::<B>("pred");
        let target = formula_tensor::<B>("target");
        let weights = f32s(&f["timestep_weights"]);
        let multipliers = f32s(&f["loss_multipliers"]);
        let cases = f["losses"].as_object().unwrap();
        assert_eq!(cases.len(), 3);
        for (name, expect) in cases {
            let loss_type: LossType = serde_json::from_value(serde_json::Value::String(name.clone())).unwrap();
            let got = flow_matching_loss(pred.clone(), target.clone(), loss_type, &weights, &multipliers)
                .unwrap()
                .check_finite()
                .unwrap();
            let per_sample = max_rel_err(&got.per_sample, &f32s(&expect["per_sample"]));
            let total = max_rel_err(&[got.total], &[expect["total"].as_f64().unwrap() as f32]);
            assert!(
                per_sample < 1e-5 && total < 1e-5,
                "{name}: relative error per sample {per_sample:e}, total {total:e}"
            );
        }
    }

    #[test]
    fn rank_4_layout() {
        let p: Tensor<B, 4> = Tensor::from_data(
            TensorData::new((0..16).map(|x| x as f32).collect::<Vec<_>>(), [2, 2, 2, 2]),
            &Default::default(),
        );
        let t = p.zeros_like();
        let v = flow_matching_loss(p, t, LossType::Mae, &[1.0, 1.0], &[1.0, 1.0]).unwrap().check_finite().unwrap();
        assert_eq!(v.per_sample, vec![3.5, 11.5]);
    }

    #[test]
    fn non_finite_items_are_named() {
        let p = t2::<B>(vec![1.0, f32::NAN, 2.0, 0.0, f32::INFINITY, 0.0], [3, 2]);
        let t = t2::<B>(vec![0.0; 6], [3, 2]);
        let err = flow_matching_loss(p, t, LossType::Mse, &[1.0; 3], &[1.0; 3]).unwrap().check_finite().unwrap_err();
        match &err {
            Error::NonFiniteLoss { items, .. } => {
                assert_eq!(items.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 2]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("non-finite loss"));
    }

    #[test]
    fn argument_errors() {
        let p = t2::<B>(vec![0.0; 4], [2, 2]);
        let bad = t2::<B>(vec![0.0; 6], [2, 3]);
        assert!(matches!(
            flow_matching_loss(p.clone(), bad, LossType::Mse, &[1.0; 2], &[1.0; 2]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            flow_matching_loss(p.clone(), p.clone(), LossType::Mse, &[1.0], &[1.0; 2]),
            Err(Error::BatchLengthMismatch { what: "loss: timestep_weights", expected: 2, got: 1 })
        ));
        assert!(matches!(
            flow_matching_loss(p.clone(), p, LossType::Mse, &[1.0; 2], &[1.0, f32::NAN]),
            Err(Error::InvalidValue { .. })
        ));
    }

    #[test]
    fn gradient_flows_to_pred_only() {
        let p = t2::<A>(vec![1.0, 3.0, 2.0, 0.0], [2, 2]).require_grad();
        let t = t2::<A>(vec![0.0; 4], [2, 2]).require_grad();
        let l = flow_matching_loss(p.clone(), t.clone(), LossType::Mse, &[1.0, 2.0], &[1.0, 1.0]).unwrap();
        let grads = l.total.backward();
        // d/dp [ mean_b( w_b * mean_j (p_bj)^2 ) ] = w_b * 2 p_bj / (2 * 2)
        let g = values(p.grad(&grads).unwrap());
        assert_eq!(g, vec![0.5, 1.5, 2.0, 0.0]);
        assert!(t.grad(&grads).is_none(), "target must be detached");
    }

    #[test]
    fn serde_names() {
        let l: LossType = serde_json::from_str("\"pseudo_huber\"").unwrap();
        assert_eq!(l, LossType::PseudoHuber);
        assert_eq!(serde_json::to_string(&LossType::Mae).unwrap(), "\"mae\"");
    }
}
