//! The seam between datasets and models.
//!
//! This crate never sees a model: the trainer wraps its VAE and text encoder in these two traits, and
//! tensors cross the seam as plain `f32` data plus a shape. That keeps the crate free of burn (fast
//! to build, usable by tools that only inspect data) and makes caches independent of the backend.

use crate::image_io::PreparedImage;

/// Error type encoders return; any error works.
pub type EncodeError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A dense row-major `f32` tensor. The data length always equals the product of the shape.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl CachedTensor {
    /// `None` when `data.len()` is not the product of `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Self> {
        (shape.iter().product::<usize>() == data.len()).then_some(CachedTensor { shape, data })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        (self.shape, self.data)
    }
}

/// Encodes prepared images to latents (the trainer's VAE).
pub trait LatentEncoder {
    /// Names the encoder and everything about it that changes its output (model file hash, dtype,
    /// latent normalisation, ...). Part of every cache key: change it and caches are rebuilt.
    fn identity(&self) -> String;

    /// Encodes one image. Targets are `bucket`-sized; control images have their own sizes.
    fn encode(&self, image: &PreparedImage) -> Result<CachedTensor, EncodeError>;
}

/// Encodes captions (the trainer's text encoder).
pub trait TextEncoder {
    /// Names the encoder and its settings (model, tokenizer, max length, chat template, layers).
    fn identity(&self) -> String;

    /// Encodes one caption.
    fn encode(&self, caption: &str) -> Result<CachedTensor, EncodeError>;
}
