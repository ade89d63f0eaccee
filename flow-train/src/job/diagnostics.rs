//! What checking a job file finds: errors (the run must not start), warnings (unknown keys, settings
//! that behave differently from ai-toolkit) and notes (recognised keys that have no effect here), each
//! with the full key path (`config.process[0].train.lr`) it is about.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How serious a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The job cannot run as written.
    Error,
    /// The job runs, but something in it is not used or not used as the user may expect.
    Warning,
    /// For information: a recognised key that has no effect in this trainer (the reason says why).
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        })
    }
}

/// One finding about one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Full key path in the file, e.g. `config.process[0].model.quantize` (empty for the whole file).
    pub path: String,
    /// What is wrong or worth knowing, with the offending value when there is one.
    pub message: String,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, path: path.into(), message: message.into() }
    }
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, path: path.into(), message: message.into() }
    }
    pub fn note(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Note, path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.severity, self.message)
        } else {
            write!(f, "{}: {}: {}", self.severity, self.path, self.message)
        }
    }
}

/// Why a job file could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The file could not be read.
    #[error("job file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The text is not valid YAML / JSON / TOML, or a `${VAR}` it uses is not set.
    #[error("job file {origin}: {message}")]
    Syntax { origin: String, message: String },

    /// The file parsed, but the checks found errors. All of them are listed (not just the first),
    /// followed by the warnings, so one run shows everything to fix.
    #[error("{}", invalid_message(origin, diagnostics))]
    Invalid { origin: String, diagnostics: Vec<Diagnostic> },
}

impl JobError {
    /// The errors (and warnings/notes) of an [`JobError::Invalid`]; empty for the other variants.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            JobError::Invalid { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

fn invalid_message(origin: &str, diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let mut out =
        format!("job file {origin}: {errors} error{} (see docs/user-guide.md)", if errors == 1 { "" } else { "s" });
    for d in diagnostics.iter().filter(|d| d.severity != Severity::Note) {
        out.push_str("\n  ");
        out.push_str(&d.to_string());
    }
    out
}
