//! Writing the text encoder as a float8 file in ComfyUI's layout (`flux2-train quantize
//! --text-encoder`): the decoder layers FLUX.2 runs with their seven projections as float8 codes and one
//! scale each ([`flux2_ops::quant::float8_file`]), the embedding table and norms as stored, and nothing
//! FLUX.2 never runs (later layers, the LM head, the vision tower): for Mistral Small 3.x and FLUX.2's
//! 30 layers, 18.0 GB instead of 47.1 (from the shapes). Keys keep the checkpoint's prefix; the loader finds it.

use std::path::Path;

use flux2_ops::TensorStore;
use flux2_ops::quant::float8_file::{self, Action, WriteSummary};

use crate::error::Result;
use crate::loader::detect_prefix;

/// The action for one key under the language model's prefix (`bare`: the key without it), keeping the
/// first `layers` decoder layers.
pub fn action(bare: &str, layers: usize) -> Action {
    if let Some(rest) = bare.strip_prefix("layers.") {
        let (index, name) = rest.split_once('.').unwrap_or((rest, ""));
        return match index.parse::<usize>() {
            Ok(i) if i < layers => {
                let projection =
                    name.ends_with("_proj.weight") && (name.starts_with("self_attn.") || name.starts_with("mlp."));
                if projection { Action::Float8 } else { Action::Keep }
            }
            _ => Action::Drop,
        };
    }
    match bare {
        "embed_tokens.weight" | "norm.weight" => Action::Keep,
        _ => Action::Drop,
    }
}

/// Writes the first `layers` decoder layers of the checkpoint in `store` to `out` as float8 (see the
/// module docs); `progress` gets the source bytes of each tensor as it is written, and of the whole file.
pub fn write_float8_file(
    store: &TensorStore,
    layers: usize,
    out: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<WriteSummary> {
    let prefix = detect_prefix(store)?;
    let select = |key: &str, _shape: &[usize]| match key.strip_prefix(prefix) {
        Some(bare) => action(bare, layers),
        None => Action::Drop,
    };
    Ok(float8_file::write_file(store, out, select, progress)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_of_the_kept_layers_are_float8() {
        assert_eq!(action("layers.0.self_attn.q_proj.weight", 30), Action::Float8);
        assert_eq!(action("layers.29.mlp.down_proj.weight", 30), Action::Float8);
        assert_eq!(action("layers.29.input_layernorm.weight", 30), Action::Keep);
        assert_eq!(action("layers.30.mlp.down_proj.weight", 30), Action::Drop);
        assert_eq!(action("embed_tokens.weight", 30), Action::Keep);
        assert_eq!(action("norm.weight", 30), Action::Keep);
        assert_eq!(action("lm_head.weight", 30), Action::Drop);
    }
}
