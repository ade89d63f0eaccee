//! One dataset (one `datasets:` entry): its images, their captions and controls, and the samples
//! (image x resolution x flip x repeat) sorted into buckets.
//!
//! Loading runs in two phases so that problems from every dataset are collected before the bad-input
//! policy decides: [`scan`] checks files and gathers problems, [`Dataset::build`] turns the accepted
//! records into samples and buckets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::bucket::{CropPlacement, Geometry, Size, bucket_for_size, plan_geometry, scaled_source};
use crate::caption::{CaptionRules, CaptionSource, read_caption_file};
use crate::config::{DatasetConfig, LoadOptions};
use crate::control::{ControlGeometry, control_geometry};
use crate::error::{Error, Result};
use crate::image_io::inspect_file;
use crate::problem::{Problem, ProblemKind};
use crate::progress;
use crate::rng::{Rng, str_digest};
use crate::scan::{IMAGE_EXTENSIONS, file_stem, list_control_folder, scan_images};

/// One source image with its caption and controls.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRecord {
    pub path: PathBuf,
    /// Path relative to the dataset folder.
    pub rel_path: PathBuf,
    /// Size after EXIF orientation.
    pub size: Size,
    /// BLAKE3 of the file bytes (hex).
    pub content_hash: String,
    /// Caption text before trigger handling (file text trimmed, or `default_caption`).
    pub raw_caption: String,
    /// Caption with replacements and trigger applied (no per-step randomness).
    pub caption: String,
    pub caption_source: CaptionSource,
    /// One per control folder, in `control_path` order.
    pub controls: Vec<ControlImage>,
}

/// A control image paired with a target.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlImage {
    pub path: PathBuf,
    pub content_hash: String,
    pub geometry: ControlGeometry,
}

/// One training sample: an image at one resolution, possibly flipped, one of its repeats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Index into [`Dataset::records`].
    pub record: usize,
    pub resolution: u32,
    pub geometry: Geometry,
    pub flip_x: bool,
    pub flip_y: bool,
    /// Which of the `num_repeats` copies this is (copies differ only with `random_crop`).
    pub repeat: u32,
}

impl Sample {
    pub fn bucket(&self) -> Size {
        self.geometry.bucket()
    }
}

/// Samples of one bucket size, in first-appearance order.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    pub size: Size,
    /// Indices into [`Dataset::samples`].
    pub samples: Vec<usize>,
}

/// One row of the bucket table.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketRow {
    pub resolution: u32,
    pub size: Size,
    /// Samples (repeats and flips included), as ai-toolkit counts "files" per bucket.
    pub samples: usize,
}

/// A loaded dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    index: usize,
    config: DatasetConfig,
    root: PathBuf,
    rules: CaptionRules,
    records: Vec<ImageRecord>,
    samples: Vec<Sample>,
    buckets: Vec<Bucket>,
}

impl Dataset {
    /// Position in the config list.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn config(&self) -> &DatasetConfig {
        &self.config
    }

    /// The image folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn caption_rules(&self) -> &CaptionRules {
        &self.rules
    }

    /// Accepted images, sorted by path.
    pub fn records(&self) -> &[ImageRecord] {
        &self.records
    }

    /// Every sample: for each resolution, flip variant (none, x, y, xy) and repeat, every record.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Buckets in first-appearance order; same-size buckets of different resolutions are merged.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// The record behind a sample.
    ///
    /// # Panics
    /// If `sample` was taken from another dataset (use [`crate::DatasetSet::record`] with a
    /// [`crate::SampleRef`] for checked access).
    pub fn record_of(&self, sample: &Sample) -> &ImageRecord {
        &self.records[sample.record]
    }

    /// Bucket table per resolution, in first-appearance order within each resolution.
    pub fn bucket_rows(&self) -> Vec<BucketRow> {
        let mut order: Vec<(u32, Size)> = Vec::new();
        let mut counts: HashMap<(u32, Size), usize> = HashMap::new();
        for s in &self.samples {
            let key = (s.resolution, s.bucket());
            let c = counts.entry(key).or_insert(0);
            if *c == 0 {
                order.push(key);
            }
            *c += 1;
        }
        order
            .into_iter()
            .map(|(resolution, size)| BucketRow { resolution, size, samples: counts[&(resolution, size)] })
            .collect()
    }

    /// Turns accepted records into samples and buckets.
    pub(crate) fn build(
        index: usize,
        config: DatasetConfig,
        root: PathBuf,
        rules: CaptionRules,
        records: Vec<ImageRecord>,
        options: &LoadOptions,
    ) -> Self {
        let mut variants = vec![(false, false)];
        if config.flip_x {
            let flipped: Vec<_> = variants.iter().map(|&(_, y)| (true, y)).collect();
            variants.extend(flipped);
        }
        if config.flip_y {
            let flipped: Vec<_> = variants.iter().map(|&(x, _)| (x, true)).collect();
            variants.extend(flipped);
        }
        let digests: Vec<u64> = records.iter().map(|r| str_digest(&r.rel_path.to_string_lossy())).collect();

        let mut samples = Vec::new();
        for &resolution in &config.resolution {
            for &(flip_x, flip_y) in &variants {
                for repeat in 0..config.num_repeats {
                    for (ri, record) in records.iter().enumerate() {
                        let source = scaled_source(record.size, config.scale);
                        let fit = bucket_for_size(source.width, source.height, resolution, options.divisibility);
                        let geometry = if config.random_crop {
                            let mut rng = Rng::derive(
                                options.seed,
                                "random-crop",
                                &[
                                    digests[ri],
                                    u64::from(resolution),
                                    u64::from(flip_x),
                                    u64::from(flip_y),
                                    u64::from(repeat),
                                ],
                            );
                            plan_geometry(source, fit.size, CropPlacement::Random(&mut rng))
                        } else {
                            plan_geometry(source, fit.size, CropPlacement::Center)
                        };
                        samples.push(Sample { record: ri, resolution, geometry, flip_x, flip_y, repeat });
                    }
                }
            }
        }

        let mut buckets: Vec<Bucket> = Vec::new();
        let mut by_size: HashMap<Size, usize> = HashMap::new();
        for (si, s) in samples.iter().enumerate() {
            let bi = *by_size.entry(s.bucket()).or_insert_with(|| {
                buckets.push(Bucket { size: s.bucket(), samples: Vec::new() });
                buckets.len() - 1
            });
            buckets[bi].samples.push(si);
        }
        Dataset { index, config, root, rules, records, samples, buckets }
    }
}

