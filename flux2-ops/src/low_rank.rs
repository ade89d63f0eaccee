//! The inference side of a LoRA: `multiplier * scale * (dropout(x) A^T) B^T`, computed in rank space so the
//! dense [out, in] product A·B is never formed (for FLUX.2 that would be a weight-sized tensor per layer,
//! and under autodiff one kept per layer). Creating, targeting, training and saving adapters is the
//! `lora-adapters` crate's job; the model only needs to know how to apply one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

/// Run-time switches shared by every layer of one named adapter, so the trainer can turn an adapter
/// off for a prior pass (Differential Output Preservation) without walking the module tree.
#[derive(Debug, Default)]
pub struct AdapterSwitch {
    enabled: AtomicBool,
    multiplier_bits: AtomicU32,
}

impl AdapterSwitch {
    pub fn new(multiplier: f32) -> Arc<Self> {
        Arc::new(Self { enabled: AtomicBool::new(true), multiplier_bits: AtomicU32::new(multiplier.to_bits()) })
    }
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed)
    }
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
    pub fn set_multiplier(&self, multiplier: f32) {
        self.multiplier_bits.store(multiplier.to_bits(), Ordering::Relaxed)
    }
    pub fn multiplier(&self) -> f32 {
        f32::from_bits(self.multiplier_bits.load(Ordering::Relaxed))
    }
}

#[derive(Module, Debug)]
pub struct LowRankAdapter<B: Backend> {
    /// A, [rank, in_features], f32 (trainable factors stay in full precision whatever the base dtype).
    pub down: Param<Tensor<B, 2>>,
    /// B, [out_features, rank], f32.
    pub up: Param<Tensor<B, 2>>,
    /// `alpha / rank`.
    pub scale: f32,
    /// PEFT `lora_dropout`: probability of zeroing the adapter branch's input while training (autodiff
    /// backends only); the base path never sees dropout.
    pub dropout: f64,
    /// True while the delta is folded into the base weight (`lora-adapters` merge): then it must not be
    /// added again, and the switch and multiplier have no effect until it is unmerged.
    pub merged: bool,
    /// `scale * multiplier` at merge time (0 when not merged): what unmerging subtracts, whatever the
    /// multiplier has become since.
    pub merged_factor: f32,
    /// Adapter name and its shared on/off switch and multiplier.
    pub name: String,
    pub switch: Arc<AdapterSwitch>,
}

impl<B: Backend> LowRankAdapter<B> {
    pub fn rank(&self) -> usize {
        self.down.shape().dims::<2>()[0]
    }

    /// Whether [`Self::forward`] adds a delta now: not merged, switched on, non-zero multiplier.
    pub fn is_active(&self) -> bool {
        !self.merged && self.switch.enabled() && self.scale * self.switch.multiplier() != 0.0
    }

    /// The delta for a [rows, in] input, in f32; `None` when the adapter is switched off.
    pub fn forward(&self, x: Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        if !self.is_active() {
            return None;
        }
        let factor = self.scale * self.switch.multiplier();
        let mut x = x.cast(DType::F32);
        if self.dropout > 0.0 && B::ad_enabled(&x.device()) {
            let keep = 1.0 - self.dropout;
            let mask = x.random_like(burn::tensor::Distribution::Bernoulli(keep));
            x = x * mask / keep;
        }
        // (x A^T) B^T: two thin matmuls through rank space, never the dense B A (one op on CUDA, see
        // `matmul::low_rank`). The factor scales the [rows, rank] intermediate, not the [rows, out]
        // result: the same product, one wide elementwise pass fewer forward and backward.
        Some(crate::matmul::low_rank(x, self.down.val(), self.up.val(), factor))
    }
}
