//! Saving and loading LoRA files in the three layouts (see [`crate::layout`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::{DType, TensorData, backend::Backend};
use flux2_dit::key_map::{diffusers_module, diffusers_qkv_modules};
use flux2_dit::{Flux2Transformer, TensorStore};
use flux2_ops::writer::{PendingTensor, write_safetensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::inject::{AdapterHandle, Factors, attach, extract};
use crate::layout::{
    AI_TOOLKIT_PREFIX, DIFFUSERS_PREFIX, FactorKind, KOHYA_PREFIX, LoraLayout, kohya_name, split_factor_key,
};

/// Descriptive metadata written into the safetensors header (`flux2.*` keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoraMetadata {
    pub base_model: Option<String>,
    pub trigger_word: Option<String>,
    pub step: Option<u64>,
    pub targets: Option<String>,
    /// Training rank and alpha (informative: the factors and their layout carry the actual scale).
    pub rank: Option<usize>,
    pub alpha: Option<f32>,
    /// Free-form entries (a job's `meta:`), written under their own names; `flux2.*` and `format`
    /// are reserved and not overwritten.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct SaveOptions {
    pub layout: LoraLayout,
    /// Storage dtype of the factors (bf16 by default, as ai-toolkit saves).
    pub dtype: DType,
    pub metadata: LoraMetadata,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self { layout: LoraLayout::AiToolkit, dtype: DType::BF16, metadata: LoraMetadata::default() }
    }
}

fn scaled(data: &TensorData, factor: f32) -> TensorData {
    let values: Vec<f32> = data.iter::<f32>().map(|v| v * factor).collect();
    TensorData::new(values, data.shape.clone())
}

fn rows(data: &TensorData, start: usize, count: usize) -> TensorData {
    let cols: usize = data.shape[1..].iter().product();
    let values: Vec<f32> = data.iter::<f32>().skip(start * cols).take(count * cols).collect();
    TensorData::new(values, [count, cols])
}

/// Drops rank columns of B that are all zero (and the matching rows of A): they contribute nothing.
/// Keeps at least one so the module stays present.
fn trim_unused_rank(down: &TensorData, up: &TensorData) -> (TensorData, TensorData) {
    let (out, r) = (up.shape[0], up.shape[1]);
    let input = down.shape[1];
    let b: Vec<f32> = up.iter::<f32>().collect();
    let a: Vec<f32> = down.iter::<f32>().collect();
    let mut keep: Vec<usize> = (0..r).filter(|&c| (0..out).any(|row| b[row * r + c] != 0.0)).collect();
    if keep.is_empty() {
        keep.push(0);
    }
    if keep.len() == r {
        return (down.clone(), up.clone());
    }
    let new_a: Vec<f32> = keep.iter().flat_map(|&c| a[c * input..(c + 1) * input].iter().copied()).collect();
    let new_b: Vec<f32> =
        (0..out).flat_map(|row| keep.iter().map(move |&c| (row, c))).map(|(row, c)| b[row * r + c]).collect();
    (TensorData::new(new_a, [keep.len(), input]), TensorData::new(new_b, [out, keep.len()]))
}

