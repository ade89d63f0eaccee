//! The embedded demo: everything `flux2-train demo` needs, generated on the spot so a fresh checkout
//! trains a LoRA on CPU with no downloads (`job.yaml` is the job it runs).

pub mod before_after;
mod dataset;
mod pipeline;
pub mod pretrain;
pub mod shapes;

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

pub use dataset::write_dataset;
pub use pipeline::{DemoPipelineSpec, write_pipeline, write_pipeline_configs, write_pretrained_pipeline};
pub use pretrain::{PretrainOptions, PretrainReport, pretrain};

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
pub fn prepare(root: &Path) -> Result<DemoPaths> {
    let paths =
        DemoPaths { pipeline: root.join("pipeline"), dataset: root.join("dataset"), job: root.join("demo_job.yaml") };
    let marker = root.join(".complete");
    if !marker.exists() {
        write_pretrained_pipeline(&paths.pipeline)?;
        write_dataset(&paths.dataset)?;
        // The job names its folders relative to the default root; point them at this one.
        let job = DEMO_JOB.replace(DEMO_ROOT, &root.display().to_string());
        std::fs::write(&paths.job, job).map_err(|e| Error::io(&paths.job, e))?;
        std::fs::write(&marker, "").map_err(|e| Error::io(&marker, e))?;
    }
    Ok(paths)
}

/// The demo's before/after comparison ([`before_after::before_after`] with [`Comparison::demo`]) of the
/// LoRA at `lora` trained by `job`, against the square training images of `paths`; the strip is written
/// to `before_after.png` in the job's output folder.
pub fn compare<B: Backend>(
    paths: &DemoPaths,
    job: &crate::job::LoadedJob,
    lora: &Path,
    device: &B::Device,
) -> Result<(before_after::BeforeAfter, PathBuf)> {
    let mut images = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&paths.dataset)
        .map_err(|e| Error::io(&paths.dataset, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    entries.sort();
    for path in entries {
        let img = image::open(&path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        images.push(img.to_rgb8());
    }
    let options = crate::pipeline::PipelineOptions::for_model(&job.plan.model);
    let result = before_after::before_after::<B>(
        &paths.pipeline,
        &options,
        lora,
        &images,
        &before_after::Comparison::demo(),
        device,
    )?;
    let out = job.plan.output_dir.join("before_after.png");
    crate::train::previews::write_image(&result.strip, &out, image::ImageFormat::Png)?;
    Ok((result, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_job_points_into_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("elsewhere");
        let paths = prepare(&root).unwrap();
        let job = crate::job::load_job(&paths.job).unwrap();
        assert_eq!(std::path::Path::new(&job.plan.model.name_or_path), paths.pipeline);
        assert_eq!(job.plan.output_dir, root.join("demo_ring_lora"));
        assert_eq!(job.plan.datasets[0].folder_path.as_deref(), Some(paths.dataset.as_path()));
        assert!(paths.pipeline.join("transformer/config.json").is_file());
        // The pretraining conditioned on what the job's encoder settings give.
        let spec = DemoPipelineSpec::default();
        assert_eq!(job.plan.model.text_encoder_out_layers, Some(spec.text_encoder_out_layers()));
        assert_eq!(job.plan.model.max_sequence_length, Some(pretrain::DEMO_MAX_SEQUENCE_LENGTH));
        assert_eq!(std::fs::read_dir(&paths.dataset).unwrap().count(), 24, "12 images + 12 captions");
    }
}
