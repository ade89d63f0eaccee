//! The three LoRA file layouts and the key names each uses for a module.
//!
//! | layout | key of A / B | scale |
//! |---|---|---|
//! | `AiToolkit` (default; ComfyUI, ai-toolkit) | `diffusion_model.<BFL path>.lora_A.weight` / `.lora_B.weight` | 1 (we fold alpha/rank into B on save: ComfyUI and diffusers read these files without alpha) |
//! | `Diffusers` (PEFT) | `transformer.<diffusers path>.lora_A.weight` / `.lora_B.weight`; fused qkv split into q, k, v with A copied and B split by rows | `lora_adapter_metadata` header JSON: `transformer.lora_alpha / transformer.r` |
//! | `Kohya` | `lora_unet_<BFL path, dots as underscores>.lora_down.weight` / `.lora_up.weight` | `.alpha` scalar per module |

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoraLayout {
    #[default]
    AiToolkit,
    Diffusers,
    Kohya,
}

pub const AI_TOOLKIT_PREFIX: &str = "diffusion_model.";
pub const DIFFUSERS_PREFIX: &str = "transformer.";
pub const KOHYA_PREFIX: &str = "lora_unet_";

/// Kohya module name of a BFL path.
pub fn kohya_name(bfl_path: &str) -> String {
    format!("{KOHYA_PREFIX}{}", bfl_path.replace('.', "_"))
}

/// Splits `<module>.<suffix>` where suffix is one of the factor/alpha suffixes; returns (module, kind).
pub fn split_factor_key(key: &str) -> Option<(&str, FactorKind)> {
    for (suffix, kind) in [
        (".lora_A.weight", FactorKind::Down),
        (".lora_B.weight", FactorKind::Up),
        (".lora_down.weight", FactorKind::Down),
        (".lora_up.weight", FactorKind::Up),
        (".alpha", FactorKind::Alpha),
    ] {
        if let Some(module) = key.strip_suffix(suffix) {
            return Some((module, kind));
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorKind {
    Down,
    Up,
    Alpha,
}
