//! A tiny FLUX.2 pipeline in diffusers folder layout, written deterministically from a seed: every real
//! component (Mistral text encoder with the real Tekken tokenizer, FLUX.2 transformer, FLUX.2 VAE with
//! its latent batch-norm statistics) at a width a 2-core CPU trains in minutes.
//!
//! [`write_pipeline`] draws the weights at random (seeded): the start of `flux2-train pretrain-demo`
//! ([`super::pretrain`]). [`write_pretrained_pipeline`] writes the base the demo trains on: the transformer
//! and VAE that recipe produced (embedded, f32, 7.5 MB), beside the same seeded text encoder. Loading goes
//! through the same code paths as FLUX.2 [dev].

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use flux2_dit::{Flux2Config, Flux2Transformer, RandomSource, save_diffusers_folder};
use flux2_ops::writer::{PendingTensor, write_safetensors};
use flux2_vae::VaeConfig;
use flux2_vae::params::{ParamKind, RawSource};

use crate::error::{Error, Result};

/// The real Tekken tokenizer (`tokenizer.json` of FLUX.2 [dev]), zstd-compressed.
const TOKENIZER_ZST: &[u8] = include_bytes!("../../../tests/fixtures/text_encoder/tokenizer.json.zst");
/// What transformers needs beside `tokenizer.json` for diffusers' `Flux2Pipeline` (left padding, special
/// tokens) and the FLUX.2 chat format (`[SYSTEM_PROMPT]..[/SYSTEM_PROMPT][INST]..[/INST]`): the files of the
/// committed pipeline fixture, which diffusers itself loads (`tools/fixtures/gen_pipeline.py`).
const TOKENIZER_CONFIG: &str = include_str!("../../../tests/fixtures/pipeline/model/tokenizer/tokenizer_config.json");
const CHAT_TEMPLATE: &str = include_str!("../../../tests/fixtures/pipeline/model/tokenizer/chat_template.jinja");

/// The pretrained base's transformer and VAE weights (`flux2-train pretrain-demo` with its defaults).
const BASE_TRANSFORMER: &[u8] = include_bytes!("base/transformer.safetensors");
const BASE_VAE: &[u8] = include_bytes!("base/vae.safetensors");

/// Sizes of the demo pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoPipelineSpec {
    pub seed: u64,
    pub transformer: Flux2Config,
    pub vae: VaeConfig,
    /// Mistral text model: hidden size, layers, heads, kv heads, head dim, MLP width.
    pub text_hidden: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub text_kv_heads: usize,
    pub text_head_dim: usize,
    pub text_intermediate: usize,
}

impl Default for DemoPipelineSpec {
    fn default() -> Self {
        let vae = VaeConfig {
            block_out_channels: vec![8, 16, 32, 32],
            layers_per_block: 1,
            latent_channels: 8,
            norm_num_groups: 8,
            ..VaeConfig::flux2()
        };
        let (text_hidden, text_layers) = (32, 3);
        let transformer = Flux2Config {
            in_channels: vae.patchified_channels(),
            num_layers: 2,
            num_single_layers: 2,
            attention_head_dim: 32,
            num_attention_heads: 4,
            joint_attention_dim: text_hidden * text_layers,
            timestep_guidance_channels: 64,
            axes_dims_rope: vec![8, 8, 8, 8],
            ..Flux2Config::dev()
        };
        DemoPipelineSpec {
            seed: 20261125,
            transformer,
            vae,
            text_hidden,
            text_layers,
            text_heads: 4,
            text_kv_heads: 2,
            text_head_dim: 8,
            text_intermediate: 64,
        }
    }
}

impl DemoPipelineSpec {
    /// FLUX.2 [dev]'s real sizes (32B transformer, Mistral Small 3.x 24B text encoder, FLUX.2 VAE), for
    /// [`write_pipeline_configs`]: far too large to write with weights, drawn at random on the device
    /// instead (`flux2-train train --random-weights`). Its text encoder feeds layers 10, 20, 30.
    pub fn flux2_dev() -> Self {
        DemoPipelineSpec {
            seed: 0,
            transformer: Flux2Config::dev(),
            vae: VaeConfig::flux2(),
            text_hidden: 5120,
            text_layers: 40,
            text_heads: 32,
            text_kv_heads: 8,
            text_head_dim: 128,
            text_intermediate: 32768,
        }
    }

