//! Runs a transformer fixture folder (the layout `tools/fixtures/gen_dit.py` writes, see the flux2-dit
//! README): the `dit_parity` example, flux2-dit's tests and lora-adapters' layout tests use it.

use std::path::Path;

use burn::tensor::{DType, Tensor, backend::Backend};
use flux2_dit::{Checkpoint, PositionIds, TensorStore};
use flux2_ops::relative_error;

pub const TOLERANCE: f64 = 1e-4;

/// Loads the fixture's transformer (applying `lora.safetensors` when present), runs it on the fixture
/// inputs and returns the relative error against `expected.safetensors`.
pub fn run_fixture<B: Backend>(dir: &Path, device: &B::Device) -> Result<f64, String> {
    run_fixture_dtype::<B>(dir, device, DType::F32)
}

/// [`run_fixture`] with the model in `dtype`.
pub fn run_fixture_dtype<B: Backend>(dir: &Path, device: &B::Device, dtype: DType) -> Result<f64, String> {
    run_fixture_quantized::<B>(dir, device, dtype, None)
}

/// [`run_fixture_dtype`] with every Linear stored as `quantize`.
pub fn run_fixture_quantized<B: Backend>(
    dir: &Path,
    device: &B::Device,
    dtype: DType,
    quantize: Option<flux2_ops::quant::QType>,
) -> Result<f64, String> {
    let checkpoint = Checkpoint::open(&dir.join("transformer")).map_err(|e| e.to_string())?;
    let mut model = checkpoint
        .load_with::<B>(dtype, flux2_dit::BaseStorage::quantized(quantize), device)
        .map_err(|e| e.to_string())?;
    let lora = dir.join("lora.safetensors");
    if lora.is_file() {
        lora_adapters::load_into(&mut model, &lora, "fixture", 1.0).map_err(|e| e.to_string())?;
    }
    let inputs = TensorStore::open(&[dir.join("inputs.safetensors")]).map_err(|e| e.to_string())?;
    let hidden: Tensor<B, 3> = inputs.read_tensor("hidden_states", device).map_err(|e| e.to_string())?;
    let encoder: Tensor<B, 3> = inputs.read_tensor("encoder_hidden_states", device).map_err(|e| e.to_string())?;
    model.check_inputs(&hidden.shape().dims::<3>(), &encoder.shape().dims::<3>()).map_err(|e| e.to_string())?;
    let timestep: Tensor<B, 1> = inputs.read_tensor("timestep", device).map_err(|e| e.to_string())?;
    let guidance: Option<Tensor<B, 1>> = if inputs.contains("guidance") {
        Some(inputs.read_tensor("guidance", device).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let rope = model.rope(
        &PositionIds::read(&inputs, "txt_ids").map_err(|e| e.to_string())?,
        &PositionIds::read(&inputs, "img_ids").map_err(|e| e.to_string())?,
    );
    let out = model.forward(hidden, encoder, timestep, guidance, &rope).cast(DType::F32);

    let expected = TensorStore::open(&[dir.join("expected.safetensors")]).map_err(|e| e.to_string())?;
    let reference = expected.read("sample", DType::F32).map_err(|e| e.to_string())?;
    relative_error(&out.into_data(), &reference)
}
