//! Test-only access to the committed reference numbers
//! (`tests/fixtures/flow_reference.json`, written by `tools/reference/flow_train_reference.py`).

use std::sync::OnceLock;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde_json::Value;

/// The parsed reference file.
pub(crate) fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        serde_json::from_str(include_str!("../tests/fixtures/flow_reference.json"))
            .expect("tests/fixtures/flow_reference.json is valid JSON")
    })
}

/// A JSON array of numbers as `Vec<f64>`.
pub(crate) fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// A JSON array of float32 numbers (stored in their shortest round-trip form) as `Vec<f32>`, exactly.
pub(crate) fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

/// Tensor `key` of the `formulas` section: float32 values in ai-toolkit's latent layout `[B, C, h, w]`.
pub(crate) fn formula_tensor<B: Backend>(key: &str) -> Tensor<B, 4> {
    let f = &reference()["formulas"];
    let dims: Vec<usize> =
        f["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
    let shape: [usize; 4] = dims.try_into().expect("a rank-4 shape");
    Tensor::from_data(TensorData::new(f32s(&f[key]), shape), &Default::default())
}

/// Largest `|got - expect|`, after checking the lengths agree.
pub(crate) fn max_abs_err(got: &[f32], expect: &[f32]) -> f64 {
    assert_eq!(got.len(), expect.len(), "length");
    got.iter().zip(expect).map(|(&g, &e)| (g as f64 - e as f64).abs()).fold(0.0, f64::max)
}

/// Largest `|got - expect| / |expect|` (for values that are not 0), after checking the lengths agree.
pub(crate) fn max_rel_err(got: &[f32], expect: &[f32]) -> f64 {
    assert_eq!(got.len(), expect.len(), "length");
    got.iter().zip(expect).map(|(&g, &e)| ((g as f64 - e as f64) / e as f64).abs()).fold(0.0, f64::max)
}
