//! The LoRA trainer (`flux2-train train`): one concept per file.
//!
//! * [`trainer`]: the loop (datasets, caches, steps, checkpoints, previews, resume, Ctrl-C).
//! * [`step`]: the loss of one batch (flow matching, DOP, differential guidance).
//! * [`clip`]: gradient clipping over the adapter's factors (the list itself is
//!   `lora_adapters::trainable`'s, shared with the benchmark).
//! * [`encoders`]: VAE and text encoder behind the dataset crate's encoder traits; the prompt bank.
//! * [`checkpoint`]: LoRA files, training state, keep-N.
//! * [`run_lock`]: one run per output folder.
//! * [`loss_log`], [`plot`], [`previews`]: what users look at.

pub mod checkpoint;
pub mod clip;
pub mod encoders;
pub mod evaluate;
pub mod loss_log;
pub mod plot;
pub mod previews;
pub mod prompt_cache;
pub mod run_lock;
pub mod step;
pub mod trainer;
pub mod vae_slot;

pub use step::{LossOptions, StepLosses, TRAIN_GUIDANCE, TrainBatch, batch_loss};
pub use trainer::{ADAPTER, RunOptions, TrainModels, TrainSummary, total_updates, train};
