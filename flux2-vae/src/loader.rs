//! Loading a [`Vae`] from disk: diffusers folders (single file or sharded), BFL `ae.safetensors`, or any
//! `.safetensors` file holding a VAE in either naming.
//!
//! Files are memory-mapped and converted tensor by tensor into the model dtype, so host memory holds one
//! converted tensor at a time besides the page cache.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use burn::tensor::backend::Backend;

use crate::checkpoint::{CheckpointSource, Naming, detect_naming};
use crate::config::VaeConfig;
use crate::error::{Error, Result};
use crate::infer_config::{FLUX2_NORM_GROUPS, infer_config};
use crate::vae::{Parts, Vae};
use flux2_ops::TensorStore;

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Model dtype: `DType::F32` (default), `DType::BF16` or `DType::F16`.
    pub dtype: DType,
    /// Which halves to build.
    pub parts: Parts,
    /// Architecture override; otherwise `config.json` next to the weights, otherwise inferred from shapes.
    pub config: Option<VaeConfig>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32, parts: Parts::Both, config: None }
    }
}

impl LoadOptions {
    /// Default options with another model dtype.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// Default options building only some parts.
    pub fn with_parts(mut self, parts: Parts) -> Self {
        self.parts = parts;
        self
    }
}

/// What a path resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCheckpoint {
    /// A `.safetensors` file or a `*.safetensors.index.json`.
    pub weights: PathBuf,
    /// The `config.json` that will be used, if any.
    pub config: Option<PathBuf>,
}

const DIFFUSERS_WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
const DIFFUSERS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";
const BFL_WEIGHTS: &str = "ae.safetensors";

/// Finds the weights and config for `path`:
/// - a folder with `diffusion_pytorch_model.safetensors[.index.json]`, `ae.safetensors` or exactly one
///   `*.safetensors` (plus `config.json` if present);
/// - a model repository root with a `vae/` folder and no `config.json` (e.g. FLUX.2-dev) — uses `vae/`;
/// - a `.safetensors` file or `*.safetensors.index.json`; a sibling `config.json` is used only when its
///   `_class_name` is `AutoencoderKLFlux2` (so a transformer's config next to it is not picked up).
pub fn resolve_checkpoint(path: impl AsRef<Path>) -> Result<ResolvedCheckpoint> {
    let path = path.as_ref();
    let none = |reason: String| Error::NoCheckpoint { path: path.into(), reason };
    if path.is_file() {
        let config = path.parent().map(|d| d.join("config.json")).filter(|c| is_flux2_vae_config(c));
        return Ok(ResolvedCheckpoint { weights: path.into(), config });
    }
    if !path.is_dir() {
        return Err(none("no such file or folder".into()));
    }
    let entries = list_dir(path)?;
    let has = |n: &str| entries.iter().any(|e| e == n);
    let safetensors: Vec<&String> = entries.iter().filter(|e| e.ends_with(".safetensors")).collect();
    let indexes: Vec<&String> = entries.iter().filter(|e| e.ends_with(".safetensors.index.json")).collect();
    // A model repository root (FLUX.2-dev has `vae/` next to `ae.safetensors` and the transformer).
    if !has("config.json") && !has(DIFFUSERS_WEIGHTS) && !has(DIFFUSERS_INDEX) && path.join("vae").is_dir() {
        return resolve_checkpoint(path.join("vae"));
    }
    let weights = if has(DIFFUSERS_INDEX) {
        DIFFUSERS_INDEX.to_string()
    } else if has(DIFFUSERS_WEIGHTS) {
        DIFFUSERS_WEIGHTS.to_string()
    } else if has(BFL_WEIGHTS) {
        BFL_WEIGHTS.to_string()
    } else if indexes.len() == 1 {
        indexes[0].clone()
    } else if indexes.is_empty() && safetensors.len() == 1 {
        safetensors[0].clone()
    } else if safetensors.is_empty() && indexes.is_empty() {
        return Err(none("no .safetensors weights in this folder".into()));
    } else {
        return Err(none(format!(
            "several candidate weight files ({:?}); pass the file itself",
            indexes.iter().chain(safetensors.iter()).collect::<Vec<_>>()
        )));
    };
    let config = Some(path.join("config.json")).filter(|c| c.is_file());
    Ok(ResolvedCheckpoint { weights: path.join(weights), config })
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn is_flux2_vae_config(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    json.get("_class_name").and_then(|v| v.as_str()) == Some("AutoencoderKLFlux2")
}

/// Opens the weights of a resolved checkpoint.
pub fn open_store(resolved: &ResolvedCheckpoint) -> Result<TensorStore> {
    let w = &resolved.weights;
    Ok(if w.to_string_lossy().ends_with(".index.json") {
        TensorStore::open_index(w)?
    } else {
        TensorStore::open_file(w)?
    })
}

/// Everything known about a checkpoint before building the model.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub resolved: ResolvedCheckpoint,
    pub naming: Naming,
    pub config: VaeConfig,
    /// Whether `config` was inferred from shapes (no config.json, no override).
    pub config_inferred: bool,
}

/// Resolves, detects the naming and settles the config, without building anything.
pub fn inspect_checkpoint(path: impl AsRef<Path>, config: Option<&VaeConfig>) -> Result<(TensorStore, CheckpointInfo)> {
    let resolved = resolve_checkpoint(path)?;
    let store = open_store(&resolved)?;
    let naming = detect_naming(&store)?;
    let (config, config_inferred) = match (config, &resolved.config) {
        (Some(c), _) => (c.clone(), false),
        (None, Some(file)) => (VaeConfig::from_json_file(file)?, false),
        (None, None) => (infer_config(&store, &naming, FLUX2_NORM_GROUPS)?, true),
    };
    config.validate()?;
    Ok((store, CheckpointInfo { resolved, naming, config, config_inferred }))
}

impl<B: Backend> Vae<B> {
    /// Loads a VAE from a folder or file (see [`resolve_checkpoint`] for what is accepted).
    pub fn load(path: impl AsRef<Path>, device: &B::Device, options: &LoadOptions) -> Result<Self> {
        let (store, info) = inspect_checkpoint(path, options.config.as_ref())?;
        let mut source = CheckpointSource::new(&store, info.naming.clone(), info.config.levels());
        let vae = Vae::from_source(info.config, &mut source, device, options.dtype, options.parts)?;
        source.check_all_used(options.parts)?;
        Ok(vae)
    }
}
