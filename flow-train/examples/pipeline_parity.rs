//! End-to-end parity with diffusers' `Flux2Pipeline` on fixture folders in the layout of
//! `tests/fixtures/pipeline/README.md` (written by `tools/fixtures/gen_pipeline.py`):
//!
//! `cargo run --release -p flow-train --example pipeline_parity -- <case dir | folder of cases>... [--device cpu|cuda:N] [--dtype f32|bf16]`
//!
//! Each case is run through the public API exactly as a user would: `Flux2Pipeline::load` on the case's
//! model folder (with its text-encoder out layers and max sequence length), its LoRAs at their multipliers,
//! `generate` from the prompt text with its latents and reference images. Prints per case the relative
//! error ‖ours − diffusers‖ / ‖diffusers‖ of the image (and of the prompt embeddings and final latents when
//! the fixture has them) and `rel_err=<worst image error>` last; exits non-zero above the tolerance (1e-4
//! in f32) or on any error. With `--dtype bf16` every model runs in bf16 and the image is compared with
//! diffusers' bf16 run of the same call (`image_bf16`). Committed fixtures (`*.zst` weights, `tokenizer.json.from`) are expanded into
//! a temporary plain folder first; the loader only ever sees plain diffusers folders.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, backend::Backend};
use flow_train::pipeline::{
    Flux2Pipeline, GenerateOptions, HubOptions, LoraSpec, PipelineOptions, ReferenceImage, generate_latents,
    read_latents,
};
use flux2_dit::TensorStore;
use flux2_ops::relative_error;

pub const TOLERANCE: f64 = 1e-4;
/// bf16 runs against diffusers' bf16 run: measured 7.1e-3 .. 8.3e-3 on the committed cases, where either
/// bf16 run lies 1.3e-2 .. 8.5e-2 from the f32 image (rounding order differs inside every op).
pub const BF16_TOLERANCE: f64 = 2e-2;

/// Relative errors of one case.
#[derive(Debug, Clone, Copy)]
pub struct CaseReport {
    pub image: f64,
    pub prompt_embeds: Option<f64>,
    pub final_latents: Option<f64>,
}

/// The plain form of committed model folders, expanded once per process.
#[derive(Default)]
pub struct ModelFolders {
    expanded: HashMap<PathBuf, tempfile::TempDir>,
}

fn unzstd(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(out)
}

fn needs_expanding(dir: &Path) -> Result<bool, String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".zst") || name.ends_with(".from") || (path.is_dir() && needs_expanding(&path)?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Copies `from` to `to`, decompressing `X.zst` to `X` and replacing `X.from` by the file it names
/// (a path relative to its folder, itself decompressed if it ends in `.zst`).
fn expand(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let src = entry.map_err(|e| format!("{}: {e}", from.display()))?.path();
        let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let write = |name: &str, bytes: Vec<u8>| {
            std::fs::write(to.join(name), bytes).map_err(|e| format!("{}: {e}", to.join(name).display()))
        };
        if src.is_dir() {
            expand(&src, &to.join(&name))?;
        } else if let Some(stem) = name.strip_suffix(".zst") {
            write(stem, unzstd(&src)?)?;
        } else if let Some(stem) = name.strip_suffix(".from") {
            let target = std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            let target = from.join(target.trim());
            let bytes = if target.extension().is_some_and(|e| e == "zst") {
                unzstd(&target)?
            } else {
                std::fs::read(&target).map_err(|e| format!("{}: {e}", target.display()))?
            };
            write(stem, bytes)?;
        } else {
            std::fs::copy(&src, to.join(&name)).map_err(|e| format!("{}: {e}", src.display()))?;
        }
    }
    Ok(())
}

impl ModelFolders {
    /// `model` itself when it is a plain folder, else its expanded temporary copy.
    pub fn plain(&mut self, model: &Path) -> Result<PathBuf, String> {
        let key = model.canonicalize().map_err(|e| format!("model folder {}: {e}", model.display()))?;
        if !needs_expanding(&key)? {
            return Ok(key);
        }
        if !self.expanded.contains_key(&key) {
            let tmp = tempfile::Builder::new().prefix("flux2-pipeline-model").tempdir().map_err(|e| e.to_string())?;
            expand(&key, tmp.path())?;
            self.expanded.insert(key.clone(), tmp);
        }
        Ok(self.expanded[&key].path().to_path_buf())
    }
}

/// A case's `inputs.json`, read with errors naming the key.
pub struct CaseInputs {
    pub model: PathBuf,
    pub prompt: String,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    pub latents: Option<PathBuf>,
    pub references: Vec<PathBuf>,
    pub loras: Vec<LoraSpec>,
    pub text_encoder_out_layers: Option<Vec<usize>>,
    pub max_sequence_length: Option<usize>,
}

