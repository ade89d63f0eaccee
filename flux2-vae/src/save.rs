//! Writing an autoencoder as a diffusers `vae/` folder (`config.json` + `diffusion_pytorch_model.safetensors`,
//! f32), under the names it was loaded by: what a trained toy autoencoder needs to be loaded again by this
//! crate and by diffusers' `AutoencoderKLFlux2`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use flux2_ops::writer::{PendingTensor, write_safetensors};

use crate::error::{Error, Result};
use crate::vae::Vae;

/// Writes `vae` (both halves and the latent statistics) to `dir`, creating it.
pub fn save_diffusers_folder<B: Backend>(vae: &Vae<B>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = dir.join("config.json");
    let text = serde_json::to_string_pretty(vae.config())
        .map_err(|e| Error::Config { field: "config", reason: e.to_string() })?;
    std::fs::write(&config, text).map_err(|e| Error::io(&config, e))?;
    let (mean, var) = vae.latent_norm().running_stats();
    let mut tensors: Vec<(String, TensorData)> = vae.named_parameters();
    tensors.push(("bn.running_mean".into(), mean.into_data()));
    tensors.push(("bn.running_var".into(), var.into_data()));
    let pending = tensors.into_iter().map(|(name, data)| PendingTensor::ready(name, data, DType::F32)).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&dir.join("diffusion_pytorch_model.safetensors"), pending, &meta)?;
    Ok(())
}
