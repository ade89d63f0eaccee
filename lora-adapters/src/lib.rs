//! # lora-adapters
//!
//! LoRA for the FLUX.2 transformer of `flux2-dit`: create adapters on the Linears a target selection
//! picks, switch them on and off at run time (Differential Output Preservation needs a LoRA-off pass),
//! merge them into the base weights and back, and save/load the three file layouts in use:
//! ai-toolkit/ComfyUI (default), diffusers/PEFT, and Kohya.
//!
//! The adapter's forward lives in `flux2_dit::LowRankAdapter` (computed as `(x A^T) B^T`, never the dense
//! `B A`), so a model with adapters needs no code from this crate to run.
//!
//! Training walks an adapter's factors and their gradients as one ordered tensor list ([`trainable`]),
//! the same list for every trainer, so optimizer state and checkpoints line up.
//!
//! ```no_run
//! # use burn::backend::Flex; use burn::tensor::DType;
//! # fn main() -> Result<(), lora_adapters::Error> {
//! let mut model = flux2_dit::load::<Flex>("FLUX.2-dev/transformer".as_ref(), DType::BF16, &Default::default())?;
//! let style = lora_adapters::load_into(&mut model, "style.safetensors".as_ref(), "style", 0.8)?;
//! style.disable(); // base model again
//! # Ok(()) }
//! ```

pub mod error;
pub mod files;
pub mod inject;
pub mod layout;
pub mod merge;
pub mod targets;
pub mod trainable;

pub use error::{Error, Result};
pub use files::{LoraMetadata, SaveOptions, detect_layout, load_into, read_factors, save};
pub use inject::{AdapterHandle, Factors, LoraConfig, attach, extract, init_factors, inject, remove};
pub use layout::LoraLayout;
pub use merge::{merge, unmerge};
pub use targets::Targets;