/// Writes adapter `name` of `model` to `path` (atomically) in `options.layout`.
pub fn save<B: Backend>(model: &Flux2Transformer<B>, name: &str, path: &Path, options: &SaveOptions) -> Result<()> {
    let factors = extract(model, name)?;
    let dtype = options.dtype;
    let mut tensors = Vec::new();
    let mut header = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("flux2.software".to_string(), format!("flux2-burn lora-adapters {}", env!("CARGO_PKG_VERSION"))),
        ("flux2.layout".to_string(), format!("{:?}", options.layout)),
    ]);
    let m = &options.metadata;
    let rank = m.rank.unwrap_or_else(|| factors[0].1.rank());
    header.insert("flux2.rank".into(), rank.to_string());
    header.insert("flux2.alpha".into(), m.alpha.unwrap_or(factors[0].1.scale * rank as f32).to_string());
    for (key, value) in
        [("flux2.base_model", &m.base_model), ("flux2.trigger_word", &m.trigger_word), ("flux2.targets", &m.targets)]
    {
        if let Some(v) = value {
            header.insert(key.into(), v.clone());
        }
    }
    if let Some(step) = m.step {
        header.insert("flux2.step".into(), step.to_string());
    }
    for (key, value) in &m.extra {
        if key != "format" && !key.starts_with("flux2.") {
            header.insert(key.clone(), value.clone());
        }
    }

    match options.layout {
        LoraLayout::AiToolkit => {
            header.insert("flux2.scale_folded_into_lora_B".into(), "true".into());
            for (path, f) in factors {
                tensors.push(PendingTensor::ready(format!("{AI_TOOLKIT_PREFIX}{path}.lora_A.weight"), f.down, dtype));
                tensors.push(PendingTensor::ready(
                    format!("{AI_TOOLKIT_PREFIX}{path}.lora_B.weight"),
                    scaled(&f.up, f.scale),
                    dtype,
                ));
            }
        }
        LoraLayout::Kohya => {
            for (path, f) in factors {
                let base = kohya_name(&path);
                let alpha = f.scale * f.rank() as f32;
                tensors.push(PendingTensor::ready(format!("{base}.lora_down.weight"), f.down, dtype));
                tensors.push(PendingTensor::ready(format!("{base}.lora_up.weight"), f.up, dtype));
                tensors.push(PendingTensor::ready(
                    format!("{base}.alpha"),
                    TensorData::new(vec![alpha], Vec::<usize>::new()),
                    DType::F32,
                ));
            }
        }
        LoraLayout::Diffusers => {
            // One entry per diffusers module: fused qkv split (A copied, B rows split, unused rank
            // columns trimmed so a q/k/v LoRA that came from diffusers goes back to its own rank).
            let mut entries: Vec<(String, TensorData, TensorData, f32)> = Vec::new();
            for (path, f) in factors {
                if let Some(parts) = diffusers_qkv_modules(&path) {
                    let third = f.up.shape[0] / 3;
                    for (i, module) in parts.into_iter().enumerate() {
                        let (down, up) = trim_unused_rank(&f.down, &rows(&f.up, i * third, third));
                        entries.push((module, down, up, f.scale));
                    }
                } else {
                    let module = diffusers_module(&path).ok_or_else(|| Error::NoTargets(path.clone()))?;
                    let up = if path == FINAL_MODULATION { swap_halves(&f.up) } else { f.up };
                    entries.push((module, f.down, up, f.scale));
                }
            }
            // PEFT applies lora_alpha / r from the header: exact when every module agrees; otherwise fold
            // each scale into B (alpha = rank) and list differing ranks in rank/alpha patterns.
            let (r0, s0) = (entries[0].1.shape[0], entries[0].3);
            let uniform = entries.iter().all(|e| e.1.shape[0] == r0 && e.3 == s0);
            let mut rank_pattern = serde_json::Map::new();
            let mut targets = Vec::new();
            for (module, down, up, scale) in entries {
                let r = down.shape[0];
                if r != r0 {
                    rank_pattern.insert(module.clone(), r.into());
                }
                let up = if uniform { up } else { scaled(&up, scale) };
                tensors.push(PendingTensor::ready(format!("{DIFFUSERS_PREFIX}{module}.lora_A.weight"), down, dtype));
                tensors.push(PendingTensor::ready(format!("{DIFFUSERS_PREFIX}{module}.lora_B.weight"), up, dtype));
                targets.push(module);
            }
            let alpha = if uniform { s0 * r0 as f32 } else { r0 as f32 };
            let alpha_pattern: serde_json::Map<String, serde_json::Value> =
                rank_pattern.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(1).into())).collect();
            let peft = serde_json::json!({
                "transformer.r": r0,
                "transformer.lora_alpha": alpha,
                "transformer.lora_dropout": 0.0,
                "transformer.target_modules": targets,
                "transformer.rank_pattern": rank_pattern,
                "transformer.alpha_pattern": alpha_pattern,
            });
            header.insert("lora_adapter_metadata".into(), serde_json::to_string_pretty(&peft).expect("json"));
        }
    }
    write_safetensors(path, tensors, &header)?;
    Ok(())
}

/// Where a file's module key lands in the model: a BFL path, and which rows of it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rows {
    All,
    /// One of the diffusers q/k/v parts of a fused qkv.
    Third(usize),
    /// diffusers `norm_out.linear`: [scale; shift], the BFL final modulation's halves swapped.
    SwappedHalves,
}
type Target = (String, Rows);

const FINAL_MODULATION: &str = "final_layer.adaLN_modulation.1";

/// Swaps the two row halves of B (diffusers [scale; shift] <-> BFL [shift; scale]).
fn swap_halves(up: &TensorData) -> TensorData {
    let half = up.shape[0] / 2;
    let (a, b) = (rows(up, 0, half), rows(up, half, half));
    let values: Vec<f32> = b.iter::<f32>().chain(a.iter::<f32>()).collect();
    TensorData::new(values, up.shape.clone())
}

fn module_index<B: Backend>(model: &Flux2Transformer<B>) -> HashMap<String, Target> {
    let mut index = HashMap::new();
    for (path, _) in model.linears() {
        index.insert(path.clone(), (path.clone(), Rows::All));
        index.insert(kohya_name(&path), (path.clone(), Rows::All));
        if let Some(parts) = diffusers_qkv_modules(&path) {
            for (i, part) in parts.into_iter().enumerate() {
                index.insert(part, (path.clone(), Rows::Third(i)));
            }
        } else if let Some(d) = diffusers_module(&path) {
            let rows = if path == FINAL_MODULATION { Rows::SwappedHalves } else { Rows::All };
            index.insert(d, (path.clone(), rows));
        }
    }
    index
}

