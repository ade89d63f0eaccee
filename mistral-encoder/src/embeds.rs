//! Prompt embeddings as the FLUX.2 transformer consumes them, with a safetensors form for caching.
//!
//! Encoding a caption costs a 24B-parameter forward, and the text encoder is frozen during LoRA training,
//! so the trainer encodes every caption once, stores the result on disk and frees the encoder before the
//! transformer is loaded. The file uses the same tensor names as the parity fixtures' `expected.safetensors`
//! (`prompt_embeds`, `input_ids`, `attention_mask`), so either can be read by [`PromptEmbeds::load`].
//! Embeddings keep their dtype (bf16 for a bf16 encoder: half the disk space of f32, bit-exact reload).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::prompt::TokenBatch;

/// Value of the `format` metadata entry written by [`PromptEmbeds::save`].
pub const FORMAT: &str = "flux2-prompt-embeds/1";

/// FLUX.2 text conditioning for a batch of prompts.
#[derive(Debug, Clone)]
pub struct PromptEmbeds<B: Backend> {
    /// [B, L, n_layers * hidden]: per token, the requested hidden states side by side.
    pub embeds: Tensor<B, 3>,
    /// The token layout the embeddings were computed from (mask 0 = left padding). FLUX.2 passes all L
    /// rows to the transformer unmasked; the mask is kept for inspection and cache checks.
    pub tokens: TokenBatch,
    /// Which hidden states were stacked (transformers numbering, e.g. [10, 20, 30]); empty if unknown.
    pub hidden_states_layers: Vec<usize>,
    /// The prompts, when known (empty after loading a file that does not record them).
    pub prompts: Vec<String>,
}

impl<B: Backend> PromptEmbeds<B> {
    pub fn batch_size(&self) -> usize {
        self.embeds.dims()[0]
    }

    pub fn seq_len(&self) -> usize {
        self.embeds.dims()[1]
    }

    /// n_layers * hidden (15360 for FLUX.2-dev: the transformer's `joint_attention_dim`).
    pub fn feature_dim(&self) -> usize {
        self.embeds.dims()[2]
    }

    /// One prompt's embeddings (batch of 1).
    pub fn select(&self, index: usize) -> Result<Self> {
        let b = self.batch_size();
        if index >= b {
            return Err(Error::Invalid(format!("prompt index {index} out of range for a batch of {b}")));
        }
        let l = self.tokens.seq_len;
        Ok(PromptEmbeds {
            embeds: self.embeds.clone().narrow(0, index, 1),
            tokens: TokenBatch {
                input_ids: self.tokens.ids(index).to_vec(),
                attention_mask: self.tokens.mask(index).to_vec(),
                batch: 1,
                seq_len: l,
            },
            hidden_states_layers: self.hidden_states_layers.clone(),
            prompts: self.prompts.get(index).cloned().into_iter().collect(),
        })
    }

    /// Concatenates batches encoded with the same settings (e.g. cached captions into a training batch).
    pub fn concat(items: Vec<Self>) -> Result<Self> {
        let first = items.first().ok_or_else(|| Error::Invalid("concat of no prompt embeddings".into()))?;
        let (l, c, layers) = (first.seq_len(), first.feature_dim(), first.hidden_states_layers.clone());
        let mut tokens = TokenBatch { input_ids: Vec::new(), attention_mask: Vec::new(), batch: 0, seq_len: l };
        let mut prompts = Vec::new();
        let all_prompts = items.iter().all(|e| e.prompts.len() == e.batch_size());
        for e in &items {
            if e.seq_len() != l || e.feature_dim() != c || e.hidden_states_layers != layers {
                return Err(Error::Invalid(format!(
                    "cannot concat prompt embeddings [*, {}, {}] layers {:?} with [*, {l}, {c}] layers {layers:?}",
                    e.seq_len(),
                    e.feature_dim(),
                    e.hidden_states_layers
                )));
            }
            tokens.input_ids.extend_from_slice(&e.tokens.input_ids);
            tokens.attention_mask.extend_from_slice(&e.tokens.attention_mask);
            tokens.batch += e.tokens.batch;
            prompts.extend(e.prompts.iter().cloned());
        }
        Ok(PromptEmbeds {
            embeds: Tensor::cat(items.into_iter().map(|e| e.embeds).collect(), 0),
            tokens,
            hidden_states_layers: layers,
            prompts: if all_prompts { prompts } else { Vec::new() },
        })
    }

