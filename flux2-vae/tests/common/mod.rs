//! Shared helpers for the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

pub type B = burn::backend::Flex;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vae")
}

pub fn fixture(case: &str) -> PathBuf {
    fixtures_dir().join(case)
}

/// All committed fixture folders (sorted).
pub fn all_fixtures() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/vae exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("vae").is_dir())
        .collect();
    dirs.sort();
    dirs
}

pub fn values<const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f32> {
    t.cast(burn::tensor::DType::F32).into_data().to_vec::<f32>().expect("f32 data")
}