fn strip_prefix(key: &str) -> &str {
    for p in ["model.diffusion_model.", AI_TOOLKIT_PREFIX, DIFFUSERS_PREFIX, "base_model.model."] {
        if let Some(rest) = key.strip_prefix(p) {
            return rest;
        }
    }
    key
}

#[derive(Default)]
struct Parts {
    down: Option<TensorData>,
    up: Option<TensorData>,
    alpha: Option<f32>,
}

/// Loads any of the three layouts into `model` as adapter `name` at `multiplier`.
pub fn load_into<B: Backend>(
    model: &mut Flux2Transformer<B>,
    path: &Path,
    name: &str,
    multiplier: f32,
) -> Result<AdapterHandle> {
    let factors = read_factors(model, path)?;
    attach(model, name, factors, multiplier, 0.0)
}

/// Reads a LoRA file into per-module factors for `model` (BFL paths; q/k/v parts fused exactly).
pub fn read_factors<B: Backend>(model: &Flux2Transformer<B>, path: &Path) -> Result<Vec<(String, Factors)>> {
    let store = TensorStore::open(&[path.to_path_buf()])?;
    let file = path.to_path_buf();
    let peft = peft_scaling(&store.metadata(), path)?;
    let index = module_index(model);
    let mut keys: Vec<String> = store.keys().map(String::from).collect();
    keys.sort();
    let mut modules: BTreeMap<String, Parts> = BTreeMap::new();
    let mut unsupported = Vec::new();
    for key in keys {
        let Some((module, kind)) = split_factor_key(&key) else {
            unsupported.push(key);
            continue;
        };
        let module = strip_prefix(module).to_string();
        let parts = modules.entry(module).or_default();
        match kind {
            FactorKind::Down => parts.down = Some(store.read(&key, DType::F32)?),
            FactorKind::Up => parts.up = Some(store.read(&key, DType::F32)?),
            FactorKind::Alpha => parts.alpha = store.read(&key, DType::F32)?.iter::<f32>().next(),
        }
    }
    if modules.is_empty() {
        return Err(Error::NotALora { file });
    }
    // A tensor we cannot apply (DoRA magnitudes, LoKr/LoHa factors, full `.diff` weights) would make the
    // loaded adapter silently differ from the file's: refuse the file instead.
    if let Some(key) = unsupported.first() {
        return Err(Error::UnsupportedTensor { file, key: key.clone(), count: unsupported.len() });
    }
    let linears: HashMap<String, (usize, usize)> =
        model.linears().into_iter().map(|(p, l)| (p, (l.out_features(), l.in_features()))).collect();
    // Fused layers collect q/k/v parts first.
    let mut whole: Vec<(String, Factors)> = Vec::new();
    let mut split: BTreeMap<String, [Option<Factors>; 3]> = BTreeMap::new();
    for (module, parts) in modules {
        let (bfl, rows_of) = index
            .get(&module)
            .cloned()
            .ok_or_else(|| Error::UnknownModule { file: file.clone(), key: module.clone() })?;
        let down = parts.down.ok_or_else(|| Error::MissingFactor {
            file: file.clone(),
            module: module.clone(),
            which: "lora_B/up",
        })?;
        let up = parts.up.ok_or_else(|| Error::MissingFactor {
            file: file.clone(),
            module: module.clone(),
            which: "lora_A/down",
        })?;
        let (out, input) = linears
            .get(&bfl)
            .copied()
            .ok_or_else(|| Error::UnknownModule { file: file.clone(), key: module.clone() })?;
        let rank = down.shape.first().copied().unwrap_or(0);
        let part_out = if matches!(rows_of, Rows::Third(_)) { out / 3 } else { out };
        if down.shape.len() != 2
            || up.shape.len() != 2
            || down.shape[1] != input
            || up.shape[0] != part_out
            || up.shape[1] != rank
        {
            return Err(Error::FactorShape {
                file: file.clone(),
                module,
                down: down.shape.to_vec(),
                up: up.shape.to_vec(),
                out: part_out,
                input,
            });
        }
        let pattern = peft
            .alpha_pattern
            .iter()
            .find(|(k, _)| module == **k || module.ends_with(&format!(".{k}")))
            .map(|(_, v)| *v);
        let from_peft = parts.alpha.is_none();
        let alpha = parts.alpha.or(pattern).or(peft.alpha).unwrap_or(rank as f32);
        // PEFT's rank-stabilized LoRA (`use_rslora`) scales by alpha / sqrt(r) instead of alpha / r.
        let divisor = if from_peft && peft.rslora { (rank as f32).sqrt() } else { rank as f32 };
        // NaN/Inf factors (a diverged run's save) would give black images with exit 0: name them.
        for (what, ok) in [
            ("alpha", alpha.is_finite()),
            ("lora_A/down", down.iter::<f32>().all(f32::is_finite)),
            ("lora_B/up", up.iter::<f32>().all(f32::is_finite)),
        ] {
            if !ok {
                return Err(Error::NonFinite { file: file.clone(), module: module.clone(), what });
            }
        }
        let up = if rows_of == Rows::SwappedHalves { swap_halves(&up) } else { up };
        let f = Factors { down, up, scale: alpha / divisor };
        match rows_of {
            Rows::Third(i) => split.entry(bfl).or_default()[i] = Some(f),
            _ => whole.push((bfl, f)),
        }
    }
    for (bfl, parts) in split {
        let (out, input) =
            linears.get(&bfl).copied().ok_or_else(|| Error::UnknownModule { file: file.clone(), key: bfl.clone() })?;
        whole.push((bfl, fuse_qkv(parts, out, input)));
    }
    Ok(whole)
}

