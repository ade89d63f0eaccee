//! What to build: one variant per optimizer, each carrying exactly the settings that optimizer reads.
//!
//! Why an enum: with one struct for all five (a kind next to optional per-optimizer sections), a plan
//! could name `adamw` and carry Prodigy's settings, or lack the section its kind needs, and every
//! optimizer had to pick defaults for what was missing. Here a plan is always complete and consistent;
//! the job layer (`crate::job`) translates the job file into it, and this module knows nothing of job
//! files.
//!
//! Defaults (`*Settings::new`) are those ai-toolkit builds the optimizers with (`toolkit/optimizer.py`):
//! `eps = 1e-6` for the Adam family and Prodigy, weight decay 0.01 for the Adam family, Adafactor with
//! `relative_step`/`scale_parameter`/`warmup_init` off.

use serde::Serialize;

/// Adam's epsilon; ai-toolkit passes 1e-6 to every Adam-family optimizer and to Prodigy.
pub const ADAM_EPS: f64 = 1e-6;

/// Which optimizer, without its settings (for names, tables and messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `adamw`: `torch.optim.AdamW`.
    AdamW,
    /// `adamw8bit`: bitsandbytes' AdamW8bit, moments stored as block-wise dynamic 8-bit codes.
    AdamW8bit,
    /// `adafactor`: transformers' Adafactor (factored second moment).
    Adafactor,
    /// `prodigy`: Prodigy, learning-rate free (prodigyopt 1.1).
    Prodigy,
    /// `lion`: lion-pytorch's Lion (sign updates, one moment).
    Lion,
}

impl OptimizerKind {
    /// Every optimizer, in the order the docs list them.
    pub const ALL: [OptimizerKind; 5] = [
        OptimizerKind::AdamW,
        OptimizerKind::AdamW8bit,
        OptimizerKind::Adafactor,
        OptimizerKind::Prodigy,
        OptimizerKind::Lion,
    ];

    /// The name as job files spell it.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::AdamW8bit => "adamw8bit",
            OptimizerKind::Adafactor => "adafactor",
            OptimizerKind::Prodigy => "prodigy",
            OptimizerKind::Lion => "lion",
        }
    }
}

/// The optimizer to build, with its settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "optimizer", rename_all = "lowercase")]
pub enum OptimizerPlan {
    AdamW(AdamWSettings),
    AdamW8bit(AdamW8bitSettings),
    Adafactor(AdafactorSettings),
    Prodigy(ProdigySettings),
    Lion(LionSettings),
}

impl OptimizerPlan {
    /// `kind` with base rate `lr` and ai-toolkit's defaults for everything else.
    pub fn new(kind: OptimizerKind, lr: f64) -> OptimizerPlan {
        match kind {
            OptimizerKind::AdamW => OptimizerPlan::AdamW(AdamWSettings::new(lr)),
            OptimizerKind::AdamW8bit => OptimizerPlan::AdamW8bit(AdamW8bitSettings::new(lr)),
            OptimizerKind::Adafactor => OptimizerPlan::Adafactor(AdafactorSettings::new(lr)),
            OptimizerKind::Prodigy => OptimizerPlan::Prodigy(ProdigySettings::new(lr)),
            OptimizerKind::Lion => OptimizerPlan::Lion(LionSettings::new(lr)),
        }
    }

    pub fn kind(&self) -> OptimizerKind {
        match self {
            OptimizerPlan::AdamW(_) => OptimizerKind::AdamW,
            OptimizerPlan::AdamW8bit(_) => OptimizerKind::AdamW8bit,
            OptimizerPlan::Adafactor(_) => OptimizerKind::Adafactor,
            OptimizerPlan::Prodigy(_) => OptimizerKind::Prodigy,
            OptimizerPlan::Lion(_) => OptimizerKind::Lion,
        }
    }

    /// Base learning rate: what the schedule scales each step (every optimizer has one).
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerPlan::AdamW(s) => s.lr,
            OptimizerPlan::AdamW8bit(s) => s.adam.lr,
            OptimizerPlan::Adafactor(s) => s.lr,
            OptimizerPlan::Prodigy(s) => s.lr,
            OptimizerPlan::Lion(s) => s.lr,
        }
    }

    /// `(beta1, beta2)` of the optimizers that have them (Adafactor has its own `beta1`/`decay_rate`).
    pub fn betas(&self) -> Option<[f64; 2]> {
        match self {
            OptimizerPlan::AdamW(s) => Some(s.betas),
            OptimizerPlan::AdamW8bit(s) => Some(s.adam.betas),
            OptimizerPlan::Adafactor(_) => None,
            OptimizerPlan::Prodigy(s) => Some(s.betas),
            OptimizerPlan::Lion(s) => Some(s.betas),
        }
    }
}

