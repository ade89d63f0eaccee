//! Where model parameters come from while a [`crate::Vae`] is built.
//!
//! Modules ask for parameters by their diffusers name and the shape the config implies; a
//! [`RawSource`] (a checkpoint, or deterministic random init) answers with host data already converted to
//! the requested dtype, and [`Params`] uploads it to the device one tensor at a time.
//!
//! Weights become Burn [`Param`]s, frozen (no gradient) as loaded, and [`Params`] records the diffusers name
//! of each, so a trained autoencoder can be written back under the names it was read by
//! ([`crate::Vae::named_parameters`]).

use burn::module::{Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::error::Result;

/// What a parameter is, so random init can pick a sensible distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Conv kernel [out, in, kh, kw].
    ConvWeight,
    /// Linear weight in PyTorch layout [out, in].
    LinearWeight,
    /// Conv or Linear bias.
    Bias,
    /// GroupNorm scale.
    NormWeight,
    /// GroupNorm shift.
    NormBias,
    /// Latent batch-norm running mean.
    BnMean,
    /// Latent batch-norm running variance.
    BnVar,
}

/// Host-side provider of parameters, addressed by diffusers name.
pub trait RawSource {
    /// Returns the parameter `name` with exactly `shape`, converted to `dtype` (F32, BF16 or F16).
    fn fetch(&mut self, name: &str, shape: &[usize], kind: ParamKind, dtype: DType) -> Result<TensorData>;

    /// Where the parameters come from, for errors (the checkpoint file).
    fn origin(&self) -> String {
        "random initialisation".into()
    }
}

/// Builds device tensors from a [`RawSource`] for one model dtype.
pub(crate) struct Params<'a, B: Backend> {
    source: &'a mut dyn RawSource,
    device: B::Device,
    dtype: DType,
    /// Diffusers name of every weight handed out, in load order.
    names: Vec<(String, ParamId)>,
}

impl<'a, B: Backend> Params<'a, B> {
    pub(crate) fn new(source: &'a mut dyn RawSource, device: &B::Device, dtype: DType) -> Self {
        Self { source, device: device.clone(), dtype, names: Vec::new() }
    }

    /// The model (compute) dtype.
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// The names of the weights handed out so far, in load order.
    pub(crate) fn into_names(self) -> Vec<(String, ParamId)> {
        self.names
    }

    /// A weight in the model dtype.
    pub(crate) fn get<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        kind: ParamKind,
    ) -> Result<Param<Tensor<B, D>>> {
        let dtype = self.dtype;
        let tensor = self.get_as(name, shape, kind, dtype)?;
        Ok(self.weight(name, tensor))
    }

    /// A weight kept in f32 whatever the model dtype (norm affine).
    pub(crate) fn get_f32<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        kind: ParamKind,
    ) -> Result<Param<Tensor<B, D>>> {
        let tensor = self.get_as(name, shape, kind, DType::F32)?;
        Ok(self.weight(name, tensor))
    }

    /// A statistic in f32 (the latent batch-norm's running mean and variance): a constant, never trained.
    pub(crate) fn statistic<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        kind: ParamKind,
    ) -> Result<Tensor<B, D>> {
        self.get_as(name, shape, kind, DType::F32)
    }

    fn weight<const D: usize>(&mut self, name: &str, tensor: Tensor<B, D>) -> Param<Tensor<B, D>> {
        let param = Param::from_tensor(tensor).set_require_grad(false);
        self.names.push((name.to_string(), param.id));
        param
    }

    fn get_as<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        kind: ParamKind,
        dtype: DType,
    ) -> Result<Tensor<B, D>> {
        let data = self.source.fetch(name, &shape, kind, dtype)?;
        let tensor = Tensor::<B, D>::from_data(data, (&self.device, dtype));
        // NaN/Inf in a weight would surface as NaN latents far from the cause (one device reduction).
        if !flux2_ops::all_finite(&tensor) {
            return Err(crate::Error::NonFinite { origin: self.source.origin(), name: name.into() });
        }
        Ok(tensor)
    }
}
