//! Job files: ai-toolkit's job schema (YAML, also JSON and TOML), checked key by key and resolved
//! into the plan the trainer runs.
//!
//! ```no_run
//! let job = flow_train::job::load_job("examples/jobs/flux2_lora.yaml".as_ref())?;
//! for warning in job.warnings() {
//!     eprintln!("{warning}");
//! }
//! let lora: &lora_adapters::LoraConfig = &job.plan.lora;
//! # let _ = lora;
//! # Ok::<(), flow_train::job::JobError>(())
//! ```
//!
//! Loading goes: text -> `${VAR}` substitution -> tree (YAML merge keys applied) -> `[name]` replaced ->
//! every key classified by the table in [`keys`] (supported / ignored with a note / recognised but
//! unsupported: error when set / unknown: warning) -> typed read of each section ([`schema`]; a bad
//! value is an error at its exact key path) -> dependent defaults filled -> value checks
//! ([`validate`]) -> the plan ([`resolve`]). Every problem of the file is reported in one go.
//!
//! `docs/user-guide.md` explains every key, panel by panel.

mod diagnostics;
pub mod keys;
mod lenient;
mod load;
pub mod optimizer;
pub mod resolve;
pub mod schema;
pub mod validate;

use std::path::Path;

pub use diagnostics::{Diagnostic, JobError, Severity};
pub use load::{JobFormat, parse_tree, replace_name, substitute_env};
pub use optimizer::resolve_optimizer;
pub use resolve::{
    Accumulation, DeviceSpec, DopPlan, LrSchedule, ModelPlan, SamplePlan, SamplePrompt, SavePlan, TextEncoderPlan,
    TrainJob, TrainPlan,
};
pub use schema::{
    EmaConfig, ImageFormat, JobConfig, JobFile, LoggingConfig, LrSchedulerParams, ModelConfig, ModelKwargs,
    NetworkConfig, NetworkKwargs, OptimizerEps, OptimizerParams, Precision, ProcessConfig, SampleConfig, SampleItem,
    SaveConfig, SaveFormat, TrainConfig,
};

/// Everything checking a job file found, whether or not it has errors.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// Where the text came from (file path or a label).
    pub origin: String,
    /// The file as read, every default filled (invalid values replaced by their defaults).
    pub file: JobFile,
    /// The plan; `None` when there are errors.
    pub plan: Option<TrainJob>,
    /// Errors, warnings and notes, each with its key path.
    pub diagnostics: Vec<Diagnostic>,
}

impl JobReport {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// The diagnostics of one severity.
    pub fn of(&self, severity: Severity) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(move |d| d.severity == severity)
    }

    /// The loaded job, or [`JobError::Invalid`] listing every problem.
    pub fn into_job(self) -> Result<LoadedJob, JobError> {
        match self.plan {
            Some(plan) if !self.has_errors() => Ok(LoadedJob { file: self.file, plan, diagnostics: self.diagnostics }),
            _ => Err(JobError::Invalid { origin: self.origin, diagnostics: self.diagnostics }),
        }
    }
}

/// A job without errors.
#[derive(Clone, Debug)]
pub struct LoadedJob {
    /// The resolved file (ai-toolkit schema, all defaults written); copied to the output folder.
    pub file: JobFile,
    /// What the trainer runs.
    pub plan: TrainJob,
    /// Warnings and notes.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadedJob {
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning)
    }
}

/// Checks job text. Only unreadable text (syntax, unset `${VAR}`) is an `Err`; everything else is in
/// the report.
pub fn check_job_str(text: &str, format: JobFormat, origin: &str) -> Result<JobReport, JobError> {
    let text = substitute_env(text, origin, |name| std::env::var(name).ok())?;
    let tree = parse_tree(&text, format, origin)?;
    let mut diagnostics = Vec::new();
    let file = load::read_tree(tree, &mut diagnostics);
    validate::validate(&file, &mut diagnostics);
    let plan = if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        None
    } else {
        resolve::resolve(&file, &mut diagnostics)
    };
    Ok(JobReport { origin: origin.to_string(), file, plan, diagnostics })
}

/// Checks a job file (format from its extension: `.yaml`/`.yml`, `.json`, `.toml`).
pub fn check_job(path: &Path) -> Result<JobReport, JobError> {
    let text = std::fs::read_to_string(path).map_err(|source| JobError::Io { path: path.to_path_buf(), source })?;
    check_job_str(&text, JobFormat::from_path(path), &path.display().to_string())
}

/// Loads a job file; any error stops with all of them listed.
pub fn load_job(path: &Path) -> Result<LoadedJob, JobError> {
    check_job(path)?.into_job()
}

/// Loads job text.
pub fn load_job_str(text: &str, format: JobFormat, origin: &str) -> Result<LoadedJob, JobError> {
    check_job_str(text, format, origin)?.into_job()
}
