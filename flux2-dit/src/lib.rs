//! # flux2-dit
//!
//! The FLUX.2 rectified-flow transformer (`Flux2Transformer2DModel` in diffusers, `flux2-dev.safetensors`
//! in BFL's release) for [Burn](https://burn.dev): config, forward pass, position ids, and loading/saving
//! both checkpoint layouts. Inference only; training pieces live in `lora-adapters` and `flow-train`.
//! The layers it shares with the other models (the Linear and its LoRA hook, matmul and attention with
//! their CUDA paths, the safetensors store and writer, the RNG) live in `flux2-ops`; the most used are
//! re-exported here so `cargo add flux2-dit` is enough to run and adapt the model.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use flux2_dit::{load, PositionIds};
//! # fn main() -> Result<(), flux2_dit::Error> {
//! let device = Default::default();
//! let model = load::<Flex>("FLUX.2-dev/transformer".as_ref(), DType::BF16, &device)?;
//! let rope = model.rope(&PositionIds::text(512), &PositionIds::image(64, 64));
//! # Ok(()) }
//! ```

pub mod attention;
pub mod checkpoint;
pub mod config;
pub mod double_block;
pub mod embeddings;
pub mod error;
pub mod float8_export;
pub mod key_map;
pub mod loader;
pub mod model;
pub mod modulation;
pub mod named;
pub mod norm;
pub mod position_ids;
pub mod rope;
pub mod saver;
pub mod single_block;
pub mod sparse_file;
pub mod storage;
pub mod weight_source;

pub use checkpoint::BlockCheckpointing;
pub use config::Flux2Config;
pub use error::{Error, Result};
pub use float8_export::write_float8_file;
pub use loader::{Checkpoint, load, load_bfl_file, load_diffusers_folder};
pub use model::{Conditioning, Flux2Transformer};
pub use position_ids::{PositionIds, pack_latents, unpack_latents};
pub use rope::RopeTable;
pub use saver::{save_bfl_file, save_diffusers_folder};
pub use sparse_file::write_sparse_file;
pub use storage::{BaseStorage, StorageReport};
pub use weight_source::{Layout, RandomSource, StoreSource, WeightSource};

pub use flux2_ops::{AdapterSwitch, Linear, LowRankAdapter, TensorStore, all_finite};
