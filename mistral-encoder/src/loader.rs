//! Loading the Mistral language model out of a (possibly sharded) safetensors checkpoint.
//!
//! * Memory-mapped ([`flux2_ops::TensorStore`]): each tensor is read straight from the mapping and
//!   converted once into the target dtype, so peak host memory is one tensor, not a second copy of a
//!   48 GB checkpoint. Only what runs is read: FLUX.2 runs 30 of Mistral Small's 40 layers, so the
//!   weights of layers 31..40, the LM head, the final norm (unless requested) and the vision tower /
//!   projector are never touched (mapped pages that are never read cost nothing).
//! * Both Mistral3 key layouts: the Hub's `language_model.model.*` (FLUX.2-dev, Mistral-Small-3.x) and
//!   the one transformers >= 4.52 writes, `model.language_model.*`; plain Mistral checkpoints
//!   (`model.*`) and bare `MistralModel` ones (no prefix) load too.
//! * Weights may be stored as F32, BF16 or F16 and are converted to the requested compute dtype.
//! * Every tensor's shape is checked against `config.json` with an error naming file, key and reason.

use burn::module::Param;
use burn::tensor::{DType, Tensor, backend::Backend};
use flux2_ops::TensorStore;
use flux2_ops::quant::{QType, float8_file};

use crate::attention::Attention;
use crate::config::MistralConfig;
use crate::decoder_layer::DecoderLayer;
use crate::error::{Error, Result};
use crate::mlp::Mlp;
use crate::model::MistralTextModel;
use crate::rms_norm::RmsNorm;
use flux2_ops::Linear;

/// Key prefixes of the language model, tried in this order.
pub const KEY_PREFIXES: [&str; 4] = ["language_model.model.", "model.language_model.", "model.", ""];

/// The stored dtype of `key` as a compute dtype (F32, BF16 or F16), for loading "as stored".
pub fn stored_dtype(store: &TensorStore, key: &str) -> Result<DType> {
    let stored =
        store.dtype(key).ok_or_else(|| Error::MissingKey { key: key.to_string(), files: store.file_list() })?;
    match flux2_ops::store::burn_dtype(stored) {
        Some(dtype @ (DType::F32 | DType::BF16 | DType::F16)) => Ok(dtype),
        _ => Err(Error::UnsupportedDtype {
            file: store.file_of(key),
            key: key.to_string(),
            dtype: format!("{stored:?}"),
        }),
    }
}

/// Finds the language model's key prefix (see [`KEY_PREFIXES`]).
pub fn detect_prefix(store: &TensorStore) -> Result<&'static str> {
    KEY_PREFIXES.into_iter().find(|prefix| store.contains(&format!("{prefix}embed_tokens.weight"))).ok_or_else(|| {
        Error::UnknownLayout {
            dir: store.path().parent().unwrap_or(store.path()).to_path_buf(),
            tried: KEY_PREFIXES.iter().map(|p| p.to_string()).collect(),
        }
    })
}

/// What to load: the first `layers` decoder layers, and the final norm only if it is used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadPlan {
    pub layers: usize,
    pub final_norm: bool,
    /// Compute dtype the weights are converted to.
    pub dtype: DType,
    /// Store every decoder-layer Linear quantized (`model.quantize_te` / `qtype`), each right after it
    /// is read, so the dense text encoder is never on the device at once. The embedding table stays
    /// in `dtype` (it is a lookup, as ai-toolkit leaves it).
    pub quantize: Option<QType>,
    /// Share of the loaded decoder layers (the first ones) whose Linears live in host memory and are
    /// uploaded ahead of use (`model.layer_offloading_text_encoder_percent`; `flux2_ops::offload`).
    pub offload: f64,
}

impl LoadPlan {
    /// How many of the loaded layers (from the first) are offloaded.
    pub fn offloaded_layers(&self) -> usize {
        ((self.offload.clamp(0.0, 1.0) * self.layers as f64).round() as usize).min(self.layers)
    }
}

/// Where [`build_text_model`] takes each weight from: a checkpoint ([`TensorStore`]) or seeded
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

    /// The Linear whose weight is `key` when the checkpoint stores it as float8 codes with a scale
    /// (ComfyUI's `mistral_3_small_flux2_fp8.safetensors`, [`flux2_ops::quant::float8_file`]); `None` for
    /// a dense weight.
    fn float8_linear<B: Backend>(
        &mut self,
        key: &str,
        shape: [usize; 2],
        dtype: DType,
        device: &B::Device,
    ) -> Result<Option<Linear<B>>> {
        let _ = (key, shape, dtype, device);
        Ok(None)
    }
}