/// The outcome of checking one dataset's files.
pub(crate) struct Scanned {
    pub index: usize,
    pub config: DatasetConfig,
    pub root: PathBuf,
    pub rules: CaptionRules,
    /// Records that passed every check.
    pub accepted: Vec<ImageRecord>,
    pub problems: Vec<Problem>,
    /// Image files found (accepted or not).
    pub found: usize,
}

/// A candidate target before controls are attached.
struct Candidate {
    path: PathBuf,
    size: Size,
    content_hash: String,
    caption_text: Option<String>,
}

/// Checks every file of a dataset: images, captions, controls. Configuration errors (missing folder,
/// no images at all) are returned as errors; bad files become problems.
pub(crate) fn scan(index: usize, config: &DatasetConfig, options: &LoadOptions) -> Result<Scanned> {
    config.validate(index)?;
    let Some(root) = config.folder() else {
        return Err(Error::config("folder_path", &config.label(index), "missing"));
    };
    if !root.is_dir() {
        return Err(Error::MissingFolder { key: "folder_path", path: root.to_path_buf() });
    }
    let control_folders = config.control_folders();
    for folder in &control_folders {
        if !folder.is_dir() {
            return Err(Error::MissingFolder { key: "control_path", path: folder.clone() });
        }
    }
    let paths = scan_images(root, &control_folders)?;
    if paths.is_empty() {
        return Err(Error::EmptyDataset { folder: root.to_path_buf(), skipped: 0 });
    }
    let rules = CaptionRules::from_config(config, options.trigger_word.as_deref());
    let ext = config.caption_extension().to_string();

    let bar = progress::bar(paths.len() as u64, &format!("checking {}", root.display()), options.show_progress);
    let checked: Vec<std::result::Result<Candidate, Vec<Problem>>> = paths
        .par_iter()
        .map(|path| {
            let result = check_target(path, config, options, &ext);
            bar.inc(1);
            result
        })
        .collect();
    bar.finish_and_clear();

    let mut problems = Vec::new();
    let mut candidates = Vec::new();
    for r in checked {
        match r {
            Ok(c) => candidates.push(c),
            Err(p) => problems.extend(p),
        }
    }

    let (controls, control_problems) = match_controls(&candidates, &control_folders, options)?;
    problems.extend(control_problems);

    let accepted = candidates
        .into_iter()
        .zip(controls)
        .filter_map(|(c, controls)| {
            let controls = controls?;
            let (raw_caption, caption_source) = rules.raw_caption(c.caption_text.as_deref());
            let caption = rules.caption(&raw_caption);
            let rel_path = c.path.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| c.path.clone());
            Some(ImageRecord {
                path: c.path,
                rel_path,
                size: c.size,
                content_hash: c.content_hash,
                raw_caption,
                caption,
                caption_source,
                controls,
            })
        })
        .collect();

    Ok(Scanned {
        index,
        config: config.clone(),
        root: root.to_path_buf(),
        rules,
        accepted,
        problems,
        found: paths.len(),
    })
}

