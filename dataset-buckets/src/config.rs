//! Dataset configuration with ai-toolkit's key names, so a trainer can deserialize an ai-toolkit
//! `datasets:` entry (YAML or JSON) straight into [`DatasetConfig`], plus the job-level
//! [`LoadOptions`] that are not per-dataset keys in ai-toolkit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::control::ControlRules;
use crate::error::{Error, Result};
use crate::problem::BadInputPolicy;

/// One entry of ai-toolkit's `datasets:` list. Defaults are ai-toolkit's.
///
/// Keys this crate does not implement are kept in [`DatasetConfig::other`] rather than rejected, so an
/// existing ai-toolkit config still loads; [`DatasetConfig::unsupported_keys`] names the ones that would
/// change training, for the trainer to warn about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetConfig {
    /// Folder of training images (searched recursively).
    pub folder_path: Option<PathBuf>,
    /// ai-toolkit's newer name for the same thing; a folder here is used when `folder_path` is absent.
    /// (ai-toolkit also accepts a JSON caption file here; that form is not supported.)
    pub dataset_path: Option<PathBuf>,
    /// Caption file extension, with or without the dot (`txt`, `.caption`).
    pub caption_ext: String,
    /// Caption used when an image has no caption file, or an empty one.
    pub default_caption: Option<String>,
    /// This dataset's trigger word; falls back to [`LoadOptions::trigger_word`].
    pub trigger_word: Option<String>,
    /// Probability that a step's caption is replaced by the trigger word alone.
    pub caption_dropout_rate: f64,
    /// Shuffle the comma-separated tags of the caption each step.
    pub shuffle_tokens: bool,
    /// Number of leading tags kept in place (and never dropped) when shuffling / dropping tags.
    pub keep_tokens: usize,
    /// Probability of dropping each tag after the first `keep_tokens`.
    pub token_dropout_rate: f64,
    /// Caption text replacements, each `"from|to"`, applied to the raw caption.
    pub replacements: Vec<String>,
    /// How many times each image is seen per epoch.
    pub num_repeats: u32,
    /// One or more bucket resolutions; every image is bucketed once per resolution.
    #[serde(deserialize_with = "one_or_many")]
    pub resolution: Vec<u32>,
    /// Scale applied to the source size before bucketing (ai-toolkit's `scale`).
    pub scale: f64,
    /// Must stay `true`: square-resize without buckets is not implemented.
    pub buckets: bool,
    /// Add a left-right mirrored copy of every image.
    pub flip_x: bool,
    /// Add an upside-down copy of every image (after the `flip_x` copies, so both flags give four).
    pub flip_y: bool,
    /// Random (seeded, fixed per image) crop instead of the center crop.
    pub random_crop: bool,
    /// Regularization set: served as its own stream, trigger word not prepended.
    pub is_reg: bool,
    /// Multiplier on this dataset's loss.
    pub loss_multiplier: f32,
    /// LoRA multiplier while training on this dataset.
    pub network_weight: f32,
    /// Control (edit source) folder(s); each target needs a file with its stem in every folder.
    #[serde(deserialize_with = "one_or_many")]
    pub control_path: Vec<PathBuf>,
    /// ai-toolkit UI form of multiple control folders; when any is set they replace `control_path`.
    pub control_path_1: Option<PathBuf>,
    pub control_path_2: Option<PathBuf>,
    pub control_path_3: Option<PathBuf>,
    /// Background for transparent pixels of control images (RGB).
    pub control_transparent_color: [u8; 3],
    /// Keep latents in memory after encoding them once.
    pub cache_latents: bool,
    /// Keep latents in safetensors files next to the images (or in the cache folder).
    pub cache_latents_to_disk: bool,
    /// Keep text embeddings in safetensors files.
    pub cache_text_embeddings: bool,
    /// Per-dataset batch size overriding the trainer's.
    pub batch_size: Option<usize>,
    /// Dataset type; only `image` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// Every other key of the entry, untouched.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            folder_path: None,
            dataset_path: None,
            caption_ext: "txt".to_string(),
            default_caption: None,
            trigger_word: None,
            caption_dropout_rate: 0.0,
            shuffle_tokens: false,
            keep_tokens: 0,
            token_dropout_rate: 0.0,
            replacements: Vec::new(),
            num_repeats: 1,
            resolution: vec![512],
            scale: 1.0,
            buckets: true,
            flip_x: false,
            flip_y: false,
            random_crop: false,
            is_reg: false,
            loss_multiplier: 1.0,
            network_weight: 1.0,
            control_path: Vec::new(),
            control_path_1: None,
            control_path_2: None,
            control_path_3: None,
            control_transparent_color: [0, 0, 0],
            cache_latents: false,
            cache_latents_to_disk: false,
            cache_text_embeddings: false,
            batch_size: None,
            kind: "image".to_string(),
            other: BTreeMap::new(),
        }
    }
}

/// ai-toolkit keys that only tune its own loader (workers, prefetching) or that it overrides itself
/// (`bucket_tolerance` is replaced by the model's divisibility): ignoring them changes nothing.
const HARMLESS_KEYS: &[&str] = &[
    "num_workers",
    "prefetch_factor",
    "bucket_tolerance",
    "cache_latents_num_workers",
    "fast_image_size",
    "debug",
    "standardize_images",
    "load_image_when_caching_latents",
    "full_size_control_images",
];

