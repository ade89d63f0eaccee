//! Pre-quantized float8 checkpoints in the layout ComfyUI reads and Comfy-Org publishes
//! (`flux2_dev_fp8mixed.safetensors`, `mistral_3_small_flux2_fp8.safetensors`): THE mapping table for
//! that format. Loading them reads 32 GB instead of 64 and skips quantization; writing them
//! ([`quantize_per_tensor`], [`linear_tensors`]) is what `flux2-train quantize` does.
//!
//! | key | dtype, shape | meaning |
//! |---|---|---|
//! | `<L>.weight` | F8_E4M3 `[out, in]` | float8 e4m3fn codes |
//! | `<L>.weight_scale` (older files: `<L>.scale_weight`) | F32 `[]` | weight = code × scale (a multiplier, `absmax / 448`) |
//! | `<L>.input_scale` (older: `<L>.scale_input`) | F32 `[]` | static activation scale of ComfyUI's fp8 GEMM path; read and unused here |
//! | `<L>.comfy_quant` | U8 bytes of JSON | per-layer format marker |
//! | `scaled_fp8` | empty tensor | marker of the older "scaled fp8" files |
//! | header `_quantization_metadata` | JSON `{"format_version": "1.0", "layers": {"<L>": {"format": "float8_e4m3fn"}}}` | which layers are float8 |
//!
//! Layers whose weight is not F8_E4M3 (ComfyUI's "fp8mixed" keeps attention, embedders and modulation in
//! bf16) load as ordinary weights. Scales are one per tensor in these files; per-row scales (`[out]` or
//! `[out, 1]`) are accepted too. The weight is `code × scale` with the scale rounded to the compute dtype,
//! as ComfyUI computes it (`weight.to(bf16) * scale.to(bf16)`).

use std::collections::BTreeMap;

use burn::tensor::{DType, TensorData};
use safetensors::Dtype;

use super::fp8::{E4M3_MAX, f32_to_e4m3};
use super::qtype::QType;
use super::quantizer::HostQuantized;
use crate::error::{Error, Result};
use crate::store::TensorStore;
use crate::writer::PendingTensor;

/// The header key listing the float8 layers.
pub const METADATA_KEY: &str = "_quantization_metadata";
/// The format name ComfyUI gives float8 e4m3fn layers.
pub const FORMAT: &str = "float8_e4m3fn";

/// Keys that only mark the format (nothing to load).
pub fn is_format_marker(key: &str) -> bool {
    key == "scaled_fp8" || key.ends_with(".scaled_fp8") || key.ends_with(".comfy_quant")
}

/// Whether `<module>.weight` is stored as float8 codes.
pub fn is_float8(store: &TensorStore, module: &str) -> bool {
    store.dtype(&format!("{module}.weight")) == Some(Dtype::F8_E4M3)
}

/// [`read_linear`] when `<module>.weight` is stored as float8 codes, `None` for a dense weight (what the
/// model loaders ask for every Linear).
pub fn read_if_float8(store: &TensorStore, module: &str, shape: [usize; 2]) -> Result<Option<HostQuantized>> {
    if !is_float8(store, module) {
        return Ok(None);
    }
    read_linear(store, module, shape).map(Some)
}

/// The float8 Linear `module` ([out, in] = `shape`) as host codes and per-row scales (a per-tensor
/// scale repeated), marking its weight, scale and input-scale keys used. Errors name the file and key:
/// a missing scale, a wrong shape, NaN codes, a non-finite or negative scale.
pub fn read_linear(store: &TensorStore, module: &str, shape: [usize; 2]) -> Result<HostQuantized> {
    let [out, inp] = shape;
    let key = format!("{module}.weight");
    let stored = store.get(&key)?;
    if stored.shape != shape {
        return Err(Error::Shape {
            key,
            file: stored.path.to_path_buf(),
            expected: shape.to_vec(),
            actual: stored.shape.to_vec(),
        });
    }
    let invalid = |key: &str, message: String| Error::Safetensors {
        path: store.file_of(key),
        message: format!("`{key}`: {message}"),
    };
    if stored.bytes.iter().any(|&c| c & 0x7f == 0x7f) {
        return Err(invalid(&key, "float8 NaN codes in the weight: the checkpoint is damaged".into()));
    }
    let codes = stored.bytes.to_vec();
    let scale_key = [format!("{module}.weight_scale"), format!("{module}.scale_weight")]
        .into_iter()
        .find(|k| store.contains(k))
        .ok_or_else(|| Error::MissingKey {
            key: format!("{module}.weight_scale"),
            files: format!("{} (a float8 weight needs its scale)", store.file_of(&key).display()),
        })?;
    let values: Vec<f32> =
        store.read(&scale_key, DType::F32)?.to_vec().map_err(|e| invalid(&scale_key, format!("{e:?}")))?;
    let scales = match values.len() {
        1 => vec![values[0]; out],
        n if n == out => values,
        n => return Err(invalid(&scale_key, format!("{n} scales for a weight of {out} rows (expected 1 or {out})"))),
    };
    if let Some(bad) = scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
        return Err(invalid(&scale_key, format!("scale {bad} (scales are finite and not negative)")));
    }
    store.mark_used(&key);
    for input in [format!("{module}.input_scale"), format!("{module}.scale_input")] {
        store.mark_used(&input);
    }
    Ok(HostQuantized { qtype: QType::Float8, shape, group: inp, codes, scales, zero_points: Vec::new() })
}

