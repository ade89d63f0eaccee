//! Model source resolution: from what a user types (`--model`, `model.name_or_path`) to the files of the
//! transformer, the VAE and the text encoder.
//!
//! Accepted forms of `name_or_path`:
//!
//! 1. **A diffusers FLUX.2 pipeline folder**: `model_index.json`, `transformer/`, `vae/`, `text_encoder/`,
//!    `tokenizer/tokenizer.json`, `scheduler/scheduler_config.json` (what `Flux2Pipeline.save_pretrained`
//!    writes and `black-forest-labs/FLUX.2-dev` ships). Weights may be sharded (`*.safetensors.index.json`).
//! 2. **A Hugging Face repository id** `owner/name[@revision]` of such a pipeline (when no local path of
//!    that name exists): the needed files are downloaded into, or found in, the Hub cache (see
//!    [`super::hub`] for `HF_TOKEN`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE`).
//! 3. **A transformer checkpoint on its own**: a BFL single file (`flux2-dev.safetensors`, keys optionally
//!    prefixed `model.diffusion_model.`, config from a `config.json` beside it or inferred), a diffusers
//!    `transformer/` folder, or a folder holding one BFL file — anything `flux2_dit::Checkpoint::open`
//!    reads. The VAE then comes from [`SourceOptions::vae`] (a pipeline folder or repository id, a `vae/`
//!    folder, or BFL's `ae.safetensors`), else from `ae.safetensors` next to the file, else from the
//!    pipeline folder the checkpoint sits in (`FLUX.2-dev/transformer` -> `FLUX.2-dev/vae`). The text
//!    encoder comes from [`SourceOptions::text_encoder`] (a pipeline folder or repository id with
//!    `text_encoder/` and `tokenizer/`), else from that enclosing pipeline folder.
//!
//! `SourceOptions::vae` / `text_encoder` also override the components of forms 1 and 2.

use std::path::{Path, PathBuf};

use super::hub::{Component, HubOptions, RepoId, snapshot};
use crate::error::{Error, Result};

/// The text encoder's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextEncoderFiles {
    /// `text_encoder/`: `config.json` and the (possibly sharded) safetensors weights.
    pub model_dir: PathBuf,
    /// `tokenizer/tokenizer.json` (the Tekken tokenizer in Hugging Face `tokenizers` format).
    pub tokenizer: PathBuf,
}

/// Where each model of a FLUX.2 pipeline lives on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// What was asked for (for messages).
    pub name: String,
    /// The diffusers pipeline folder, when the model is one (a Hub snapshot counts).
    pub root: Option<PathBuf>,
    /// Anything `flux2_dit::Checkpoint::open` reads.
    pub transformer: PathBuf,
    /// Anything `flux2_vae::Vae::load` reads.
    pub vae: PathBuf,
    /// `None` when no text encoder was requested or found (prompt embeddings must then be given).
    pub text_encoder: Option<TextEncoderFiles>,
}

/// How to resolve a model name or path.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// VAE source overriding the model's own (see the module docs).
    pub vae: Option<String>,
    /// Text-encoder source overriding the model's own: a pipeline folder or repository id.
    pub text_encoder: Option<String>,
    /// Whether the text encoder is needed (false: neither resolved nor downloaded).
    pub need_text_encoder: bool,
    pub hub: HubOptions,
}