impl DatasetConfig {
    /// A new config for `folder` with every other key at its default.
    pub fn for_folder(folder: impl Into<PathBuf>) -> Self {
        DatasetConfig { folder_path: Some(folder.into()), ..Default::default() }
    }

    /// The image folder: `folder_path`, else `dataset_path`.
    pub fn folder(&self) -> Option<&Path> {
        self.folder_path.as_deref().or(self.dataset_path.as_deref())
    }

    /// Caption extension without its leading dot.
    pub fn caption_extension(&self) -> &str {
        self.caption_ext.trim_start_matches('.')
    }

    /// The control folders, in order: `control_path_1..3` when any is set, else `control_path`.
    /// Empty strings are ignored (ai-toolkit treats `control_path: ''` as none).
    pub fn control_folders(&self) -> Vec<PathBuf> {
        let numbered: Vec<PathBuf> = [&self.control_path_1, &self.control_path_2, &self.control_path_3]
            .into_iter()
            .flatten()
            .filter(|p| !p.as_os_str().is_empty())
            .cloned()
            .collect();
        if !numbered.is_empty() {
            return numbered;
        }
        self.control_path.iter().filter(|p| !p.as_os_str().is_empty()).cloned().collect()
    }

    /// Whether latents of this dataset are cached (in memory, on disk, or both).
    pub fn caches_latents(&self) -> bool {
        self.cache_latents || self.cache_latents_to_disk
    }

    /// Unimplemented keys present in the entry that would change training; the trainer should warn.
    pub fn unsupported_keys(&self) -> Vec<String> {
        self.other.keys().filter(|k| !HARMLESS_KEYS.contains(&k.as_str())).cloned().collect()
    }

    /// A short name for messages: the folder, else the position.
    pub fn label(&self, index: usize) -> String {
        match self.folder() {
            Some(p) => p.display().to_string(),
            None => format!("datasets[{index}]"),
        }
    }

    /// Checks values that would otherwise fail late or silently do something else.
    pub fn validate(&self, index: usize) -> Result<()> {
        let label = self.label(index);
        let err = |key: &str, msg: String| Err(Error::config(key, &label, msg));
        if self.folder().is_none() {
            return err("folder_path", "missing: set folder_path to the image folder".into());
        }
        if self.kind != "image" {
            return err("type", format!("`{}` is not supported, only `image`", self.kind));
        }
        if !self.buckets {
            return err("buckets", "`false` is not supported: images are always bucketed".into());
        }
        if self.resolution.is_empty() {
            return err("resolution", "empty list".into());
        }
        if let Some(r) = self.resolution.iter().find(|r| **r < 16) {
            return err("resolution", format!("{r} is too small (at least 16)"));
        }
        if self.num_repeats == 0 {
            return err("num_repeats", "must be at least 1".into());
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return err("scale", format!("{} must be a positive number", self.scale));
        }
        for (key, rate) in
            [("caption_dropout_rate", self.caption_dropout_rate), ("token_dropout_rate", self.token_dropout_rate)]
        {
            if !(0.0..=1.0).contains(&rate) {
                return err(key, format!("{rate} is not a probability in 0..=1"));
            }
        }
        if self.batch_size == Some(0) {
            return err("batch_size", "must be at least 1".into());
        }
        for r in &self.replacements {
            if r.split('|').count() != 2 {
                return err("replacements", format!("`{r}` is not of the form `from|to`"));
            }
        }
        if self.cache_text_embeddings && (self.shuffle_tokens || self.token_dropout_rate > 0.0) {
            return err(
                "cache_text_embeddings",
                "cannot be combined with shuffle_tokens or token_dropout_rate: the caption changes every \
                 step, so there is no single embedding to cache"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Job-level options that ai-toolkit takes from the model or train config rather than from each dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadOptions {
    /// Bucket sides are multiples of this (FLUX.2: 16 = VAE factor 8 x patch 2).
    pub divisibility: u32,
    /// Seed for random crops, epoch shuffles and caption randomness.
    pub seed: u64,
    /// Stop on bad input (default) or skip it and report.
    pub on_bad_input: BadInputPolicy,
    /// Fully decode every image while loading, so corrupt or truncated files are found before training
    /// rather than mid-run. Off: only headers are read (faster for huge, trusted folders).
    pub verify_images: bool,
    /// Images with a side shorter than this (after EXIF orientation) are reported as too small.
    pub min_image_side: u32,
    /// Job-level trigger word for datasets that set none.
    pub trigger_word: Option<String>,
    /// Size rules for control images of edit datasets.
    pub control: ControlRules,
    /// Draw progress bars on stderr (they stay hidden when stderr is not a terminal).
    pub show_progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            divisibility: 16,
            seed: 0,
            on_bad_input: BadInputPolicy::Stop,
            verify_images: true,
            min_image_side: 64,
            trigger_word: None,
            control: ControlRules::default(),
            show_progress: true,
        }
    }
}

impl LoadOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.divisibility == 0 {
            return Err(Error::config("divisibility", "load options", "must be at least 1"));
        }
        self.control.validate()
    }
}

/// Accepts `x`, `[x, y]` or `null` (and, for paths, `""`) for list-valued keys, as ai-toolkit does.
fn one_or_many<'de, D, T>(deserializer: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match Option::<OneOrMany<T>>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(OneOrMany::One(x)) => vec![x],
        Some(OneOrMany::Many(v)) => v,
    })
}