/// Float8 codes with one scale for the whole tensor, as ComfyUI's files hold them: `scale = absmax / 448`
/// and `code = e4m3(w / scale)` in f32 (an all-zero tensor gets scale 1 and zero codes).
pub fn quantize_per_tensor(weights: &[f32]) -> (Vec<u8>, f32) {
    use rayon::prelude::*;
    let absmax = weights.par_iter().fold(|| 0f32, |m, x| m.max(x.abs())).reduce(|| 0f32, f32::max);
    let scale = if absmax > 0.0 { absmax / E4M3_MAX } else { 1.0 };
    let codes = weights.par_iter().map(|&w| f32_to_e4m3((w / scale).clamp(-E4M3_MAX, E4M3_MAX))).collect();
    (codes, scale)
}

/// The tensors of one float8 Linear `module` for [`crate::write_safetensors`]: its codes (F8_E4M3) and
/// its scale (F32 `[]`); the weight is produced only when the writer reaches it (`weight`: [out, in]
/// values in f32, quantized then).
pub fn linear_tensors<'a>(
    module: &str,
    shape: [usize; 2],
    weight: impl FnOnce() -> Vec<f32> + 'a,
) -> (PendingTensor<'a>, PendingTensor<'a>) {
    // The scale is known only after the codes are computed: the weight's closure quantizes and leaves
    // the scale for the next tensor, which the writer produces right after it.
    let scale = std::rc::Rc::new(std::cell::Cell::new(f32::NAN));
    let slot = scale.clone();
    let codes = PendingTensor {
        name: format!("{module}.weight"),
        dtype: DType::U8,
        shape: shape.to_vec(),
        float8: true,
        data: Box::new(move || {
            let (codes, s) = quantize_per_tensor(&weight());
            slot.set(s);
            TensorData::new(codes, shape.to_vec())
        }),
    };
    let scale = PendingTensor {
        name: format!("{module}.weight_scale"),
        dtype: DType::F32,
        shape: Vec::new(),
        float8: false,
        data: Box::new(move || TensorData::new(vec![scale.get()], Vec::<usize>::new())),
    };
    (codes, scale)
}

/// The `_quantization_metadata` header value listing `modules` as float8 layers.
pub fn metadata(modules: &[String]) -> (String, String) {
    let layers: BTreeMap<&str, serde_json::Value> =
        modules.iter().map(|m| (m.as_str(), serde_json::json!({ "format": FORMAT }))).collect();
    let value = serde_json::json!({ "format_version": "1.0", "layers": layers });
    (METADATA_KEY.to_string(), value.to_string())
}

/// What [`write_file`] does with one stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A Linear weight [out, in]: written as float8 codes + `weight_scale`.
    Float8,
    /// Copied unchanged (stored dtype and bytes).
    Keep,
    /// Left out (weights the model never runs).
    Drop,
}

