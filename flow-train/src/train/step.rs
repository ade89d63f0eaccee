//! The loss of one batch: noise at sampled timesteps, the LoRA-on prediction, the flow-matching loss,
//! and the optional Differential Output Preservation and differential-guidance terms.
//!
//! Everything here is a pure function of its inputs (latents, embeddings, noise, timesteps), so the
//! trainer, the learning test and resumed runs compute bit-identical losses from the same draws.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use flux2_dit::{BlockCheckpointing, Flux2Transformer, PositionIds, RopeTable, pack_latents};
use lora_adapters::AdapterHandle;

use crate::error::{Error, Result};
use crate::timesteps::TimestepBatch;
use crate::{
    LossType, differential_guidance_target, dop_preservation_loss, flow_matching_loss, flow_target, noisy_latents,
};

/// ai-toolkit feeds FLUX.2's guidance embedding 1.0 while training (the distilled guidance is a
/// sampling-time knob).
pub const TRAIN_GUIDANCE: f32 = 1.0;

/// One batch, ready for the transformer (all items share a bucket, so they stack).
#[derive(Clone, Debug)]
pub struct TrainBatch<B: Backend> {
    /// Normalized, patchified latents `[B, C, h, w]` (f32).
    pub latents: Tensor<B, 4>,
    /// Prompt embeddings `[B, L, joint_attention_dim]`.
    pub text: Tensor<B, 3>,
    /// DOP: embeddings of the captions with the trigger replaced by the class word.
    pub preservation_text: Option<Tensor<B, 3>>,
    /// Edit datasets: the k-th control image of every item, `[B, C, h_k, w_k]` (items of a batch
    /// share control sizes).
    pub controls: Vec<Tensor<B, 4>>,
    /// Per-item loss multipliers (dataset `loss_multiplier`, regularization weight).
    pub loss_multipliers: Vec<f32>,
    /// The dataset's `network_weight`: the adapter's multiplier while training on this batch.
    pub network_weight: f32,
}

/// What the step adds to the loss, besides the flow-matching term.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossOptions {
    pub loss_type: LossType,
    /// `Some(scale)`: differential-guidance target.
    pub differential_guidance: Option<f32>,
    /// `Some(multiplier)`: DOP preservation term (needs `preservation_text`).
    pub dop_multiplier: Option<f32>,
}

/// Host values of one step, for logging.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLosses {
    /// Flow-matching loss (batch mean).
    pub loss: f32,
    /// DOP preservation term, when on.
    pub preservation: Option<f32>,
}

/// Transformer inputs that do not depend on the noise: RoPE table and control tokens.
pub(crate) struct Context<B: Backend> {
    rope: RopeTable<B>,
    controls: Option<Tensor<B, 3>>,
    image_len: usize,
}

pub(crate) fn context<B: Backend>(model: &Flux2Transformer<B>, batch: &TrainBatch<B>) -> Result<Context<B>> {
    let [b, _, h, w] = batch.latents.dims();
    let text_len = batch.text.dims()[1];
    let image_ids = PositionIds::image(h, w);
    let (ids, controls) = if batch.controls.is_empty() {
        (image_ids, None)
    } else {
        // The sampler's reference layout (time offset 10 (k + 1)), per item instead of shared.
        let mut ids = vec![image_ids];
        let mut tokens = Vec::new();
        for (k, c) in batch.controls.iter().enumerate() {
            let [cb, _, ch, cw] = c.dims();
            if cb != b {
                return Err(Error::Invalid(format!("control {k} has batch {cb}, the latents {b}")));
            }
            ids.push(PositionIds::reference(k, ch, cw));
            tokens.push(pack_latents(c.clone().cast(model.dtype())));
        }
        (PositionIds::concat(&ids.iter().collect::<Vec<_>>()), Some(Tensor::cat(tokens, 1)))
    };
    Ok(Context { rope: model.rope(&PositionIds::text(text_len), &ids), controls, image_len: h * w })
}

/// Velocity prediction `[B, h*w, C]` for packed noisy tokens.
pub(crate) fn predict<B: Backend>(
    model: &Flux2Transformer<B>,
    ctx: &Context<B>,
    noisy_tokens: Tensor<B, 3>,
    text: Tensor<B, 3>,
    sigmas: &[f32],
) -> Tensor<B, 3> {
    predict_with(model, ctx, noisy_tokens, text, sigmas, &mut |x, c, t, g, rope| model.forward(x, c, t, g, rope))
}

/// The transformer call of [`predict`]: `Flux2Transformer::forward` or a checkpointing tape's.
type Forward<'f, B> =
    dyn FnMut(Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 1>, Option<Tensor<B, 1>>, &RopeTable<B>) -> Tensor<B, 3> + 'f;