/// Resolves `name_or_path` (see the module docs for the accepted forms).
pub fn resolve_model(name_or_path: &str, options: &SourceOptions) -> Result<ModelFiles> {
    let path = Path::new(name_or_path);
    let need_te = options.need_text_encoder && options.text_encoder.is_none();
    let (root, transformer) = if path.exists() {
        if path.is_dir() && path.join("model_index.json").is_file() {
            (Some(path.to_path_buf()), path.join("transformer"))
        } else {
            (enclosing_pipeline(path), path.to_path_buf())
        }
    } else if let Some(repo) = RepoId::parse(name_or_path) {
        let mut components = vec![Component::Transformer];
        if options.vae.is_none() {
            components.push(Component::Vae);
        }
        if need_te {
            components.push(Component::TextEncoder);
        }
        let root = snapshot(&repo, &components, &options.hub)?;
        (Some(root.clone()), root.join("transformer"))
    } else {
        return Err(Error::Invalid(format!(
            "model `{name_or_path}`: no such file or folder, and not a Hugging Face repository id (`owner/name`)"
        )));
    };
    if let Some(root) = &root {
        check_pipeline_folder(root, need_te)?;
    }
    if !transformer.exists() {
        return Err(Error::Invalid(format!(
            "model `{name_or_path}`: transformer {} does not exist",
            transformer.display()
        )));
    }

    let vae = match &options.vae {
        Some(vae) => resolve_vae(vae, &options.hub)?,
        None => sibling_vae(path, root.as_deref()).ok_or_else(|| {
            Error::Invalid(format!(
                "model `{name_or_path}` is a transformer checkpoint without a VAE beside it (no `ae.safetensors` next to it, \
                 no enclosing pipeline folder with `vae/`): give one (--vae <pipeline folder | repo id | vae folder | ae.safetensors>)"
            ))
        })?,
    };

    let text_encoder = if !options.need_text_encoder {
        None
    } else if let Some(te) = &options.text_encoder {
        Some(resolve_text_encoder(te, &options.hub)?)
    } else {
        match &root {
            Some(root) => Some(pipeline_text_encoder(root)?),
            None => {
                return Err(Error::Invalid(format!(
                    "model `{name_or_path}` is a transformer checkpoint outside a pipeline folder: give the text encoder \
                     (--text-encoder <pipeline folder | repo id> with text_encoder/ and tokenizer/), or prompt embeddings"
                )));
            }
        }
    };
    Ok(ModelFiles { name: name_or_path.to_string(), root, transformer, vae, text_encoder })
}

/// The pipeline folder a transformer checkpoint sits in (`<root>/transformer[/file]`), if any.
fn enclosing_pipeline(path: &Path) -> Option<PathBuf> {
    let start = if path.is_file() { path.parent()? } else { path };
    start.ancestors().take(2).find(|d| d.join("model_index.json").is_file()).map(Path::to_path_buf)
}

fn sibling_vae(path: &Path, root: Option<&Path>) -> Option<PathBuf> {
    if path.is_file() {
        let ae = path.parent()?.join("ae.safetensors");
        if ae.is_file() && ae != path {
            return Some(ae);
        }
    }
    root.map(|r| r.join("vae")).filter(|v| v.is_dir())
}

fn resolve_vae(source: &str, hub: &HubOptions) -> Result<PathBuf> {
    let path = Path::new(source);
    if path.exists() {
        // `Vae::load` itself accepts a pipeline root (uses `vae/`), a `vae/` folder or a weights file.
        return Ok(path.to_path_buf());
    }
    let repo = RepoId::parse(source).ok_or_else(|| {
        Error::Invalid(format!("VAE `{source}`: no such file or folder, and not a repository id (`owner/name`)"))
    })?;
    Ok(snapshot(&repo, &[Component::Vae], hub)?.join("vae"))
}

fn resolve_text_encoder(source: &str, hub: &HubOptions) -> Result<TextEncoderFiles> {
    let path = Path::new(source);
    let root = if path.exists() {
        path.to_path_buf()
    } else {
        let repo = RepoId::parse(source).ok_or_else(|| {
            Error::Invalid(format!("text encoder `{source}`: no such folder, and not a repository id (`owner/name`)"))
        })?;
        snapshot(&repo, &[Component::TextEncoder], hub)?
    };
    pipeline_text_encoder(&root)
}

fn pipeline_text_encoder(root: &Path) -> Result<TextEncoderFiles> {
    let files = TextEncoderFiles {
        model_dir: root.join("text_encoder"),
        tokenizer: root.join("tokenizer").join("tokenizer.json"),
    };
    for (what, path) in [("text encoder folder", &files.model_dir), ("tokenizer", &files.tokenizer)] {
        if !path.exists() {
            return Err(Error::Invalid(format!("{}: the {what} {} does not exist", root.display(), path.display())));
        }
    }
    Ok(files)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", path.display())))
}

