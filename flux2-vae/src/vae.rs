//! [`Vae`]: the FLUX.2 autoencoder plus its latent normalization, in the terms a trainer needs.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::config::VaeConfig;
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::latent_norm::LatentNorm;
use crate::params::{Params, RawSource};

/// Which halves of the autoencoder to build (a latent cache needs only the encoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parts {
    /// Encoder and decoder.
    #[default]
    Both,
    /// Encoder only (`encode_*` work, `decode_*` return [`Error::MissingPart`]).
    EncoderOnly,
    /// Decoder only.
    DecoderOnly,
}

impl Parts {
    pub(crate) fn encoder(self) -> bool {
        self != Parts::DecoderOnly
    }
    pub(crate) fn decoder(self) -> bool {
        self != Parts::EncoderOnly
    }
}

/// The FLUX.2 VAE (`AutoencoderKLFlux2`) with the pipeline's latent normalization.
///
/// Weights live in the model dtype chosen at load time (F32, BF16 or F16); GroupNorm statistics,
/// attention softmax and the latent normalization run in f32. Batches are processed one image at a time
/// (exact: every op is per-image), which bounds activation memory to one image.
#[derive(Module, Debug)]
pub struct Vae<B: Backend> {
    config: VaeConfig,
    dtype: DType,
    encoder: Option<Encoder<B>>,
    decoder: Option<Decoder<B>>,
    latent_norm: LatentNorm<B>,
    /// The diffusers name of every weight (see [`Vae::named_parameters`]).
    #[module(skip)]
    names: Vec<(String, ParamId)>,
}

pub(crate) fn check_model_dtype(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::BF16 | DType::F16 => Ok(()),
        other => Err(Error::ModelDtype(other)),
    }
}

impl<B: Backend> Vae<B> {
    /// Builds the model from any parameter source (checkpoint or random init).
    pub fn from_source(
        config: VaeConfig,
        source: &mut dyn RawSource,
        device: &B::Device,
        dtype: DType,
        parts: Parts,
    ) -> Result<Self> {
        config.validate()?;
        check_model_dtype(dtype)?;
        let mut p = Params::<B>::new(source, device, dtype);
        let encoder = if parts.encoder() { Some(Encoder::load(&mut p, &config)?) } else { None };
        let decoder = if parts.decoder() { Some(Decoder::load(&mut p, &config)?) } else { None };
        let latent_norm = LatentNorm::load(&mut p, config.patchified_channels(), config.batch_norm_eps)?;
        debug_assert_eq!(p.dtype(), dtype);
        Ok(Self { config, dtype, encoder, decoder, latent_norm, names: p.into_names() })
    }

    /// Architecture.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Model dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The latent batch-norm statistics.
    pub fn latent_norm(&self) -> &LatentNorm<B> {
        &self.latent_norm
    }

    /// Replaces the latent batch-norm statistics (a trained autoencoder gets the statistics of its own
    /// latents, `flow-train`'s demo pretraining).
    pub fn set_latent_norm(&mut self, latent_norm: LatentNorm<B>) {
        self.latent_norm = latent_norm;
    }

    /// Every weight (convolutions, GroupNorm affine, attention projections) requires a gradient: the
    /// autoencoder trains under an autodiff backend. The latent statistics stay constants.
    pub fn trainable(self) -> Self {
        flux2_ops::full_training::train_every_weight(self)
    }

    /// Every weight under its diffusers name, in the order it was loaded, as f32 host data (what a
    /// `diffusion_pytorch_model.safetensors` holds, less the latent statistics).
    pub fn named_parameters(&self) -> Vec<(String, TensorData)> {
        struct Collect(std::collections::HashMap<ParamId, TensorData>);
        impl<B: Backend> ModuleVisitor<B> for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.insert(param.id, param.val().cast(DType::F32).into_data());
            }
        }
        let mut collect = Collect(Default::default());
        self.visit(&mut collect);
        self.names.iter().filter_map(|(name, id)| collect.0.remove(id).map(|data| (name.clone(), data))).collect()
    }

    /// Image [B, 3, H, W] in [-1, 1] (any float dtype; H, W multiples of 16) -> normalized patchified
    /// latents [B, 4*latent_channels, H/16, W/16], f32: exactly what the FLUX.2 pipeline's
    /// `_encode_vae_image` returns (posterior mean, no sampling).
    pub fn encode_image(&self, image: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let mean = self.encode_mean(image)?;
        self.latent_norm.encode(mean)
    }

    /// Normalized patchified latents [B, 4*latent_channels, h, w] -> image [B, 3, 16h, 16w], f32, nominally
    /// in [-1, 1] (not clamped; see [`crate::image_io`] for conversion to pixels).
    pub fn decode_latents(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let z = self.latent_norm.decode(latents)?;
        self.decode_raw(z)
    }

    /// Posterior mean [B, latent_channels, H/8, W/8] (raw: neither patchified nor normalized), f32.
    pub fn encode_mean(&self, image: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let encoder = self.encoder.as_ref().ok_or(Error::MissingPart("encoder"))?;
        self.check_image(&image)?;
        Ok(per_item(image, |x| encoder.mean(x.cast(self.dtype)).cast(DType::F32)))
    }

    /// Posterior moments [B, 2*latent_channels, H/8, W/8] (mean then log-variance), f32.
    pub fn encode_moments(&self, image: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let encoder = self.encoder.as_ref().ok_or(Error::MissingPart("encoder"))?;
        self.check_image(&image)?;
        Ok(per_item(image, |x| encoder.moments(x.cast(self.dtype)).cast(DType::F32)))
    }

    /// Raw latents [B, latent_channels, h, w] (after denormalize + unpatchify) -> image, f32.
    pub fn decode_raw(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let decoder = self.decoder.as_ref().ok_or(Error::MissingPart("decoder"))?;
        let dims = z.dims();
        if dims[0] == 0 || dims[1] != self.config.latent_channels || dims[2] == 0 || dims[3] == 0 {
            return Err(Error::InputShape {
                what: "raw latents",
                shape: dims.to_vec(),
                reason: format!("expected [B>0, {}, h>0, w>0]", self.config.latent_channels),
            });
        }
        Ok(per_item(z, |x| decoder.forward(x.cast(self.dtype)).cast(DType::F32)))
    }

    pub(crate) fn check_image(&self, image: &Tensor<B, 4>) -> Result<()> {
        let dims = image.dims();
        let f = self.config.latent_scale_factor();
        if dims[1] != self.config.in_channels {
            return Err(Error::InputShape {
                what: "image",
                shape: dims.to_vec(),
                reason: format!("expected {} channels", self.config.in_channels),
            });
        }
        if dims[2] == 0 || dims[3] == 0 || dims[2] % f != 0 || dims[3] % f != 0 {
            return Err(Error::InputShape {
                what: "image",
                shape: dims.to_vec(),
                reason: format!("height and width must be positive multiples of {f}"),
            });
        }
        if dims[0] == 0 {
            return Err(Error::InputShape { what: "image", shape: dims.to_vec(), reason: "empty batch".into() });
        }
        Ok(())
    }
}

/// Runs `f` on each batch item separately and concatenates the results along the batch dimension.
fn per_item<B: Backend>(x: Tensor<B, 4>, f: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>) -> Tensor<B, 4> {
    let batch = x.dims()[0];
    if batch <= 1 {
        return f(x);
    }
    let outs: Vec<_> = (0..batch).map(|i| f(x.clone().narrow(0, i, 1))).collect();
    drop(x);
    Tensor::cat(outs, 0)
}
