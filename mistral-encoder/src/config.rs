//! The language-model configuration, read from `text_encoder/config.json` of a FLUX.2 diffusers folder.
//!
//! FLUX.2-dev ships a `Mistral3ForConditionalGeneration` config whose `text_config` holds the Mistral
//! language model; a plain `MistralForCausalLM`/`MistralModel` config (no `text_config`) is accepted too.
//! Missing fields take the defaults transformers would use, because that is what the reference code runs
//! with: `MistralConfig`'s own defaults inside a `text_config` dict, and Mistral Small 3's values when a
//! `mistral3` config has no `text_config` at all (transformers' `Mistral3Config` sub-config defaults).
//! The JSON is read field by field (not with a derive) so an error can name the exact field.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Hyper-parameters of the Mistral decoder stack (the only part of the checkpoint FLUX.2 runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MistralConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Per-head width. Mistral Small sets it explicitly (128) and it is NOT hidden_size / heads there
    /// (5120 / 32 = 160), so q/o projections are [4096, 5120] / [5120, 4096].
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// RoPE base (1e9 for Mistral Small 3.x).
    pub rope_theta: f64,
    /// Local attention window (keys within `window` positions of the query); `None` = full causal.
    pub sliding_window: Option<usize>,
    pub max_position_embeddings: usize,
}

impl MistralConfig {
    /// Mistral Small 3.1/3.2 24B, the FLUX.2-dev text encoder (facts: `shared/reference/flux2-facts.md` §3).
    pub fn mistral_small_3() -> Self {
        MistralConfig {
            vocab_size: 131072,
            hidden_size: 5120,
            intermediate_size: 32768,
            num_hidden_layers: 40,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 1e9,
            sliding_window: None,
            max_position_embeddings: 131072,
        }
    }

    /// Reads `config.json` (Mistral3 with `text_config`, or plain Mistral).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses config JSON; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let root: Value =
            serde_json::from_str(text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
        let root = root.as_object().ok_or_else(|| Error::config(path, "<root>", "expected a JSON object"))?;
        let model_type = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        match root.get("text_config") {
            Some(Value::Object(text_config)) => Fields { map: text_config, prefix: "text_config.", path }.parse(),
            Some(Value::Null) | None if model_type == "mistral3" => Ok(Self::mistral_small_3()),
            Some(Value::Null) | None => Fields { map: root, prefix: "", path }.parse(),
            Some(_) => Err(Error::config(path, "text_config", "expected an object")),
        }
    }

    /// Query projection width (heads × head_dim).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Key/value projection width (KV heads × head_dim).
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Checks the internal consistency the forward pass relies on.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::config(path, field, "must be positive"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(Error::config(
                path,
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::config(
                path,
                "head_dim",
                format!("{} is odd; rotate-half RoPE needs an even width", self.head_dim),
            ));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return Err(Error::config(path, "rope_theta", format!("{} must be positive", self.rope_theta)));
        }
        Ok(())
    }
}

