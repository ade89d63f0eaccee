#![doc = include_str!("../README.md")]

mod attention;
mod backend_kind;
pub mod bands;
pub mod checkpoint;
pub mod config;
mod conv;
pub mod conv_algorithm;
mod decoder;
mod encoder;
pub mod error;
mod group_norm;
pub mod image_io;
pub mod infer_config;
pub mod key_map;
pub mod latent_norm;
pub mod loader;
mod mid_block;
pub mod params;
pub mod parity;
pub mod random_init;
mod resnet;
mod sampling;
pub mod save;
pub mod tiling;
mod vae;

pub use bands::set_band_elements;
pub use config::VaeConfig;
pub use conv_algorithm::{ConvAlgorithm, set_conv_algorithm};
pub use error::{Error, Result};
pub use flux2_ops::{StoredTensor, TensorStore};
pub use image_io::{
    DEFAULT_MAX_IMAGE_PIXELS, ImageF32, ImageLoadOptions, load_image, load_image_tensor, max_image_pixels, save_png,
    tensor_to_rgb8,
};
pub use latent_norm::{LatentNorm, patchify, unpatchify};
pub use loader::{LoadOptions, resolve_checkpoint};
pub use random_init::RandomSource;
pub use save::save_diffusers_folder;
pub use tiling::TileOptions;
pub use vae::{Parts, Vae};
