//! Bad-input findings. Loading collects every problem instead of failing on the first, so the user
//! can fix a whole folder in one pass; the policy then decides whether to stop or to skip.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to do with bad input found while loading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadInputPolicy {
    /// Fail before training with [`crate::Error::BadInput`] listing every problem (the default: a
    /// silently shrunken dataset is worse than a clear stop).
    #[default]
    Stop,
    /// Leave the bad files out, keep the problems in the load report, and train on the rest.
    Skip,
}

/// The kind of a [`Problem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemKind {
    /// The file could not be opened or read.
    Unreadable,
    /// The file has zero bytes.
    EmptyFile,
    /// The bytes are not a JPEG, PNG or WebP image.
    UnknownFormat,
    /// The image header or pixel data is damaged or cut short.
    Corrupt,
    /// A side is below `LoadOptions::min_image_side`.
    TooSmall,
    /// The header declares more pixels than [`crate::max_image_pixels`] (a decompression bomb, or a
    /// scan far beyond any bucket): refused before decoding.
    TooLarge,
    /// The aspect ratio is so extreme that no bucket fits inside `resolution^2`.
    ExtremeAspect,
    /// The caption file exists but cannot be read as UTF-8 text.
    CaptionUnreadable,
    /// A target image has no control image in one of the control folders.
    MissingControl,
    /// A control folder holds several images with the target's stem.
    AmbiguousControl,
    /// A control image breaks the FLUX.2 reference rules (min side, aspect ratio) or cannot be read.
    BadControl,
}

impl ProblemKind {
    /// Short human description used in messages.
    pub fn describe(self) -> &'static str {
        match self {
            ProblemKind::Unreadable => "unreadable file",
            ProblemKind::EmptyFile => "zero-byte file",
            ProblemKind::UnknownFormat => "not a JPEG/PNG/WebP image",
            ProblemKind::Corrupt => "corrupt or truncated image",
            ProblemKind::TooSmall => "image too small",
            ProblemKind::TooLarge => "image too large to decode",
            ProblemKind::ExtremeAspect => "aspect ratio too extreme",
            ProblemKind::CaptionUnreadable => "unreadable caption",
            ProblemKind::MissingControl => "no control image",
            ProblemKind::AmbiguousControl => "several control images",
            ProblemKind::BadControl => "unusable control image",
        }
    }
}

/// One bad input file, with the file to look at and what is wrong with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The file at fault (for missing controls: the target image that has none).
    pub path: PathBuf,
    pub kind: ProblemKind,
    /// Specifics: decoder message, sizes, the control folder searched, ...
    pub detail: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<PathBuf>, kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem { path: path.into(), kind, detail: detail.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind.describe())?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}