    /// Writes `prompt_embeds` (its own dtype), `input_ids` and `attention_mask` (i64) and metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let [b, l, c] = self.embeds.dims();
        let data = self.embeds.to_data();
        let (dtype, embeds) = match data.dtype {
            DType::F32 => {
                (Dtype::F32, le_bytes(data.to_vec::<f32>().map_err(|e| read_err(path, e))?, f32::to_le_bytes))
            }
            DType::BF16 => (
                Dtype::BF16,
                le_bytes(data.to_vec::<half::bf16>().map_err(|e| read_err(path, e))?, half::bf16::to_le_bytes),
            ),
            DType::F16 => (
                Dtype::F16,
                le_bytes(data.to_vec::<half::f16>().map_err(|e| read_err(path, e))?, half::f16::to_le_bytes),
            ),
            other => {
                return Err(Error::embeds(path, format!("cannot store {other:?} embeddings")));
            }
        };
        let ids = le_bytes(self.tokens.input_ids.clone(), i64::to_le_bytes);
        let mask = le_bytes(self.tokens.attention_mask.clone(), i64::to_le_bytes);
        let tensors = vec![
            ("prompt_embeds", tensor_view(path, dtype, vec![b, l, c], &embeds)?),
            ("input_ids", tensor_view(path, Dtype::I64, vec![self.tokens.batch, self.tokens.seq_len], &ids)?),
            ("attention_mask", tensor_view(path, Dtype::I64, vec![self.tokens.batch, self.tokens.seq_len], &mask)?),
        ];
        let mut metadata = HashMap::new();
        metadata.insert("format".to_string(), FORMAT.to_string());
        metadata.insert(
            "hidden_states_layers".to_string(),
            serde_json::to_string(&self.hidden_states_layers).unwrap_or_default(),
        );
        if !self.prompts.is_empty() {
            metadata.insert("prompts".to_string(), serde_json::to_string(&self.prompts).unwrap_or_default());
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        safetensors::serialize_to_file(tensors, Some(metadata), path).map_err(|e| Error::embeds(path, e.to_string()))
    }

    /// Reads a file written by [`save`](Self::save) or a fixture's `expected.safetensors`.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::embeds(path, format!("not a safetensors file: {e}")))?;
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::embeds(path, format!("not a safetensors file: {e}")))?;
        let get = |name: &str| file.tensor(name).map_err(|_| Error::embeds(path, format!("no `{name}` tensor")));

        let embeds = get("prompt_embeds")?;
        let shape = embeds.shape().to_vec();
        let [b, l, c] = <[usize; 3]>::try_from(shape.as_slice()).map_err(|_| {
            Error::embeds(path, format!("`prompt_embeds` has shape {shape:?}, expected [batch, seq_len, features]"))
        })?;
        let raw = embeds.data();
        let (data, dtype) = match embeds.dtype() {
            Dtype::F32 => (TensorData::new(from_le(raw, f32::from_le_bytes), [b, l, c]), DType::F32),
            Dtype::BF16 => (TensorData::new(from_le(raw, half::bf16::from_le_bytes), [b, l, c]), DType::BF16),
            Dtype::F16 => (TensorData::new(from_le(raw, half::f16::from_le_bytes), [b, l, c]), DType::F16),
            other => {
                return Err(Error::embeds(
                    path,
                    format!("`prompt_embeds` has dtype {other:?}; expected F32, BF16 or F16"),
                ));
            }
        };
        let int_rows = |name: &str| -> Result<Vec<i64>> {
            let t = get(name)?;
            if t.shape() != [b, l] {
                return Err(Error::embeds(
                    path,
                    format!("`{name}` has shape {:?}, expected [{b}, {l}] like prompt_embeds", t.shape()),
                ));
            }
            match t.dtype() {
                Dtype::I64 => Ok(from_le(t.data(), i64::from_le_bytes)),
                Dtype::I32 => Ok(from_le(t.data(), i32::from_le_bytes).into_iter().map(i64::from).collect()),
                other => Err(Error::embeds(path, format!("`{name}` has dtype {other:?}; expected I64 or I32"))),
            }
        };
        let tokens = TokenBatch {
            input_ids: int_rows("input_ids")?,
            attention_mask: int_rows("attention_mask")?,
            batch: b,
            seq_len: l,
        };

        let metadata = meta.metadata().clone().unwrap_or_default();
        let hidden_states_layers: Vec<usize> = parse_meta(path, &metadata, "hidden_states_layers")?;
        let prompts: Vec<String> = parse_meta(path, &metadata, "prompts")?;

        Ok(PromptEmbeds { embeds: Tensor::from_data(data, (device, dtype)), tokens, hidden_states_layers, prompts })
    }
}

fn tensor_view<'a>(path: &Path, dtype: Dtype, shape: Vec<usize>, bytes: &'a [u8]) -> Result<TensorView<'a>> {
    TensorView::new(dtype, shape, bytes).map_err(|e| Error::embeds(path, e.to_string()))
}

/// A JSON-valued metadata entry; absent -> default.
fn parse_meta<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    metadata: &HashMap<String, String>,
    key: &str,
) -> Result<T> {
    match metadata.get(key) {
        None => Ok(T::default()),
        Some(v) => serde_json::from_str(v).map_err(|e| Error::embeds(path, format!("metadata `{key}`: {e}"))),
    }
}

fn read_err(path: &Path, e: impl std::fmt::Debug) -> Error {
    Error::embeds(path, format!("cannot read the embeddings back from the device: {e:?}"))
}

fn le_bytes<T: Copy, const N: usize>(values: Vec<T>, to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.into_iter().flat_map(to).collect()
}

fn from_le<T, const N: usize>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).map(|c| from(c.try_into().expect("chunks_exact yields N bytes"))).collect()
}
