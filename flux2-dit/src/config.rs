//! `Flux2Config` mirrors diffusers' `transformer/config.json` field for field, so a diffusers folder's
//! config deserializes unchanged (unknown keys such as `_class_name` are ignored).

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Flux2Config {
    pub patch_size: usize,
    pub in_channels: usize,
    pub out_channels: Option<usize>,
    /// Double-stream blocks.
    pub num_layers: usize,
    /// Single-stream blocks.
    pub num_single_layers: usize,
    pub attention_head_dim: usize,
    pub num_attention_heads: usize,
    pub joint_attention_dim: usize,
    pub timestep_guidance_channels: usize,
    pub mlp_ratio: f64,
    pub axes_dims_rope: Vec<usize>,
    pub rope_theta: f64,
    pub eps: f64,
    pub guidance_embeds: bool,
}

impl Default for Flux2Config {
    /// diffusers' constructor defaults, which are FLUX.2 [dev].
    fn default() -> Self {
        Self {
            patch_size: 1,
            in_channels: 128,
            out_channels: None,
            num_layers: 8,
            num_single_layers: 48,
            attention_head_dim: 128,
            num_attention_heads: 48,
            joint_attention_dim: 15360,
            timestep_guidance_channels: 256,
            mlp_ratio: 3.0,
            axes_dims_rope: vec![32, 32, 32, 32],
            rope_theta: 2000.0,
            eps: 1e-6,
            guidance_embeds: true,
        }
    }
}

/// The most blocks of either kind a config may declare (FLUX.2 [dev] has 8 + 48).
pub const MAX_BLOCKS: usize = 1024;

/// The widest dimension a config may declare (FLUX.2 [dev]'s model width is 6144).
pub const MAX_WIDTH: usize = 65_536;

impl Flux2Config {
    /// FLUX.2 [dev]: 32B parameters.
    pub fn dev() -> Self {
        Self::default()
    }

    /// FLUX.2 [klein] 4B: no guidance embedding (not guidance-distilled).
    pub fn klein_4b() -> Self {
        Self {
            num_layers: 5,
            num_single_layers: 20,
            num_attention_heads: 24,
            joint_attention_dim: 7680,
            guidance_embeds: false,
            ..Self::default()
        }
    }

