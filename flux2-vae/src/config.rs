//! `VaeConfig`: diffusers' `vae/config.json` for `AutoencoderKLFlux2`, read unchanged.
//!
//! Field names and defaults are those of the diffusers constructor, so a config written by
//! `save_pretrained` (or the one in the FLUX.2 [dev] repository) deserializes as is. Keys this crate does
//! not need (`_class_name`, `sample_size`, `_diffusers_version`, ...) are ignored, except that a
//! `_class_name` other than `AutoencoderKLFlux2` is rejected by [`VaeConfig::validate`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const DOWN_BLOCK: &str = "DownEncoderBlock2D";
const UP_BLOCK: &str = "UpDecoderBlock2D";

/// Architecture hyper-parameters of the FLUX.2 autoencoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// diffusers class name, when the config came from a file.
    #[serde(rename = "_class_name", default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Image channels in (3).
    #[serde(default = "d_3")]
    pub in_channels: usize,
    /// Image channels out (3).
    #[serde(default = "d_3")]
    pub out_channels: usize,
    /// One entry per encoder level; only `DownEncoderBlock2D` exists for this model.
    #[serde(default = "d_down_blocks")]
    pub down_block_types: Vec<String>,
    /// One entry per decoder level; only `UpDecoderBlock2D` exists for this model.
    #[serde(default = "d_up_blocks")]
    pub up_block_types: Vec<String>,
    /// Encoder channels per level (and decoder channels unless `decoder_block_out_channels` is set).
    #[serde(default = "d_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    /// Decoder channels per level, listed like `block_out_channels` (level 0 = full resolution).
    #[serde(default)]
    pub decoder_block_out_channels: Option<Vec<usize>>,
    /// ResNet blocks per encoder level (the decoder has one more per level).
    #[serde(default = "d_2")]
    pub layers_per_block: usize,
    /// Activation; diffusers accepts `silu` and its alias `swish`.
    #[serde(default = "d_act")]
    pub act_fn: String,
    /// Channels of the posterior mean (before the 2x2 patchify).
    #[serde(default = "d_32")]
    pub latent_channels: usize,
    /// GroupNorm groups everywhere (eps is fixed at 1e-6 by the architecture).
    #[serde(default = "d_32")]
    pub norm_num_groups: usize,
    /// 1x1 conv after the encoder.
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    /// 1x1 conv before the decoder.
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// Self-attention between the two mid-block ResNets (encoder and decoder).
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    /// eps of the latent batch-norm statistics: std = sqrt(running_var + eps).
    #[serde(default = "d_bn_eps")]
    pub batch_norm_eps: f64,
    /// Training-only batch-norm momentum; kept for round-tripping the file.
    #[serde(default = "d_bn_momentum")]
    pub batch_norm_momentum: f64,
    /// Latent patch size; the FLUX.2 pipeline hard-codes 2x2.
    #[serde(default = "d_patch")]
    pub patch_size: [usize; 2],
}

fn d_3() -> usize {
    3
}
fn d_2() -> usize {
    2
}
fn d_32() -> usize {
    32
}
fn d_true() -> bool {
    true
}
fn d_act() -> String {
    "silu".into()
}
fn d_bn_eps() -> f64 {
    1e-4
}
fn d_bn_momentum() -> f64 {
    0.1
}
fn d_patch() -> [usize; 2] {
    [2, 2]
}
fn d_block_out_channels() -> Vec<usize> {
    vec![128, 256, 512, 512]
}
fn d_down_blocks() -> Vec<String> {
    vec![DOWN_BLOCK.to_string(); 4]
}
fn d_up_blocks() -> Vec<String> {
    vec![UP_BLOCK.to_string(); 4]
}

impl Default for VaeConfig {
    /// The diffusers constructor defaults, which are the FLUX.2 values.
    fn default() -> Self {
        Self::flux2()
    }
}

impl VaeConfig {
    /// FLUX.2 [dev] (and klein) autoencoder: 4 levels of [128, 256, 512, 512], 2 ResNets per level,
    /// 32 latent channels (128 after patchify), 32 groups, quant convs, mid attention, bn eps 1e-4.
    pub fn flux2() -> Self {
        Self {
            class_name: Some("AutoencoderKLFlux2".into()),
            in_channels: 3,
            out_channels: 3,
            down_block_types: d_down_blocks(),
            up_block_types: d_up_blocks(),
            block_out_channels: d_block_out_channels(),
            decoder_block_out_channels: None,
            layers_per_block: 2,
            act_fn: d_act(),
            latent_channels: 32,
            norm_num_groups: 32,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            batch_norm_eps: 1e-4,
            batch_norm_momentum: 0.1,
            patch_size: [2, 2],
        }
    }

