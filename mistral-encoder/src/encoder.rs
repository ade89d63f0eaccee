//! The public entry point: a FLUX.2 folder in, [`PromptEmbeds`] out.

use std::path::Path;

use burn::tensor::{DType, Tensor, backend::Backend};

use crate::config::MistralConfig;
use crate::embeds::PromptEmbeds;
use crate::error::{Error, Result};
use flux2_ops::TensorStore;

use crate::loader::{LoadPlan, build_text_model, detect_prefix, load_text_model, stored_dtype};
use crate::model::MistralTextModel;
use crate::prompt::{DEFAULT_MAX_SEQUENCE_LENGTH, SYSTEM_MESSAGE, TokenBatch};
use crate::random_init::RandomWeights;
use crate::tokenizer::PromptTokenizer;

/// The longest prompt length accepted (every prompt is padded to `max_sequence_length` tokens, so
/// 100 million would allocate gigabytes before failing). FLUX.2 uses 512.
pub const MAX_SEQUENCE_LENGTH: usize = 8192;

/// How prompts are encoded. The defaults are FLUX.2-dev's.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderOptions {
    /// Token length every prompt is truncated/padded to (512).
    pub max_sequence_length: usize,
    /// Hidden states stacked per token, transformers numbering ([10, 20, 30]). Only layers up to the
    /// largest are loaded and run.
    pub hidden_states_layers: Vec<usize>,
    /// System message of the chat format (diffusers' `SYSTEM_MESSAGE`).
    pub system_message: String,
    /// Compute dtype; `None` keeps the checkpoint's (bf16 for FLUX.2-dev, as diffusers runs it).
    pub dtype: Option<DType>,
    /// Quantized Linears (see [`LoadPlan::quantize`]); `None` keeps them in `dtype`.
    pub quantize: Option<flux2_ops::quant::QType>,
    /// Share of the loaded layers kept in host memory (see [`LoadPlan::offload`]).
    pub offload: f64,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            max_sequence_length: DEFAULT_MAX_SEQUENCE_LENGTH,
            hidden_states_layers: vec![10, 20, 30],
            system_message: SYSTEM_MESSAGE.to_string(),
            dtype: None,
            quantize: None,
            offload: 0.0,
        }
    }
}

/// Tokenizer + the needed part of the Mistral language model.
#[derive(Debug)]
pub struct MistralEncoder<B: Backend> {
    pub model: MistralTextModel<B>,
    pub tokenizer: PromptTokenizer,
    pub config: MistralConfig,
    pub options: EncoderOptions,
}

impl<B: Backend> MistralEncoder<B> {
    /// Loads from a FLUX.2 diffusers folder: `<root>/text_encoder/` (config.json + safetensors) and
    /// `<root>/tokenizer/tokenizer.json`.
    pub fn from_flux2_dir(root: &Path, options: EncoderOptions, device: &B::Device) -> Result<Self> {
        Self::from_parts(&root.join("text_encoder"), &root.join("tokenizer").join("tokenizer.json"), options, device)
    }

    /// Loads from a text-encoder folder and a `tokenizer.json` given separately.
    pub fn from_parts(
        text_encoder_dir: &Path,
        tokenizer_json: &Path,
        options: EncoderOptions,
        device: &B::Device,
    ) -> Result<Self> {
        let (tokenizer, config, deepest) = Self::read_parts(text_encoder_dir, tokenizer_json, &options)?;
        let mut store = TensorStore::open_dir(text_encoder_dir)?;
        let dtype = match options.dtype {
            Some(dtype) => dtype,
            None => {
                let prefix = detect_prefix(&store)?;
                stored_dtype(&store, &format!("{prefix}embed_tokens.weight"))?
            }
        };
        let plan = Self::plan(&config, &options, deepest, dtype);
        let model = load_text_model(&mut store, &config, plan, device)?;
        Ok(MistralEncoder { model, tokenizer, config, options })
    }

