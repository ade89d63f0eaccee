//! Which Linears get adapters, by BFL module path (`double_blocks.3.img_attn.qkv`, `single_blocks.0.linear1`).

use serde::{Deserialize, Serialize};

/// A target selection. Patterns are substrings of the BFL module path; diffusers module names in
/// `only_if_contains`/`ignore_if_contains` are accepted too and translated through the key map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Targets {
    /// ai-toolkit's FLUX.2 default: every Linear inside the double and single blocks (160 on FLUX.2-dev).
    #[default]
    Blocks,
    /// diffusers' `train_dreambooth_lora_flux2.py` default (`to_q`, `to_k`, `to_v`, `to_out.0`): the image
    /// stream's fused qkv and output projection in the double blocks.
    DiffusersDefault,
    /// Every Linear, including embedders, modulation and the final layer.
    Everything,
    /// Blocks, filtered: kept if any `only_if_contains` matches (when non-empty) and none of
    /// `ignore_if_contains` does.
    Filtered { only_if_contains: Vec<String>, ignore_if_contains: Vec<String> },
}

fn in_blocks(path: &str) -> bool {
    path.starts_with("double_blocks.") || path.starts_with("single_blocks.")
}

/// A pattern matches a path when it is a substring of the BFL path or of its diffusers name.
fn matches(pattern: &str, path: &str) -> bool {
    if path.contains(pattern) {
        return true;
    }
    let diffusers = flux2_dit::key_map::diffusers_qkv_modules(path)
        .map(|parts| parts.join(" "))
        .or_else(|| flux2_dit::key_map::diffusers_module(path));
    diffusers.is_some_and(|d| d.contains(pattern))
}

impl Targets {
    pub fn selects(&self, path: &str) -> bool {
        match self {
            Targets::Blocks => in_blocks(path),
            Targets::DiffusersDefault => {
                path.starts_with("double_blocks.")
                    && (path.ends_with("img_attn.qkv") || path.ends_with("img_attn.proj"))
            }
            Targets::Everything => true,
            Targets::Filtered { only_if_contains, ignore_if_contains } => {
                in_blocks(path)
                    && (only_if_contains.is_empty() || only_if_contains.iter().any(|p| matches(p, path)))
                    && !ignore_if_contains.iter().any(|p| matches(p, path))
            }
        }
    }

    /// A short label stored in file metadata.
    pub fn label(&self) -> String {
        match self {
            Targets::Blocks => "blocks".into(),
            Targets::DiffusersDefault => "diffusers_default".into(),
            Targets::Everything => "everything".into(),
            Targets::Filtered { only_if_contains, ignore_if_contains } => {
                format!("blocks(only={only_if_contains:?},ignore={ignore_if_contains:?})")
            }
        }
    }
}
