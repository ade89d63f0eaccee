//! The model side of the dataset seam: the VAE as a [`LatentEncoder`] and the Mistral encoder as a
//! [`TextEncoder`], plus the in-memory prompt bank that lets the trainer free the text encoder once
//! every caption it can meet has been encoded.

use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use dataset_buckets::{CachedTensor, EncodeError, LatentEncoder, PreparedImage, TextEncoder};
use flux2_vae::Vae;
use mistral_encoder::MistralEncoder;

use crate::error::{Error, Result};

/// Host copy of a tensor as the dataset crate stores it.
pub fn to_cached<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<CachedTensor> {
    let shape = t.dims().to_vec();
    let data = t.cast(DType::F32).into_data().to_vec::<f32>().map_err(|e| Error::Invalid(format!("{e:?}")))?;
    CachedTensor::new(shape, data).ok_or_else(|| Error::Invalid("tensor data does not match its shape".into()))
}

/// A cached tensor back on a device, with `D` dimensions.
pub fn from_cached<B: Backend, const D: usize>(t: &CachedTensor, device: &B::Device) -> Result<Tensor<B, D>> {
    if t.shape().len() != D {
        return Err(Error::Invalid(format!(
            "cached tensor of shape {:?} where {D} dimensions were expected",
            t.shape()
        )));
    }
    Ok(Tensor::from_data(TensorData::new(t.data().to_vec(), t.shape().to_vec()), device))
}

/// The VAE encoding prepared images to normalized, patchified latents `[C, h, w]`.
pub struct VaeLatents<'a, B: Backend> {
    pub vae: &'a Vae<B>,
    pub device: B::Device,
    /// Names the checkpoint (cache keys change with it).
    pub identity: String,
}

impl<B: Backend> LatentEncoder for VaeLatents<'_, B> {
    fn identity(&self) -> String {
        format!("{} dtype={:?}", self.identity, self.vae.dtype())
    }

    fn encode(&self, image: &PreparedImage) -> std::result::Result<CachedTensor, EncodeError> {
        let (w, h) = (image.size.width as usize, image.size.height as usize);
        let x = Tensor::<B, 4>::from_data(TensorData::new(image.to_chw_signed(), [1, 3, h, w]), &self.device);
        let z = self.vae.encode_image(x)?;
        let [_, c, lh, lw] = z.dims();
        Ok(to_cached(z.reshape([c, lh, lw]))?)
    }
}

/// The Mistral encoder giving one caption's FLUX.2 prompt embedding `[L, D]`.
pub struct MistralText<'a, B: Backend> {
    pub encoder: &'a MistralEncoder<B>,
    pub identity: String,
}

impl<B: Backend> TextEncoder for MistralText<'_, B> {
    fn identity(&self) -> String {
        let o = &self.encoder.options;
        format!(
            "{} layers={:?} max_len={} dtype={:?}",
            self.identity, o.hidden_states_layers, o.max_sequence_length, o.dtype
        )
    }

    fn encode(&self, caption: &str) -> std::result::Result<CachedTensor, EncodeError> {
        let embeds = self.encoder.encode(&[caption])?;
        let t = embeds.embeds;
        let [_, l, d] = t.dims();
        Ok(to_cached(t.reshape([l, d]))?)
    }
}

/// Prompt embeddings by caption text. With the encoder present, unknown captions are encoded (and
/// remembered); after [`PromptBank::free_encoder`], only captions encoded before are available.
pub struct PromptBank<B: Backend> {
    encoder: Option<MistralEncoder<B>>,
    identity: String,
    memo: HashMap<String, Arc<CachedTensor>>,
}

impl<B: Backend> PromptBank<B> {
    pub fn new(encoder: Option<MistralEncoder<B>>, identity: String) -> Self {
        PromptBank { encoder, identity, memo: HashMap::new() }
    }

    /// The embedding `[L, D]` of `caption`.
    pub fn embed(&mut self, caption: &str) -> Result<Arc<CachedTensor>> {
        if let Some(t) = self.memo.get(caption) {
            return Ok(t.clone());
        }
        let Some(encoder) = &self.encoder else {
            return Err(Error::Invalid(format!(
                "the text encoder was freed after caching, but the caption {caption:?} was not among the cached ones"
            )));
        };
        let text = MistralText { encoder, identity: self.identity.clone() };
        let t = Arc::new(
            text.encode(caption)
                .map_err(|e| Error::Component { component: "mistral-encoder", message: e.to_string() })?,
        );
        self.memo.insert(caption.to_string(), t.clone());
        Ok(t)
    }

    /// Drops the encoder's weights (the memoized embeddings stay).
    pub fn free_encoder(&mut self) {
        self.encoder = None;
    }
}