/// Checks what `model_index.json` and `scheduler/scheduler_config.json` declare against what this
/// implementation runs: a FLUX.2 pipeline with a Mistral 3 text encoder (when needed) and FLUX.2 [dev]'s
/// flow-matching Euler schedule (dynamic exponential shifting, custom sigmas). Errors name the key.
pub fn check_pipeline_folder(root: &Path, need_text_encoder: bool) -> Result<()> {
    let index_path = root.join("model_index.json");
    let index = read_json(&index_path)?;
    let class = |key: &str| -> Option<String> {
        match index.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(parts) => parts.get(1)?.as_str().map(str::to_string),
            _ => None,
        }
    };
    let bad = |key: &str, message: String| Err(Error::Invalid(format!("{}: `{key}` {message}", index_path.display())));
    match class("_class_name") {
        Some(name) if name.starts_with("Flux2") => {}
        other => {
            return bad("_class_name", format!("is {other:?}, expected a FLUX.2 pipeline (`Flux2Pipeline`)"));
        }
    }
    if need_text_encoder {
        match class("text_encoder") {
            Some(name) if name.starts_with("Mistral3") || name.starts_with("Mistral") => {}
            other => {
                return bad(
                    "text_encoder",
                    format!("is {other:?}; only the Mistral 3 text encoder of FLUX.2 [dev] is implemented"),
                );
            }
        }
    }
    for folder in ["transformer", "vae"] {
        if !root.join(folder).is_dir() {
            return Err(Error::Invalid(format!("{}: the pipeline folder has no `{folder}/`", root.display())));
        }
    }
    let scheduler = root.join("scheduler").join("scheduler_config.json");
    if scheduler.is_file() {
        check_scheduler(&scheduler)?;
    }
    Ok(())
}

