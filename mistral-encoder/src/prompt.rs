//! FLUX.2's prompt format and its fixed-length token layout.
//!
//! diffusers' `Flux2Pipeline` (after BFL's `flux2/text_encoder.py`) removes every literal `[IMG]` from the
//! prompt, builds a two-message chat (system message, user prompt) and renders it with the processor of
//! Mistral-Small-3.1, which gives
//! `<s>[SYSTEM_PROMPT]{system}[/SYSTEM_PROMPT][INST]{prompt}[/INST]`. The rendered text starts with the BOS
//! token, so the processor tokenizes it without adding special tokens; the markers in the text (and any
//! special-token text a user typed, such as `[INST]` or `</s>`) are matched as special tokens. The ids are
//! then truncated on the RIGHT to `max_sequence_length` (default 512; a long prompt loses its `[/INST]`)
//! and padded on the LEFT with `<pad>` to exactly that length, with attention mask 0 on the padding.

use crate::error::{Error, Result};

/// diffusers `pipelines/flux2/system_messages.py::SYSTEM_MESSAGE` (BFL's, note the newline).
pub const SYSTEM_MESSAGE: &str = "You are an AI that reasons about image descriptions. You give structured responses focusing on object relationships, object\nattribution and actions without speculation.";

/// FLUX.2's default `max_sequence_length`.
pub const DEFAULT_MAX_SEQUENCE_LENGTH: usize = 512;

/// The string FLUX.2 tokenizes for one prompt.
pub fn format_prompt(prompt: &str, system_message: &str) -> String {
    // `[IMG]` is removed because the Pixtral processor counts image tokens and would reject a prompt whose
    // count changes under truncation; FLUX.2 does this for every prompt, image or not.
    let cleaned = prompt.replace("[IMG]", "");
    format!("<s>[SYSTEM_PROMPT]{system_message}[/SYSTEM_PROMPT][INST]{cleaned}[/INST]")
}

/// Token ids and attention mask of a batch, [batch, seq_len] row-major, as i64 like PyTorch's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub batch: usize,
    pub seq_len: usize,
}

impl TokenBatch {
    /// Right-truncates each id list to `max_len` and left-pads it with `pad_id` to exactly `max_len`.
    pub fn from_ids(ids: &[Vec<u32>], max_len: usize, pad_id: u32) -> Result<Self> {
        if max_len == 0 {
            return Err(Error::Invalid("max_sequence_length must be at least 1".into()));
        }
        let mut input_ids = Vec::with_capacity(ids.len() * max_len);
        let mut attention_mask = Vec::with_capacity(ids.len() * max_len);
        for seq in ids {
            let kept = &seq[..seq.len().min(max_len)];
            let pad = max_len - kept.len();
            input_ids.extend(std::iter::repeat_n(pad_id as i64, pad));
            input_ids.extend(kept.iter().map(|&id| id as i64));
            attention_mask.extend(std::iter::repeat_n(0i64, pad));
            attention_mask.extend(std::iter::repeat_n(1i64, kept.len()));
        }
        Ok(TokenBatch { input_ids, attention_mask, batch: ids.len(), seq_len: max_len })
    }

    /// Row `b` of the ids.
    pub fn ids(&self, b: usize) -> &[i64] {
        &self.input_ids[b * self.seq_len..(b + 1) * self.seq_len]
    }

    /// Row `b` of the mask.
    pub fn mask(&self, b: usize) -> &[i64] {
        &self.attention_mask[b * self.seq_len..(b + 1) * self.seq_len]
    }

    /// Number of real (unpadded) tokens of row `b`.
    pub fn valid_len(&self, b: usize) -> usize {
        self.mask(b).iter().filter(|&&m| m != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_matches_flux2() {
        assert_eq!(format_prompt("a [IMG]cat[IMG]", "SYS"), "<s>[SYSTEM_PROMPT]SYS[/SYSTEM_PROMPT][INST]a cat[/INST]");
        assert_eq!(format_prompt("", "S"), "<s>[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST][/INST]");
        assert!(SYSTEM_MESSAGE.contains("object\nattribution"));
    }

    #[test]
    fn left_padding_and_right_truncation() {
        let batch = TokenBatch::from_ids(&[vec![1, 2, 3], vec![1, 2, 3, 4, 5, 6]], 5, 11).unwrap();
        assert_eq!(batch.ids(0), [11, 11, 1, 2, 3]);
        assert_eq!(batch.mask(0), [0, 0, 1, 1, 1]);
        assert_eq!(batch.ids(1), [1, 2, 3, 4, 5]);
        assert_eq!(batch.mask(1), [1; 5]);
        assert_eq!((batch.valid_len(0), batch.valid_len(1)), (3, 5));
        assert!(TokenBatch::from_ids(&[vec![1]], 0, 11).is_err());
    }
}