    /// FLUX.2 [klein] 9B.
    pub fn klein_9b() -> Self {
        Self {
            num_layers: 8,
            num_single_layers: 24,
            num_attention_heads: 32,
            joint_attention_dim: 12288,
            guidance_embeds: false,
            ..Self::default()
        }
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| Error::Config { path: path.to_path_buf(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json_string(&self) -> String {
        let mut value = serde_json::to_value(self).expect("config serializes");
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("_class_name".into(), "Flux2Transformer2DModel".into());
        }
        serde_json::to_string_pretty(&value).expect("json serializes")
    }

    /// Checks the relations the forward pass relies on; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, message: String| Err(Error::InvalidConfig { field, message });
        if self.patch_size != 1 {
            return bad(
                "patch_size",
                format!("{} (FLUX.2 packs 2x2 in the VAE latents; only 1 is supported)", self.patch_size),
            );
        }
        if self.attention_head_dim == 0 || self.num_attention_heads == 0 {
            return bad("attention_head_dim", "head dim and head count must be positive".into());
        }
        let rope: usize = self.axes_dims_rope.iter().sum();
        if rope != self.attention_head_dim {
            return bad(
                "axes_dims_rope",
                format!(
                    "{:?} sums to {rope}, but attention_head_dim is {}",
                    self.axes_dims_rope, self.attention_head_dim
                ),
            );
        }
        if self.axes_dims_rope.iter().any(|d| d % 2 != 0) {
            return bad("axes_dims_rope", format!("{:?}: every axis needs an even size", self.axes_dims_rope));
        }
        if self.in_channels == 0 || self.joint_attention_dim == 0 || !self.timestep_guidance_channels.is_multiple_of(2)
        {
            return bad(
                "in_channels",
                "in_channels, joint_attention_dim must be positive and timestep_guidance_channels even".into(),
            );
        }
        // Sizes far beyond any FLUX.2 (a damaged or hostile config.json) are refused before anything is
        // allocated: the largest limits below still describe a model of trillions of parameters.
        let limits: [(&'static str, usize, usize); 7] = [
            ("num_layers", self.num_layers, MAX_BLOCKS),
            ("num_single_layers", self.num_single_layers, MAX_BLOCKS),
            ("num_attention_heads", self.num_attention_heads, MAX_WIDTH),
            ("attention_head_dim", self.attention_head_dim, MAX_WIDTH),
            ("in_channels", self.in_channels, MAX_WIDTH),
            ("joint_attention_dim", self.joint_attention_dim, MAX_WIDTH * 4),
            ("timestep_guidance_channels", self.timestep_guidance_channels, MAX_WIDTH),
        ];
        for (field, value, max) in limits {
            if value > max {
                return bad(field, format!("{value} is out of range (at most {max})"));
            }
        }
        if self.inner_dim() > MAX_WIDTH {
            return bad(
                "num_attention_heads",
                format!(
                    "{} heads x {} = {} is wider than {MAX_WIDTH}",
                    self.num_attention_heads,
                    self.attention_head_dim,
                    self.inner_dim()
                ),
            );
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= 16.0) {
            return bad("mlp_ratio", format!("{} must be a number in (0, 16]", self.mlp_ratio));
        }
        Ok(())
    }

    /// Model width D.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// SwiGLU hidden width F (`int(D * mlp_ratio)` as in diffusers).
    pub fn mlp_hidden_dim(&self) -> usize {
        (self.inner_dim() as f64 * self.mlp_ratio) as usize
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels) * self.patch_size * self.patch_size
    }

    /// Exact parameter count from the config alone (no allocation): every Linear is bias-free and the
    /// only other weights are the q/k RMSNorm scales.
    pub fn parameter_count(&self) -> u64 {
        let d = self.inner_dim() as u64;
        let f = self.mlp_hidden_dim() as u64;
        let hd = self.attention_head_dim as u64;
        let t = self.timestep_guidance_channels as u64;
        let embed_mlp = t * d + d * d;
        let time = embed_mlp * if self.guidance_embeds { 2 } else { 1 };
        let modulation = d * 6 * d * 2 + d * 3 * d;
        let embedders = self.in_channels as u64 * d + self.joint_attention_dim as u64 * d;
        // Per stream: qkv, proj, mlp in (2F) and out, and two RMSNorm scales.
        let stream = d * 3 * d + d * d + d * 2 * f + f * d + 2 * hd;
        let double = 2 * stream;
        let single = d * (3 * d + 2 * f) + (d + f) * d + 2 * hd;
        let final_layer = d * 2 * d + d * self.out_channels() as u64;
        time + modulation
            + embedders
            + self.num_layers as u64 * double
            + self.num_single_layers as u64 * single
            + final_layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_parameter_count_matches_flux2_dev() {
        assert_eq!(Flux2Config::dev().parameter_count(), 32_223_281_152);
    }

    #[test]
    fn reads_diffusers_config_unchanged() {
        let json = r#"{"_class_name": "Flux2Transformer2DModel", "_diffusers_version": "0.42.1",
            "attention_head_dim": 128, "axes_dims_rope": [32, 32, 32, 32], "eps": 1e-06,
            "guidance_embeds": true, "in_channels": 128, "joint_attention_dim": 15360, "mlp_ratio": 3.0,
            "num_attention_heads": 48, "num_layers": 8, "num_single_layers": 48, "out_channels": null,
            "patch_size": 1, "rope_theta": 2000, "timestep_guidance_channels": 256}"#;
        let c: Flux2Config = serde_json::from_str(json).unwrap();
        assert_eq!(c, Flux2Config::dev());
    }

    #[test]
    fn rejects_absurd_sizes_naming_the_field() {
        for (c, field) in [
            (Flux2Config { num_layers: 4_000_000_000, ..Flux2Config::dev() }, "num_layers"),
            (Flux2Config { num_single_layers: 100_000, ..Flux2Config::dev() }, "num_single_layers"),
            (Flux2Config { mlp_ratio: f64::NAN, ..Flux2Config::dev() }, "mlp_ratio"),
            (Flux2Config { num_attention_heads: 48_000, ..Flux2Config::dev() }, "num_attention_heads"),
        ] {
            let msg = c.validate().unwrap_err().to_string();
            assert!(msg.contains(field), "{msg}");
        }
        Flux2Config::dev().validate().unwrap();
    }

    #[test]
    fn rejects_rope_axes_not_summing_to_head_dim() {
        let c = Flux2Config { axes_dims_rope: vec![16, 16], ..Flux2Config::dev() };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("axes_dims_rope"), "{msg}");
    }
}
