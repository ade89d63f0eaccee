//! Writing a transformer checkpoint as a float8 file in ComfyUI's layout (`flux2-train quantize`): the
//! Linears of every double and single block as float8 codes with one scale each
//! ([`flux2_ops::quant::float8_file`]), everything else (embedders, modulation, final layer, norms) as
//! stored. The blocks are 97% of FLUX.2 [dev]'s weights, so the file is about half the bf16 one
//! (33.0 GB instead of 64.4, from the shapes), and the layers that condition every block keep full precision, as
//! Comfy-Org's own float8 files do. Loading such a file ([`crate::Checkpoint`]) keeps those layers
//! quantized as stored.

use std::path::Path;

use flux2_ops::quant::float8_file::{self, Action, WriteSummary};

use crate::error::{Error, Result};
use crate::loader::Checkpoint;
use crate::weight_source::Layout;

/// The action for one BFL-named tensor (`key` without the file's prefix).
pub fn action(key: &str) -> Action {
    let in_block = key.starts_with("double_blocks.") || key.starts_with("single_blocks.");
    let is_linear = key.ends_with(".weight") && !key.contains("_norm.");
    if in_block && is_linear { Action::Float8 } else { Action::Keep }
}

/// [`action`] for a stored tensor of `shape`: only matrices become float8 (what the writer and
/// [`crate::sparse_file`]'s float8 layout both follow).
pub fn stored_action(key: &str, shape: &[usize]) -> Action {
    if shape.len() == 2 { action(key) } else { Action::Keep }
}

/// Writes `checkpoint` (a BFL-layout file, e.g. `flux2-dev.safetensors`) to `out` as float8; see the
/// module docs. `progress` gets the source bytes of each tensor as it is written, and of the whole file.
pub fn write_float8_file(checkpoint: &Checkpoint, out: &Path, progress: &dyn Fn(u64, u64)) -> Result<WriteSummary> {
    let source = &checkpoint.source;
    if source.layout != Layout::Bfl {
        return Err(Error::Input {
            name: "model",
            message: format!(
                "{}: a diffusers-layout transformer; `quantize` reads the BFL single file (flux2-dev.safetensors, \
                 in the same Hugging Face repository)",
                source.store.path().display()
            ),
        });
    }
    let prefix = source.prefix.as_str();
    let select = |key: &str, shape: &[usize]| stored_action(key.strip_prefix(prefix).unwrap_or(key), shape);
    Ok(float8_file::write_file(&source.store, out, select, progress)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_linears_are_float8_and_the_rest_is_kept() {
        assert_eq!(action("double_blocks.3.img_attn.qkv.weight"), Action::Float8);
        assert_eq!(action("double_blocks.3.txt_mlp.2.weight"), Action::Float8);
        assert_eq!(action("single_blocks.47.linear1.weight"), Action::Float8);
        assert_eq!(action("single_blocks.0.norm.query_norm.scale"), Action::Keep);
        assert_eq!(action("double_blocks.0.img_attn.norm.key_norm.scale"), Action::Keep);
        assert_eq!(action("double_stream_modulation_img.lin.weight"), Action::Keep);
        assert_eq!(action("img_in.weight"), Action::Keep);
        assert_eq!(action("final_layer.linear.weight"), Action::Keep);
    }
}