/// One JSON object plus where it sits, for error messages.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> Error {
        Error::config(self.path, &format!("{}{}", self.prefix, field), message)
    }

    /// `None` when absent or null.
    fn usize_opt(&self, field: &str) -> Result<Option<usize>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(field, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn usize_or(&self, field: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(field)?.unwrap_or(default))
    }

    fn f64_opt(&self, field: &str) -> Result<Option<f64>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.err(field, format!("expected a number, got {v}"))),
        }
    }

    fn parse(&self) -> Result<MistralConfig> {
        // Defaults: transformers 5.23 `MistralConfig`.
        let hidden_size = self.usize_or("hidden_size", 4096)?;
        let num_attention_heads = self.usize_or("num_attention_heads", 32)?;
        if num_attention_heads == 0 {
            return Err(self.err("num_attention_heads", "must be positive"));
        }
        let num_key_value_heads = self.usize_or("num_key_value_heads", 8)?;
        let head_dim = self.usize_opt("head_dim")?.unwrap_or(hidden_size / num_attention_heads);

        if let Some(act) = self.map.get("hidden_act")
            && act.as_str() != Some("silu")
        {
            return Err(self.err("hidden_act", format!("{act} is not supported (Mistral uses \"silu\")")));
        }

        // Absent -> MistralConfig's default window 4096; explicit null -> full attention.
        let sliding_window = match self.map.get("sliding_window") {
            None => Some(4096),
            Some(Value::Null) => None,
            Some(_) => self.usize_opt("sliding_window")?,
        };

        Ok(MistralConfig {
            vocab_size: self.usize_or("vocab_size", 32000)?,
            hidden_size,
            intermediate_size: self.usize_or("intermediate_size", 14336)?,
            num_hidden_layers: self.usize_or("num_hidden_layers", 32)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: self.f64_opt("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: self.rope_theta()?,
            sliding_window,
            max_position_embeddings: self.usize_or("max_position_embeddings", 131072)?,
        })
    }

    /// transformers' priority: `rope_parameters` (or legacy `rope_scaling`) dict, then top-level
    /// `rope_theta`, then 10000. Only the plain ("default") RoPE is implemented; anything else is an error
    /// rather than silently different numbers.
    fn rope_theta(&self) -> Result<f64> {
        let top = self.f64_opt("rope_theta")?;
        for field in ["rope_parameters", "rope_scaling"] {
            match self.map.get(field) {
                None | Some(Value::Null) => continue,
                Some(Value::Object(params)) => {
                    let kind = params
                        .get("rope_type")
                        .or_else(|| params.get("type"))
                        .and_then(Value::as_str)
                        .unwrap_or("default");
                    if kind != "default" {
                        return Err(self.err(
                            &format!("{field}.rope_type"),
                            format!("\"{kind}\" is not supported (only \"default\")"),
                        ));
                    }
                    return match params.get("rope_theta") {
                        None | Some(Value::Null) => Ok(top.unwrap_or(10_000.0)),
                        Some(v) => v.as_f64().ok_or_else(|| {
                            self.err(&format!("{field}.rope_theta"), format!("expected a number, got {v}"))
                        }),
                    };
                }
                Some(v) => return Err(self.err(field, format!("expected an object, got {v}"))),
            }
        }
        Ok(top.unwrap_or(10_000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MistralConfig> {
        MistralConfig::from_json_str(json, Path::new("config.json"))
    }

    #[test]
    fn mistral3_with_text_config() {
        let c = parse(
            r#"{"model_type":"mistral3","text_config":{"model_type":"mistral","hidden_size":5120,"head_dim":128,
            "intermediate_size":32768,"num_hidden_layers":40,"num_attention_heads":32,"num_key_value_heads":8,
            "rms_norm_eps":1e-05,"rope_theta":1000000000.0,"sliding_window":null,"vocab_size":131072},
            "vision_config":{"hidden_size":1024}}"#,
        )
        .unwrap();
        assert_eq!(c, MistralConfig::mistral_small_3());
        assert_eq!((c.q_dim(), c.kv_dim()), (4096, 1024));
    }

    #[test]
    fn transformers5_rope_parameters_win() {
        let c =
            parse(r#"{"text_config":{"rope_parameters":{"rope_theta":1e9,"rope_type":"default"},"rope_theta":5.0}}"#)
                .unwrap();
        assert_eq!(c.rope_theta, 1e9);
    }

    #[test]
    fn plain_mistral_defaults() {
        let c = parse(r#"{"model_type":"mistral","hidden_size":64,"num_attention_heads":4,"num_key_value_heads":2}"#)
            .unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.sliding_window, Some(4096)); // absent -> transformers' default window
        assert_eq!(c.rope_theta, 10_000.0);
        assert_eq!(c.rms_norm_eps, 1e-6);
    }

    #[test]
    fn mistral3_without_text_config_is_mistral_small() {
        assert_eq!(parse(r#"{"model_type":"mistral3"}"#).unwrap(), MistralConfig::mistral_small_3());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(r#"{"text_config":{"hidden_size":"big"}}"#).unwrap_err().to_string();
        assert!(e.contains("text_config.hidden_size"), "{e}");
        let e =
            parse(r#"{"text_config":{"rope_parameters":{"rope_type":"yarn","factor":4}}}"#).unwrap_err().to_string();
        assert!(e.contains("text_config.rope_parameters.rope_type") && e.contains("yarn"), "{e}");
        let e = parse(r#"{"hidden_act":"gelu"}"#).unwrap_err().to_string();
        assert!(e.contains("hidden_act"), "{e}");
        let e = parse("{").unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("invalid JSON"), "{e}");
        let e = MistralConfig { num_key_value_heads: 3, ..MistralConfig::mistral_small_3() }
            .validate(Path::new("c.json"))
            .unwrap_err();
        assert!(e.to_string().contains("num_key_value_heads"), "{e}");
    }
}
