//! The crate's one error type. Every message names the file, folder or config key at fault, because
//! the person reading it is usually looking at a dataset folder, not at this code.

use std::path::PathBuf;

use crate::encoder::EncodeError;
use crate::problem::Problem;

/// Everything that can go wrong while loading, preparing or caching a dataset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset config value is out of range or cannot be honoured.
    #[error("dataset config `{key}` ({dataset}): {message}")]
    Config {
        /// The ai-toolkit key at fault (`resolution`, `caption_dropout_rate`, ...).
        key: String,
        /// Which dataset: its folder path, or its position in the list.
        dataset: String,
        message: String,
    },

    /// `folder_path` / `control_path` does not point at a folder.
    #[error("`{key}` {path} does not exist or is not a folder")]
    MissingFolder { key: &'static str, path: PathBuf },

    /// The folder was scanned but no usable image remained.
    #[error("no usable images (.jpg .jpeg .png .webp) in {folder}{}", skipped_note(*.skipped))]
    EmptyDataset { folder: PathBuf, skipped: usize },

    /// Bad input was found and the policy is [`crate::BadInputPolicy::Stop`]. Lists every problem so that
    /// one run shows all the files to fix, not just the first.
    #[error("{}", bad_input_message(.problems))]
    BadInput { problems: Vec<Problem> },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An image failed to decode when it was prepared (after loading had accepted it).
    #[error("{path}: cannot decode image: {message}")]
    Decode { path: PathBuf, message: String },

    /// A cache file could not be written or read back.
    #[error("cache file {path}: {message}")]
    Cache { path: PathBuf, message: String },

    /// The latent or text encoder returned an error.
    #[error("{stage} encoder `{identity}` failed on {path}: {source}")]
    Encode {
        stage: &'static str,
        identity: String,
        path: PathBuf,
        #[source]
        source: EncodeError,
    },

    /// A sample reference does not point into this dataset set.
    #[error("sample reference {0} is out of range")]
    BadSampleRef(String),
}

fn skipped_note(skipped: usize) -> String {
    if skipped == 0 { String::new() } else { format!(" ({skipped} files were skipped as bad input)") }
}

fn bad_input_message(problems: &[Problem]) -> String {
    let mut out = format!(
        "{} bad input file(s) found; fix them or set on_bad_input: skip to train without them:",
        problems.len()
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn config(key: &str, dataset: &str, message: impl Into<String>) -> Self {
        Error::Config { key: key.to_string(), dataset: dataset.to_string(), message: message.into() }
    }
}
