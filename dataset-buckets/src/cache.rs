//! Latent and text-embedding caches.
//!
//! **Where.** Next to the data by default, like ai-toolkit: `<image folder>/_latent_cache/` and
//! `<image folder>/_t_e_cache/` (folders starting with `_` are never scanned as training images), or
//! all in one chosen folder ([`CacheOptions::folder`]; `latents/` and `text/` under it).
//!
//! **Names and keys.** A file is named `<stem>_<slot>.safetensors`. The slot hashes what selects a
//! *variant* of an image (encoder identity, crop/resize geometry, flips; for text the caption rules),
//! so the 768 and 1024 versions of one image, or its flipped copy, live side by side. The full key,
//! stored in the file's metadata, additionally hashes everything that changes the *content*: the image
//! bytes (BLAKE3, so copies and re-syncs keep their caches but an edited image does not), the caption
//! text, the format version. A file whose stored key differs from the expected one is stale and is
//! rebuilt in place; one that is truncated or unparsable is damaged and is rebuilt too.
//!
//! **Atomicity.** Files are written to a hidden temporary file in the same folder, flushed to disk,
//! then renamed over the final name. A crash leaves either the old complete file or the new complete
//! file, never half of one; concurrent runs building the same entry both produce a valid file and the
//! last rename wins. Readers also verify the file length against the header, so nothing half-written is
//! ever read back, even from a foreign tool.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::encoder::{CachedTensor, EncodeError, LatentEncoder, TextEncoder};
use crate::error::{Error, Result};
use crate::image_io::PreparedImage;
use crate::key::KeyBuilder;
use crate::progress;
use crate::scan::file_stem;
use crate::set::{DatasetSet, SampleRef};

/// Bumped whenever the way cached data is produced changes; part of every key.
const FORMAT_VERSION: &str = "dataset-buckets cache v1";
/// The resampling filter used for targets and controls; part of latent keys.
const RESAMPLE: &str = "catmull-rom";
/// Tensor name inside cache files.
const TENSOR_NAME: &str = "value";
/// Largest header this crate writes is tiny; refuse to allocate for absurd ones.
const MAX_HEADER: u64 = 1 << 20;

/// Storage precision of cached tensors. Values are always handed out as `f32`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    #[default]
    F32,
    /// Half the disk space; latents and embeddings lose little (they are computed in bf16 anyway).
    F16,
    Bf16,
}

/// Where and how caches are stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheOptions {
    /// One folder for all caches; `None`: next to the images.
    pub folder: Option<PathBuf>,
    pub dtype: StoreDtype,
    /// Progress bars while building (hidden when stderr is not a terminal).
    pub show_progress: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions { folder: None, dtype: StoreDtype::F32, show_progress: true }
    }
}

/// What a build did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSummary {
    /// Valid entries found on disk and kept.
    pub reused: usize,
    /// Entries that did not exist yet.
    pub built: usize,
    /// Entries whose stored key no longer matched (image, caption or encoder changed).
    pub rebuilt_stale: usize,
    /// Entries that were truncated or unreadable.
    pub rebuilt_damaged: usize,
    /// Entries encoded into memory only (`cache_latents` without `cache_latents_to_disk`).
    pub in_memory: usize,
}

impl std::fmt::Display for CacheSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reused, {} built, {} rebuilt (stale), {} rebuilt (damaged), {} in memory",
            self.reused, self.built, self.rebuilt_stale, self.rebuilt_damaged, self.in_memory
        )
    }
}

/// State of a cache file relative to the key it should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryStatus {
    Missing,
    Valid,
    /// Complete file with another key.
    Stale,
    /// Truncated, unparsable or not ours.
    Damaged(String),
}

/// A cache entry's location and expected key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub key: String,
    /// The data file the entry derives from (for messages).
    pub source: PathBuf,
}

/// The caches of a job. Holds the in-memory latents of `cache_latents` datasets.
#[derive(Debug, Default)]
pub struct Caches {
    options: CacheOptions,
    memory: Mutex<HashMap<String, Arc<CachedTensor>>>,
}