/// Image and caption checks of one target file.
fn check_target(
    path: &Path,
    config: &DatasetConfig,
    options: &LoadOptions,
    ext: &str,
) -> std::result::Result<Candidate, Vec<Problem>> {
    let mut problems = Vec::new();
    let caption_text = match read_caption_file(path, ext) {
        Ok(t) => t,
        Err(p) => {
            problems.push(p);
            None
        }
    };
    match inspect_file(path, options.verify_images) {
        Err(p) => problems.push(p),
        Ok(info) => {
            let size = info.size;
            if size.width < options.min_image_side || size.height < options.min_image_side {
                problems.push(Problem::new(
                    path,
                    ProblemKind::TooSmall,
                    format!("{size} has a side below min_image_side = {} px", options.min_image_side),
                ));
            } else {
                let source = scaled_source(size, config.scale);
                if source.width == 0 || source.height == 0 {
                    problems.push(Problem::new(
                        path,
                        ProblemKind::TooSmall,
                        format!("{size} scaled by {} has no pixels left", config.scale),
                    ));
                } else {
                    for &res in &config.resolution {
                        let fit = bucket_for_size(source.width, source.height, res, options.divisibility);
                        if !fit.fits {
                            problems.push(Problem::new(
                                path,
                                ProblemKind::ExtremeAspect,
                                format!(
                                    "{size}: no {}-px-multiple bucket fits in {res}x{res} (ai-toolkit would \
                                     use {}, larger than the resolution allows)",
                                    options.divisibility, fit.size
                                ),
                            ));
                            break;
                        }
                    }
                }
            }
            if problems.is_empty() {
                return Ok(Candidate { path: path.to_path_buf(), size, content_hash: info.content_hash, caption_text });
            }
        }
    }
    Err(problems)
}

/// Per candidate its controls (`None`: missing, ambiguous or bad), and the problems found.
type ControlMatch = (Vec<Option<Vec<ControlImage>>>, Vec<Problem>);

/// Pairs each candidate with one control image per control folder. Returns, per candidate, its
/// controls (`None` when a control is missing, ambiguous or bad) and the problems found.
fn match_controls(candidates: &[Candidate], folders: &[PathBuf], options: &LoadOptions) -> Result<ControlMatch> {
    if folders.is_empty() {
        return Ok((candidates.iter().map(|_| Some(Vec::new())).collect(), Vec::new()));
    }
    let mut problems = Vec::new();
    let mut by_stem: Vec<BTreeMap<String, Vec<PathBuf>>> = Vec::new();
    for folder in folders {
        let mut map: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for path in list_control_folder(folder)? {
            map.entry(file_stem(&path)).or_default().push(path);
        }
        by_stem.push(map);
    }

    // Per candidate, per folder: the control path, or None after recording a problem.
    let mut chosen: Vec<Option<Vec<PathBuf>>> = Vec::with_capacity(candidates.len());
    for c in candidates {
        let stem = file_stem(&c.path);
        let mut paths = Some(Vec::new());
        for (folder, map) in folders.iter().zip(&by_stem) {
            match map.get(&stem).map(Vec::as_slice) {
                Some([one]) => {
                    if let Some(p) = paths.as_mut() {
                        p.push(one.clone());
                    }
                }
                Some(several) => {
                    let names: Vec<String> = several.iter().map(|p| p.display().to_string()).collect();
                    problems.push(Problem::new(
                        &c.path,
                        ProblemKind::AmbiguousControl,
                        format!("{} files share its stem: {}", several.len(), names.join(", ")),
                    ));
                    paths = None;
                }
                None => {
                    problems.push(Problem::new(
                        &c.path,
                        ProblemKind::MissingControl,
                        format!("no {stem}.{{{}}} in {}", IMAGE_EXTENSIONS.join(","), folder.display()),
                    ));
                    paths = None;
                }
            }
        }
        chosen.push(paths);
    }

    // Check every control file used, once.
    let unique: Vec<PathBuf> = {
        let mut seen = HashSet::new();
        chosen.iter().flatten().flatten().filter(|p| seen.insert((*p).clone())).cloned().collect()
    };
    let bar = progress::bar(unique.len() as u64, "checking control images", options.show_progress);
    let checked: HashMap<PathBuf, std::result::Result<ControlImage, Problem>> = unique
        .par_iter()
        .map(|path| {
            let result = inspect_file(path, options.verify_images).and_then(|info| {
                control_geometry(info.size, &options.control)
                    .map(|geometry| ControlImage { path: path.clone(), content_hash: info.content_hash, geometry })
                    .map_err(|msg| Problem::new(path, ProblemKind::BadControl, msg))
            });
            bar.inc(1);
            (path.clone(), result)
        })
        .collect();
    bar.finish_and_clear();

    let mut reported = HashSet::new();
    let mut out = Vec::with_capacity(candidates.len());
    for (c, paths) in candidates.iter().zip(chosen) {
        let Some(paths) = paths else {
            out.push(None);
            continue;
        };
        let mut controls = Vec::with_capacity(paths.len());
        let mut ok = true;
        for p in &paths {
            match &checked[p] {
                Ok(ci) => controls.push(ci.clone()),
                Err(problem) => {
                    ok = false;
                    if reported.insert(p.clone()) {
                        let mut problem = problem.clone();
                        problem.detail = format!("{} (control of {})", problem.detail, c.path.display());
                        problems.push(problem);
                    }
                }
            }
        }
        out.push(ok.then_some(controls));
    }
    Ok((out, problems))
}