    /// The hidden-state layers to stack: all of the tiny encoder's (FLUX.2 [dev] uses 10, 20, 30).
    pub fn text_encoder_out_layers(&self) -> Vec<usize> {
        (1..=self.text_layers).collect()
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// Records every parameter the VAE asks for while drawing it from the seeded source, so the written
/// file holds exactly the keys and shapes the loader expects.
struct Recording {
    inner: flux2_vae::RandomSource,
    tensors: Vec<(String, TensorData)>,
}

impl RawSource for Recording {
    fn fetch(&mut self, name: &str, shape: &[usize], kind: ParamKind, dtype: DType) -> flux2_vae::Result<TensorData> {
        let data = self.inner.fetch(name, shape, kind, DType::F32)?;
        self.tensors.push((name.to_string(), data.clone()));
        Ok(data.convert_dtype(dtype))
    }
}

fn pt_metadata() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), "pt".to_string())])
}

fn write_tensors(path: &Path, tensors: Vec<(String, TensorData)>) -> Result<()> {
    let pending = tensors.into_iter().map(|(name, data)| PendingTensor::ready(name, data, DType::F32)).collect();
    Ok(write_safetensors(path, pending, &pt_metadata())?)
}

fn write_transformer<B: Backend>(dir: &Path, spec: &DemoPipelineSpec, device: &B::Device) -> Result<()> {
    let mut source = RandomSource::new(spec.seed);
    let model = Flux2Transformer::<B>::from_source(&spec.transformer, &mut source, DType::F32, device)?;
    Ok(save_diffusers_folder(&model, dir, DType::F32)?)
}

fn write_vae<B: Backend>(dir: &Path, spec: &DemoPipelineSpec, device: &B::Device) -> Result<()> {
    mkdir(dir)?;
    let mut recording = Recording { inner: flux2_vae::RandomSource::new(spec.seed ^ 0x5641_4500), tensors: Vec::new() };
    flux2_vae::Vae::<B>::from_source(spec.vae.clone(), &mut recording, device, DType::F32, flux2_vae::Parts::Both)?;
    write_vae_config(dir, spec)?;
    write_tensors(&dir.join("diffusion_pytorch_model.safetensors"), recording.tensors)
}

fn write_vae_config(dir: &Path, spec: &DemoPipelineSpec) -> Result<()> {
    let config = serde_json::to_value(&spec.vae).map_err(|e| Error::Invalid(format!("vae config: {e}")))?;
    write_json(&dir.join("config.json"), &config)
}

/// The Tekken tokenizer's vocabulary (Mistral Small 3.x's embedding rows).
const VOCAB: usize = 131072;

fn write_text_encoder_config(dir: &Path, spec: &DemoPipelineSpec) -> Result<()> {
    mkdir(dir)?;
    let (vocab, h, i) = (VOCAB, spec.text_hidden, spec.text_intermediate);
    let config = serde_json::json!({
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "vocab_size": vocab,
        "hidden_size": h,
        "intermediate_size": i,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "head_dim": spec.text_head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 1_000_000_000.0,
        "max_position_embeddings": 131072,
        "sliding_window": null,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
    });
    write_json(&dir.join("config.json"), &config)
}

fn write_text_encoder(dir: &Path, spec: &DemoPipelineSpec) -> Result<()> {
    write_text_encoder_config(dir, spec)?;
    let vocab = VOCAB;
    let (h, i) = (spec.text_hidden, spec.text_intermediate);
    let (q, kv) = (spec.text_heads * spec.text_head_dim, spec.text_kv_heads * spec.text_head_dim);
    let mut rng = flux2_ops::Rng::new(spec.seed ^ 0x4d49_5354);
    let mut random = |shape: [usize; 2], std: f32| {
        let values: Vec<f32> = (0..shape[0] * shape[1]).map(|_| rng.normal() as f32 * std).collect();
        TensorData::new(values, shape)
    };
    let ones = |n: usize| TensorData::new(vec![1.0f32; n], [n]);
    let mut tensors = vec![("model.embed_tokens.weight".to_string(), random([vocab, h], 1.0))];
    for l in 0..spec.text_layers {
        let p = format!("model.layers.{l}.");
        let fan = |n: usize| 1.0 / (n as f32).sqrt();
        tensors.push((format!("{p}self_attn.q_proj.weight"), random([q, h], fan(h))));
        tensors.push((format!("{p}self_attn.k_proj.weight"), random([kv, h], fan(h))));
        tensors.push((format!("{p}self_attn.v_proj.weight"), random([kv, h], fan(h))));
        tensors.push((format!("{p}self_attn.o_proj.weight"), random([h, q], fan(q))));
        tensors.push((format!("{p}mlp.gate_proj.weight"), random([i, h], fan(h))));
        tensors.push((format!("{p}mlp.up_proj.weight"), random([i, h], fan(h))));
        tensors.push((format!("{p}mlp.down_proj.weight"), random([h, i], fan(i))));
        tensors.push((format!("{p}input_layernorm.weight"), ones(h)));
        tensors.push((format!("{p}post_attention_layernorm.weight"), ones(h)));
    }
    tensors.push(("model.norm.weight".to_string(), ones(h)));
    write_tensors(&dir.join("model.safetensors"), tensors)
}

