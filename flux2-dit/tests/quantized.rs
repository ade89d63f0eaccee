//! The whole transformer with quantized Linears, on the committed realistic fixture
//! (`tests/fixtures/dit/bf16_realistic`): the output's error against diffusers' f32 output is no worse
//! than 1.1x what the reference quantizers give on the same weights in diffusers
//! (`tests/fixtures/quant/dit_bf16_realistic.json`, `tools/fixtures/gen_quant_dit.py`).

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::DType;
use flux2_ops::quant::QType;
use flux2_test_support::dit_fixture::run_fixture_quantized;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

#[test]
fn quantized_transformers_are_as_close_as_the_references() {
    let text = std::fs::read_to_string(root().join("quant/dit_bf16_realistic.json")).expect("reference errors");
    let reference: serde_json::Value = serde_json::from_str(&text).expect("json");
    let fixture = root().join("dit/bf16_realistic");
    let device = Default::default();
    let dense = run_fixture_quantized::<Flex>(&fixture, &device, DType::BF16, None).expect("bf16 run");
    for name in ["qfloat8", "float8", "qint8", "int8", "uint4"] {
        let qtype = QType::parse(name).expect("supported");
        let ours = run_fixture_quantized::<Flex>(&fixture, &device, DType::BF16, Some(qtype)).expect("quantized run");
        let theirs = reference["rel_err"][name].as_f64().expect("reference error");
        eprintln!(
            "{name}: rel_err {ours:.4e} (reference quantizer in diffusers {theirs:.4e}; unquantized bf16 {dense:.4e})"
        );
        assert!(ours <= 1.1 * theirs, "{name}: {ours} vs the reference's {theirs}");
        assert!(ours > dense, "{name}: quantization must cost something ({ours} vs {dense})");
    }
}
