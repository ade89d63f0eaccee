//! The Mistral language model, run only as deep as the deepest requested hidden state.
//!
//! Hidden-state numbering follows transformers (`output_hidden_states=True`): `hidden_states[0]` is the
//! embedding output, `hidden_states[k]` the output of decoder layer k (1-based) before the final norm,
//! and the last one, `hidden_states[num_hidden_layers]`, is the final RMSNorm's output (transformers
//! overwrites the last entry with the normed `last_hidden_state`). FLUX.2-dev asks for 10, 20 and 30 of
//! 40 layers, so layers 31..40 and the final norm are never loaded or run.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend, module::embedding};

use crate::decoder_layer::DecoderLayer;
use crate::error::{Error, Result};
use crate::mask::AttentionMask;
use crate::rms_norm::RmsNorm;
use crate::rope::RopeTables;

#[derive(Module, Debug)]
pub struct MistralTextModel<B: Backend> {
    /// [vocab_size, hidden_size].
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// The first `layers.len()` decoder layers of the checkpoint (possibly fewer than it has).
    pub layers: Vec<DecoderLayer<B>>,
    /// The final norm, present only when `hidden_states[num_hidden_layers]` may be requested.
    pub norm: Option<RmsNorm<B>>,
    /// Layer count of the full checkpoint (defines which index is the normed output).
    pub num_hidden_layers: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    #[module(skip)]
    pub sliding_window: Option<usize>,
}

impl<B: Backend> MistralTextModel<B> {
    /// Hidden size of one layer's output.
    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.dims()[1]
    }

    /// Checks that every requested hidden state can be produced by what was loaded.
    pub fn check_layers(&self, requested: &[usize]) -> Result<()> {
        if requested.is_empty() {
            return Err(Error::Layers { message: "no layer requested".into() });
        }
        for &k in requested {
            if k > self.num_hidden_layers {
                return Err(Error::Layers {
                    message: format!(
                        "hidden state {k} requested, the model has {} layers (valid: 0..={})",
                        self.num_hidden_layers, self.num_hidden_layers
                    ),
                });
            }
            if k > self.layers.len() {
                return Err(Error::Layers {
                    message: format!("hidden state {k} requested, only {} layers were loaded", self.layers.len()),
                });
            }
            if k == self.num_hidden_layers && self.norm.is_none() {
                return Err(Error::Layers {
                    message: format!("hidden state {k} is the final normed output, but the final norm was not loaded"),
                });
            }
        }
        Ok(())
    }

    /// Runs the model on [B, L] token ids with a [B, L] padding mask (1 = token, 0 = pad; row-major host
    /// data) and returns the requested hidden states, in request order, each [B, L, hidden].
    pub fn hidden_states(
        &self,
        input_ids: &[i64],
        padding_mask: &[i64],
        batch: usize,
        seq_len: usize,
        requested: &[usize],
    ) -> Result<Vec<Tensor<B, 3>>> {
        self.check_layers(requested)?;
        if input_ids.len() != batch * seq_len || padding_mask.len() != batch * seq_len {
            return Err(Error::Invalid(format!(
                "input_ids ({}) and attention_mask ({}) must both hold batch*seq_len = {} values",
                input_ids.len(),
                padding_mask.len(),
                batch * seq_len
            )));
        }
        let vocab = self.embed_tokens.dims()[0];
        if let Some(bad) = input_ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            return Err(Error::Invalid(format!("token id {bad} outside the embedding table (vocab_size {vocab})")));
        }
        let device = self.embed_tokens.device();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(input_ids.to_vec(), [batch, seq_len]), &device);
        let mut x = embedding(self.embed_tokens.val(), ids);
        let dtype = x.dtype();

        let deepest = requested.iter().copied().max().unwrap_or(0);
        let rope = RopeTables::new(self.rope_theta, self.head_dim, seq_len, dtype, &device);
        let mask = AttentionMask::new(padding_mask, batch, seq_len, self.sliding_window, &device);

        let mut outputs: Vec<Option<Tensor<B, 3>>> = vec![None; requested.len()];
        let mut record = |k: usize, x: &Tensor<B, 3>| {
            for (slot, &want) in outputs.iter_mut().zip(requested) {
                if want == k {
                    *slot = Some(x.clone());
                }
            }
        };
        record(0, &x);
        if let Some(first) = self.layers.first() {
            first.prefetch();
        }
        for (n, layer) in self.layers.iter().take(deepest).enumerate() {
            // Offloaded layers: the next one uploads while this one computes.
            if let Some(next) = self.layers.get(n + 1).filter(|_| n + 1 < deepest) {
                next.prefetch();
            }
            x = layer.forward(x, &rope, &mask);
            let k = n + 1;
            if k == self.num_hidden_layers {
                if let Some(norm) = &self.norm {
                    record(k, &norm.forward(x.clone()));
                }
            } else {
                record(k, &x);
            }
        }
        outputs
            .into_iter()
            .zip(requested)
            .map(|(t, k)| t.ok_or_else(|| Error::Layers { message: format!("hidden state {k} was not produced") }))
            .collect()
    }

    /// FLUX.2's text conditioning: the requested hidden states concatenated per token,
    /// [B, L, n * hidden] with each token laid out [layer a | layer b | ...] (diffusers stacks on dim 1,
    /// permutes to [B, L, n, H] and flattens the last two).
    pub fn stacked_hidden_states(
        &self,
        input_ids: &[i64],
        padding_mask: &[i64],
        batch: usize,
        seq_len: usize,
        requested: &[usize],
    ) -> Result<Tensor<B, 3>> {
        let states = self.hidden_states(input_ids, padding_mask, batch, seq_len, requested)?;
        Ok(Tensor::cat(states, 2))
    }
}
