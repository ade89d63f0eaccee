//! Loading the Mistral language model out of a (possibly sharded) safetensors checkpoint.
//!
//! * Memory-mapped: each tensor is read straight from the mapping and converted once into the target
//!   dtype, so peak host memory is one tensor, not a second copy of a 48 GB checkpoint.
//! * Lazy shards: with a `*.safetensors.index.json`, a shard is opened only when one of its keys is
//!   needed. FLUX.2 runs 30 of Mistral Small's 40 layers: the weights of layers 31..40, the LM head, the
//!   final norm (unless requested) and the vision tower / projector are never read.
//! * Both Mistral3 key layouts: the Hub's `language_model.model.*` (FLUX.2-dev, Mistral-Small-3.x) and
//!   the one transformers >= 4.52 writes, `model.language_model.*`; plain Mistral checkpoints
//!   (`model.*`) and bare `MistralModel` ones (no prefix) load too.
//! * Weights may be stored as F32, BF16 or F16 and are converted to the requested compute dtype.
//! * Every tensor's shape is checked against `config.json` with an error naming file, key and reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::attention::Attention;
use crate::config::MistralConfig;
use crate::decoder_layer::DecoderLayer;
use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::mlp::Mlp;
use crate::model::MistralTextModel;
use crate::rms_norm::RmsNorm;

/// Key prefixes of the language model, tried in this order.
pub const KEY_PREFIXES: [&str; 4] = [
    "language_model.model.",
    "model.language_model.",
    "model.",
    "",
];

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// The safetensors files of one checkpoint folder, with one key space.
pub struct WeightStore {
    dir: PathBuf,
    /// key -> file name (relative to `dir`).
    key_file: BTreeMap<String, String>,
    /// Opened files by name.
    open: HashMap<String, MappedFile>,
    /// Keys read so far (tests check that unrun layers stay untouched).
    used: BTreeSet<String>,
}

impl std::fmt::Debug for WeightStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightStore")
            .field("dir", &self.dir)
            .field("keys", &self.key_file.len())
            .finish()
    }
}

