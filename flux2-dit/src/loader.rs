//! Finding, opening and loading a transformer checkpoint in either layout.
//!
//! * diffusers folder: `config.json` + `diffusion_pytorch_model.safetensors`, or shards listed in
//!   `diffusion_pytorch_model.safetensors.index.json`;
//! * BFL single file (`flux2-dev.safetensors`, keys optionally prefixed `model.diffusion_model.`), with
//!   the config from a `config.json` beside it, else inferred from tensor shapes;
//! * a folder holding one BFL-named `.safetensors` file (and optionally `config.json`).

use std::path::{Path, PathBuf};

use burn::tensor::{DType, backend::Backend};

use crate::config::Flux2Config;
use crate::error::{Error, Result};
use crate::key_map::BFL_PREFIXES;
use crate::model::Flux2Transformer;
use crate::storage::BaseStorage;
use crate::weight_source::{Layout, StoreSource};
use flux2_ops::TensorStore;

/// An opened checkpoint: its config and a weight source ready to build the model.
pub struct Checkpoint {
    pub config: Flux2Config,
    pub source: StoreSource,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint").field("config", &self.config).field("layout", &self.source.layout).finish()
    }
}

impl Checkpoint {
    /// Opens a diffusers folder, a BFL file, or a folder holding a BFL file (layout detected from keys).
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_file() {
            let config = path.parent().map(|d| d.join("config.json")).filter(|c| c.is_file());
            return Self::open_files(&[path.to_path_buf()], config.as_deref(), path);
        }
        if !path.is_dir() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder")));
        }
        let index = path.join("diffusion_pytorch_model.safetensors.index.json");
        let single = path.join("diffusion_pytorch_model.safetensors");
        let config = path.join("config.json");
        let config = config.is_file().then_some(config);
        if index.is_file() {
            let store = TensorStore::open_index(&index)?;
            return Self::from_store(store, config.as_deref(), path);
        }
        if single.is_file() {
            return Self::open_files(&[single], config.as_deref(), path);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::MissingKey { key: "*.safetensors".into(), files: path.display().to_string() });
        }
        Self::open_files(&files, config.as_deref(), path)
    }

    fn open_files(files: &[PathBuf], config: Option<&Path>, origin: &Path) -> Result<Self> {
        Self::from_store(TensorStore::open(files)?, config, origin)
    }

    fn from_store(store: TensorStore, config_path: Option<&Path>, origin: &Path) -> Result<Self> {
        let (layout, prefix) = detect_layout(&store).ok_or_else(|| Error::Inference {
            file: origin.to_path_buf(),
            message: "no `img_in.weight` (BFL) or `x_embedder.weight` (diffusers) tensor: not a FLUX.2 transformer"
                .into(),
        })?;
        let config = match config_path {
            Some(p) => Flux2Config::from_json_file(p)?,
            None if layout == Layout::Bfl => infer_config(&store, &prefix, origin)?,
            None => {
                return Err(Error::Config {
                    path: origin.join("config.json"),
                    message: "a diffusers-layout checkpoint needs its config.json".into(),
                });
            }
        };
        Ok(Self { config, source: StoreSource { store, layout, prefix, strict: true } })
    }

    pub fn load<B: Backend>(self, dtype: DType, device: &B::Device) -> Result<Flux2Transformer<B>> {
        self.load_with(dtype, BaseStorage::default(), device)
    }

    /// [`Self::load`] with the base stored as `storage` says (quantized and/or offloaded Linears, each
    /// converted while it streams in; see [`Flux2Transformer::from_source_with`]).
    pub fn load_with<B: Backend>(
        mut self,
        dtype: DType,
        storage: BaseStorage,
        device: &B::Device,
    ) -> Result<Flux2Transformer<B>> {
        Flux2Transformer::from_source_with(&self.config, &mut self.source, dtype, storage, device)
    }
}