fn write_tokenizer(dir: &Path) -> Result<()> {
    mkdir(dir)?;
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(TOKENIZER_ZST)
        .map_err(|e| Error::Invalid(format!("embedded tokenizer: {e}")))?;
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut decoder, &mut json)
        .map_err(|e| Error::Invalid(format!("embedded tokenizer: {e}")))?;
    for (name, bytes) in [
        ("tokenizer.json", json.as_slice()),
        ("tokenizer_config.json", TOKENIZER_CONFIG.as_bytes()),
        ("chat_template.jinja", CHAT_TEMPLATE.as_bytes()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Writes the pipeline folder (`model_index.json`, `scheduler/`, `text_encoder/`, `tokenizer/`,
/// `transformer/`, `vae/`). Same spec, same bytes.
pub fn write_pipeline<B: Backend>(root: &Path, spec: &DemoPipelineSpec, device: &B::Device) -> Result<()> {
    write_index(root)?;
    write_transformer::<B>(&root.join("transformer"), spec, device)?;
    write_vae::<B>(&root.join("vae"), spec, device)?;
    write_text_encoder(&root.join("text_encoder"), spec)?;
    write_tokenizer(&root.join("tokenizer"))
}

/// The demo's base: [`write_pipeline`]'s folder with the pretrained transformer and VAE in place of the
/// random ones (the text encoder is the seeded one the pretraining conditioned on).
pub fn write_pretrained_pipeline(root: &Path) -> Result<()> {
    let spec = DemoPipelineSpec::default();
    write_pipeline_configs(root, &spec)?;
    write_text_encoder(&root.join("text_encoder"), &spec)?;
    for (dir, bytes) in [("transformer", BASE_TRANSFORMER), ("vae", BASE_VAE)] {
        let path = root.join(dir).join("diffusion_pytorch_model.safetensors");
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// The pipeline folder of [`write_pipeline`] without weight files: every component's `config.json`,
/// the scheduler and the real tokenizer. Loaders read it with random weights
/// (`PipelineOptions::random_weights`); with `DemoPipelineSpec::flux2_dev()` it is FLUX.2 [dev]'s layout.
pub fn write_pipeline_configs(root: &Path, spec: &DemoPipelineSpec) -> Result<()> {
    write_index(root)?;
    let transformer = root.join("transformer");
    mkdir(&transformer)?;
    let path = transformer.join("config.json");
    std::fs::write(&path, spec.transformer.to_json_string()).map_err(|e| Error::io(&path, e))?;
    let vae = root.join("vae");
    mkdir(&vae)?;
    write_vae_config(&vae, spec)?;
    write_text_encoder_config(&root.join("text_encoder"), spec)?;
    write_tokenizer(&root.join("tokenizer"))
}

/// `model_index.json` and `scheduler/` (FLUX.2 [dev]'s).
fn write_index(root: &Path) -> Result<()> {
    mkdir(root)?;
    write_json(
        &root.join("model_index.json"),
        &serde_json::json!({
            "_class_name": "Flux2Pipeline",
            "_diffusers_version": "0.42.1",
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "MistralForCausalLM"],
            "tokenizer": ["transformers", "TokenizersBackend"],
            "transformer": ["diffusers", "Flux2Transformer2DModel"],
            "vae": ["diffusers", "AutoencoderKLFlux2"],
        }),
    )?;
    mkdir(&root.join("scheduler"))?;
    write_json(
        &root.join("scheduler").join("scheduler_config.json"),
        &serde_json::json!({
            "_class_name": "FlowMatchEulerDiscreteScheduler",
            "num_train_timesteps": 1000,
            "shift": 3.0,
            "use_dynamic_shifting": true,
            "time_shift_type": "exponential",
        }),
    )
}
