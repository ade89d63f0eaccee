//! Fixed-noise evaluation: the flow-matching loss (and the adapter's effect on predictions) at noise
//! and timesteps that do not change between calls, so two models, or one model before and after
//! training, are compared on exactly the same inputs. The demo's learning test uses it; it also
//! serves as a validation loss.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, ElementConversion, Tensor};
use flux2_dit::{Flux2Transformer, pack_latents};
use lora_adapters::AdapterHandle;

use super::step::{TrainBatch, context, predict};
use crate::error::Result;
use crate::{Rng, flow_target, gaussian_noise, noisy_latents};

/// One item: latents `[1, C, h, w]` and its prompt embedding `[1, L, D]`.
#[derive(Clone, Debug)]
pub struct EvalItem<B: Backend> {
    pub latents: Tensor<B, 4>,
    pub text: Tensor<B, 3>,
}

fn batch_of<B: Backend>(item: &EvalItem<B>) -> TrainBatch<B> {
    TrainBatch {
        latents: item.latents.clone(),
        text: item.text.clone(),
        preservation_text: None,
        controls: Vec::new(),
        loss_multipliers: vec![1.0],
        network_weight: 1.0,
    }
}

/// Runs `f(prediction, target)` for every item and sigma, at noise drawn from `(seed, item index)`.
fn for_each<B: Backend>(
    model: &Flux2Transformer<B>,
    items: &[EvalItem<B>],
    sigmas: &[f32],
    seed: u64,
    mut f: impl FnMut(&mut dyn FnMut() -> Tensor<B, 3>, Tensor<B, 3>) -> f64,
) -> Result<f64> {
    let mut total = 0.0;
    let mut count = 0usize;
    for (i, item) in items.iter().enumerate() {
        let batch = batch_of(item);
        let ctx = context(model, &batch)?;
        let x0 = pack_latents(item.latents.clone().cast(DType::F32));
        let noise = gaussian_noise::<B, 3>(&mut Rng::with_stream(seed, i as u64), x0.dims(), &x0.device());
        for &sigma in sigmas {
            let noisy = noisy_latents(x0.clone(), noise.clone(), &[sigma])?;
            let target = flow_target(x0.clone(), noise.clone())?;
            let mut run = || predict(model, &ctx, noisy.clone(), item.text.clone(), &[sigma]);
            total += f(&mut run, target);
            count += 1;
        }
    }
    Ok(total / count.max(1) as f64)
}

fn mse<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f64 {
    (a - b).square().mean().into_scalar().elem::<f64>()
}

/// Mean MSE flow-matching loss over items and `sigmas` (no loss weighting).
pub fn fixed_noise_loss<B: Backend>(
    model: &Flux2Transformer<B>,
    items: &[EvalItem<B>],
    sigmas: &[f32],
    seed: u64,
) -> Result<f64> {
    for_each(model, items, sigmas, seed, |run, target| mse(run(), target))
}

/// Mean squared change of the prediction that the adapter causes (adapter on vs off).
pub fn prediction_change<B: Backend>(
    model: &Flux2Transformer<B>,
    adapter: &AdapterHandle,
    items: &[EvalItem<B>],
    sigmas: &[f32],
    seed: u64,
) -> Result<f64> {
    for_each(model, items, sigmas, seed, |run, _| {
        let on = run();
        let off = adapter.without(&mut *run);
        mse(on, off)
    })
}