/// What to encode for one latent entry.
#[derive(Clone, Copy, Debug)]
enum LatentJob {
    Target(SampleRef),
    Control(SampleRef, usize),
}

struct LatentWork {
    entry: Entry,
    job: LatentJob,
    disk: bool,
    memory: bool,
}

impl Caches {
    pub fn new(options: CacheOptions) -> Self {
        Caches { options, memory: Mutex::new(HashMap::new()) }
    }

    pub fn options(&self) -> &CacheOptions {
        &self.options
    }

    // ----- entries -------------------------------------------------------------------------------

    /// Where `source`'s cache files go: `(folder, name used in slot hashes)`.
    fn location(&self, source: &Path, sub_next_to_data: &str, sub_in_folder: &str) -> (PathBuf, String) {
        match &self.options.folder {
            Some(folder) => {
                // One folder for many datasets: the absolute path keeps equal stems apart.
                let abs = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
                (folder.join(sub_in_folder), abs.to_string_lossy().into_owned())
            }
            None => {
                let dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
                let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                (dir.join(sub_next_to_data), name)
            }
        }
    }

    /// The latent entry of a sample's target image.
    pub fn latent_entry(&self, set: &DatasetSet, r: SampleRef, identity: &str) -> Result<Entry> {
        let sample = set.sample(r)?;
        let record = set.record(r)?;
        let g = &sample.geometry;
        let (dir, name) = self.location(&record.path, "_latent_cache", "latents");
        let variant = |k: KeyBuilder| {
            k.field("identity", identity)
                .field("resize_to", g.resize_to)
                .field("crop", format!("{},{},{}x{}", g.crop.x, g.crop.y, g.crop.width, g.crop.height))
                .field("flip_x", sample.flip_x)
                .field("flip_y", sample.flip_y)
        };
        let slot = variant(KeyBuilder::new("latent slot").field("file", &name)).finish_short();
        let key = variant(KeyBuilder::new("latent"))
            .field("format", FORMAT_VERSION)
            .field("content", &record.content_hash)
            .field("source_size", record.size)
            .field("resample", RESAMPLE)
            .finish();
        Ok(Entry {
            path: dir.join(format!("{}_{slot}.safetensors", file_stem(&record.path))),
            key,
            source: record.path.clone(),
        })
    }

    /// The latent entry of a sample's `index`-th control image.
    pub fn control_entry(&self, set: &DatasetSet, r: SampleRef, index: usize, identity: &str) -> Result<Entry> {
        let sample = set.sample(r)?;
        let dataset = set.dataset(r.dataset)?;
        let control = dataset
            .record_of(sample)
            .controls
            .get(index)
            .ok_or_else(|| Error::BadSampleRef(format!("{r}.controls[{index}]")))?;
        let g = &control.geometry;
        let background = dataset.config().control_transparent_color;
        let (dir, name) = self.location(&control.path, "_latent_cache", "latents");
        let variant = |k: KeyBuilder| {
            k.field("identity", identity)
                .field("resize_to", g.resize_to)
                .field("crop", format!("{},{},{}x{}", g.crop.x, g.crop.y, g.crop.width, g.crop.height))
                .field("flip_x", sample.flip_x)
                .field("flip_y", sample.flip_y)
                .field("background", format!("{background:?}"))
        };
        let slot = variant(KeyBuilder::new("control slot").field("file", &name)).finish_short();
        let key = variant(KeyBuilder::new("control"))
            .field("format", FORMAT_VERSION)
            .field("content", &control.content_hash)
            .field("source_size", g.source)
            .field("resample", RESAMPLE)
            .finish();
        Ok(Entry {
            path: dir.join(format!("{}_{slot}.safetensors", file_stem(&control.path))),
            key,
            source: control.path.clone(),
        })
    }

