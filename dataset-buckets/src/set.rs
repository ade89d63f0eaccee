//! All datasets of a job, loaded together: the entry point for the trainer.

use std::fmt;

use crate::caption::StepCaption;
use crate::config::{DatasetConfig, LoadOptions};
use crate::dataset::{Dataset, ImageRecord, Sample, scan};
use crate::error::{Error, Result};
use crate::image_io::{PreparedImage, prepare_control, prepare_target};
use crate::problem::{BadInputPolicy, Problem};
use crate::rng::Rng;
use crate::sampler::{Sampler, Stream};

/// Names one sample: dataset position and sample index within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRef {
    pub dataset: usize,
    pub sample: usize,
}

impl fmt::Display for SampleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "datasets[{}].samples[{}]", self.dataset, self.sample)
    }
}

/// Every dataset of the job, checked, bucketed and ready to sample from.
#[derive(Clone, Debug)]
pub struct DatasetSet {
    datasets: Vec<Dataset>,
    problems: Vec<Problem>,
    found: usize,
    options: LoadOptions,
}

impl DatasetSet {
    /// Loads every dataset: scans folders, checks images, captions and controls (in parallel, with a
    /// progress bar), then builds buckets.
    ///
    /// Bad input from all datasets is gathered first; with [`BadInputPolicy::Stop`] any problem fails
    /// the load with [`Error::BadInput`] listing them all, with `Skip` the bad files are left out and
    /// listed by [`DatasetSet::problems`]. A dataset left without images is always an error.
    pub fn load(configs: &[DatasetConfig], options: &LoadOptions) -> Result<Self> {
        options.validate()?;
        if configs.is_empty() {
            return Err(Error::config("datasets", "job", "no dataset configured"));
        }
        let mut scanned = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            scanned.push(scan(i, config, options)?);
        }
        let problems: Vec<Problem> = scanned.iter().flat_map(|s| s.problems.iter().cloned()).collect();
        if options.on_bad_input == BadInputPolicy::Stop && !problems.is_empty() {
            return Err(Error::BadInput { problems });
        }
        let mut datasets = Vec::with_capacity(scanned.len());
        let mut found = 0;
        for s in scanned {
            found += s.found;
            if s.accepted.is_empty() {
                return Err(Error::EmptyDataset { folder: s.root, skipped: s.found });
            }
            datasets.push(Dataset::build(s.index, s.config, s.root, s.rules, s.accepted, options));
        }
        Ok(DatasetSet { datasets, problems, found, options: options.clone() })
    }

    pub fn datasets(&self) -> &[Dataset] {
        &self.datasets
    }

    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Bad input that was skipped (always empty under [`BadInputPolicy::Stop`]).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Image files found in all dataset folders, before any was skipped.
    pub fn files_found(&self) -> usize {
        self.found
    }

    /// Whether any dataset is a regularization set (then sample [`Stream::Reg`] too).
    pub fn has_reg(&self) -> bool {
        self.datasets.iter().any(|d| d.config().is_reg)
    }

    pub fn dataset(&self, index: usize) -> Result<&Dataset> {
        self.datasets.get(index).ok_or_else(|| Error::BadSampleRef(format!("datasets[{index}]")))
    }

    pub fn sample(&self, r: SampleRef) -> Result<&Sample> {
        self.dataset(r.dataset)?.samples().get(r.sample).ok_or_else(|| Error::BadSampleRef(r.to_string()))
    }

    pub fn record(&self, r: SampleRef) -> Result<&ImageRecord> {
        let sample = self.sample(r)?;
        Ok(self.dataset(r.dataset)?.record_of(sample))
    }

    /// The sample's pixels: decoded, oriented, flipped, resized (bicubic) and cropped to its bucket.
    pub fn prepare_image(&self, r: SampleRef) -> Result<PreparedImage> {
        let sample = self.sample(r)?;
        let record = self.record(r)?;
        prepare_target(&record.path, record.size, &sample.geometry, sample.flip_x, sample.flip_y)
    }

    /// The sample's control images, one per control folder, each at its own FLUX.2 reference size.
    pub fn prepare_controls(&self, r: SampleRef) -> Result<Vec<PreparedImage>> {
        let sample = self.sample(r)?;
        let dataset = self.dataset(r.dataset)?;
        let background = dataset.config().control_transparent_color;
        dataset
            .record_of(sample)
            .controls
            .iter()
            .map(|c| prepare_control(&c.path, &c.geometry, background, sample.flip_x, sample.flip_y))
            .collect()
    }

    /// The sample's caption without per-step randomness (what text caches hold).
    pub fn caption(&self, r: SampleRef) -> Result<&str> {
        Ok(&self.record(r)?.caption)
    }

    /// The caption for one step, with dropout / tag shuffle drawn from `rng`
    /// (e.g. `Rng::derive(seed, "caption", &[step, position])`).
    pub fn step_caption(&self, r: SampleRef, rng: &mut Rng) -> Result<StepCaption> {
        let record = self.record(r)?;
        Ok(self.dataset(r.dataset)?.caption_rules().step_caption(&record.raw_caption, rng))
    }

    /// Batches of one stream, `batch_size` unless a dataset sets its own.
    pub fn sampler(&self, stream: Stream, batch_size: usize) -> Sampler<'_> {
        Sampler::new(self, stream, batch_size, self.options.seed)
    }
}
