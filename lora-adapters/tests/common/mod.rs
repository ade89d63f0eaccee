//! Helpers shared by the save-option, conversion and dropout tests: a tiny FLUX.2 config, one fixed
//! forward pass, an adapter with non-zero B (as after training), and error measures.

#![allow(dead_code)]

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use flux2_dit::{Flux2Config, Flux2Transformer, PositionIds};
use lora_adapters::{AdapterHandle, LoraConfig, attach, extract, inject, remove};

pub type B = Flex;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dit").join(name)
}

pub fn tiny(layers: usize, singles: usize) -> Flux2Config {
    Flux2Config {
        num_layers: layers,
        num_single_layers: singles,
        attention_head_dim: 8,
        num_attention_heads: 2,
        in_channels: 8,
        joint_attention_dim: 12,
        timestep_guidance_channels: 16,
        axes_dims_rope: vec![2, 2, 2, 2],
        ..Flux2Config::dev()
    }
}

/// The model's output on fixed random inputs (2 images of 2x3 tokens, 3 text tokens).
pub fn forward(model: &Flux2Transformer<B>) -> Vec<f32> {
    let c = &model.config;
    let device = Default::default();
    let mut rng = flux2_ops::Rng::new(42);
    let mut rand = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
    let x = Tensor::<B, 3>::from_data(TensorData::new(rand(2 * 6 * c.in_channels), [2, 6, c.in_channels]), &device);
    let t = Tensor::<B, 3>::from_data(
        TensorData::new(rand(2 * 3 * c.joint_attention_dim), [2, 3, c.joint_attention_dim]),
        &device,
    );
    let rope = model.rope(&PositionIds::text(3), &PositionIds::image(2, 3));
    let s = Tensor::<B, 1>::from_floats([0.3, 0.8], &device);
    let g = Tensor::<B, 1>::from_floats([3.5, 3.5], &device);
    model.forward(x, t, s, Some(g), &rope).into_data().to_vec().unwrap()
}

/// A fresh adapter whose B is replaced by non-zero values (a new adapter's B = 0 would make every
/// comparison trivially pass).
pub fn trained_adapter(model: &mut Flux2Transformer<B>, name: &str, config: &LoraConfig) -> AdapterHandle {
    inject(model, name, config).unwrap();
    let mut factors = extract(model, name).unwrap();
    let mut rng = flux2_ops::Rng::new(config.seed + 1);
    for (_, f) in &mut factors {
        let n = f.up.num_elements();
        f.up = TensorData::new((0..n).map(|_| rng.normal() as f32 * 0.1).collect::<Vec<f32>>(), f.up.shape.clone());
    }
    remove(model, name).unwrap();
    attach(model, name, factors, 1.0, config.dropout).unwrap()
}

/// ||a - b|| / ||b|| (the workspace's one measure).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    flux2_ops::relative_error_slices(a, b).expect("same length")
}
