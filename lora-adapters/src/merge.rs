//! Folding an adapter into the base weights (faster inference, one less matmul pair per layer) and
//! taking it back out. The dense delta exists only transiently, one layer at a time.

use burn::tensor::{DType, backend::Backend};
use flux2_dit::Flux2Transformer;

use crate::error::{Error, Result};

fn fold<B: Backend>(model: &mut Flux2Transformer<B>, name: &str, merge: bool) -> Result<()> {
    let mut found = false;
    for (path, linear) in model.linears_mut() {
        let Some(index) = linear.adapters.iter().position(|a| a.name == name) else { continue };
        if linear.quantized.is_some() || linear.offloaded.is_some() {
            // Folding a delta into quantized codes would requantize the base with the adapter in it
            // (lossy, and not what a reloaded LoRA gives), and an offloaded base lives in host memory
            // read-only; keep the adapter unmerged on such a model.
            return Err(Error::QuantizedBase { module: path });
        }
        found = true;
        if linear.adapters[index].merged == merge {
            continue;
        }
        let a = &linear.adapters[index];
        // Unmerging subtracts exactly what merging added, even if the multiplier changed in between.
        let factor = if merge { a.scale * a.switch.multiplier() } else { -a.merged_factor };
        let delta = a.up.val().matmul(a.down.val()) * factor;
        let weight = linear.weight.clone();
        linear.weight = weight.map(|w| {
            let dtype = w.dtype();
            (w.cast(DType::F32) + delta).cast(dtype)
        });
        linear.adapters[index].merged = merge;
        linear.adapters[index].merged_factor = if merge { factor } else { 0.0 };
    }
    if found { Ok(()) } else { Err(Error::UnknownAdapter(name.into())) }
}

/// `W += multiplier * scale * B A` for every layer of adapter `name`, at its current multiplier. While
/// merged, the adapter's switch and multiplier do nothing; [`unmerge`] first to change them.
pub fn merge<B: Backend>(model: &mut Flux2Transformer<B>, name: &str) -> Result<()> {
    fold(model, name, true)
}

/// Inverse of [`merge`] (exact up to the base dtype's rounding): subtracts the delta at the multiplier it
/// was merged with.
pub fn unmerge<B: Backend>(model: &mut Flux2Transformer<B>, name: &str) -> Result<()> {
    fold(model, name, false)
}
