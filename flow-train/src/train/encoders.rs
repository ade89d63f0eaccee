//! The model side of the dataset seam: the VAE as a [`LatentEncoder`] and the Mistral encoder as a
//! [`TextEncoder`], plus the in-memory prompt bank that lets the trainer free the text encoder once
//! every caption it can meet has been encoded.

use super::prompt_cache::PromptDisk;
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

/// Loads the text encoder when a caption is first missing from memory and disk.
pub type EncoderLoader<B> = Box<dyn FnOnce() -> Result<MistralEncoder<B>>>;

/// Prompt embeddings by caption text: from memory, else from the disk cache ([`PromptDisk`], when the
/// run caches text embeddings), else encoded (the encoder loaded then, on first need) and remembered in
/// both. After [`PromptBank::free_encoder`], only captions encoded before are available.
pub struct PromptBank<B: Backend> {
    encoder: Option<MistralEncoder<B>>,
    loader: Option<EncoderLoader<B>>,
    disk: Option<PromptDisk>,
    identity: String,
    memo: HashMap<String, Arc<CachedTensor>>,
    /// Whether an encoder was ever present (given, or loaded on a miss).
    used_encoder: bool,
}

impl<B: Backend> PromptBank<B> {
    pub fn new(encoder: Option<MistralEncoder<B>>, identity: String) -> Self {
        let used_encoder = encoder.is_some();
        PromptBank { encoder, loader: None, disk: None, identity, memo: HashMap::new(), used_encoder }
    }

    /// A bank reading and writing `disk` first, loading its encoder with `loader` only when a caption
    /// is missing there.
    pub fn with_disk(disk: PromptDisk, loader: EncoderLoader<B>, identity: String) -> Self {
        PromptBank {
            encoder: None,
            loader: Some(loader),
            disk: Some(disk),
            identity,
            memo: HashMap::new(),
            used_encoder: false,
        }
    }

    /// Whether the text encoder was loaded (or given) at any point: false for a run whose captions
    /// all came from the disk cache.
    pub fn used_encoder(&self) -> bool {
        self.used_encoder
    }

    /// The embedding `[L, D]` of `caption`.
    pub fn embed(&mut self, caption: &str) -> Result<Arc<CachedTensor>> {
        if let Some(t) = self.memo.get(caption) {
            return Ok(t.clone());
        }
        if let Some(t) = self.disk.as_ref().and_then(|d| d.load(caption)) {
            let t = Arc::new(t);
            self.memo.insert(caption.to_string(), t.clone());
            return Ok(t);
        }
        if self.encoder.is_none()
            && let Some(load) = self.loader.take()
        {
            self.encoder = Some(load()?);
            self.used_encoder = true;
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
        if let Some(disk) = &self.disk
            && let Err(e) = disk.store(caption, &t)
        {
            // The embedding is in memory; only the next run's saving is lost.
            eprintln!("warning: cannot cache a caption embedding in {}: {e}", disk.dir().display());
        }
        self.memo.insert(caption.to_string(), t.clone());
        Ok(t)
    }

    /// Drops the encoder's weights and any pending loader (the memoized embeddings stay).
    pub fn free_encoder(&mut self) {
        self.encoder = None;
        self.loader = None;
    }
}