impl CaseInputs {
    pub fn read(case: &Path) -> Result<Self, String> {
        let path = case.join("inputs.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = |key: &str, what: &str| format!("{}: `{key}` must be {what}", path.display());
        let opt_usize = |key: &str| -> Result<Option<usize>, String> {
            match json.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => {
                    v.as_u64().map(|v| Some(v as usize)).ok_or_else(|| bad(key, "a non-negative integer or null"))
                }
            }
        };
        let files = |key: &str| -> Result<Vec<PathBuf>, String> {
            match json.get(key) {
                None | Some(serde_json::Value::Null) => Ok(Vec::new()),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(|f| case.join(f)).ok_or_else(|| bad(key, "a list of file names")))
                    .collect(),
                Some(_) => Err(bad(key, "a list of file names")),
            }
        };
        let loras = match json.get("loras") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let file =
                        item.get("file").and_then(|f| f.as_str()).ok_or_else(|| bad("loras[].file", "a file name"))?;
                    let multiplier = match item.get("multiplier") {
                        None => 1.0,
                        Some(m) => m.as_f64().ok_or_else(|| bad("loras[].multiplier", "a number"))? as f32,
                    };
                    Ok(LoraSpec::new(case.join(file), multiplier))
                })
                .collect::<Result<_, String>>()?,
            Some(_) => return Err(bad("loras", "a list of {\"file\", \"multiplier\"}")),
        };
        let out_layers = match json.get("text_encoder_out_layers") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .map(|v| v as usize)
                            .ok_or_else(|| bad("text_encoder_out_layers", "a list of layer numbers"))
                    })
                    .collect::<Result<_, String>>()?,
            ),
            Some(_) => return Err(bad("text_encoder_out_layers", "a list of layer numbers")),
        };
        Ok(Self {
            model: case.join(json.get("model").and_then(|m| m.as_str()).unwrap_or("model")),
            prompt: json.get("prompt").and_then(|p| p.as_str()).ok_or_else(|| bad("prompt", "a string"))?.to_string(),
            height: opt_usize("height")?,
            width: opt_usize("width")?,
            steps: opt_usize("steps")?.ok_or_else(|| bad("steps", "a positive integer"))?,
            guidance: json.get("guidance").and_then(|g| g.as_f64()).ok_or_else(|| bad("guidance", "a number"))? as f32,
            seed: opt_usize("seed")?.unwrap_or(0) as u64,
            latents: json.get("latents").and_then(|l| l.as_str()).map(|f| case.join(f)),
            references: files("references")?,
            loras,
            text_encoder_out_layers: out_layers,
            max_sequence_length: opt_usize("max_sequence_length")?,
        })
    }

    /// Pipeline options for this case (hub access off: fixtures are local).
    pub fn pipeline_options(&self, dtype: DType) -> PipelineOptions {
        PipelineOptions {
            dtype,
            text_encoder_out_layers: self.text_encoder_out_layers.clone(),
            max_sequence_length: self.max_sequence_length,
            hub: HubOptions { cache_dir: None, token: None, offline: true, endpoint: None },
            ..PipelineOptions::default()
        }
    }

    /// Generation options for this case on `device`.
    pub fn generate_options<B: Backend>(&self, device: &B::Device) -> Result<GenerateOptions<B>, String> {
        Ok(GenerateOptions {
            height: self.height,
            width: self.width,
            steps: self.steps,
            guidance: self.guidance,
            seed: self.seed,
            latents: self
                .latents
                .as_ref()
                .map(|p| read_latents::<B>(p, device))
                .transpose()
                .map_err(|e| e.to_string())?,
            references: self
                .references
                .iter()
                .map(ReferenceImage::open)
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?,
        })
    }
}

/// The case's pipeline (LoRAs attached), loaded from the plain form of its model folder.
pub fn load_case<B: Backend>(
    inputs: &CaseInputs,
    folders: &mut ModelFolders,
    dtype: DType,
    device: &B::Device,
) -> Result<Flux2Pipeline<B>, String> {
    let model = folders.plain(&inputs.model)?;
    let model = model.to_str().ok_or_else(|| format!("{}: not UTF-8", model.display()))?;
    let mut pipe =
        Flux2Pipeline::<B>::load(model, &inputs.pipeline_options(dtype), device).map_err(|e| e.to_string())?;
    pipe.load_loras(&inputs.loras).map_err(|e| e.to_string())?;
    Ok(pipe)
}

fn f32_data<B: Backend, const D: usize>(t: Tensor<B, D>) -> burn::tensor::TensorData {
    t.cast(DType::F32).into_data().convert::<f32>()
}

