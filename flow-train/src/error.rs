//! The crate's single error type.
//!
//! Every message names the function argument or config field at fault, so a trainer can surface it
//! to the user without extra context.

/// Errors of the `flow-train` crate.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A sigma schedule needs at least one step.
    #[error("schedule: `steps` must be at least 1 (got {steps})")]
    InvalidSteps { steps: usize },

    /// A schedule or shift needs at least one image token.
    #[error("schedule: `image_seq_len` must be at least 1 (got {image_seq_len})")]
    InvalidImageSeqLen { image_seq_len: usize },

    /// `min_denoising_steps` lies above `max_denoising_steps` (after clamping max to 999).
    #[error(
        "timesteps config: `min_denoising_steps` ({min}) is greater than `max_denoising_steps` ({max}, \
         clamped to 0..=999); both index the 1000-entry timestep table, 0 = most noise"
    )]
    InvalidDenoisingRange { min: usize, max: usize },

    /// A per-batch-item argument has the wrong length.
    #[error("{what}: expected one value per batch item ({expected}), got {got}")]
    BatchLengthMismatch { what: &'static str, expected: usize, got: usize },

    /// Two tensors that must have the same shape do not.
    #[error("{what}: shape {left:?} does not match {right:?}")]
    ShapeMismatch { what: &'static str, left: Vec<usize>, right: Vec<usize> },

    /// A scalar argument is out of its domain (non-finite, negative, ...).
    #[error("{what}: {reason}")]
    InvalidValue { what: &'static str, reason: String },

    /// The loss (or part of it) is NaN or infinite. `items` lists `(batch index, per-sample loss)`
    /// for every non-finite sample; it is empty when only the reduced total overflowed.
    #[error(
        "non-finite loss: total {total}, non-finite batch items (index, loss): {items:?}; \
         check the learning rate, the inputs of these items, and the mixed-precision settings"
    )]
    NonFiniteLoss { total: f32, items: Vec<(usize, f32)> },

    /// Reading or writing a file failed (the message keeps the OS error text, so the type stays
    /// comparable).
    #[error("{}: {message}", path.display())]
    Io { path: std::path::PathBuf, message: String },

    /// Input the trainer cannot use (names the file, key or setting at fault).
    #[error("{0}")]
    Invalid(String),

    /// Optimizer state that does not fit the optimizer or its parameters (a checkpoint of another
    /// optimizer, another adapter shape, a missing tensor): names the state key and what is wrong.
    #[error("optimizer state: {key}: {reason}")]
    OptimizerState { key: String, reason: String },

    /// An error from a model crate (`flux2-dit`, `flux2-vae`, `mistral-encoder`, `lora-adapters`,
    /// `dataset-buckets`), with the component named.
    #[error("{component}: {message}")]
    Component { component: &'static str, message: String },
}

impl Error {
    pub fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), message: error.to_string() }
    }
}

macro_rules! component_error {
    ($ty:path, $name:literal) => {
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::Component { component: $name, message: e.to_string() }
            }
        }
    };
}
component_error!(flux2_ops::Error, "flux2-ops");
component_error!(flux2_dit::Error, "flux2-dit");
component_error!(flux2_vae::Error, "flux2-vae");
component_error!(mistral_encoder::Error, "mistral-encoder");
component_error!(lora_adapters::Error, "lora-adapters");
component_error!(dataset_buckets::Error, "dataset-buckets");

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, Error>;
