//! # flux2-dit
//!
//! The FLUX.2 rectified-flow transformer (`Flux2Transformer2DModel` in diffusers, `flux2-dev.safetensors`
//! in BFL's release) for [Burn](https://burn.dev): config, forward pass, position ids, and loading/saving
//! both checkpoint layouts. Inference only; training pieces live in `lora-adapters` and `flow-train`.
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
mod backend_registry;
pub mod checkpoint;
pub mod compare;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod double_block;
pub mod embeddings;
pub mod error;
pub mod fused_attention;
pub mod gemm_layout;
pub mod key_map;
pub mod linear;
pub mod loader;
pub mod low_rank;
pub mod matmul;
pub mod model;
pub mod named;
pub mod modulation;
pub mod norm;
pub mod position_ids;
pub mod rope;
pub mod safetensors_writer;
pub mod saver;
pub mod single_block;
pub mod tensor_store;
pub mod weight_source;

pub use checkpoint::BlockCheckpointing;
pub use config::Flux2Config;
pub use error::{Error, Result};
pub use linear::Linear;
pub use loader::{load, load_bfl_file, load_diffusers_folder, Checkpoint};
pub use low_rank::{AdapterSwitch, LowRankAdapter};
pub use model::{Conditioning, Flux2Transformer, all_finite};
pub use position_ids::{pack_latents, unpack_latents, PositionIds};
pub use rope::RopeTable;
pub use saver::{save_bfl_file, save_diffusers_folder};
pub use tensor_store::TensorStore;
pub use weight_source::{Layout, RandomSource, StoreSource, WeightSource};
