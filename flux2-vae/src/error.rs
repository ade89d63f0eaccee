//! The crate's one error type. Every message names the file, tensor key, shape or config field at fault.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while loading, running or writing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or mapping a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `config.json` is not valid JSON or has a field of the wrong type.
    #[error("{}: invalid VAE config: {source}", path.display())]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A config field has a value this implementation does not support or that is inconsistent.
    #[error("VAE config field `{field}`: {reason}")]
    Config { field: &'static str, reason: String },

    /// The safetensors header is malformed.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },

    /// A sharded checkpoint's `*.safetensors.index.json` is malformed or points at a missing shard.
    #[error("{}: invalid shard index: {reason}", path.display())]
    ShardIndex { path: PathBuf, reason: String },

    /// No usable checkpoint was found at the given location.
    #[error("{}: {reason}", path.display())]
    NoCheckpoint { path: PathBuf, reason: String },

    /// The checkpoint's naming scheme could not be recognised.
    #[error("{}: cannot tell the checkpoint layout: {reason}", path.display())]
    UnknownLayout { path: PathBuf, reason: String },

    /// A tensor the model needs is absent.
    #[error("{}: missing tensor `{stored}` (model parameter `{key}`)", path.display())]
    MissingTensor { path: PathBuf, key: String, stored: String },

    /// A tensor has the wrong shape for the configured architecture.
    #[error("{}: tensor `{stored}` has shape {found:?}, the config implies {expected:?}", path.display())]
    ShapeMismatch { path: PathBuf, stored: String, found: Vec<usize>, expected: Vec<usize> },

    /// A tensor has a dtype that cannot be converted to a float model dtype.
    #[error("{}: tensor `{stored}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype { path: PathBuf, stored: String, dtype: String },

    /// The checkpoint holds tensors the configured architecture does not use (config and weights disagree).
    #[error("{}: {count} tensor(s) not used by the configured VAE, e.g. {examples:?}", path.display())]
    UnusedTensors { path: PathBuf, count: usize, examples: Vec<String> },

    /// The requested model dtype is not a float type this crate computes in.
    #[error("unsupported model dtype {0:?} (use F32, BF16 or F16)")]
    ModelDtype(burn::tensor::DType),

    /// An input tensor has an unusable shape.
    #[error("{what} has shape {shape:?}: {reason}")]
    InputShape { what: &'static str, shape: Vec<usize>, reason: String },

    /// The VAE was loaded without the part needed for this call.
    #[error("this VAE was loaded without its {0} (see LoadOptions::parts)")]
    MissingPart(&'static str),

    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {source}", path.display())]
    ImageDecode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    /// A weight holds NaN or infinite values.
    #[error("{origin}: VAE parameter `{name}` holds NaN or infinite values: the checkpoint is damaged")]
    NonFinite { origin: String, name: String },

    /// An image declares more pixels than [`crate::image_io::max_image_pixels`].
    #[error(
        "{}: {width}x{height} pixels, more than the {max} decoded at most (a decompression bomb?); set FLUX2_MAX_IMAGE_PIXELS to raise the limit",
        path.display()
    )]
    ImageTooLarge { path: PathBuf, width: u32, height: u32, max: u64 },

    /// An image file could not be written.
    #[error("{}: cannot write image: {source}", path.display())]
    ImageEncode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    /// Tiling parameters are unusable.
    #[error("tiling option `{field}`: {reason}")]
    Tiling { field: &'static str, reason: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// The shared store's errors in this crate's variants (same messages as before the store was shared).
impl From<flux2_ops::Error> for Error {
    fn from(e: flux2_ops::Error) -> Self {
        use flux2_ops::Error as Ops;
        match e {
            Ops::Io { path, source } | Ops::Write { path, source } => Error::Io { path, source },
            Ops::Safetensors { path, message } if path.to_string_lossy().ends_with(".index.json") => {
                Error::ShardIndex { path, reason: message }
            }
            Ops::Safetensors { path, message } => Error::Safetensors { path, reason: message },
            e @ Ops::NoFiles { .. } => Error::NoCheckpoint { path: PathBuf::new(), reason: e.to_string() },
            Ops::MissingKey { key, files } => {
                Error::MissingTensor { path: files.into(), key: key.clone(), stored: key }
            }
            Ops::UnsupportedDtype { key, file, dtype } => Error::UnsupportedDtype { path: file, stored: key, dtype },
            Ops::Shape { key, file, expected, actual } => {
                Error::ShapeMismatch { path: file, stored: key, found: actual, expected }
            }
        }
    }
}