/// The scaling entries of diffusers' `lora_adapter_metadata` header entry (PEFT's LoraConfig), if any.
#[derive(Debug, Default)]
struct PeftScaling {
    alpha: Option<f32>,
    alpha_pattern: Vec<(String, f32)>,
    rslora: bool,
}

/// `lora_alpha`, `alpha_pattern` and `use_rslora` from `lora_adapter_metadata`.
fn peft_scaling(metadata: &HashMap<String, String>, path: &Path) -> Result<PeftScaling> {
    let Some(text) = metadata.get("lora_adapter_metadata") else { return Ok(PeftScaling::default()) };
    let bad =
        |message: String| Error::Metadata { file: path.to_path_buf(), key: "lora_adapter_metadata".into(), message };
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let alpha_pattern: Vec<(String, f32)> = json
        .get("transformer.alpha_pattern")
        .and_then(|p| p.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()? as f32))).collect())
        .unwrap_or_default();
    let alpha = match json.get("transformer.lora_alpha").or_else(|| json.get("lora_alpha")) {
        None => None,
        Some(v) => Some(v.as_f64().ok_or_else(|| bad(format!("lora_alpha {v} is not a number")))? as f32),
    };
    let rslora = match json.get("transformer.use_rslora").or_else(|| json.get("use_rslora")) {
        None | Some(serde_json::Value::Null) => false,
        Some(v) => v.as_bool().ok_or_else(|| bad(format!("use_rslora {v} is not a boolean")))?,
    };
    Ok(PeftScaling { alpha, alpha_pattern, rslora })
}

/// q/k/v adapters of a fused qkv Linear as one adapter with the identical output: shared A and equal
/// scales give A, [B_q; B_k; B_v]; otherwise A = [A_q; A_k; A_v] and B block-diagonal with each
/// block's scale folded in (rank = sum of ranks). Missing parts contribute zero rows.
fn fuse_qkv(parts: [Option<Factors>; 3], out: usize, input: usize) -> Factors {
    let third = out / 3;
    let present: Vec<&Factors> = parts.iter().flatten().collect();
    let shared = present.len() == 3 && present.iter().all(|f| f.down == present[0].down && f.scale == present[0].scale);
    if shared {
        let r = present[0].rank();
        let up: Vec<f32> = present.iter().flat_map(|f| f.up.iter::<f32>()).collect();
        return Factors { down: present[0].down.clone(), up: TensorData::new(up, [out, r]), scale: present[0].scale };
    }
    let total: usize = present.iter().map(|f| f.rank()).sum();
    let mut down = Vec::with_capacity(total * input);
    let mut up = vec![0f32; out * total];
    let mut col = 0;
    for (i, part) in parts.iter().enumerate() {
        let Some(f) = part else { continue };
        let r = f.rank();
        down.extend(f.down.iter::<f32>());
        for (k, v) in f.up.iter::<f32>().enumerate() {
            let (row, c) = (k / r, k % r);
            up[(i * third + row) * total + col + c] = v * f.scale;
        }
        col += r;
    }
    Factors { down: TensorData::new(down, [total, input]), up: TensorData::new(up, [out, total]), scale: 1.0 }
}

/// Which layout a file uses (from its keys), for reporting.
pub fn detect_layout(store: &TensorStore) -> Option<LoraLayout> {
    let any = |p: &str| store.keys().any(|k| k.starts_with(p));
    if any(KOHYA_PREFIX) {
        Some(LoraLayout::Kohya)
    } else if any(DIFFUSERS_PREFIX) {
        Some(LoraLayout::Diffusers)
    } else if any(AI_TOOLKIT_PREFIX) || any("model.diffusion_model.") {
        Some(LoraLayout::AiToolkit)
    } else {
        None
    }
}
