//! Writing a model back in either layout (the converter between BFL and diffusers checkpoints).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, Tensor, backend::Backend};

use crate::error::Result;
use crate::key_map::{diffusers_module, diffusers_qkv_modules};
use crate::model::Flux2Transformer;
use crate::weight_source::Layout;
use flux2_ops::{PendingTensor, write_safetensors};

fn pending<'a, B: Backend, const D: usize>(name: String, tensor: Tensor<B, D>, dtype: DType) -> PendingTensor<'a> {
    let shape = tensor.shape().dims::<D>().to_vec();
    PendingTensor { name, dtype, shape, float8: false, data: Box::new(move || tensor.into_data()) }
}

/// The model's tensors under `layout` names, in `dtype`, as lazy writes.
pub fn layout_tensors<'a, B: Backend>(
    model: &'a Flux2Transformer<B>,
    layout: Layout,
    dtype: DType,
) -> Vec<PendingTensor<'a>> {
    let mut out = Vec::new();
    for (path, linear) in model.linears() {
        // A quantized base is written dequantized (one layer at a time), in the file's dense layout.
        let w = linear.base_weight();
        match layout {
            Layout::Bfl => out.push(pending(format!("{path}.weight"), w, dtype)),
            Layout::Diffusers => {
                let rows = w.shape().dims::<2>()[0];
                if let Some(parts) = diffusers_qkv_modules(&path) {
                    for (i, part) in parts.into_iter().enumerate() {
                        out.push(pending(format!("{part}.weight"), w.clone().narrow(0, i * rows / 3, rows / 3), dtype));
                    }
                } else if path == "final_layer.adaLN_modulation.1" {
                    let half = rows / 2;
                    let swapped = Tensor::cat(vec![w.clone().narrow(0, half, half), w.narrow(0, 0, half)], 0);
                    out.push(pending("norm_out.linear.weight".into(), swapped, dtype));
                } else {
                    let name = diffusers_module(&path).expect("every model Linear is in the key map");
                    out.push(pending(format!("{name}.weight"), w, dtype));
                }
            }
        }
    }
    for (path, norm) in model.rms_norms() {
        let name = match layout {
            Layout::Bfl => format!("{path}.scale"),
            Layout::Diffusers => format!("{}.weight", diffusers_module(&path).expect("every norm is in the key map")),
        };
        out.push(pending(name, norm.weight.val(), dtype));
    }
    out
}

/// Saves as a diffusers `transformer/` folder: `config.json` + `diffusion_pytorch_model.safetensors`.
pub fn save_diffusers_folder<B: Backend>(model: &Flux2Transformer<B>, dir: &Path, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| crate::Error::Write { path: dir.to_path_buf(), source })?;
    let config = dir.join("config.json");
    std::fs::write(&config, model.config.to_json_string())
        .map_err(|source| crate::Error::Write { path: config.clone(), source })?;
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(
        &dir.join("diffusion_pytorch_model.safetensors"),
        layout_tensors(model, Layout::Diffusers, dtype),
        &meta,
    )?;
    Ok(())
}

/// Saves as a BFL single file (`flux2-dev.safetensors` naming), keys prefixed with `prefix` (e.g. ""
/// or "model.diffusion_model."). Write a `config.json` beside it yourself if the shapes are not FLUX.2's
/// standard RoPE layout.
pub fn save_bfl_file<B: Backend>(model: &Flux2Transformer<B>, file: &Path, prefix: &str, dtype: DType) -> Result<()> {
    let mut tensors = layout_tensors(model, Layout::Bfl, dtype);
    for t in &mut tensors {
        t.name = format!("{prefix}{}", t.name);
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(file, tensors, &meta)?;
    Ok(())
}
