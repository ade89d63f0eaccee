//! Comparing this implementation with fixture folders written by `tools/fixtures/gen_vae.py`.
//!
//! Layout: `<dir>/vae/` (any checkpoint [`crate::Vae::load`] accepts), `<dir>/inputs.safetensors`
//! (`image`, `latents`), `<dir>/expected.safetensors` (`latents` = encode of `image`, `decoded` = decode
//! of `latents`). Either pair may be absent from a folder; at least one must be present.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::error::{Error, Result};
use crate::loader::LoadOptions;
use crate::vae::Vae;
use flux2_ops::TensorStore;

/// One compared output.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// `latents` or `decoded`.
    pub name: &'static str,
    pub shape: Vec<usize>,
    /// ‖out − ref‖ / ‖ref‖
    pub rel_err: f64,
    /// max |out − ref|
    pub max_abs: f64,
}

/// ‖a − b‖ / ‖b‖ (the workspace's [`flux2_ops::relative_error_slices`]) and max |a − b| in f64.
/// Slices of equal length (the caller checked the shapes).
pub fn error_measures(out: &[f32], reference: &[f32]) -> (f64, f64) {
    let rel = flux2_ops::relative_error_slices(out, reference).unwrap_or(f64::NAN);
    let mut max_abs = 0f64;
    for (&o, &r) in out.iter().zip(reference) {
        let d = f64::from(o) - f64::from(r);
        // `f64::max` would drop a NaN difference.
        if d.is_nan() || d.abs() > max_abs {
            max_abs = d.abs();
        }
    }
    (rel, max_abs)
}

fn tensor<B: Backend>(store: &TensorStore, name: &str, device: &B::Device) -> Result<Option<Tensor<B, 4>>> {
    if !store.contains(name) {
        return Ok(None);
    }
    let data = store.read(name, DType::F32)?;
    if data.shape.len() != 4 {
        return Err(Error::InputShape {
            what: "fixture tensor",
            shape: data.shape.to_vec(),
            reason: format!("`{name}` must be 4-D"),
        });
    }
    Ok(Some(Tensor::from_data(data, (device, DType::F32))))
}

fn values<B: Backend>(t: Tensor<B, 4>) -> Result<Vec<f32>> {
    let shape = t.dims().to_vec();
    t.cast(DType::F32).into_data().convert::<f32>().into_vec::<f32>().map_err(|e| Error::InputShape {
        what: "output",
        shape,
        reason: format!("cannot read back as f32: {e:?}"),
    })
}

fn compare<B: Backend>(
    name: &'static str,
    out: Tensor<B, 4>,
    reference: Tensor<B, 4>,
    path: &Path,
) -> Result<Comparison> {
    let (shape, ref_shape) = (out.dims().to_vec(), reference.dims().to_vec());
    if shape != ref_shape {
        return Err(Error::ShapeMismatch { path: path.into(), stored: name.into(), found: shape, expected: ref_shape });
    }
    let (rel_err, max_abs) = error_measures(&values(out)?, &values(reference)?);
    Ok(Comparison { name, shape, rel_err, max_abs })
}

/// Loads `<dir>/vae` with `options` on `device` and compares both outputs with the fixture.
pub fn run_fixture<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
    options: &LoadOptions,
) -> Result<Vec<Comparison>> {
    let dir = dir.as_ref();
    let vae = Vae::<B>::load(dir.join("vae"), device, options)?;
    let inputs = TensorStore::open_file(dir.join("inputs.safetensors"))?;
    let expected = TensorStore::open_file(dir.join("expected.safetensors"))?;
    let mut results = Vec::new();
    if let (Some(image), Some(reference)) =
        (tensor::<B>(&inputs, "image", device)?, tensor::<B>(&expected, "latents", device)?)
    {
        results.push(compare("latents", vae.encode_image(image)?, reference, &dir.join("expected.safetensors"))?);
    }
    if let (Some(latents), Some(reference)) =
        (tensor::<B>(&inputs, "latents", device)?, tensor::<B>(&expected, "decoded", device)?)
    {
        results.push(compare("decoded", vae.decode_latents(latents)?, reference, &dir.join("expected.safetensors"))?);
    }
    if results.is_empty() {
        return Err(Error::NoCheckpoint {
            path: dir.into(),
            reason: "fixture has neither image+expected latents nor latents+expected decoded".into(),
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::error_measures;

    #[test]
    fn relative_error_keeps_nan_visible() {
        let (rel, max_abs) = error_measures(&[1.5, 2.0], &[1.0, 2.0]);
        assert!((rel - 0.5 / 5f64.sqrt()).abs() < 1e-12 && max_abs == 0.5, "{rel} {max_abs}");
        // A NaN anywhere in the output must show in both measures (a NaN output is a failed parity).
        for out in [[f32::NAN, 2.0], [1.0, f32::NAN]] {
            let (rel, max_abs) = error_measures(&out, &[1.0, 2.0]);
            assert!(rel.is_nan() && max_abs.is_nan(), "{out:?}: rel {rel}, max_abs {max_abs}");
        }
    }
}
