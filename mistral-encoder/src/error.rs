//! The crate's one error type. Every variant names the file, key, shape or config field at fault, because
//! the usual failure is a checkpoint folder that is not quite what we expect (another key layout, a
//! missing shard, a tokenizer without FLUX.2's special tokens) and the message is all the user gets.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },

    #[error("{path}: config field `{field}`: {message}")]
    Config { path: PathBuf, field: String, message: String },

    #[error("{path}: {message}")]
    Safetensors { path: PathBuf, message: String },

    #[error("key `{key}` not found in {files}")]
    MissingKey { key: String, files: String },

    #[error("{file}: key `{key}` has shape {actual:?}, expected {expected:?} ({why})")]
    Shape { file: PathBuf, key: String, actual: Vec<usize>, expected: Vec<usize>, why: String },

    #[error("{file}: key `{key}` has dtype {dtype}; only F32, BF16 and F16 weights are supported")]
    UnsupportedDtype { file: PathBuf, key: String, dtype: String },

    #[error(
        "{dir}: no Mistral language model found: expected `<prefix>embed_tokens.weight` with a prefix among {tried:?}"
    )]
    UnknownLayout { dir: PathBuf, tried: Vec<String> },

    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("hidden_states_layers: {message}")]
    Layers { message: String },

    #[error("{path}: prompt embeddings file: {message}")]
    Embeds { path: PathBuf, message: String },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    pub(crate) fn config(path: &Path, field: &str, message: impl Into<String>) -> Self {
        Error::Config { path: path.to_path_buf(), field: field.to_string(), message: message.into() }
    }

    pub(crate) fn tokenizer(path: &Path, message: impl Into<String>) -> Self {
        Error::Tokenizer { path: path.to_path_buf(), message: message.into() }
    }

    pub(crate) fn embeds(path: &Path, message: impl Into<String>) -> Self {
        Error::Embeds { path: path.to_path_buf(), message: message.into() }
    }
}

/// The shared store's errors in this crate's variants.
impl From<flux2_ops::Error> for Error {
    fn from(e: flux2_ops::Error) -> Self {
        use flux2_ops::Error as Ops;
        match e {
            Ops::Io { path, source } | Ops::Write { path, source } => Error::Io { path, source },
            Ops::Safetensors { path, message } => {
                Error::Safetensors { path, message: format!("not a valid safetensors file: {message}") }
            }
            Ops::NoFiles { dir } => Error::Safetensors {
                path: dir,
                message: "no *.safetensors file and no *.safetensors.index.json in this folder".into(),
            },
            Ops::MissingKey { key, files } => Error::MissingKey { key, files },
            Ops::UnsupportedDtype { key, file, dtype } => Error::UnsupportedDtype { file, key, dtype },
            Ops::Shape { key, file, expected, actual } => {
                Error::Shape { file, key, actual, expected, why: "stored shape".into() }
            }
        }
    }
}