/// `adamw`: `torch.optim.AdamW`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AdamWSettings {
    /// Base learning rate (`unet_lr`, else `lr`).
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamWSettings {
    pub fn new(lr: f64) -> Self {
        AdamWSettings { lr, betas: [0.9, 0.999], eps: ADAM_EPS, weight_decay: 0.01 }
    }
}

/// `adamw8bit`: AdamW with bitsandbytes' block-wise 8-bit state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AdamW8bitSettings {
    /// The AdamW update it quantizes the state of.
    #[serde(flatten)]
    pub adam: AdamWSettings,
    /// Values per quantization block; each block of each moment has one f32 absmax. 2048 is the block
    /// size of the issue and of older bitsandbytes releases; bitsandbytes 0.50 uses 256 (more scales,
    /// less rounding error: 0.03 instead of 0.004 extra bytes per parameter).
    pub block_size: usize,
    /// Tensors with fewer elements keep 32-bit moments (bitsandbytes' `min_8bit_size`).
    pub min_8bit_size: usize,
}

impl AdamW8bitSettings {
    pub fn new(lr: f64) -> Self {
        AdamW8bitSettings { adam: AdamWSettings::new(lr), block_size: 2048, min_8bit_size: 4096 }
    }
}

/// `adafactor`: transformers' Adafactor options.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AdafactorSettings {
    /// Base learning rate (unused with `relative_step`).
    pub lr: f64,
    pub weight_decay: f64,
    /// `(eps1, eps2)`: added to the squared gradient; floor of the parameter RMS with `scale_parameter`.
    pub eps: [f64; 2],
    /// The update is scaled down so its RMS stays at most this.
    pub clip_threshold: f64,
    /// Second-moment decay at step t is `1 - t^decay_rate`.
    pub decay_rate: f64,
    /// First-moment decay; `None` keeps no first moment (Adafactor's memory saving).
    pub beta1: Option<f64>,
    /// Multiply the step size by the parameter's RMS (at least `eps2`).
    pub scale_parameter: bool,
    /// Step size `min(1e-2, 1/sqrt(t))` instead of the learning rate (which is then ignored).
    pub relative_step: bool,
    /// With `relative_step`: `min(1e-6 t, 1/sqrt(t))`.
    pub warmup_init: bool,
}

impl AdafactorSettings {
    pub fn new(lr: f64) -> Self {
        AdafactorSettings {
            lr,
            weight_decay: 0.0,
            eps: [1e-30, 1e-3],
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta1: None,
            scale_parameter: false,
            relative_step: false,
            warmup_init: false,
        }
    }
}

/// `prodigy`: prodigyopt's options.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ProdigySettings {
    /// Multiplier of Prodigy's own step-size estimate (1.0 is Prodigy's intended value).
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Decoupled (AdamW-style) with `decouple`, else added to the gradient.
    pub weight_decay: f64,
    /// Decay of the D statistics; `None`: `sqrt(beta2)`.
    pub beta3: Option<f64>,
    /// Initial D (the step-size estimate).
    pub d0: f64,
    /// Multiplier of the D estimate.
    pub d_coef: f64,
    /// Largest factor D may grow by per step (`inf`: unbounded).
    pub growth_rate: f64,
    /// Adam's bias correction folded into the step size.
    pub use_bias_correction: bool,
    /// Leave the learning rate out of the D denominator (helps with learning-rate warm-up).
    pub safeguard_warmup: bool,
    /// Decoupled (AdamW-style) weight decay; false adds `weight_decay * p` to the gradient.
    pub decouple: bool,
    /// D statistics on every `slice_p`-th element only (1: exact Prodigy).
    pub slice_p: usize,
}

impl ProdigySettings {
    pub fn new(lr: f64) -> Self {
        ProdigySettings {
            lr,
            betas: [0.9, 0.999],
            eps: ADAM_EPS,
            weight_decay: 0.0,
            beta3: None,
            d0: 1e-6,
            d_coef: 1.0,
            growth_rate: f64::INFINITY,
            use_bias_correction: false,
            safeguard_warmup: false,
            decouple: true,
            slice_p: 1,
        }
    }
}

/// `lion`: lion-pytorch's options.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LionSettings {
    /// Base learning rate; with `decoupled_weight_decay` the decay is relative to it.
    pub lr: f64,
    pub betas: [f64; 2],
    pub weight_decay: f64,
    /// Weight decay divided by the initial learning rate (so the decay per step follows the schedule
    /// relative to its start, not the absolute rate).
    pub decoupled_weight_decay: bool,
}

impl LionSettings {
    pub fn new(lr: f64) -> Self {
        LionSettings { lr, betas: [0.9, 0.99], weight_decay: 0.0, decoupled_weight_decay: false }
    }
}