fn detect_layout(store: &TensorStore) -> Option<(Layout, String)> {
    if store.contains("x_embedder.weight") {
        return Some((Layout::Diffusers, String::new()));
    }
    std::iter::once("")
        .chain(BFL_PREFIXES.iter().copied())
        .find_map(|p| store.contains(&format!("{p}img_in.weight")).then(|| (Layout::Bfl, p.to_string())))
}

/// Config from BFL tensor shapes: widths from the embedders, head_dim from the q-norm scale, depth from
/// block indices, guidance from `guidance_in`; RoPE theta 2000 with equal axes (the FLUX.2 release).
fn infer_config(store: &TensorStore, prefix: &str, file: &Path) -> Result<Flux2Config> {
    let err = |message: String| Error::Inference { file: file.to_path_buf(), message };
    let shape = |key: &str| -> Result<Vec<usize>> {
        store
            .shape(&format!("{prefix}{key}"))
            .map(<[usize]>::to_vec)
            .ok_or_else(|| err(format!("missing `{prefix}{key}`")))
    };
    let count = |block: &str| -> usize {
        let p = format!("{prefix}{block}.");
        store
            .keys()
            .filter_map(|k| k.strip_prefix(&p)?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1)
    };
    let img_in = shape("img_in.weight")?;
    let (d, in_channels) = (img_in[0], img_in[1]);
    let joint = shape("txt_in.weight")?[1];
    let t_channels = shape("time_in.in_layer.weight")?[1];
    let num_layers = count("double_blocks");
    let num_single_layers = count("single_blocks");
    let head_dim = if num_layers > 0 {
        shape("double_blocks.0.img_attn.norm.query_norm.scale")?[0]
    } else if num_single_layers > 0 {
        shape("single_blocks.0.norm.query_norm.scale")?[0]
    } else {
        return Err(err("no double or single blocks".into()));
    };
    if head_dim == 0 || d % head_dim != 0 || head_dim % 8 != 0 {
        return Err(err(format!("width {d} and head_dim {head_dim} do not give 4 equal even RoPE axes")));
    }
    let mlp_hidden = if num_layers > 0 {
        shape("double_blocks.0.img_mlp.0.weight")?[0] / 2
    } else {
        (shape("single_blocks.0.linear1.weight")?[0] - 3 * d) / 2
    };
    let out = shape("final_layer.linear.weight")?[0];
    Ok(Flux2Config {
        in_channels,
        out_channels: (out != in_channels).then_some(out),
        num_layers,
        num_single_layers,
        attention_head_dim: head_dim,
        num_attention_heads: d / head_dim,
        joint_attention_dim: joint,
        timestep_guidance_channels: t_channels,
        mlp_ratio: mlp_hidden as f64 / d as f64,
        axes_dims_rope: vec![head_dim / 4; 4],
        guidance_embeds: store.contains(&format!("{prefix}guidance_in.in_layer.weight")),
        ..Flux2Config::default()
    })
}

/// Loads a transformer from any supported layout (see module docs).
pub fn load<B: Backend>(path: &Path, dtype: DType, device: &B::Device) -> Result<Flux2Transformer<B>> {
    Checkpoint::open(path)?.load(dtype, device)
}

/// Loads a diffusers `transformer/` folder.
pub fn load_diffusers_folder<B: Backend>(dir: &Path, dtype: DType, device: &B::Device) -> Result<Flux2Transformer<B>> {
    load(dir, dtype, device)
}

/// Loads a BFL single file; `config` overrides the `config.json` beside it and shape inference.
pub fn load_bfl_file<B: Backend>(
    file: &Path,
    config: Option<Flux2Config>,
    dtype: DType,
    device: &B::Device,
) -> Result<Flux2Transformer<B>> {
    let mut checkpoint = Checkpoint::open(file)?;
    if let Some(config) = config {
        checkpoint.config = config;
    }
    checkpoint.load(dtype, device)
}