fn predict_with<B: Backend>(
    model: &Flux2Transformer<B>,
    ctx: &Context<B>,
    noisy_tokens: Tensor<B, 3>,
    text: Tensor<B, 3>,
    sigmas: &[f32],
    forward: &mut Forward<'_, B>,
) -> Tensor<B, 3> {
    let device = noisy_tokens.device();
    let n = sigmas.len();
    let timestep = Tensor::<B, 1>::from_data(TensorData::new(sigmas.to_vec(), [n]), (&device, DType::F32));
    let guidance = model
        .config
        .guidance_embeds
        .then(|| Tensor::<B, 1>::from_data(TensorData::new(vec![TRAIN_GUIDANCE; n], [n]), (&device, DType::F32)));
    let input = noisy_tokens.cast(model.dtype());
    let input = match &ctx.controls {
        Some(c) => Tensor::cat(vec![input, c.clone()], 1),
        None => input,
    };
    forward(input, text, timestep, guidance, &ctx.rope).narrow(1, 0, ctx.image_len).cast(DType::F32)
}

/// The scalar loss of a step and what its backward needs: with gradient checkpointing, the tape of
/// the block inputs the backward recomputes from (`flux2_dit::checkpoint`).
pub struct Loss<'m, B: AutodiffBackend> {
    pub total: Tensor<B, 1>,
    tape: Option<BlockCheckpointing<'m, B>>,
}

impl<B: AutodiffBackend> Loss<'_, B> {
    /// The gradients of every trainable parameter, whichever way the forward ran.
    pub fn backward(self) -> B::Gradients {
        match self.tape {
            Some(tape) => tape.backward(self.total),
            None => self.total.backward(),
        }
    }
}

/// The scalar loss to backpropagate and its host values.
///
/// `noise` is `[B, C, h, w]` like the latents. With DOP, the prior pass runs with `adapter` switched
/// off (no graph is built for it: nothing in it requires a gradient), then the LoRA-on pass on the
/// preservation captions; one backward covers the sum, as ai-toolkit does it.
///
/// `checkpointing` runs the LoRA-on passes block-checkpointed (`flux2_dit::checkpoint`); the
/// gradients are the same up to float rounding. `seed` draws the LoRA dropout masks, per block, the
/// same way with or without checkpointing.
pub fn batch_loss<'m, B: AutodiffBackend>(
    model: &'m Flux2Transformer<B>,
    adapter: &AdapterHandle,
    batch: &TrainBatch<B>,
    noise: Tensor<B, 4>,
    timesteps: &TimestepBatch,
    options: &LossOptions,
    seed: u64,
    checkpointing: bool,
) -> Result<(Loss<'m, B>, StepLosses)> {
    let mut tape = checkpointing.then(|| BlockCheckpointing::new(model, seed));
    let mut calls = 0;
    let mut forward = |x, c, t, g, rope: &RopeTable<B>| match &mut tape {
        Some(tape) => tape.forward(x, c, t, g, rope),
        None => {
            calls += 1;
            flux2_dit::checkpoint::forward_reseeded(model, seed, calls - 1, x, c, t, g, rope)
        }
    };
    let ctx = context(model, batch)?;
    let sigmas = timesteps.sigmas();
    let x0 = pack_latents(batch.latents.clone());
    let noise = pack_latents(noise);
    let noisy = noisy_latents(x0.clone(), noise.clone(), &sigmas)?;
    let mut target = flow_target(x0, noise)?;

    let pred = predict_with(model, &ctx, noisy.clone(), batch.text.clone(), &sigmas, &mut forward);
    if let Some(scale) = options.differential_guidance {
        target = differential_guidance_target(pred.clone(), target, scale)?;
    }
    let flow = flow_matching_loss(pred, target, options.loss_type, &timesteps.loss_weights(), &batch.loss_multipliers)?;
    let values = flow.check_finite()?;
    let mut total = flow.total;
    let mut preservation = None;
    if let (Some(multiplier), Some(class_text)) = (options.dop_multiplier, &batch.preservation_text) {
        let prior = adapter.without(|| predict(model, &ctx, noisy.clone(), class_text.clone(), &sigmas)).detach();
        let kept = predict_with(model, &ctx, noisy, class_text.clone(), &sigmas, &mut forward);
        let term = dop_preservation_loss(kept, prior, multiplier)?;
        preservation = Some(term.to_data().iter::<f32>().next().unwrap_or(f32::NAN));
        total = total + term;
    }
    Ok((Loss { total, tape }, StepLosses { loss: values.total, preservation }))
}
