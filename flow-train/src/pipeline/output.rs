//! Files in and out of a generation: the image as PNG (diffusers' rounding) or as a float tensor, and
//! initial latents read from safetensors.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, Tensor, backend::Backend};
use flux2_dit::TensorStore;
use flux2_ops::writer::{PendingTensor, write_safetensors};

use crate::error::{Error, Result};

fn image_values<B: Backend>(image: Tensor<B, 4>, what: &str) -> Result<(usize, usize, Vec<f32>)> {
    let [b, c, h, w] = image.dims();
    if b != 1 || c != 3 || h == 0 || w == 0 {
        return Err(Error::Invalid(format!(
            "{what}: image tensor has shape {:?}, expected [1, 3, H, W]",
            [b, c, h, w]
        )));
    }
    let values = image
        .cast(DType::F32)
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| Error::Invalid(format!("{what}: cannot read the image back from the device: {e:?}")))?;
    Ok((h, w, values))
}

/// A `[1, 3, H, W]` image in [0, 1] as 8-bit RGB: `round_half_even(v * 255)` after clamping, the arithmetic of
/// diffusers' `numpy_to_pil` on `output_type="pil"`.
pub fn image_to_rgb8<B: Backend>(image: Tensor<B, 4>) -> Result<image::RgbImage> {
    let (h, w, v) = image_values(image, "image to 8-bit")?;
    let plane = h * w;
    Ok(image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb([0, 1, 2].map(|c| (v[c * plane + i].clamp(0.0, 1.0) * 255.0).round_ties_even() as u8))
    }))
}

/// Writes a `[1, 3, H, W]` image in [0, 1] as a file whose format follows the extension (PNG, JPEG, WebP).
pub fn save_image<B: Backend>(image: Tensor<B, 4>, path: &Path) -> Result<()> {
    let format = image::ImageFormat::from_path(path)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP))
        .ok_or_else(|| {
            Error::Invalid(format!("{}: unknown image extension, use .png, .jpg or .webp", path.display()))
        })?;
    let rgb = image_to_rgb8(image)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    rgb.save_with_format(path, format)
        .map_err(|e| Error::Invalid(format!("{}: cannot write the image: {e}", path.display())))
}

/// Writes the float image as safetensors: `image` `[1, 3, H, W]` f32.
pub fn save_image_tensor<B: Backend>(image: Tensor<B, 4>, path: &Path) -> Result<()> {
    let (h, w, values) = image_values(image, "image tensor")?;
    let data = burn::tensor::TensorData::new(values, [1, 3, h, w]);
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(path, vec![PendingTensor::ready("image", data, DType::F32)], &metadata)
        .map_err(|e| Error::Invalid(format!("{}: cannot write the image tensor: {e}", path.display())))
}

/// Initial latents `[1, C, h, w]` from a safetensors file: the tensor named `latents`, or the file's only
/// tensor. Read as f32 (the pipeline casts them to the prompt embeddings' type).
pub fn read_latents<B: Backend>(path: &Path, device: &B::Device) -> Result<Tensor<B, 4>> {
    let store = TensorStore::open(&[path.to_path_buf()]).map_err(|e| Error::Invalid(format!("latents: {e}")))?;
    let key = if store.contains("latents") {
        "latents".to_string()
    } else {
        let keys: Vec<String> = store.keys().map(String::from).collect();
        match keys.as_slice() {
            [only] => only.clone(),
            _ => {
                return Err(Error::Invalid(format!(
                    "{}: no `latents` tensor, and not exactly one tensor to use instead (found {keys:?})",
                    path.display()
                )));
            }
        }
    };
    let shape = store.shape(&key).map(<[usize]>::to_vec).unwrap_or_default();
    if shape.len() != 4 || shape[0] != 1 {
        return Err(Error::Invalid(format!("{}: `{key}` has shape {shape:?}, expected [1, C, h, w]", path.display())));
    }
    store.read_tensor::<B, 4>(&key, device).map_err(|e| Error::Invalid(format!("latents: {e}")))
}
