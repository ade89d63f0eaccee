//! LoRA files applied to the pipeline's transformer for inference, each with its own multiplier.
//!
//! Kept apart from generation on purpose: the trainer renders previews with its in-training adapter
//! already attached, and `generate` never touches adapters. Any layout `lora_adapters` reads works
//! (ai-toolkit/ComfyUI, diffusers/PEFT with its `lora_alpha` metadata, Kohya with `.alpha`); several files
//! stack, each scaled by its multiplier, as diffusers' `set_adapters(names, adapter_weights)` does.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::tensor::backend::Backend;
use flux2_dit::Flux2Transformer;
use lora_adapters::AdapterHandle;

use crate::error::{Error, Result};

/// One LoRA file and its multiplier (`FILE[:MULT]` on the command line).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub multiplier: f32,
}

impl LoraSpec {
    pub fn new(path: impl Into<PathBuf>, multiplier: f32) -> Self {
        Self { path: path.into(), multiplier }
    }
}

impl FromStr for LoraSpec {
    type Err = String;

    /// `FILE` (multiplier 1) or `FILE:MULT`; a suffix that is not a number is part of the file name
    /// (so `C:\loras\a.safetensors` still works).
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if text.is_empty() {
            return Err("empty LoRA argument, expected FILE[:MULTIPLIER]".into());
        }
        if let Some((file, mult)) = text.rsplit_once(':')
            && let Ok(multiplier) = mult.trim().parse::<f32>()
        {
            if file.is_empty() {
                return Err(format!("`{text}`: no file before the multiplier"));
            }
            if !multiplier.is_finite() {
                return Err(format!("`{text}`: the multiplier must be a finite number"));
            }
            return Ok(Self::new(file, multiplier));
        }
        Ok(Self::new(text, 1.0))
    }
}

/// The adapter name a spec gets: its position and file stem (names must be unique in a model).
fn adapter_name(index: usize, path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("lora{index}:{stem}")
}

/// Attaches every LoRA of `specs` to `model` at its multiplier; the handles switch them off or rescale them
/// ([`AdapterHandle::set_multiplier`]). Errors name the file.
pub fn apply_loras<B: Backend>(model: &mut Flux2Transformer<B>, specs: &[LoraSpec]) -> Result<Vec<AdapterHandle>> {
    let mut handles = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        if !spec.path.is_file() {
            return Err(Error::Invalid(format!("LoRA {}: no such file", spec.path.display())));
        }
        let handle = lora_adapters::load_into(model, &spec.path, &adapter_name(i, &spec.path), spec.multiplier)
            .map_err(|e| Error::Invalid(format!("LoRA {}: {e}", spec.path.display())))?;
        handles.push(handle);
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_multiplier() {
        assert_eq!("style.safetensors".parse::<LoraSpec>().unwrap(), LoraSpec::new("style.safetensors", 1.0));
        assert_eq!("a/b.safetensors:0.75".parse::<LoraSpec>().unwrap(), LoraSpec::new("a/b.safetensors", 0.75));
        assert_eq!("x.safetensors:-0.5".parse::<LoraSpec>().unwrap(), LoraSpec::new("x.safetensors", -0.5));
        assert_eq!(r"C:\loras\a.safetensors".parse::<LoraSpec>().unwrap().multiplier, 1.0);
        assert!(":0.5".parse::<LoraSpec>().is_err());
        assert!("a.safetensors:inf".parse::<LoraSpec>().is_err());
        assert!("".parse::<LoraSpec>().is_err());
    }
}
