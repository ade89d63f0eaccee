//! Test-only access to the committed reference numbers
//! (`tests/fixtures/flow_reference.json`, written by `tools/reference/flow_train_reference.py`).

use std::sync::OnceLock;

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