impl WeightStore {
    /// Opens a checkpoint folder: `*.safetensors.index.json` when present (shards opened lazily),
    /// otherwise every `*.safetensors` file in it.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut store = WeightStore {
            dir: dir.to_path_buf(),
            key_file: BTreeMap::new(),
            open: HashMap::new(),
            used: BTreeSet::new(),
        };
        if let Some(index) = names
            .iter()
            .find(|n| n.ends_with(".safetensors.index.json"))
        {
            store.read_index(&dir.join(index))?;
        } else {
            let files: Vec<&String> = names
                .iter()
                .filter(|n| n.ends_with(".safetensors"))
                .collect();
            if files.is_empty() {
                return Err(Error::Safetensors {
                    path: dir.to_path_buf(),
                    message: "no *.safetensors file and no *.safetensors.index.json in this folder"
                        .into(),
                });
            }
            for name in files {
                store.open_file(name)?;
                let keys: Vec<String> = store.open[name].entries.keys().cloned().collect();
                for key in keys {
                    store.key_file.insert(key, name.clone());
                }
            }
        }
        Ok(store)
    }

    fn read_index(&mut self, index: &Path) -> Result<()> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json {
                path: index.to_path_buf(),
                source,
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Safetensors {
                path: index.to_path_buf(),
                message: "no `weight_map` object".into(),
            })?;
        for (key, file) in map {
            let file = file.as_str().ok_or_else(|| Error::Safetensors {
                path: index.to_path_buf(),
                message: format!("weight_map[`{key}`] is not a file name"),
            })?;
            self.key_file.insert(key.clone(), file.to_string());
        }
        Ok(())
    }

    fn open_file(&mut self, name: &str) -> Result<()> {
        if self.open.contains_key(name) {
            return Ok(());
        }
        let path = self.dir.join(name);
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: read-only mapping; a checkpoint rewritten by another process while we read it is outside
        // what any loader can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (header_len, meta) =
            SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
                path: path.clone(),
                message: format!("not a safetensors file: {e}"),
            })?;
        let entries = meta
            .tensors()
            .into_iter()
            .map(|(key, info)| {
                let (begin, end) = info.data_offsets;
                (
                    key,
                    Entry {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        begin,
                        end,
                    },
                )
            })
            .collect();
        self.open.insert(
            name.to_string(),
            MappedFile {
                path,
                mmap,
                data_start: 8 + header_len,
                entries,
            },
        );
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, key: &str) -> bool {
        self.key_file.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.key_file.keys()
    }

    /// Keys read so far, sorted.
    pub fn used_keys(&self) -> Vec<String> {
        self.used.iter().cloned().collect()
    }

    /// The file a key lives in (for messages).
    pub fn file_of(&self, key: &str) -> PathBuf {
        self.key_file
            .get(key)
            .map(|f| self.dir.join(f))
            .unwrap_or_else(|| self.dir.clone())
    }

    fn entry(&mut self, key: &str) -> Result<(String, Entry)> {
        let name = self
            .key_file
            .get(key)
            .cloned()
            .ok_or_else(|| Error::MissingKey {
                key: key.to_string(),
                files: format!("the safetensors files of {}", self.dir.display()),
            })?;
        self.open_file(&name)?;
        let file = &self.open[&name];
        let entry = file
            .entries
            .get(key)
            .cloned()
            .ok_or_else(|| Error::MissingKey {
                key: key.to_string(),
                files: format!("{} (listed there by the index)", file.path.display()),
            })?;
        Ok((name, entry))
    }

    /// Stored dtype of `key`.
    pub fn dtype(&mut self, key: &str) -> Result<DType> {
        let (name, entry) = self.entry(key)?;
        stored_dtype(entry.dtype).ok_or_else(|| Error::UnsupportedDtype {
            file: self.open[&name].path.clone(),
            key: key.to_string(),
            dtype: format!("{:?}", entry.dtype),
        })
    }

    /// Stored shape of `key`.
    pub fn shape(&mut self, key: &str) -> Result<Vec<usize>> {
        Ok(self.entry(key)?.1.shape)
    }

    /// Reads `key`, checks its shape (`why` explains the expectation in errors) and converts it to `dtype`.
    pub fn read(
        &mut self,
        key: &str,
        expected: &[usize],
        why: &str,
        dtype: DType,
    ) -> Result<TensorData> {
        let (name, entry) = self.entry(key)?;
        let file = &self.open[&name];
        if entry.shape != expected {
            return Err(Error::Shape {
                file: file.path.clone(),
                key: key.to_string(),
                actual: entry.shape.clone(),
                expected: expected.to_vec(),
                why: why.to_string(),
            });
        }
        let stored = stored_dtype(entry.dtype).ok_or_else(|| Error::UnsupportedDtype {
            file: file.path.clone(),
            key: key.to_string(),
            dtype: format!("{:?}", entry.dtype),
        })?;
        let bytes = file
            .mmap
            .get(file.data_start + entry.begin..file.data_start + entry.end)
            .ok_or_else(|| Error::Safetensors {
                path: file.path.clone(),
                message: format!("tensor `{key}` lies outside the file (truncated?)"),
            })?;
        let count: usize = entry.shape.iter().product();
        if bytes.len() != count * stored.size() {
            return Err(Error::Safetensors {
                path: file.path.clone(),
                message: format!(
                    "tensor `{key}`: {} bytes for shape {:?} of {:?}",
                    bytes.len(),
                    entry.shape,
                    stored
                ),
            });
        }
        let data = convert(bytes, stored, dtype, entry.shape.clone()).ok_or_else(|| {
            Error::Invalid(format!(
                "cannot convert `{key}` from {stored:?} to {dtype:?}; use F32, BF16 or F16"
            ))
        })?;
        self.used.insert(key.to_string());
        Ok(data)
    }

    /// Reads `key` into a device tensor.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
        why: &str,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let data = self.read(key, &expected, why, dtype)?;
        let tensor = Tensor::<B, D>::from_data(data, (device, dtype));
        // NaN/Inf in a weight would give NaN prompt embeddings and a training error blaming the
        // learning rate: name it here (one device reduction per tensor).
        // `sum(t * 0)` is NaN exactly when some value is (as flux2_dit::all_finite).
        if !burn::tensor::ElementConversion::elem::<f32>(tensor.clone().mul_scalar(0.0).sum().into_scalar()).is_finite() {
            return Err(Error::Invalid(format!(
                "{}: weight `{key}` holds NaN or infinite values: the checkpoint is damaged",
                self.file_of(key).display()
            )));
        }
        Ok(tensor)
    }
}

