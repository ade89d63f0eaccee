//! Writes LoRAs made by this crate, plus our model's output with each, so `tools/lora_check.py` can
//! load them in diffusers and compare (the "LoRAs load everywhere" check).
//!
//! `cargo run --release -p lora-adapters --example lora_export -- <dit fixture dir> <out dir>`
//!
//! Writes `<out>/ours_<layout>.safetensors` and `<out>/ours_<layout>_expected.safetensors` (`sample`)
//! for layouts ai_toolkit (targets: blocks) and diffusers (targets: everything).

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData};
use flux2_dit::{Checkpoint, TensorStore};
use flux2_ops::writer::{PendingTensor, write_safetensors};
use lora_adapters::{LoraConfig, LoraLayout, SaveOptions, Targets, attach, extract, inject, remove, save};

type B = Flex;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [fixture, out] = args.as_slice() else { return Err("usage: lora_export <fixture dir> <out dir>".into()) };
    let (fixture, out) = (PathBuf::from(fixture), PathBuf::from(out));
    std::fs::create_dir_all(&out)?;
    let device = Default::default();
    let inputs = TensorStore::open(&[fixture.join("inputs.safetensors")])?;
    let read = |s: &TensorStore, k: &str| s.read(k, DType::F32);
    let hidden = read(&inputs, "hidden_states")?;
    let encoder = read(&inputs, "encoder_hidden_states")?;
    let timestep = read(&inputs, "timestep")?;
    let guidance = if inputs.contains("guidance") { Some(read(&inputs, "guidance")?) } else { None };
    let (txt_ids, img_ids) =
        (flux2_dit::PositionIds::read(&inputs, "txt_ids")?, flux2_dit::PositionIds::read(&inputs, "img_ids")?);

    for (layout, label, targets) in [
        (LoraLayout::AiToolkit, "ai_toolkit", Targets::Blocks),
        (LoraLayout::Diffusers, "diffusers", Targets::Everything),
    ] {
        let mut model = Checkpoint::open(&fixture.join("transformer"))?.load::<B>(DType::F32, &device)?;
        inject(&mut model, "ours", &LoraConfig { rank: 3, alpha: 6.0, targets, seed: 5, ..Default::default() })?;
        // Non-zero B, as after training.
        let mut factors = extract(&model, "ours")?;
        let mut rng = flux2_ops::Rng::new(9);
        for (_, f) in &mut factors {
            let n = f.up.num_elements();
            f.up = TensorData::new((0..n).map(|_| rng.normal() as f32 * 0.3).collect::<Vec<f32>>(), f.up.shape.clone());
        }
        remove(&mut model, "ours")?;
        attach(&mut model, "ours", factors, 1.0, 0.0)?;
        let file = out.join(format!("ours_{label}.safetensors"));
        save(&model, "ours", &file, &SaveOptions { layout, dtype: DType::F32, ..Default::default() })?;

        let rope = model.rope(&txt_ids, &img_ids);
        let sample = model.forward(
            Tensor::<B, 3>::from_data(hidden.clone(), &device),
            Tensor::<B, 3>::from_data(encoder.clone(), &device),
            Tensor::<B, 1>::from_data(timestep.clone(), &device),
            guidance.clone().map(|g| Tensor::<B, 1>::from_data(g, &device)),
            &rope,
        );
        let data = sample.into_data();
        let tensor = PendingTensor::ready("sample", data, DType::F32);
        write_safetensors(&out.join(format!("ours_{label}_expected.safetensors")), vec![tensor], &BTreeMap::new())?;
        println!("wrote {}", file.display());
    }
    Ok(())
}