/// Reads weights from a checkpoint: the stored shape is checked against `expected` (`why` names the
/// config fields it comes from), and every weight is checked for NaN/Inf, which would otherwise give
/// NaN prompt embeddings and a training error blaming the learning rate.
impl TensorSource for TensorStore {
    fn float8_linear<B: Backend>(
        &mut self,
        key: &str,
        shape: [usize; 2],
        dtype: DType,
        device: &B::Device,
    ) -> Result<Option<Linear<B>>> {
        let module = key.strip_suffix(".weight").unwrap_or(key);
        let host = float8_file::read_if_float8(self, module, shape)?;
        Ok(host.map(|h| Linear::from_host_quantized(&h, dtype, device)))
    }

    fn tensor<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
        why: &str,
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        if let Some(actual) = self.shape(key).filter(|actual| *actual != expected) {
            return Err(Error::Shape {
                file: self.file_of(key),
                key: key.to_string(),
                actual: actual.to_vec(),
                expected: expected.to_vec(),
                why: why.to_string(),
            });
        }
        let tensor = Tensor::<B, D>::from_data(self.read(key, dtype)?, (device, dtype));
        if !flux2_ops::all_finite(&tensor) {
            return Err(Error::Invalid(format!(
                "{}: weight `{key}` holds NaN or infinite values: the checkpoint is damaged",
                self.file_of(key).display()
            )));
        }
        Ok(tensor)
    }
}

/// Loads the embedding, the first `plan.layers` decoder layers and (optionally) the final norm.
pub fn load_text_model<B: Backend>(
    store: &mut TensorStore,
    config: &MistralConfig,
    plan: LoadPlan,
    device: &B::Device,
) -> Result<MistralTextModel<B>> {
    let dir = store.path().parent().unwrap_or(store.path()).to_path_buf();
    config.validate(&dir.join("config.json"))?;
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
    let (h, i, q, kv) = (config.hidden_size, config.intermediate_size, config.q_dim(), config.kv_dim());

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
        let offload = n < plan.offloaded_layers();
        let mut linear = |name: &str, shape: [usize; 2], why: &str| -> Result<Linear<B>> {
            let key = format!("{p}{name}.weight");
            // A layer the checkpoint holds in float8 stays as stored (re-quantizing would only lose more).
            let layer = match store.float8_linear::<B>(&key, shape, dtype, device)? {
                Some(layer) => layer,
                None => {
                    let layer = Linear::new(store.tensor::<B, 2>(&key, shape, why, dtype, device)?);
                    match plan.quantize {
                        Some(qtype) => layer.quantize(qtype).map_err(|e| Error::Invalid(format!("`{key}`: {e}")))?,
                        None => layer,
                    }
                }
            };
            if offload { layer.offload().map_err(|e| Error::Invalid(format!("`{key}`: {e}"))) } else { Ok(layer) }
        };
        let self_attn = Attention {
            q_proj: linear("self_attn.q_proj", [q, h], "num_attention_heads*head_dim x hidden_size")?,
            k_proj: linear("self_attn.k_proj", [kv, h], "num_key_value_heads*head_dim x hidden_size")?,
            v_proj: linear("self_attn.v_proj", [kv, h], "num_key_value_heads*head_dim x hidden_size")?,
            o_proj: linear("self_attn.o_proj", [h, q], "hidden_size x num_attention_heads*head_dim")?,
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
            let w = store.tensor::<B, 1>(&format!("{p}{name}.weight"), [h], "hidden_size", dtype, device)?;
            Ok(RmsNorm::new(w, config.rms_norm_eps))
        };
        let input_layernorm = norm("input_layernorm")?;
        let post_attention_layernorm = norm("post_attention_layernorm")?;
        layers.push(DecoderLayer { input_layernorm, self_attn, post_attention_layernorm, mlp });
    }

    let norm = if plan.final_norm {
        let w = store.tensor::<B, 1>(&format!("{prefix}norm.weight"), [h], "hidden_size", dtype, device)?;
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
