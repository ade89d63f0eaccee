//! Image/caption datasets for FLUX.2 LoRA training: folder scanning, captions and trigger words,
//! aspect-ratio buckets computed exactly like ai-toolkit, edit datasets with control images, per-epoch
//! seeded batches, and disk caches of latents and text embeddings.
//!
//! The crate has no model dependency. A trainer composes it with its VAE and text encoder through
//! [`LatentEncoder`] and [`TextEncoder`]; tensors cross that seam as [`CachedTensor`] (plain `f32` +
//! shape).
//!
//! ```no_run
//! use dataset_buckets::{Caches, CacheOptions, DatasetConfig, DatasetSet, LoadOptions, Rng, Stream};
//! # fn run(vae: &dyn dataset_buckets::LatentEncoder, te: &dyn dataset_buckets::TextEncoder)
//! #     -> Result<(), dataset_buckets::Error> {
//! // An ai-toolkit `datasets:` entry deserializes directly (serde_json / serde_yaml / ...).
//! let mut config = DatasetConfig::for_folder("data/cats");
//! config.resolution = vec![768, 1024];
//! config.trigger_word = Some("sks cat".into());
//! config.cache_latents_to_disk = true;
//! let set = DatasetSet::load(&[config], &LoadOptions { seed: 42, ..Default::default() })?;
//!
//! let caches = Caches::new(CacheOptions::default());
//! caches.build_latents(&set, vae)?;
//! let sampler = set.sampler(Stream::Main, 1);
//! for epoch in 0..10 {
//!     for (step, batch) in sampler.epoch(epoch).iter().enumerate() {
//!         for (i, &r) in batch.samples.iter().enumerate() {
//!             let latent = caches.latent(&set, r, vae)?;
//!             let mut rng = Rng::derive(42, "caption", &[epoch, step as u64, i as u64]);
//!             let caption = set.step_caption(r, &mut rng)?;
//!             let text = caches.text(&set, r, te, caption.dropped)?;
//!             let weight = set.dataset(r.dataset)?.config().loss_multiplier;
//!             # let _ = (latent, text, weight);
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod bucket;
mod cache;
mod caption;
mod config;
mod control;
mod dataset;
mod encoder;
mod error;
mod image_io;
mod key;
mod problem;
mod progress;
mod rng;
mod sampler;
mod scan;
mod set;

pub use bucket::{BucketFit, CropBox, CropPlacement, Geometry, Size, bucket_for_size, plan_geometry, scaled_source};
pub use cache::{
    CacheOptions, CacheSummary, Caches, Entry, EntryStatus, StoreDtype, atomic_write, entry_status, read_entry,
    write_entry,
};
pub use caption::{CaptionRules, CaptionSource, StepCaption, caption_path};
pub use config::{DatasetConfig, LoadOptions};
pub use control::{ControlGeometry, ControlRules, control_geometry};
pub use dataset::{Bucket, BucketRow, ControlImage, Dataset, ImageRecord, Sample};
pub use encoder::{CachedTensor, EncodeError, LatentEncoder, TextEncoder};
pub use error::{Error, Result};
pub use image_io::{DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_ENV, PreparedImage, max_image_pixels};
pub use problem::{BadInputPolicy, Problem, ProblemKind};
pub use rng::Rng;
pub use sampler::{Batch, Sampler, Stream};
pub use scan::{IMAGE_EXTENSIONS, is_image_name, scan_images};
pub use set::{DatasetSet, SampleRef};
