//! The run's VAE: resident for the whole run, or, with `model.low_vram`, on the device only while it
//! works (caching latents, encoding an uncached image, rendering previews) and dropped in between, to be
//! re-read from its file (memory-mapped, so a reload costs a read of ~160 MB, not a download).

use std::cell::{Cell, RefCell};

use burn::tensor::{DType, backend::Backend};
use dataset_buckets::{CachedTensor, EncodeError, LatentEncoder, PreparedImage};
use flux2_vae::Vae;

use super::encoders::VaeLatents;
use crate::error::Result;

/// Loads the VAE again after it was parked.
pub type VaeLoader<B> = Box<dyn Fn() -> Result<Vae<B>>>;

/// The VAE, present or parked.
pub struct VaeSlot<B: Backend> {
    vae: RefCell<Option<Vae<B>>>,
    load: VaeLoader<B>,
    /// `model.low_vram`: drop the VAE after each use.
    park: bool,
    dtype: DType,
    loads: Cell<u32>,
    device: B::Device,
}

impl<B: Backend> VaeSlot<B> {
    /// `vae` (already loaded) with its `load`er; `park` drops it after every use.
    pub fn new(vae: Vae<B>, load: VaeLoader<B>, park: bool, device: B::Device) -> Self {
        let dtype = vae.dtype();
        VaeSlot { vae: RefCell::new(Some(vae)), load, park, dtype, loads: Cell::new(0), device }
    }

    /// Runs `f` on the VAE, loading it first when parked.
    pub fn with<R>(&self, f: impl FnOnce(&Vae<B>) -> R) -> Result<R> {
        if self.vae.borrow().is_none() {
            let vae = (self.load)()?;
            self.loads.set(self.loads.get() + 1);
            *self.vae.borrow_mut() = Some(vae);
        }
        let guard = self.vae.borrow();
        let vae = guard.as_ref().expect("loaded above");
        Ok(f(vae))
    }

    /// With `park`, drops the VAE and hands its device memory back.
    pub fn park(&self) {
        if self.park && self.vae.borrow_mut().take().is_some() {
            B::memory_cleanup(&self.device);
        }
    }

    /// Times the VAE was re-read after being parked.
    pub fn reloads(&self) -> u32 {
        self.loads.get()
    }

    pub fn parks(&self) -> bool {
        self.park
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// [`VaeLatents`] over a [`VaeSlot`]: the VAE is touched only for images not in the latent cache.
pub struct SlotLatents<'a, B: Backend> {
    pub slot: &'a VaeSlot<B>,
    pub device: B::Device,
    pub identity: String,
}

impl<B: Backend> LatentEncoder for SlotLatents<'_, B> {
    fn identity(&self) -> String {
        // As VaeLatents names it, so caches written by either are shared.
        format!("{} dtype={:?}", self.identity, self.slot.dtype())
    }

    fn encode(&self, image: &PreparedImage) -> std::result::Result<CachedTensor, EncodeError> {
        let encoded = self
            .slot
            .with(|vae| VaeLatents { vae, device: self.device.clone(), identity: self.identity.clone() }.encode(image));
        // Not parked here: an uncached image is encoded every step; the trainer parks after caching
        // and after previews.
        encoded.map_err(|e| EncodeError::from(e.to_string()))?
    }
}