    /// The text-embedding entry of a sample's caption (`dropped`: the dataset's dropout caption).
    pub fn text_entry(&self, set: &DatasetSet, r: SampleRef, identity: &str, dropped: bool) -> Result<Entry> {
        let dataset = set.dataset(r.dataset)?;
        let record = set.record(r)?;
        if dropped {
            return Ok(self.dropout_entry(dataset, identity));
        }
        let rules = dataset.caption_rules();
        let (dir, name) = self.location(&record.path, "_t_e_cache", "text");
        let slot = KeyBuilder::new("text slot")
            .field("identity", identity)
            .field("file", &name)
            .field("trigger", format!("{:?}", rules.trigger))
            .field("is_reg", rules.is_reg)
            .field("replacements", format!("{:?}", rules.replacements))
            .finish_short();
        let key = KeyBuilder::new("text")
            .field("format", FORMAT_VERSION)
            .field("identity", identity)
            .field("caption", &record.caption)
            .finish();
        Ok(Entry {
            path: dir.join(format!("{}_{slot}.safetensors", file_stem(&record.path))),
            key,
            source: record.path.clone(),
        })
    }

    fn dropout_entry(&self, dataset: &Dataset, identity: &str) -> Entry {
        let caption = dataset.caption_rules().dropout_caption();
        let dir = match &self.options.folder {
            Some(folder) => folder.join("text"),
            None => dataset.root().join("_t_e_cache"),
        };
        let slot =
            KeyBuilder::new("dropout slot").field("identity", identity).field("caption", &caption).finish_short();
        let key = KeyBuilder::new("text")
            .field("format", FORMAT_VERSION)
            .field("identity", identity)
            .field("caption", &caption)
            .finish();
        Entry {
            path: dir.join(format!("dropout_caption_{slot}.safetensors")),
            key,
            source: dataset.root().to_path_buf(),
        }
    }

    // ----- building ------------------------------------------------------------------------------

