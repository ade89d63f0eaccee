//! Errors of the store and the writer. Every message names the file and the tensor at fault; the model
//! crates map these into their own error types (`From`), keeping their variants and messages.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A malformed file or shard index (`message` says what and, for a truncated file, which tensor).
    #[error("{path} is not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{dir}: no *.safetensors file and no *.safetensors.index.json in this folder")]
    NoFiles { dir: PathBuf },
    #[error("missing tensor `{key}` (looked in {files})")]
    MissingKey { key: String, files: String },
    #[error("tensor `{key}` in {file} has unsupported dtype {dtype}")]
    UnsupportedDtype { key: String, file: PathBuf, dtype: String },
    #[error("tensor `{key}` in {file} has shape {actual:?}, expected {expected:?}")]
    Shape { key: String, file: PathBuf, expected: Vec<usize>, actual: Vec<usize> },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