/// The scheduler settings the FLUX.2 sampler reproduces (diffusers' `Flux2Pipeline` passes its own sigmas
/// and `mu`, so only these flags change the numbers).
fn check_scheduler(path: &Path) -> Result<()> {
    let config = read_json(path)?;
    let get = |key: &str| config.get(key).cloned().unwrap_or(serde_json::Value::Null);
    let expect = |key: &str, ok: bool, wanted: &str| -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{}: `{key}` is {}, but the FLUX.2 sampler implements {wanted} only",
                path.display(),
                get(key)
            )))
        }
    };
    let class = get("_class_name");
    expect(
        "_class_name",
        class.as_str() == Some("FlowMatchEulerDiscreteScheduler"),
        "FlowMatchEulerDiscreteScheduler",
    )?;
    expect("use_dynamic_shifting", get("use_dynamic_shifting").as_bool() == Some(true), "true")?;
    let shift_type = get("time_shift_type");
    expect("time_shift_type", shift_type.is_null() || shift_type.as_str() == Some("exponential"), "\"exponential\"")?;
    for flag in [
        "use_karras_sigmas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "invert_sigmas",
        "stochastic_sampling",
        "use_flow_sigmas",
    ] {
        expect(flag, get(flag).as_bool() != Some(true), "false")?;
    }
    expect("shift_terminal", get("shift_terminal").is_null(), "null")?;
    let train_steps = get("num_train_timesteps");
    expect("num_train_timesteps", train_steps.is_null() || train_steps.as_u64() == Some(1000), "1000")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const INDEX: &str = r#"{"_class_name": "Flux2Pipeline", "text_encoder": ["transformers", "Mistral3ForConditionalGeneration"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"], "vae": ["diffusers", "AutoencoderKLFlux2"]}"#;
    const SCHEDULER: &str = r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": true,
        "time_shift_type": "exponential", "shift_terminal": null, "use_karras_sigmas": false, "num_train_timesteps": 1000}"#;

    fn pipeline(dir: &Path) {
        write(&dir.join("model_index.json"), INDEX);
        write(&dir.join("scheduler/scheduler_config.json"), SCHEDULER);
        write(&dir.join("transformer/config.json"), "{}");
        write(&dir.join("vae/config.json"), "{}");
        write(&dir.join("text_encoder/config.json"), "{}");
        write(&dir.join("tokenizer/tokenizer.json"), "{}");
    }

    fn options(need_te: bool) -> SourceOptions {
        SourceOptions {
            need_text_encoder: need_te,
            hub: HubOptions { cache_dir: None, token: None, offline: true, endpoint: None },
            ..Default::default()
        }
    }

    #[test]
    fn pipeline_folder_and_transformer_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("FLUX.2-dev");
        pipeline(&root);
        let files = resolve_model(root.to_str().unwrap(), &options(true)).unwrap();
        assert_eq!(files.transformer, root.join("transformer"));
        assert_eq!(files.vae, root.join("vae"));
        assert_eq!(files.text_encoder.as_ref().unwrap().tokenizer, root.join("tokenizer/tokenizer.json"));
        assert!(resolve_model(root.to_str().unwrap(), &options(false)).unwrap().text_encoder.is_none());

        // The transformer folder of a pipeline finds its siblings.
        let files = resolve_model(root.join("transformer").to_str().unwrap(), &options(true)).unwrap();
        assert_eq!(files.root.as_deref(), Some(root.as_path()));
        assert_eq!(files.vae, root.join("vae"));

        // A BFL file beside ae.safetensors (the FLUX.2-dev repository root has both).
        write(&root.join("flux2-dev.safetensors"), "");
        write(&root.join("ae.safetensors"), "");
        let files = resolve_model(root.join("flux2-dev.safetensors").to_str().unwrap(), &options(true)).unwrap();
        assert_eq!(files.vae, root.join("ae.safetensors"));
        assert_eq!(files.text_encoder.unwrap().model_dir, root.join("text_encoder"));

        // A lone BFL file needs --vae and --text-encoder.
        let lone = tmp.path().join("elsewhere/flux2.safetensors");
        write(&lone, "");
        let err = resolve_model(lone.to_str().unwrap(), &options(false)).unwrap_err().to_string();
        assert!(err.contains("--vae"), "{err}");
        let mut opts = options(true);
        opts.vae = Some(root.join("ae.safetensors").display().to_string());
        let err = resolve_model(lone.to_str().unwrap(), &opts).unwrap_err().to_string();
        assert!(err.contains("--text-encoder"), "{err}");
        opts.text_encoder = Some(root.display().to_string());
        let files = resolve_model(lone.to_str().unwrap(), &opts).unwrap();
        assert_eq!(files.transformer, lone);
        assert_eq!(files.text_encoder.unwrap().model_dir, root.join("text_encoder"));
    }

    #[test]
    fn errors_name_the_folder_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("p");
        pipeline(&root);
        std::fs::remove_file(root.join("tokenizer/tokenizer.json")).unwrap();
        let err = resolve_model(root.to_str().unwrap(), &options(true)).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json") && err.contains("does not exist"), "{err}");

        write(
            &root.join("scheduler/scheduler_config.json"),
            &SCHEDULER.replace("\"use_karras_sigmas\": false", "\"use_karras_sigmas\": true"),
        );
        let err = resolve_model(root.to_str().unwrap(), &options(false)).unwrap_err().to_string();
        assert!(err.contains("scheduler_config.json") && err.contains("use_karras_sigmas"), "{err}");

        write(&root.join("model_index.json"), &INDEX.replace("Mistral3ForConditionalGeneration", "Qwen3ForCausalLM"));
        write(&root.join("scheduler/scheduler_config.json"), SCHEDULER);
        let err = resolve_model(root.to_str().unwrap(), &options(true)).unwrap_err().to_string();
        assert!(err.contains("model_index.json") && err.contains("`text_encoder`") && err.contains("Qwen3"), "{err}");

        let err = resolve_model("no/such/place", &options(false)).unwrap_err().to_string();
        assert!(err.contains("no/such/place") && err.contains("repository id"), "{err}");
        let err = resolve_model("owner/not-cached", &options(false)).unwrap_err().to_string();
        assert!(err.contains("owner/not-cached") && err.contains("cache"), "{err}");
    }
}