    /// Encodes and stores the latents (targets and controls) of every dataset with `cache_latents`
    /// or `cache_latents_to_disk`, reusing valid files. Images are decoded and resized in parallel;
    /// encoding runs on the calling thread (the encoder need not be `Sync`).
    pub fn build_latents(&self, set: &DatasetSet, encoder: &dyn LatentEncoder) -> Result<CacheSummary> {
        let identity = encoder.identity();
        let mut summary = CacheSummary::default();
        let mut seen: HashMap<PathBuf, ()> = HashMap::new();
        let mut work = Vec::new();
        for dataset in set.datasets() {
            let config = dataset.config();
            if !config.caches_latents() {
                continue;
            }
            for (si, sample) in dataset.samples().iter().enumerate() {
                let r = SampleRef { dataset: dataset.index(), sample: si };
                let mut jobs = vec![(self.latent_entry(set, r, &identity)?, LatentJob::Target(r))];
                for ci in 0..dataset.record_of(sample).controls.len() {
                    jobs.push((self.control_entry(set, r, ci, &identity)?, LatentJob::Control(r, ci)));
                }
                for (entry, job) in jobs {
                    if seen.insert(entry.path.clone(), ()).is_some() {
                        continue;
                    }
                    work.push(LatentWork {
                        entry,
                        job,
                        disk: config.cache_latents_to_disk,
                        memory: config.cache_latents,
                    });
                }
            }
        }

        // Temporary files of writers that were killed mid-write.
        let dirs: std::collections::BTreeSet<&Path> =
            work.iter().filter(|w| w.disk).filter_map(|w| w.entry.path.parent()).collect();
        for dir in dirs {
            flux2_ops::atomic_file::remove_stale_temp_files(dir);
        }

        // Decide what to build: valid disk entries are reused (and loaded if also kept in memory).
        let mut todo = Vec::new();
        for w in work {
            if !w.disk {
                if self.memory_get(&w.entry.key).is_some() {
                    summary.reused += 1;
                } else {
                    summary.in_memory += 1;
                    todo.push(w);
                }
                continue;
            }
            match entry_status(&w.entry.path, &w.entry.key) {
                EntryStatus::Valid => {
                    if !w.memory || self.memory_get(&w.entry.key).is_some() {
                        summary.reused += 1;
                        continue;
                    }
                    if let Some(t) = read_if_valid(&w.entry) {
                        self.memory_put(&w.entry.key, Arc::new(t));
                        summary.reused += 1;
                        continue;
                    }
                    summary.rebuilt_damaged += 1;
                }
                EntryStatus::Missing => summary.built += 1,
                EntryStatus::Stale => summary.rebuilt_stale += 1,
                EntryStatus::Damaged(_) => summary.rebuilt_damaged += 1,
            }
            todo.push(w);
        }

        let bar = progress::bar(todo.len() as u64, "caching latents", self.options.show_progress);
        let chunk = (rayon::current_num_threads() * 2).max(2);
        for part in todo.chunks(chunk) {
            let prepared: Vec<Result<PreparedImage>> = part.par_iter().map(|w| prepare_job(set, w.job)).collect();
            for (w, image) in part.iter().zip(prepared) {
                let tensor = encode_latent(encoder, &identity, &image?, &w.entry.source)?;
                if w.disk {
                    write_entry(&w.entry, &tensor, &identity, self.options.dtype)?;
                }
                if w.memory {
                    self.memory_put(&w.entry.key, Arc::new(tensor));
                }
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        Ok(summary)
    }

    /// Encodes and stores the caption embeddings of every dataset with `cache_text_embeddings`, plus
    /// each such dataset's dropout caption when it uses caption dropout.
    pub fn build_text(&self, set: &DatasetSet, encoder: &dyn TextEncoder) -> Result<CacheSummary> {
        let identity = encoder.identity();
        let mut summary = CacheSummary::default();
        let mut entries: Vec<(Entry, String)> = Vec::new();
        let mut seen: HashMap<PathBuf, ()> = HashMap::new();
        for dataset in set.datasets() {
            if !dataset.config().cache_text_embeddings {
                continue;
            }
            let mut push = |entry: Entry, caption: String| {
                if seen.insert(entry.path.clone(), ()).is_none() {
                    entries.push((entry, caption));
                }
            };
            for (si, sample) in dataset.samples().iter().enumerate() {
                let r = SampleRef { dataset: dataset.index(), sample: si };
                push(self.text_entry(set, r, &identity, false)?, dataset.record_of(sample).caption.clone());
            }
            if dataset.config().caption_dropout_rate > 0.0 {
                push(self.dropout_entry(dataset, &identity), dataset.caption_rules().dropout_caption());
            }
        }
        let bar = progress::bar(entries.len() as u64, "caching text embeddings", self.options.show_progress);
        for (entry, caption) in entries {
            match entry_status(&entry.path, &entry.key) {
                EntryStatus::Valid => {
                    summary.reused += 1;
                    bar.inc(1);
                    continue;
                }
                EntryStatus::Missing => summary.built += 1,
                EntryStatus::Stale => summary.rebuilt_stale += 1,
                EntryStatus::Damaged(_) => summary.rebuilt_damaged += 1,
            }
            let tensor = encode_text(encoder, &identity, &caption, &entry.source)?;
            write_entry(&entry, &tensor, &identity, self.options.dtype)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(summary)
    }

    // ----- reading -------------------------------------------------------------------------------

    /// The latent of a sample's target. Cached datasets: from memory, else from disk, else encoded and
    /// stored now (a missing or stale file is rebuilt). Other datasets: encoded on every call.
    pub fn latent(&self, set: &DatasetSet, r: SampleRef, encoder: &dyn LatentEncoder) -> Result<Arc<CachedTensor>> {
        let identity = encoder.identity();
        let entry = self.latent_entry(set, r, &identity)?;
        self.get_latent(set, r.dataset, &entry, LatentJob::Target(r), encoder, &identity)
    }

    /// The latents of a sample's control images, in control-folder order (see [`Caches::latent`]).
    pub fn control_latents(
        &self,
        set: &DatasetSet,
        r: SampleRef,
        encoder: &dyn LatentEncoder,
    ) -> Result<Vec<Arc<CachedTensor>>> {
        let identity = encoder.identity();
        let count = set.record(r)?.controls.len();
        (0..count)
            .map(|ci| {
                let entry = self.control_entry(set, r, ci, &identity)?;
                self.get_latent(set, r.dataset, &entry, LatentJob::Control(r, ci), encoder, &identity)
            })
            .collect()
    }

    fn get_latent(
        &self,
        set: &DatasetSet,
        dataset: usize,
        entry: &Entry,
        job: LatentJob,
        encoder: &dyn LatentEncoder,
        identity: &str,
    ) -> Result<Arc<CachedTensor>> {
        let config = set.dataset(dataset)?.config();
        if config.cache_latents
            && let Some(t) = self.memory_get(&entry.key)
        {
            return Ok(t);
        }
        let from_disk = if config.cache_latents_to_disk { read_if_valid(entry) } else { None };
        let tensor = match from_disk {
            Some(t) => t,
            None => {
                let image = prepare_job(set, job)?;
                let t = encode_latent(encoder, identity, &image, &entry.source)?;
                if config.cache_latents_to_disk {
                    write_entry(entry, &t, identity, self.options.dtype)?;
                }
                t
            }
        };
        let tensor = Arc::new(tensor);
        if config.cache_latents {
            self.memory_put(&entry.key, tensor.clone());
        }
        Ok(tensor)
    }

    /// The text embedding of a sample's caption, or of its dataset's dropout caption when `dropped`
    /// (see [`crate::StepCaption::dropped`]). Datasets with `cache_text_embeddings` read (or build)
    /// the file; others encode on every call.
    pub fn text(
        &self,
        set: &DatasetSet,
        r: SampleRef,
        encoder: &dyn TextEncoder,
        dropped: bool,
    ) -> Result<Arc<CachedTensor>> {
        let identity = encoder.identity();
        let dataset = set.dataset(r.dataset)?;
        let entry = self.text_entry(set, r, &identity, dropped)?;
        let caption = if dropped { dataset.caption_rules().dropout_caption() } else { set.record(r)?.caption.clone() };
        if !dataset.config().cache_text_embeddings {
            return Ok(Arc::new(encode_text(encoder, &identity, &caption, &entry.source)?));
        }
        if let Some(t) = read_if_valid(&entry) {
            return Ok(Arc::new(t));
        }
        let t = encode_text(encoder, &identity, &caption, &entry.source)?;
        write_entry(&entry, &t, &identity, self.options.dtype)?;
        Ok(Arc::new(t))
    }

    fn memory_get(&self, key: &str) -> Option<Arc<CachedTensor>> {
        self.memory.lock().ok().and_then(|m| m.get(key).cloned())
    }

    fn memory_put(&self, key: &str, t: Arc<CachedTensor>) {
        if let Ok(mut m) = self.memory.lock() {
            m.insert(key.to_string(), t);
        }
    }
}

/// The entry's tensor when the file is valid for its key. A file that changes between the check and
/// the read (another process rebuilding it) counts as absent: the caller rebuilds it.
fn read_if_valid(entry: &Entry) -> Option<CachedTensor> {
    if entry_status(&entry.path, &entry.key) != EntryStatus::Valid {
        return None;
    }
    read_entry(entry).ok()
}

fn prepare_job(set: &DatasetSet, job: LatentJob) -> Result<PreparedImage> {
    match job {
        LatentJob::Target(r) => set.prepare_image(r),
        LatentJob::Control(r, ci) => {
            let mut controls = set.prepare_controls(r)?;
            if ci < controls.len() {
                Ok(controls.swap_remove(ci))
            } else {
                Err(Error::BadSampleRef(format!("{r}.controls[{ci}]")))
            }
        }
    }
}

fn encode_latent(
    encoder: &dyn LatentEncoder,
    identity: &str,
    image: &PreparedImage,
    source: &Path,
) -> Result<CachedTensor> {
    encoder.encode(image).map_err(|e| encode_error("latent", identity, source, e))
}

fn encode_text(encoder: &dyn TextEncoder, identity: &str, caption: &str, source: &Path) -> Result<CachedTensor> {
    encoder.encode(caption).map_err(|e| encode_error("text", identity, source, e))
}

fn encode_error(stage: &'static str, identity: &str, source: &Path, e: EncodeError) -> Error {
    Error::Encode { stage, identity: identity.to_string(), path: source.to_path_buf(), source: e }
}

// ----- file format -------------------------------------------------------------------------------

fn cache_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Cache { path: path.to_path_buf(), message: message.into() }
}

/// Checks a cache file against `key` by reading only its header; the file length must match the
/// header exactly, so truncated files are never taken as valid.
pub fn entry_status(path: &Path, key: &str) -> EntryStatus {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return EntryStatus::Missing,
        Err(e) => return EntryStatus::Damaged(e.to_string()),
    };
    let file_len = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return EntryStatus::Damaged(e.to_string()),
    };
    let mut len_bytes = [0u8; 8];
    if file.read_exact(&mut len_bytes).is_err() {
        return EntryStatus::Damaged("shorter than a safetensors header".into());
    }
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return EntryStatus::Damaged(format!("header length {header_len} does not fit the file"));
    }
    let mut header = vec![0u8; header_len as usize];
    if file.read_exact(&mut header).is_err() {
        return EntryStatus::Damaged("header cut short".into());
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return EntryStatus::Damaged("header is not JSON".into());
    };
    let Some(map) = json.as_object() else {
        return EntryStatus::Damaged("header is not a JSON object".into());
    };
    let mut data_end = 0u64;
    for (name, info) in map {
        if name == "__metadata__" {
            continue;
        }
        let end = info.get("data_offsets").and_then(|o| o.get(1)).and_then(serde_json::Value::as_u64);
        match end {
            Some(end) => data_end = data_end.max(end),
            None => return EntryStatus::Damaged(format!("tensor `{name}` has no data_offsets")),
        }
    }
    if 8 + header_len + data_end != file_len {
        return EntryStatus::Damaged(format!(
            "file has {file_len} bytes, header describes {}",
            8 + header_len + data_end
        ));
    }
    let stored_key = map.get("__metadata__").and_then(|m| m.get("key")).and_then(serde_json::Value::as_str);
    match stored_key {
        Some(k) if k == key => EntryStatus::Valid,
        Some(_) => EntryStatus::Stale,
        None => EntryStatus::Damaged("no cache key in metadata (not written by dataset-buckets)".into()),
    }
}