fn stored_dtype(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F32 => Some(DType::F32),
        Dtype::BF16 => Some(DType::BF16),
        Dtype::F16 => Some(DType::F16),
        _ => None,
    }
}

/// Little-endian bytes of `from` -> host data of `to` (F32, BF16 or F16). Decoding element by element
/// also copies out of the mapping into an aligned buffer (the mapping gives no alignment guarantee).
fn convert(bytes: &[u8], from: DType, to: DType, shape: Vec<usize>) -> Option<TensorData> {
    use half::{bf16, f16};
    let halves = || bytes.chunks_exact(2).map(|c| [c[0], c[1]]);
    // Same dtype: keep the bits.
    match (from, to) {
        (DType::BF16, DType::BF16) => {
            return Some(TensorData::new(
                halves().map(bf16::from_le_bytes).collect::<Vec<_>>(),
                shape,
            ));
        }
        (DType::F16, DType::F16) => {
            return Some(TensorData::new(
                halves().map(f16::from_le_bytes).collect::<Vec<_>>(),
                shape,
            ));
        }
        _ => {}
    }
    let values: Vec<f32> = match from {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::BF16 => halves().map(|b| bf16::from_le_bytes(b).to_f32()).collect(),
        DType::F16 => halves().map(|b| f16::from_le_bytes(b).to_f32()).collect(),
        _ => return None,
    };
    Some(match to {
        DType::F32 => TensorData::new(values, shape),
        DType::BF16 => TensorData::new(
            values.into_iter().map(bf16::from_f32).collect::<Vec<_>>(),
            shape,
        ),
        DType::F16 => TensorData::new(
            values.into_iter().map(f16::from_f32).collect::<Vec<_>>(),
            shape,
        ),
        _ => return None,
    })
}

/// Finds the language model's key prefix (see [`KEY_PREFIXES`]).
pub fn detect_prefix(store: &WeightStore) -> Result<&'static str> {
    KEY_PREFIXES
        .into_iter()
        .find(|prefix| store.contains(&format!("{prefix}embed_tokens.weight")))
        .ok_or_else(|| Error::UnknownLayout {
            dir: store.dir().to_path_buf(),
            tried: KEY_PREFIXES.iter().map(|p| p.to_string()).collect(),
        })
}

/// What to load: the first `layers` decoder layers, and the final norm only if it is used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadPlan {
    pub layers: usize,
    pub final_norm: bool,
    /// Compute dtype the weights are converted to.
    pub dtype: DType,
}

/// Where [`build_text_model`] takes each weight from: a checkpoint ([`WeightStore`]) or seeded
/// random draws ([`crate::RandomWeights`], for rehearsing a job at the real size without the files).
pub trait TensorSource {
    /// The tensor `key` of shape `expected` (`why` says where the shape comes from, for errors) in
    /// `dtype` on `device`.
    fn tensor<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
        why: &str,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>>;
}

impl TensorSource for WeightStore {
    fn tensor<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
        why: &str,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        WeightStore::tensor(self, key, expected, why, dtype, device)
    }
}

