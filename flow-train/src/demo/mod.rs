//! The embedded demo: everything `flux2-train demo` needs, generated on the spot so a fresh checkout
//! trains a LoRA on CPU with no downloads (`job.yaml` is the job it runs).

mod dataset;
mod pipeline;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

pub use dataset::write_dataset;
pub use pipeline::{DemoPipelineSpec, write_pipeline, write_pipeline_configs};

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
    let paths =
        DemoPaths { pipeline: root.join("pipeline"), dataset: root.join("dataset"), job: root.join("demo_job.yaml") };
    let marker = root.join(".complete");
    if !marker.exists() {
        write_pipeline::<B>(&paths.pipeline, &DemoPipelineSpec::default(), device)?;
        write_dataset(&paths.dataset)?;
        // The job names its folders relative to the default root; point them at this one.
        let job = DEMO_JOB.replace(DEMO_ROOT, &root.display().to_string());
        std::fs::write(&paths.job, job).map_err(|e| Error::io(&paths.job, e))?;
        std::fs::write(&marker, "").map_err(|e| Error::io(&marker, e))?;
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_job_points_into_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("elsewhere");
        let paths = prepare::<burn::backend::Flex>(&root, &Default::default()).unwrap();
        let job = crate::job::load_job(&paths.job).unwrap();
        assert_eq!(std::path::Path::new(&job.plan.model.name_or_path), paths.pipeline);
        assert_eq!(job.plan.output_dir, root.join("demo_ring_lora"));
        assert_eq!(job.plan.datasets[0].folder_path.as_deref(), Some(paths.dataset.as_path()));
        assert!(paths.pipeline.join("transformer/config.json").is_file());
        assert_eq!(std::fs::read_dir(&paths.dataset).unwrap().count(), 24, "12 images + 12 captions");
    }
}