/// Reads a cache file's tensor as `f32`, re-checking its key.
pub fn read_entry(entry: &Entry) -> Result<CachedTensor> {
    let path = &entry.path;
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| cache_err(path, e.to_string()))?;
    let stored_key = metadata.metadata().as_ref().and_then(|m| m.get("key"));
    if stored_key.map(String::as_str) != Some(entry.key.as_str()) {
        return Err(cache_err(path, "cache key changed while reading (another process rewrote it?)"));
    }
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| cache_err(path, e.to_string()))?;
    let view = tensors.tensor(TENSOR_NAME).map_err(|e| cache_err(path, e.to_string()))?;
    let raw = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(cache_err(path, format!("unsupported dtype {other:?}"))),
    };
    CachedTensor::new(view.shape().to_vec(), data)
        .ok_or_else(|| cache_err(path, "tensor length does not match its shape"))
}

/// Serializes `tensor` with its key and writes it atomically.
pub fn write_entry(entry: &Entry, tensor: &CachedTensor, identity: &str, dtype: StoreDtype) -> Result<()> {
    let (dt, bytes): (Dtype, Vec<u8>) = match dtype {
        StoreDtype::F32 => (Dtype::F32, tensor.data().iter().flat_map(|v| v.to_le_bytes()).collect()),
        StoreDtype::F16 => {
            (Dtype::F16, tensor.data().iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect())
        }
        StoreDtype::Bf16 => {
            (Dtype::BF16, tensor.data().iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect())
        }
    };
    let view =
        TensorView::new(dt, tensor.shape().to_vec(), &bytes).map_err(|e| cache_err(&entry.path, e.to_string()))?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT_VERSION.to_string()),
        ("key".to_string(), entry.key.clone()),
        ("encoder".to_string(), identity.to_string()),
        ("source".to_string(), entry.source.display().to_string()),
    ]);
    let data = safetensors::serialize([(TENSOR_NAME, view)], Some(metadata))
        .map_err(|e| cache_err(&entry.path, e.to_string()))?;
    atomic_write(&entry.path, &data)
}

/// Writes `data` to `path` atomically ([`flux2_ops::atomic_file`]: temporary file in the same folder,
/// sync, rename).
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    flux2_ops::atomic_file::write_atomic(path, data).map_err(|e| Error::io(path, e))
}