/// What [`write_file`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub float8_layers: usize,
    pub kept: usize,
    pub dropped: usize,
    /// Bytes of tensor data read from the source / written to the file.
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Writes `store` to `out` as a float8 file ComfyUI and this project load: each tensor as `select`
/// says (by key and stored shape), keys unchanged, one tensor in memory at a time (the writer pulls
/// each when it reaches it), atomically. `progress` gets the source bytes of each tensor as it is done
/// and the source bytes of all the tensors written (for a progress bar's length).
/// A source that already holds float8 codes is refused (quantizing twice only loses accuracy).
pub fn write_file(
    store: &TensorStore,
    out: &std::path::Path,
    select: impl Fn(&str, &[usize]) -> Action,
    progress: &dyn Fn(u64, u64),
) -> Result<WriteSummary> {
    let mut keys: Vec<&str> = store.keys().collect();
    keys.sort_unstable();
    if let Some(key) = keys.iter().find(|k| store.dtype(k) == Some(Dtype::F8_E4M3)) {
        return Err(Error::UnsupportedDtype {
            key: key.to_string(),
            file: store.file_of(key),
            dtype: "F8_E4M3 (the source is quantized already: quantize the bf16 checkpoint)".into(),
        });
    }
    let mut summary = WriteSummary::default();
    let failed = FirstError::default();
    // Known once every tensor is planned, read when the writer runs the closures.
    let total = std::cell::Cell::new(0u64);
    let mut tensors = Vec::new();
    let mut float8_modules = Vec::new();
    for key in keys {
        let shape = store.shape(key).unwrap_or_default().to_vec();
        let stored = store.get(key)?;
        let bytes = stored.bytes.len() as u64;
        let action = match select(key, &shape) {
            Action::Float8 if shape.len() != 2 || !key.ends_with(".weight") => Action::Keep,
            other => other,
        };
        match action {
            Action::Drop => {
                summary.dropped += 1;
                continue;
            }
            Action::Float8 => {
                let module = key.strip_suffix(".weight").unwrap_or(key).to_string();
                let (failed, total) = (&failed, &total);
                let read = move || -> Vec<f32> {
                    let data = store.read(key, DType::F32).and_then(|d| {
                        d.to_vec::<f32>()
                            .map_err(|e| Error::Safetensors { path: store.file_of(key), message: format!("{e:?}") })
                    });
                    progress(bytes, total.get());
                    data.unwrap_or_else(|e| failed.fail(e, Vec::new()))
                };
                let (codes, scale) = linear_tensors(&module, [shape[0], shape[1]], read);
                tensors.push(codes);
                tensors.push(scale);
                float8_modules.push(module);
                summary.float8_layers += 1;
                summary.bytes_written += (shape[0] * shape[1] + 4) as u64;
            }
            Action::Keep => {
                let dtype = crate::store::burn_dtype(stored.dtype).ok_or_else(|| Error::UnsupportedDtype {
                    key: key.to_string(),
                    file: store.file_of(key),
                    dtype: format!("{:?}", stored.dtype),
                })?;
                tensors.push(PendingTensor {
                    name: key.to_string(),
                    dtype,
                    shape: shape.clone(),
                    float8: false,
                    data: Box::new({
                        let (failed, total) = (&failed, &total);
                        move || {
                            let data = store.read_as_stored(key);
                            progress(bytes, total.get());
                            data.unwrap_or_else(|e| failed.fail(e, TensorData::new(Vec::<u8>::new(), [0])))
                        }
                    }),
                });
                summary.kept += 1;
                summary.bytes_written += bytes;
            }
        }
        summary.bytes_read += bytes;
    }
    let mut meta: BTreeMap<String, String> = store.metadata().into_iter().filter(|(k, _)| k != METADATA_KEY).collect();
    meta.insert("format".into(), "pt".into());
    let (k, v) = metadata(&float8_modules);
    meta.insert(k, v);
    total.set(summary.bytes_read);
    let written = crate::write_safetensors(out, tensors, &meta);
    // A source tensor that could not be read is the cause, not the length mismatch the writer then saw.
    if let Some(e) = failed.take() {
        return Err(e);
    }
    written?;
    Ok(summary)
}

/// The first read error inside the writer's closures (which return data, not results): the closure
/// returns an empty tensor, the writer stops on its length, and [`write_file`] reports this error.
#[derive(Default)]
struct FirstError(std::cell::RefCell<Option<Error>>);

impl FirstError {
    fn fail<T>(&self, e: Error, empty: T) -> T {
        self.0.borrow_mut().get_or_insert(e);
        empty
    }

    fn take(&self) -> Option<Error> {
        self.0.borrow_mut().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tensor_codes_reconstruct_and_zero_tensors_stay_zero() {
        let mut rng = crate::Rng::new(3);
        let w: Vec<f32> = (0..4096).map(|_| rng.normal() as f32 * 0.02).collect();
        let (codes, scale) = quantize_per_tensor(&w);
        let absmax = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert_eq!(scale, absmax / 448.0);
        let back: Vec<f32> = codes.iter().map(|&c| super::super::fp8::e4m3_to_f32(c) * scale).collect();
        let err = crate::relative_error_slices(&back, &w).expect("same length");
        assert!(err > 0.0 && err < 0.05, "relative error {err}");
        assert_eq!(codes.iter().map(|&c| c & 0x7f).max(), Some(0x7e), "the absmax maps to 448");
        let (zero_codes, zero_scale) = quantize_per_tensor(&[0.0; 8]);
        assert_eq!((zero_codes, zero_scale), (vec![0; 8], 1.0));
    }

    #[test]
    fn markers_are_recognised() {
        assert!(is_format_marker("scaled_fp8"));
        assert!(is_format_marker("model.diffusion_model.scaled_fp8"));
        assert!(is_format_marker("single_blocks.0.linear1.comfy_quant"));
        assert!(!is_format_marker("single_blocks.0.linear1.weight"));
    }
}
