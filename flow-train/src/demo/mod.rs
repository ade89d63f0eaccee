//! The embedded demo: everything `flux2-train demo` needs, generated on the spot so a fresh checkout
//! trains a LoRA on CPU with no downloads (`job.yaml` is the job it runs).

mod dataset;
mod pipeline;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

pub use dataset::write_dataset;
pub use pipeline::{DemoPipelineSpec, write_pipeline};

use crate::error::{Error, Result};

/// The demo's job file (ai-toolkit schema).
pub const DEMO_JOB: &str = include_str!("job.yaml");

/// Where the demo's generated inputs live, relative to the working directory (as `job.yaml` says).
pub const DEMO_ROOT: &str = "output/demo";

/// Paths of a prepared demo.
#[derive(Clone, Debug)]
pub struct DemoPaths {
    pub pipeline: PathBuf,
    pub dataset: PathBuf,
    pub job: PathBuf,
}

/// Writes the pipeline, the images and the job file under `root` unless they are already there
/// (a `.complete` marker is written last, so an interrupted preparation is redone).
pub fn prepare<B: Backend>(root: &Path, device: &B::Device) -> Result<DemoPaths> {
    let paths = DemoPaths { pipeline: root.join("pipeline"), dataset: root.join("dataset"), job: root.join("demo_job.yaml") };
    let marker = root.join(".complete");
    if !marker.exists() {
        write_pipeline::<B>(&paths.pipeline, &DemoPipelineSpec::default(), device)?;
        write_dataset(&paths.dataset)?;
        std::fs::write(&paths.job, DEMO_JOB).map_err(|e| Error::io(&paths.job, e))?;
        std::fs::write(&marker, "").map_err(|e| Error::io(&marker, e))?;
    }
    Ok(paths)
}
