//! A checkpoint as a parameter source: layout and prefix detection, name mapping, shape checks,
//! per-tensor conversion, and a final check that nothing in the file went unused.

use std::collections::HashSet;

use burn::tensor::{DType, TensorData};

use crate::error::{Error, Result};
use crate::key_map::{Layout, is_ignored_buffer, stored_name};
use crate::params::{ParamKind, RawSource};
use crate::vae::Parts;
use flux2_ops::TensorStore;

/// How a store names the VAE's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// diffusers or BFL names.
    pub layout: Layout,
    /// Prefix in front of every VAE tensor (empty, or e.g. `first_stage_model.` / `vae.` in bundles).
    pub prefix: String,
}

/// Finds the layout and prefix from marker tensors (`{encoder,decoder}.conv_in.weight` and the first
/// ResNet of the first level).
pub fn detect_naming(store: &TensorStore) -> Result<Naming> {
    let unknown = |reason: String| Error::UnknownLayout { path: store.path().into(), reason };
    let mut prefixes: Vec<String> = store
        .keys()
        .filter_map(|n| {
            ["encoder.conv_in.weight", "decoder.conv_in.weight"].iter().find_map(|marker| {
                let p = n.strip_suffix(marker)?;
                (p.is_empty() || p.ends_with('.')).then(|| p.to_string())
            })
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    let prefix = match prefixes.len() {
        0 => {
            return Err(unknown(
                "no `encoder.conv_in.weight` or `decoder.conv_in.weight` tensor: not a VAE checkpoint".into(),
            ));
        }
        1 => prefixes.pop().unwrap_or_default(),
        _ => return Err(unknown(format!("several VAEs in one file (prefixes {prefixes:?})"))),
    };
    let has = |n: &str| store.contains(&format!("{prefix}{n}"));
    let layout = if has("encoder.down_blocks.0.resnets.0.conv1.weight")
        || has("decoder.up_blocks.0.resnets.0.conv1.weight")
    {
        Layout::Diffusers
    } else if has("encoder.down.0.block.0.conv1.weight") || has("decoder.up.0.block.0.conv1.weight") {
        Layout::Bfl
    } else {
        return Err(unknown(format!(
            "found `{prefix}*.conv_in.weight` but neither diffusers (`down_blocks`/`up_blocks`) nor BFL (`down`/`up`) block names"
        )));
    };
    Ok(Naming { layout, prefix })
}

/// [`RawSource`] over a [`TensorStore`].
pub struct CheckpointSource<'s> {
    store: &'s TensorStore,
    naming: Naming,
    levels: usize,
    used: HashSet<String>,
}

impl<'s> CheckpointSource<'s> {
    /// `levels` is the config's number of resolution levels (BFL decoder numbering depends on it).
    pub fn new(store: &'s TensorStore, naming: Naming, levels: usize) -> Self {
        Self { store, naming, levels, used: HashSet::new() }
    }

    /// Full stored name of a diffusers parameter, and whether it is a Linear stored as a 1x1 conv.
    pub fn stored(&self, name: &str) -> Option<(String, bool)> {
        let s = stored_name(self.naming.layout, name, self.levels)?;
        Some((format!("{}{}", self.naming.prefix, s.name), s.conv1x1_for_linear))
    }

    /// Errors if the checkpoint holds VAE tensors (for the loaded `parts`) that were never requested:
    /// that means config and weights disagree (e.g. attention weights but `mid_block_add_attention: false`).
    pub fn check_all_used(&self, parts: Parts) -> Result<()> {
        let prefix = &self.naming.prefix;
        let mut unused: Vec<String> = self
            .store
            .keys()
            .filter(|n| n.starts_with(prefix.as_str()) && !self.used.contains(*n) && !is_ignored_buffer(n))
            .filter(|n| {
                let rel = &n[prefix.len()..];
                let encoder_side = rel.starts_with("encoder.") || rel.starts_with("quant_conv.");
                let decoder_side = rel.starts_with("decoder.") || rel.starts_with("post_quant_conv.");
                (encoder_side && parts.encoder())
                    || (decoder_side && parts.decoder())
                    || (!encoder_side && !decoder_side)
            })
            .map(str::to_string)
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        unused.sort();
        Err(Error::UnusedTensors {
            path: self.store.path().into(),
            count: unused.len(),
            examples: unused.into_iter().take(5).collect(),
        })
    }
}

impl RawSource for CheckpointSource<'_> {
    fn origin(&self) -> String {
        self.store.path().display().to_string()
    }

    fn fetch(&mut self, name: &str, shape: &[usize], _kind: ParamKind, dtype: DType) -> Result<TensorData> {
        let path = self.store.path();
        let (stored, conv1x1) = self.stored(name).ok_or_else(|| Error::MissingTensor {
            path: path.into(),
            key: name.into(),
            stored: "<no mapping>".into(),
        })?;
        if !self.store.contains(&stored) {
            return Err(Error::MissingTensor { path: path.into(), key: name.into(), stored: stored.clone() });
        }
        // `get` (not `shape`) so that an unreadable shard is reported as what it is.
        let stored_shape = self.store.get(&stored)?.shape.to_vec();
        let fits = stored_shape.as_slice() == shape
            || (conv1x1
                && stored_shape.len() == shape.len() + 2
                && stored_shape[..shape.len()] == *shape
                && stored_shape[shape.len()..] == [1, 1]);
        if !fits {
            return Err(Error::ShapeMismatch {
                path: self.store.file_of(&stored),
                stored,
                found: stored_shape,
                expected: shape.to_vec(),
            });
        }
        let mut data = self.store.read(&stored, dtype)?;
        // A 1x1 conv stored as [out, in, 1, 1] for a Linear [out, in]: same elements.
        data.shape = shape.to_vec().into();
        self.used.insert(stored);
        Ok(data)
    }
}
