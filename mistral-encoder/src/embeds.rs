//! Prompt embeddings as the FLUX.2 transformer consumes them, with a safetensors form for caching.
//!
//! Encoding a caption costs a 24B-parameter forward, and the text encoder is frozen during LoRA training,
//! so the trainer encodes every caption once, stores the result on disk and frees the encoder before the
//! transformer is loaded. The file uses the same tensor names as the parity fixtures' `expected.safetensors`
//! (`prompt_embeds`, `input_ids`, `attention_mask`), so either can be read by [`PromptEmbeds::load`].
//! Embeddings keep their dtype (bf16 for a bf16 encoder: half the disk space of f32, bit-exact reload).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use flux2_ops::{PendingTensor, TensorStore, write_safetensors};

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

    /// Writes `prompt_embeds` (its own dtype), `input_ids` and `attention_mask` (i64) and metadata,
    /// atomically (the workspace's safetensors writer).
    pub fn save(&self, path: &Path) -> Result<()> {
        let data = self.embeds.to_data();
        if !matches!(data.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::embeds(path, format!("cannot store {:?} embeddings", data.dtype)));
        }
        let rows = |values: &[i64]| TensorData::new(values.to_vec(), [self.tokens.batch, self.tokens.seq_len]);
        let dtype = data.dtype;
        let tensors = vec![
            PendingTensor::ready("prompt_embeds", data, dtype),
            PendingTensor::ready("input_ids", rows(&self.tokens.input_ids), DType::I64),
            PendingTensor::ready("attention_mask", rows(&self.tokens.attention_mask), DType::I64),
        ];
        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_string(), FORMAT.to_string());
        metadata.insert(
            "hidden_states_layers".to_string(),
            serde_json::to_string(&self.hidden_states_layers).unwrap_or_default(),
        );
        if !self.prompts.is_empty() {
            metadata.insert("prompts".to_string(), serde_json::to_string(&self.prompts).unwrap_or_default());
        }
        write_safetensors(path, tensors, &metadata).map_err(|e| Error::embeds(path, e.to_string()))
    }

    /// Reads a file written by [`save`](Self::save) or a fixture's `expected.safetensors`.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let store = TensorStore::open_file(path).map_err(|e| Error::embeds(path, e.to_string()))?;
        let shape = store.shape("prompt_embeds").ok_or_else(|| Error::embeds(path, "no `prompt_embeds` tensor"))?;
        let [b, l, _] = <[usize; 3]>::try_from(shape).map_err(|_| {
            Error::embeds(path, format!("`prompt_embeds` has shape {shape:?}, expected [batch, seq_len, features]"))
        })?;
        let data = store.read_as_stored("prompt_embeds").map_err(|e| Error::embeds(path, e.to_string()))?;
        let dtype = data.dtype;
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::embeds(path, format!("`prompt_embeds` has dtype {dtype:?}; expected F32, BF16 or F16")));
        }
        let int_rows = |name: &str| -> Result<Vec<i64>> {
            let shape = store.shape(name).ok_or_else(|| Error::embeds(path, format!("no `{name}` tensor")))?;
            if shape != [b, l] {
                return Err(Error::embeds(
                    path,
                    format!("`{name}` has shape {shape:?}, expected [{b}, {l}] like prompt_embeds"),
                ));
            }
            let data = store.read_as_stored(name).map_err(|e| Error::embeds(path, e.to_string()))?;
            match data.dtype {
                DType::I64 | DType::I32 => {
                    data.convert::<i64>().to_vec::<i64>().map_err(|e| Error::embeds(path, format!("`{name}`: {e:?}")))
                }
                other => Err(Error::embeds(path, format!("`{name}` has dtype {other:?}; expected I64 or I32"))),
            }
        };
        let tokens = TokenBatch {
            input_ids: int_rows("input_ids")?,
            attention_mask: int_rows("attention_mask")?,
            batch: b,
            seq_len: l,
        };

        let metadata = store.metadata();
        let hidden_states_layers: Vec<usize> = parse_meta(path, &metadata, "hidden_states_layers")?;
        let prompts: Vec<String> = parse_meta(path, &metadata, "prompts")?;

        Ok(PromptEmbeds { embeds: Tensor::from_data(data, (device, dtype)), tokens, hidden_states_layers, prompts })
    }
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