    /// The encoder of [`Self::from_parts`] with seeded random weights ([`RandomWeights`]) instead of
    /// the folder's weight files, which need not exist: only `config.json` and the tokenizer are read.
    /// For rehearsing a job at the real size; `options.dtype` `None` means F32.
    pub fn random_from_parts(
        text_encoder_dir: &Path,
        tokenizer_json: &Path,
        options: EncoderOptions,
        seed: u64,
        device: &B::Device,
    ) -> Result<Self> {
        let (tokenizer, config, deepest) = Self::read_parts(text_encoder_dir, tokenizer_json, &options)?;
        let plan = Self::plan(&config, &options, deepest, options.dtype.unwrap_or(DType::F32));
        let mut source = RandomWeights::new::<B>(seed, device);
        let model = build_text_model(&mut source, "", &config, plan, device)?;
        Ok(MistralEncoder { model, tokenizer, config, options })
    }

    /// The tokenizer, the validated config and the deepest hidden state `options` asks for.
    fn read_parts(
        text_encoder_dir: &Path,
        tokenizer_json: &Path,
        options: &EncoderOptions,
    ) -> Result<(PromptTokenizer, MistralConfig, usize)> {
        if options.max_sequence_length == 0 || options.max_sequence_length > MAX_SEQUENCE_LENGTH {
            return Err(Error::Invalid(format!(
                "max_sequence_length {} is out of range: prompts are padded to this many tokens; use 1 to {MAX_SEQUENCE_LENGTH} (FLUX.2 uses 512)",
                options.max_sequence_length
            )));
        }
        let tokenizer = PromptTokenizer::from_file(tokenizer_json)?;
        let config_path = text_encoder_dir.join("config.json");
        let config = MistralConfig::from_file(&config_path)?;
        config.validate(&config_path)?;
        let layers = &options.hidden_states_layers;
        let deepest =
            layers.iter().copied().max().ok_or_else(|| Error::Layers { message: "no layer requested".into() })?;
        if deepest > config.num_hidden_layers {
            return Err(Error::Layers {
                message: format!(
                    "hidden state {deepest} requested, {} has num_hidden_layers = {}",
                    config_path.display(),
                    config.num_hidden_layers
                ),
            });
        }
        Ok((tokenizer, config, deepest))
    }

    /// Only the layers up to the deepest requested hidden state run; the final norm only when the
    /// last layer's output is requested.
    fn plan(config: &MistralConfig, options: &EncoderOptions, deepest: usize, dtype: DType) -> LoadPlan {
        LoadPlan {
            layers: deepest,
            final_norm: options.hidden_states_layers.contains(&config.num_hidden_layers),
            dtype,
            quantize: options.quantize,
            offload: options.offload,
        }
    }

    /// FLUX.2 token layout of the prompts (see `prompt.rs`).
    pub fn tokenize<S: AsRef<str>>(&self, prompts: &[S]) -> Result<TokenBatch> {
        self.tokenizer.tokenize_prompts(prompts, &self.options.system_message, self.options.max_sequence_length)
    }

    /// Stacked hidden states [B, L, n_layers * hidden] of already tokenized prompts.
    pub fn encode_tokens(&self, tokens: &TokenBatch) -> Result<Tensor<B, 3>> {
        self.model.stacked_hidden_states(
            &tokens.input_ids,
            &tokens.attention_mask,
            tokens.batch,
            tokens.seq_len,
            &self.options.hidden_states_layers,
        )
    }

    /// Prompt embeddings exactly as diffusers' `Flux2Pipeline.encode_prompt` computes them (before its
    /// `num_images_per_prompt` repetition). The whole batch runs at once: chunk large caption sets.
    pub fn encode<S: AsRef<str>>(&self, prompts: &[S]) -> Result<PromptEmbeds<B>> {
        if prompts.is_empty() {
            return Err(Error::Invalid("encode: no prompts".into()));
        }
        let tokens = self.tokenize(prompts)?;
        let embeds = self.encode_tokens(&tokens)?;
        Ok(PromptEmbeds {
            embeds,
            tokens,
            hidden_states_layers: self.options.hidden_states_layers.clone(),
            prompts: prompts.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prompt length of 100 million tokens is refused before anything is read or allocated.
    #[test]
    fn absurd_prompt_lengths_are_refused_first() {
        for n in [0, 100_000_000] {
            let options = EncoderOptions { max_sequence_length: n, ..EncoderOptions::default() };
            let err = MistralEncoder::<burn::backend::Flex>::from_parts(
                Path::new("/nonexistent"),
                Path::new("/nonexistent/tokenizer.json"),
                options,
                &Default::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(&format!("max_sequence_length {n}")) && err.contains("8192"), "{err}");
        }
    }
}
