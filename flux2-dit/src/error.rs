//! Errors of this crate. Every message names the file, key, shape or config field at fault, so a user
//! with a broken checkpoint knows what to fix without a debugger.

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
    #[error("{path} is not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path} is not a valid config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid config field `{field}`: {message}")]
    InvalidConfig { field: &'static str, message: String },
    #[error("missing tensor `{key}` (looked in {files})")]
    MissingKey { key: String, files: String },
    #[error("unexpected tensors not used by the model in {file}: {keys}")]
    UnexpectedKeys { file: PathBuf, keys: String },
    #[error(
        "weight `{key}` ({origin}) holds NaN or infinite values: the checkpoint is damaged (or was saved after a diverged run)"
    )]
    NonFinite { key: String, origin: String },
    #[error("tensor `{key}` in {file} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch { key: String, file: PathBuf, expected: Vec<usize>, actual: Vec<usize> },
    #[error("tensor `{key}` in {file} has unsupported dtype {dtype}")]
    UnsupportedDtype { key: String, file: PathBuf, dtype: String },
    #[error("cannot infer the config from {file}: {message}")]
    Inference { file: PathBuf, message: String },
    #[error("bad input `{name}`: {message}")]
    Input { name: &'static str, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// The store's and writer's errors keep this crate's variants (and messages), so callers match one type.
impl From<flux2_ops::Error> for Error {
    fn from(e: flux2_ops::Error) -> Self {
        use flux2_ops::Error as Ops;
        match e {
            Ops::Io { path, source } => Error::Io { path, source },
            Ops::Write { path, source } => Error::Write { path, source },
            Ops::Safetensors { path, message } => Error::Safetensors { path, message },
            e @ Ops::NoFiles { .. } => Error::MissingKey { key: "*.safetensors".into(), files: e.to_string() },
            Ops::MissingKey { key, files } => Error::MissingKey { key, files },
            Ops::UnsupportedDtype { key, file, dtype } => Error::UnsupportedDtype { key, file, dtype },
            Ops::Shape { key, file, expected, actual } => Error::ShapeMismatch { key, file, expected, actual },
        }
    }
}
