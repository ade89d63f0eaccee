//! The FLUX.2 latent normalization the pipeline applies around the VAE (not part of the VAE's forward).
//!
//! Encoding: posterior mean [B, C, H, W] -> 2x2 patchify to [B, 4C, H/2, W/2] with channel index
//! `c*4 + py*2 + px` -> `(z - bn.running_mean) / sqrt(bn.running_var + batch_norm_eps)`.
//! Decoding applies the exact inverse: `z * std + mean`, then unpatchify.
//! Both run in f32 whatever the model dtype.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::error::{Error, Result};
use crate::params::{ParamKind, Params};

/// `[B, C, H, W] -> [B, 4C, H/2, W/2]`; output channel `c*4 + py*2 + px` holds `in[c, 2i+py, 2j+px]`.
pub fn patchify<B: Backend>(z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
    let [b, c, h, w] = z.dims();
    if h % 2 != 0 || w % 2 != 0 {
        return Err(Error::InputShape {
            what: "latents to patchify",
            shape: vec![b, c, h, w],
            reason: "height and width must be even".into(),
        });
    }
    Ok(z.reshape([b, c, h / 2, 2, w / 2, 2]).permute([0, 1, 3, 5, 2, 4]).reshape([b, c * 4, h / 2, w / 2]))
}

/// Exact inverse of [`patchify`]: `[B, 4C, h, w] -> [B, C, 2h, 2w]`.
pub fn unpatchify<B: Backend>(z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
    let [b, c4, h, w] = z.dims();
    if c4 % 4 != 0 {
        return Err(Error::InputShape {
            what: "latents to unpatchify",
            shape: vec![b, c4, h, w],
            reason: "channels must be a multiple of 4".into(),
        });
    }
    let c = c4 / 4;
    Ok(z.reshape([b, c, 2, 2, h, w]).permute([0, 1, 4, 2, 5, 3]).reshape([b, c, h * 2, w * 2]))
}

/// Batch-norm statistics of the patchified latents (`bn.running_mean`, `bn.running_var`), f32.
#[derive(Module, Debug)]
pub struct LatentNorm<B: Backend> {
    /// [1, 4C, 1, 1]
    mean: Tensor<B, 4>,
    /// sqrt(running_var + eps), [1, 4C, 1, 1]
    std: Tensor<B, 4>,
    /// `running_var` as given, [4C] (kept for writing the statistics back unchanged)
    running_var: Tensor<B, 1>,
}

impl<B: Backend> LatentNorm<B> {
    pub(crate) fn load(p: &mut Params<'_, B>, channels: usize, eps: f64) -> Result<Self> {
        let mean = p.statistic("bn.running_mean", [channels], ParamKind::BnMean)?;
        let var = p.statistic("bn.running_var", [channels], ParamKind::BnVar)?;
        Ok(Self::from_stats(mean, var, eps))
    }

    /// Builds the normalization from `running_mean` and `running_var` [4C] (cast to f32) and eps.
    pub fn from_stats(running_mean: Tensor<B, 1>, running_var: Tensor<B, 1>, eps: f64) -> Self {
        let c = running_mean.dims()[0];
        let mean = running_mean.cast(DType::F32).reshape([1, c, 1, 1]);
        let running_var = running_var.cast(DType::F32);
        let std = running_var.clone().add_scalar(eps).sqrt().reshape([1, c, 1, 1]);
        Self { mean, std, running_var }
    }

    /// `(running_mean, running_var)` [4C], f32, as the checkpoint's `bn.running_mean` / `bn.running_var`.
    pub fn running_stats(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        (self.mean.clone().reshape([self.channels()]), self.running_var.clone())
    }

    /// Channels (4 * latent_channels).
    pub fn channels(&self) -> usize {
        self.mean.dims()[1]
    }

    /// `(z - mean) / std` on patchified latents; returns f32.
    pub fn normalize(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.check(&z, "latents to normalize")?;
        Ok((z.cast(DType::F32) - self.mean.clone()) / self.std.clone())
    }

    /// `z * std + mean` on patchified latents; returns f32.
    pub fn denormalize(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.check(&z, "latents to denormalize")?;
        Ok(z.cast(DType::F32) * self.std.clone() + self.mean.clone())
    }

    /// Posterior mean -> normalized patchified latents.
    pub fn encode(&self, mean: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.normalize(patchify(mean)?)
    }

    /// Normalized patchified latents -> raw latents for the decoder (f32).
    pub fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        unpatchify(self.denormalize(latents)?)
    }

    fn check(&self, z: &Tensor<B, 4>, what: &'static str) -> Result<()> {
        let dims = z.dims();
        if dims[1] != self.channels() {
            return Err(Error::InputShape {
                what,
                shape: dims.to_vec(),
                reason: format!("expected {} channels (4 x latent_channels)", self.channels()),
            });
        }
        Ok(())
    }
}
