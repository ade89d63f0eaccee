//! Writing an autoencoder as a diffusers `vae/` folder (`config.json` + `diffusion_pytorch_model.safetensors`),
//! under the names it was loaded by: what a trained toy autoencoder needs to be loaded again by this
//! crate and by diffusers' `AutoencoderKLFlux2`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::DType;
use burn::tensor::backend::Backend;
use flux2_ops::writer::{PendingTensor, write_safetensors};

use crate::error::{Error, Result};
use crate::vae::Vae;

/// Writes `vae` (both halves and the latent statistics) to `dir`, creating it; weights stored as `dtype`
/// (F32, BF16 or F16), the latent statistics always as f32.
pub fn save_diffusers_folder<B: Backend>(vae: &Vae<B>, dir: &Path, dtype: DType) -> Result<()> {
    crate::vae::check_model_dtype(dtype)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = dir.join("config.json");
    let text = serde_json::to_string_pretty(vae.config())
        .map_err(|e| Error::Config { field: "config", reason: e.to_string() })?;
    std::fs::write(&config, text).map_err(|e| Error::io(&config, e))?;
    let (mean, var) = vae.latent_norm().running_stats();
    let mut pending: Vec<PendingTensor> =
        vae.named_parameters().into_iter().map(|(name, data)| PendingTensor::ready(name, data, dtype)).collect();
    pending.push(PendingTensor::ready("bn.running_mean", mean.into_data(), DType::F32));
    pending.push(PendingTensor::ready("bn.running_var", var.into_data(), DType::F32));
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&dir.join("diffusion_pytorch_model.safetensors"), pending, &meta)?;
    Ok(())
}
