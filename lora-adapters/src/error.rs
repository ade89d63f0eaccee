//! Errors of this crate; messages name the file, key or module at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] flux2_dit::Error),
    #[error("{file}: `{key}` has no matching module in the model (is this a FLUX.2 LoRA for this model size?)")]
    UnknownModule { file: PathBuf, key: String },
    #[error("{file}: `{module}` has {which} but not its partner factor")]
    MissingFactor { file: PathBuf, module: String, which: &'static str },
    #[error("{file}: `{module}` factors have shapes A {down:?} / B {up:?}, the layer is [{out}, {input}]")]
    FactorShape { file: PathBuf, module: String, down: Vec<usize>, up: Vec<usize>, out: usize, input: usize },
    #[error("{file}: `{module}` {what} holds NaN or infinite values (saved from a diverged run?)")]
    NonFinite { file: PathBuf, module: String, what: &'static str },
    #[error(
        "{file}: no LoRA tensors recognised (expected `diffusion_model.*.lora_A.weight`, `transformer.*.lora_A.weight` or `lora_unet_*.lora_down.weight` keys)"
    )]
    NotALora { file: PathBuf },
    #[error(
        "{file}: {count} tensor(s) that are not LoRA factors (lora_A/lora_B, lora_down/lora_up, alpha), e.g. `{key}`; DoRA, LoKr/LoHa and full-weight `.diff` files are not supported"
    )]
    UnsupportedTensor { file: PathBuf, key: String, count: usize },
    #[error("{file}: bad metadata `{key}`: {message}")]
    Metadata { file: PathBuf, key: String, message: String },
    #[error(
        "LoRA rank {rank} (`network.linear`) does not fit `{module}`: the layer is {input} -> {out}; a rank must be between 1 and the narrower side ({max})"
    )]
    Rank { rank: usize, module: String, input: usize, out: usize, max: usize },
    #[error("no module matches the target selection {0}")]
    NoTargets(String),
    #[error(
        "cannot merge into `{module}`: its base weight is quantized or offloaded (adapters on such a base stay unmerged; load the model without `quantize` / layer offloading to merge)"
    )]
    QuantizedBase { module: String },
    #[error("adapter `{0}` is already present in the model")]
    DuplicateAdapter(String),
    #[error("adapter `{0}` is not present in the model")]
    UnknownAdapter(String),
    #[error("adapter `{adapter}`: {given} trainable tensors given, the model has {expected} LoRA factors")]
    TrainableCount { adapter: String, given: usize, expected: usize },
    #[error("adapter `{adapter}`: a factor of shape {given:?} was given for one of shape {expected:?}")]
    TrainableShape { adapter: String, given: [usize; 2], expected: [usize; 2] },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Store and writer errors read as the model crate's (same variants and messages).
impl From<flux2_ops::Error> for Error {
    fn from(e: flux2_ops::Error) -> Self {
        Error::Model(e.into())
    }
}
