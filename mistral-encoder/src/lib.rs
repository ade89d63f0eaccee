#![doc = include_str!("../README.md")]

pub mod attention;
pub mod config;
pub mod decoder_layer;
pub mod embeds;
pub mod encoder;
pub mod error;
pub mod float8_export;
pub mod loader;
pub mod mask;
pub mod mlp;
pub mod model;
pub mod prompt;
pub mod random_init;
pub mod rms_norm;
pub mod rope;
pub mod tokenizer;

pub use config::MistralConfig;
pub use embeds::PromptEmbeds;
pub use encoder::{EncoderOptions, MAX_SEQUENCE_LENGTH, MistralEncoder};
pub use error::{Error, Result};
pub use float8_export::write_float8_file;
pub use flux2_ops::TensorStore;
pub use loader::{LoadPlan, TensorSource};
pub use model::MistralTextModel;
pub use prompt::{DEFAULT_MAX_SEQUENCE_LENGTH, SYSTEM_MESSAGE, TokenBatch, format_prompt};
pub use random_init::RandomWeights;
pub use tokenizer::PromptTokenizer;