/// Loads the embedding, the first `plan.layers` decoder layers and (optionally) the final norm.
pub fn load_text_model<B: Backend>(
    store: &mut WeightStore,
    config: &MistralConfig,
    plan: LoadPlan,
    device: &B::Device,
) -> Result<MistralTextModel<B>> {
    config.validate(&store.dir().join("config.json"))?;
    let prefix = detect_prefix(store)?;
    build_text_model(store, prefix, config, plan, device)
}

/// Builds the model of [`load_text_model`] from any [`TensorSource`], keys under `prefix`.
pub fn build_text_model<B: Backend, S: TensorSource>(
    store: &mut S,
    prefix: &str,
    config: &MistralConfig,
    plan: LoadPlan,
    device: &B::Device,
) -> Result<MistralTextModel<B>> {
    if plan.layers > config.num_hidden_layers {
        return Err(Error::Layers {
            message: format!(
                "{} layers requested, the checkpoint has num_hidden_layers = {}",
                plan.layers, config.num_hidden_layers
            ),
        });
    }
    let dtype = plan.dtype;
    let (h, i, q, kv) = (
        config.hidden_size,
        config.intermediate_size,
        config.q_dim(),
        config.kv_dim(),
    );

    let embed_tokens = store.tensor::<B, 2>(
        &format!("{prefix}embed_tokens.weight"),
        [config.vocab_size, h],
        "vocab_size x hidden_size from config.json",
        dtype,
        device,
    )?;

    let mut layers = Vec::with_capacity(plan.layers);
    for n in 0..plan.layers {
        let p = format!("{prefix}layers.{n}.");
        let mut linear = |name: &str, shape: [usize; 2], why: &str| -> Result<Linear<B>> {
            Ok(Linear::new(store.tensor::<B, 2>(
                &format!("{p}{name}.weight"),
                shape,
                why,
                dtype,
                device,
            )?))
        };
        let self_attn = Attention {
            q_proj: linear(
                "self_attn.q_proj",
                [q, h],
                "num_attention_heads*head_dim x hidden_size",
            )?,
            k_proj: linear(
                "self_attn.k_proj",
                [kv, h],
                "num_key_value_heads*head_dim x hidden_size",
            )?,
            v_proj: linear(
                "self_attn.v_proj",
                [kv, h],
                "num_key_value_heads*head_dim x hidden_size",
            )?,
            o_proj: linear(
                "self_attn.o_proj",
                [h, q],
                "hidden_size x num_attention_heads*head_dim",
            )?,
            num_heads: config.num_attention_heads,
            num_kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
        };
        let mlp = Mlp {
            gate_proj: linear("mlp.gate_proj", [i, h], "intermediate_size x hidden_size")?,
            up_proj: linear("mlp.up_proj", [i, h], "intermediate_size x hidden_size")?,
            down_proj: linear("mlp.down_proj", [h, i], "hidden_size x intermediate_size")?,
        };
        let mut norm = |name: &str| -> Result<RmsNorm<B>> {
            let w = store.tensor::<B, 1>(
                &format!("{p}{name}.weight"),
                [h],
                "hidden_size",
                dtype,
                device,
            )?;
            Ok(RmsNorm::new(w, config.rms_norm_eps))
        };
        let input_layernorm = norm("input_layernorm")?;
        let post_attention_layernorm = norm("post_attention_layernorm")?;
        layers.push(DecoderLayer {
            input_layernorm,
            self_attn,
            post_attention_layernorm,
            mlp,
        });
    }

    let norm = if plan.final_norm {
        let w = store.tensor::<B, 1>(
            &format!("{prefix}norm.weight"),
            [h],
            "hidden_size",
            dtype,
            device,
        )?;
        Some(RmsNorm::new(w, config.rms_norm_eps))
    } else {
        None
    };

    Ok(MistralTextModel {
        embed_tokens: Param::from_tensor(embed_tokens),
        layers,
        norm,
        num_hidden_layers: config.num_hidden_layers,
        head_dim: config.head_dim,
        rope_theta: config.rope_theta,
        sliding_window: config.sliding_window,
    })
}
