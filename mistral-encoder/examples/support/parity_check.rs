//! Comparison of `mistral-encoder` against a parity fixture folder, shared by `examples/text_encoder_parity.rs` and the
//! crate's tests (included with `#[path]`).
//!
//! Folder layout (written by `tools/fixtures/gen_text_encoder.py`):
//! `text_encoder/`, `tokenizer/tokenizer.json`, `prompts.json`
//! (`{"prompts": [...], "max_sequence_length": N, "hidden_states_layers": [...]}`) and
//! `expected.safetensors` (`input_ids` / `attention_mask` [B,L] i64, `prompt_embeds` [B,L,C*H] f32).

#![allow(dead_code)]

use std::path::Path;

use burn::tensor::{DType, backend::Backend};
use mistral_encoder::{EncoderOptions, MistralEncoder, PromptEmbeds, SYSTEM_MESSAGE};

#[derive(Debug, serde::Deserialize)]
pub struct PromptsFile {
    pub prompts: Vec<String>,
    pub max_sequence_length: usize,
    pub hidden_states_layers: Vec<i64>,
}

#[derive(Debug)]
pub struct ParityReport {
    /// None when ids and mask are identical; otherwise a description of the first difference.
    pub token_mismatch: Option<String>,
    /// ||ours - expected|| / ||expected|| over all embeddings.
    pub rel_err: f64,
    pub max_abs_err: f64,
    /// Relative error per prompt.
    pub per_prompt: Vec<f64>,
    pub shape: [usize; 3],
}

pub fn read_prompts(dir: &Path) -> Result<PromptsFile, String> {
    let path = dir.join("prompts.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Encodes the fixture's prompts with `dtype` compute and compares with `expected.safetensors`.
pub fn check<B: Backend>(dir: &Path, dtype: DType, device: &B::Device) -> Result<ParityReport, String> {
    check_quantized::<B>(dir, dtype, None, device)
}

/// [`check`] with the decoder layers' Linears stored as `quantize`.
pub fn check_quantized<B: Backend>(
    dir: &Path,
    dtype: DType,
    quantize: Option<flux2_ops::quant::QType>,
    device: &B::Device,
) -> Result<ParityReport, String> {
    let prompts = read_prompts(dir)?;
    let config = mistral_encoder::MistralConfig::from_file(&dir.join("text_encoder").join("config.json"))
        .map_err(|e| e.to_string())?;
    // Python-style negative indices into hidden_states (length num_hidden_layers + 1).
    let n = config.num_hidden_layers as i64 + 1;
    let layers = prompts
        .hidden_states_layers
        .iter()
        .map(|&k| {
            if (-n..n).contains(&k) {
                Ok(k.rem_euclid(n) as usize)
            } else {
                Err(format!("hidden_states_layers: {k} out of range for {n} hidden states"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = EncoderOptions {
        max_sequence_length: prompts.max_sequence_length,
        hidden_states_layers: layers,
        system_message: SYSTEM_MESSAGE.to_string(),
        dtype: Some(dtype),
        quantize,
        offload: 0.0,
    };
    let encoder = MistralEncoder::<B>::from_flux2_dir(dir, options, device).map_err(|e| e.to_string())?;
    let ours = encoder.encode(&prompts.prompts).map_err(|e| e.to_string())?;
    let expected = PromptEmbeds::<B>::load(&dir.join("expected.safetensors"), device).map_err(|e| e.to_string())?;

    let token_mismatch = compare_tokens(&encoder, &ours, &expected);
    let shape = ours.embeds.dims();
    if shape != expected.embeds.dims() {
        return Err(format!("embeddings shape {:?}, expected {:?}", shape, expected.embeds.dims()));
    }
    let a = ours.embeds.clone().cast(DType::F32).into_data().to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let b = expected.embeds.clone().cast(DType::F32).into_data().to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    // The workspace's one measure (equal lengths: both come from tensors of `shape`).
    let rel = |a: &[f32], b: &[f32]| flux2_ops::relative_error_slices(a, b).unwrap_or(f64::INFINITY);
    let per = shape[1] * shape[2];
    let per_prompt = (0..shape[0]).map(|i| rel(&a[i * per..(i + 1) * per], &b[i * per..(i + 1) * per])).collect();
    let max_abs_err = a.iter().zip(&b).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max);
    let rel_err = if a.iter().chain(&b).all(|x| x.is_finite()) { rel(&a, &b) } else { f64::INFINITY };
    Ok(ParityReport { token_mismatch, rel_err, max_abs_err, per_prompt, shape })
}

fn compare_tokens<B: Backend>(
    encoder: &MistralEncoder<B>,
    ours: &PromptEmbeds<B>,
    expected: &PromptEmbeds<B>,
) -> Option<String> {
    let (o, e) = (&ours.tokens, &expected.tokens);
    if (o.batch, o.seq_len) != (e.batch, e.seq_len) {
        return Some(format!("token layout [{}, {}], expected [{}, {}]", o.batch, o.seq_len, e.batch, e.seq_len));
    }
    for b in 0..o.batch {
        for (what, ours_row, exp_row) in [("input_ids", o.ids(b), e.ids(b)), ("attention_mask", o.mask(b), e.mask(b))] {
            if let Some(pos) = ours_row.iter().zip(exp_row).position(|(x, y)| x != y) {
                let tok = |id: i64| encoder.tokenizer.id_to_token(id as u32).unwrap_or_default();
                return Some(format!(
                    "prompt {b} {what} differ first at position {pos}: ours {} ({:?}), expected {} ({:?})",
                    ours_row[pos],
                    tok(ours_row[pos]),
                    exp_row[pos],
                    tok(exp_row[pos])
                ));
            }
        }
    }
    None
}
