//! Tekken tokenization with the `tokenizers` crate, reading `tokenizer/tokenizer.json` of the FLUX.2 folder.
//!
//! The file may carry its own padding/truncation settings (a tokenizer saved after a padded call does);
//! they are switched off here because FLUX.2's layout (right truncation, LEFT padding, see `prompt.rs`) is
//! applied explicitly. Special tokens are never added by the tokenizer: the formatted prompt already
//! starts with `<s>`, exactly as in the reference, where the processor sees the BOS in the rendered text.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::prompt::{TokenBatch, format_prompt};

/// Markers of FLUX.2's prompt format; each must be ONE special token for the format to mean anything.
pub const FORMAT_TOKENS: [&str; 6] = ["<s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"];

pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    pad_id: u32,
    path: PathBuf,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer").field("path", &self.path).field("pad_id", &self.pad_id).finish()
    }
}

impl PromptTokenizer {
    /// Loads `tokenizer.json` and checks that FLUX.2's format tokens are single special tokens.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::tokenizer(
                path,
                "file not found (expected the `tokenizer/tokenizer.json` of a FLUX.2 folder)",
            ));
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|e| Error::tokenizer(path, format!("cannot read: {e}")))?;
        Self::from_tokenizer(tokenizer, path)
    }

    /// Loads from in-memory `tokenizer.json` bytes; `path` is only used in messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let tokenizer =
            Tokenizer::from_bytes(bytes).map_err(|e| Error::tokenizer(path, format!("cannot parse: {e}")))?;
        Self::from_tokenizer(tokenizer, path)
    }

    fn from_tokenizer(mut tokenizer: Tokenizer, path: &Path) -> Result<Self> {
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::tokenizer(path, format!("cannot disable truncation: {e}")))?;
        let mut this = PromptTokenizer { tokenizer, pad_id: 0, path: path.to_path_buf() };
        for token in FORMAT_TOKENS {
            let id = this.tokenizer.token_to_id(token).ok_or_else(|| {
                Error::tokenizer(path, format!("no `{token}` token; FLUX.2's prompt format needs it"))
            })?;
            let ids = this.encode_raw(token)?;
            if ids != [id] {
                return Err(Error::tokenizer(
                    path,
                    format!("`{token}` is not matched as one special token (got ids {ids:?})"),
                ));
            }
            if token == "<pad>" {
                this.pad_id = id;
            }
        }
        Ok(this)
    }

    /// Id of `<pad>`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Tokens of `ids` (for diagnostics).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// Tokenizes text as is: no special tokens added, special-token text inside it matched.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::tokenizer(&self.path, format!("cannot encode {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// FLUX.2 token layout for a batch of prompts: format, tokenize, right-truncate, left-pad.
    pub fn tokenize_prompts<S: AsRef<str>>(
        &self,
        prompts: &[S],
        system_message: &str,
        max_sequence_length: usize,
    ) -> Result<TokenBatch> {
        let ids = prompts
            .iter()
            .map(|p| self.encode_raw(&format_prompt(p.as_ref(), system_message)))
            .collect::<Result<Vec<_>>>()?;
        TokenBatch::from_ids(&ids, max_sequence_length, self.pad_id)
    }
}