    /// Parses a `config.json` and validates it.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self =
            serde_json::from_str(&text).map_err(|source| Error::ConfigParse { path: path.into(), source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses config JSON text and validates it (`origin` only names the source in errors).
    pub fn from_json_str(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let cfg: Self =
            serde_json::from_str(text).map_err(|source| Error::ConfigParse { path: origin.as_ref().into(), source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Decoder channels per level (level 0 = full resolution).
    pub fn decoder_channels(&self) -> &[usize] {
        self.decoder_block_out_channels.as_deref().unwrap_or(&self.block_out_channels)
    }

    /// Number of resolution levels.
    pub fn levels(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Spatial downscale of the autoencoder itself: 2^(levels-1) (8 for FLUX.2).
    pub fn vae_scale_factor(&self) -> usize {
        1 << (self.levels() - 1)
    }

    /// Downscale from pixels to patchified latents (16 for FLUX.2). Image sides must be multiples of it.
    pub fn latent_scale_factor(&self) -> usize {
        self.vae_scale_factor() * self.patch_size[0]
    }

    /// Channels of the normalized patchified latents (128 for FLUX.2).
    pub fn patchified_channels(&self) -> usize {
        self.latent_channels * self.patch_size[0] * self.patch_size[1]
    }

    /// Checks everything the implementation relies on; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if let Some(name) = &self.class_name {
            if name != "AutoencoderKLFlux2" {
                return bad("_class_name", format!("`{name}` is not AutoencoderKLFlux2 (the FLUX.2 VAE)"));
            }
        }
        let n = self.block_out_channels.len();
        if n == 0 {
            return bad("block_out_channels", "must not be empty".into());
        }
        if n > 12 {
            return bad("block_out_channels", format!("{n} levels is not a plausible autoencoder"));
        }
        if self.down_block_types.len() != n {
            return bad(
                "down_block_types",
                format!("{} entries but block_out_channels has {n}", self.down_block_types.len()),
            );
        }
        if let Some(t) = self.down_block_types.iter().find(|t| t.as_str() != DOWN_BLOCK) {
            return bad("down_block_types", format!("`{t}` is not supported (only {DOWN_BLOCK})"));
        }
        if self.up_block_types.len() != n {
            return bad(
                "up_block_types",
                format!("{} entries but block_out_channels has {n}", self.up_block_types.len()),
            );
        }
        if let Some(t) = self.up_block_types.iter().find(|t| t.as_str() != UP_BLOCK) {
            return bad("up_block_types", format!("`{t}` is not supported (only {UP_BLOCK})"));
        }
        if let Some(dec) = &self.decoder_block_out_channels {
            if dec.len() != n {
                return bad(
                    "decoder_block_out_channels",
                    format!("{} entries but block_out_channels has {n}", dec.len()),
                );
            }
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return bad("act_fn", format!("`{}` is not supported (silu/swish)", self.act_fn));
        }
        if self.layers_per_block == 0 {
            return bad("layers_per_block", "must be at least 1".into());
        }
        if self.latent_channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return bad("latent_channels", "channel counts must be positive".into());
        }
        if self.norm_num_groups == 0 {
            return bad("norm_num_groups", "must be positive".into());
        }
        let g = self.norm_num_groups;
        for (field, chans) in [
            ("block_out_channels", &self.block_out_channels[..]),
            ("decoder_block_out_channels", self.decoder_channels()),
        ] {
            if let Some(c) = chans.iter().find(|&&c| c == 0 || c % g != 0) {
                return bad(field, format!("{c} channels is not a positive multiple of norm_num_groups {g}"));
            }
        }
        if self.patch_size != [2, 2] {
            return bad(
                "patch_size",
                format!("{:?} is not supported: the FLUX.2 pipeline patchifies 2x2", self.patch_size),
            );
        }
        if !(self.batch_norm_eps.is_finite() && self.batch_norm_eps >= 0.0) {
            return bad("batch_norm_eps", format!("{} is not a non-negative number", self.batch_norm_eps));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux2_preset_matches_diffusers_defaults() {
        let parsed: VaeConfig = serde_json::from_str("{}").unwrap();
        let mut preset = VaeConfig::flux2();
        preset.class_name = None;
        assert_eq!(parsed, preset);
        assert_eq!(preset.latent_scale_factor(), 16);
        assert_eq!(preset.patchified_channels(), 128);
        preset.validate().unwrap();
    }

    #[test]
    fn reads_a_diffusers_config_unchanged() {
        let text = r#"{"_class_name": "AutoencoderKLFlux2", "_diffusers_version": "0.42.1",
            "act_fn": "silu", "batch_norm_eps": 0.0001, "batch_norm_momentum": 0.1,
            "block_out_channels": [128, 256, 512, 512], "decoder_block_out_channels": null,
            "down_block_types": ["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],
            "force_upcast": true, "in_channels": 3, "latent_channels": 32, "layers_per_block": 2,
            "mid_block_add_attention": true, "norm_num_groups": 32, "out_channels": 3,
            "patch_size": [2, 2], "sample_size": 1024,
            "up_block_types": ["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"],
            "use_post_quant_conv": true, "use_quant_conv": true}"#;
        let cfg = VaeConfig::from_json_str(text, "config.json").unwrap();
        assert_eq!(cfg, VaeConfig::flux2());
    }

    #[test]
    fn rejects_other_models_and_bad_fields() {
        let err = VaeConfig::from_json_str(r#"{"_class_name": "AutoencoderKL"}"#, "x").unwrap_err();
        assert!(err.to_string().contains("_class_name"), "{err}");
        let err = VaeConfig::from_json_str(r#"{"norm_num_groups": 5}"#, "x").unwrap_err();
        assert!(err.to_string().contains("norm_num_groups"), "{err}");
        let err = VaeConfig::from_json_str(r#"{"decoder_block_out_channels": [1, 2]}"#, "x").unwrap_err();
        assert!(err.to_string().contains("decoder_block_out_channels"), "{err}");
        let err = VaeConfig::from_json_str(r#"{"latent_channels": "x"}"#, "cfg.json").unwrap_err();
        assert!(err.to_string().contains("cfg.json"), "{err}");
    }
}
