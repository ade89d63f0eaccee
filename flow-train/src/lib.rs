//! Flow-matching training math for FLUX.2 [dev] LoRA training, generic over Burn backends.
//!
//! What this crate holds, and why each piece exists:
//!
//! * [`Flux2Schedule`] / [`compute_empirical_mu`]: the inference sigma schedule of diffusers'
//!   `Flux2Pipeline`, bit-identical, so samples taken during training match what users get from
//!   diffusers with the same steps.
//! * [`TimestepSampler`]: training timesteps (`linear`, `sigmoid`, `weighted`, `shift`,
//!   `lognorm_blend`) with a high-/low-noise bias and a denoising-step range, seeded by a
//!   [`Rng`] whose state goes into checkpoints, so runs are reproducible and resumable.
//! * [`weighted_loss_weight`]: the `weighted` type's loss weight over timesteps (mean 1), derived
//!   from ai-toolkit's measured table (see the `weighting` module docs for how).
//! * [`noisy_latents`], [`flow_target`], [`apply_noise_offset`], [`gaussian_noise`]: the rectified-
//!   flow training pair.
//! * [`flow_matching_loss`] (MSE / MAE / pseudo-Huber, per-sample timestep weights and loss
//!   multipliers, non-finite detection), [`differential_guidance_target`], and
//!   [`dop_preservation_loss`].
//! * [`sample`]: the FLUX.2 sampler (diffusers' `Flux2Pipeline` denoising loop: schedule, embedded
//!   guidance, Euler steps with diffusers' dtype handling, reference-image tokens via
//!   [`ReferenceTokens`]), seeded through [`Rng`] so a seed gives the same latents on every backend.
//!
//! Semantics follow ai-toolkit (the trainer users compare against) except where the docs say
//! otherwise. The trainer, its config and CLI live
//! elsewhere.
//!
//! Tensor code is generic over `burn::tensor::backend::Backend`; gradients are blocked with
//! `Tensor::detach`, which is a no-op on non-autodiff backends. Pure math (schedules, tables) is
//! plain f64/f32.

pub mod demo;
mod differential_guidance;
mod error;
pub mod job;
mod loss;
mod noise;
pub mod optim;
pub mod out_of_memory;
pub mod pipeline;
mod preservation;
mod reference_images;
mod sampler;
mod schedule;
mod timestep_table;
mod timesteps;
pub mod train;
mod weighting;

#[cfg(test)]
mod reference;

pub use differential_guidance::{DEFAULT_DIFFERENTIAL_GUIDANCE_SCALE, differential_guidance_target};
pub use error::{Error, Result};
pub use flux2_ops::Rng;
pub use loss::{FlowLoss, LossType, LossValues, PSEUDO_HUBER_C, elementwise_loss, flow_matching_loss};
pub use noise::{NOISE_OFFSET_EPSILON, apply_noise_offset, flow_target, gaussian_noise, noisy_latents};
pub use preservation::{DEFAULT_DOP_MULTIPLIER, dop_preservation_loss};
pub use reference_images::ReferenceTokens;
pub use sampler::{
    DEFAULT_GUIDANCE, DEFAULT_SAMPLE_STEPS, InitialLatents, SampleOptions, euler_step, initial_noise, sample,
    transformer_timestep,
};
pub use schedule::{
    EMPIRICAL_MU_A1, EMPIRICAL_MU_A2, EMPIRICAL_MU_B1, EMPIRICAL_MU_B2, EMPIRICAL_MU_SEQ_LEN_CUTOFF, Flux2Schedule,
    compute_empirical_mu, time_shift_exponential,
};
pub use timestep_table::{
    LOGNORM_BLEND_ALPHA, LOGNORM_BLEND_SCALE, NUM_TRAIN_TIMESTEPS, SHIFT_BASE_MU, SHIFT_BASE_SEQ_LEN, SHIFT_MAX_MU,
    SHIFT_MAX_SEQ_LEN, TimestepType, training_shift_mu,
};
pub use timesteps::{TimestepBatch, TimestepBias, TimestepConfig, TimestepSampler, TrainTimestep};
pub use weighting::{WEIGHTED_KNOTS, weighted_loss_table, weighted_loss_weight};