/// Runs one case folder; see the module docs.
pub fn run_case<B: Backend>(
    case: &Path,
    folders: &mut ModelFolders,
    dtype: DType,
    device: &B::Device,
) -> Result<CaseReport, String> {
    let inputs = CaseInputs::read(case)?;
    let pipe = load_case::<B>(&inputs, folders, dtype, device)?;
    let image = pipe
        .generate(inputs.prompt.as_str(), inputs.generate_options::<B>(device)?, None)
        .map_err(|e| e.to_string())?;

    let expected_path = case.join("expected.safetensors");
    let expected = TensorStore::open(std::slice::from_ref(&expected_path)).map_err(|e| e.to_string())?;
    if dtype != DType::F32 {
        // Low precision is compared with diffusers' own low-precision run only; no diagnostics.
        let key = "image_bf16";
        if dtype != DType::BF16 || !expected.contains(key) {
            return Err(format!("{}: no `{key}` reference for a {dtype:?} run", expected_path.display()));
        }
        let reference = expected.read(key, DType::F32).map_err(|e| e.to_string())?;
        return Ok(CaseReport {
            image: relative_error(&f32_data(image), &reference)?,
            prompt_embeds: None,
            final_latents: None,
        });
    }
    let reference = expected.read("image", DType::F32).map_err(|e| e.to_string())?;
    let image_err = relative_error(&f32_data(image), &reference)?;

    let embeds = pipe.encode_prompt(&inputs.prompt).map_err(|e| e.to_string())?.embeds;
    let prompt_err = if expected.contains("prompt_embeds") {
        Some(relative_error(
            &f32_data(embeds.clone()),
            &expected.read("prompt_embeds", DType::F32).map_err(|e| e.to_string())?,
        )?)
    } else {
        None
    };
    let latents_err = if expected.contains("final_latents") {
        let latents =
            generate_latents(&pipe.transformer, &pipe.vae, embeds, inputs.generate_options::<B>(device)?, None)
                .map_err(|e| e.to_string())?;
        Some(relative_error(
            &f32_data(latents),
            &expected.read("final_latents", DType::F32).map_err(|e| e.to_string())?,
        )?)
    } else {
        None
    };
    Ok(CaseReport { image: image_err, prompt_embeds: prompt_err, final_latents: latents_err })
}

/// `dir` itself if it is a case (has `inputs.json`), else its case subfolders, sorted.
pub fn case_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if dir.join("inputs.json").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("inputs.json").is_file())
        .collect();
    cases.sort();
    if cases.is_empty() {
        return Err(format!("{}: neither a case folder (inputs.json) nor a folder of cases", dir.display()));
    }
    Ok(cases)
}

#[allow(dead_code)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let dirs: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a)
        .collect();
    if dirs.is_empty() {
        eprintln!("usage: pipeline_parity <case dir | folder of cases>... [--device cpu|cuda:N] [--dtype f32|bf16]");
        std::process::exit(2);
    }
    let (dtype, tolerance) = match flag("--dtype").as_deref() {
        None | Some("f32") => (DType::F32, TOLERANCE),
        Some("bf16") => (DType::BF16, BF16_TOLERANCE),
        Some(other) => {
            eprintln!("--dtype {other}: expected f32 or bf16");
            std::process::exit(2);
        }
    };
    let device = flag("--device").unwrap_or_else(|| "cpu".into());
    let mut folders = ModelFolders::default();
    let mut run = |dir: &Path| -> Result<CaseReport, String> {
        if device == "cpu" {
            return run_case::<Flex>(dir, &mut folders, dtype, &Default::default());
        }
        #[cfg(feature = "cuda")]
        if let Some(index) = device.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            return run_case::<burn::backend::Cuda>(
                dir,
                &mut folders,
                dtype,
                &burn::backend::cuda::CudaDevice::new(index),
            );
        }
        Err(format!(
            "--device {device}: expected cpu{}",
            if cfg!(feature = "cuda") { " or cuda:N" } else { " (rebuild with --features cuda for cuda:N)" }
        ))
    };
    let mut worst = 0f64;
    for dir in dirs {
        let cases = case_dirs(Path::new(dir)).unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(1);
        });
        for case in cases {
            match run(&case) {
                Ok(report) => {
                    let extra = |name: &str, v: Option<f64>| v.map(|v| format!(", {name} {v:.3e}")).unwrap_or_default();
                    println!(
                        "{}: image rel_err={:.3e}{}{}",
                        case.display(),
                        report.image,
                        extra("prompt_embeds", report.prompt_embeds),
                        extra("final_latents", report.final_latents)
                    );
                    worst = worst.max(report.image);
                }
                Err(e) => {
                    eprintln!("{}: error: {e}", case.display());
                    std::process::exit(1);
                }
            }
        }
    }
    println!("rel_err={worst:.6e}");
    if worst.is_nan() || worst > tolerance {
        eprintln!("FAIL: rel_err above {tolerance}");
        std::process::exit(1);
    }
}
