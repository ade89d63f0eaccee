//! Parity with diffusers' Flux2Pipeline on the committed fixtures (random small Mistral3 models, the real
//! Tekken tokenizer): identical token ids and masks, embeddings within 1e-4 relative error in f32.

mod common;
#[path = "../examples/support/parity_check.rs"]
mod parity_check;

use burn::tensor::DType;

type B = burn::backend::Flex;

#[test]
fn committed_fixtures_match_diffusers_in_f32() {
    let cases = common::case_names();
    assert!(cases.len() >= 2, "expected the committed cases, found {cases:?}");
    for case in cases {
        let dir = common::materialize(&case);
        let report = parity_check::check::<B>(dir.path(), DType::F32, &Default::default()).unwrap();
        println!(
            "{case}: rel_err={:.3e} max_abs={:.3e} per prompt {:?}",
            report.rel_err, report.max_abs_err, report.per_prompt
        );
        assert_eq!(report.token_mismatch, None, "{case}");
        assert!(report.rel_err < 1e-4, "{case}: rel_err {}", report.rel_err);
    }
}

#[test]
fn bf16_compute_stays_close() {
    // bf16 activations round every op to 8 mantissa bits: only a sanity bound against the f32 reference.
    let dir = common::materialize("bf16_hub_layout_sharded");
    let report = parity_check::check::<B>(dir.path(), DType::BF16, &Default::default()).unwrap();
    println!("bf16 compute: rel_err={:.3e}", report.rel_err);
    assert_eq!(report.token_mismatch, None);
    assert!(report.rel_err < 5e-2, "rel_err {}", report.rel_err);
}

#[test]
fn backend_generic_ndarray_matches_too() {
    let dir = common::materialize("f32_new_layout");
    let report = parity_check::check::<burn::backend::NdArray>(dir.path(), DType::F32, &Default::default()).unwrap();
    println!("ndarray: rel_err={:.3e}", report.rel_err);
    assert_eq!(report.token_mismatch, None);
    assert!(report.rel_err < 1e-4, "rel_err {}", report.rel_err);
}

/// With quantized decoder Linears, the stacked hidden states are no further from transformers' f32
/// output than the reference quantizers' weights run by transformers in bf16 (x1.1;
/// `tests/fixtures/quant/text_encoder_f32_new_layout.json`, `tools/fixtures/gen_quant_text_encoder.py`).
#[test]
fn quantized_encoders_are_as_close_as_the_references() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/quant/text_encoder_f32_new_layout.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("reference errors")).expect("json");
    let dir = common::materialize("f32_new_layout");
    for name in ["qfloat8", "float8", "qint8", "int8", "uint4"] {
        let qtype = flux2_ops::quant::QType::parse(name).expect("supported");
        let report =
            parity_check::check_quantized::<B>(dir.path(), DType::BF16, Some(qtype), &Default::default()).unwrap();
        let theirs = reference["rel_err"][name].as_f64().expect("reference error");
        println!("{name}: rel_err {:.4e} (reference quantizer in transformers {theirs:.4e})", report.rel_err);
        assert_eq!(report.token_mismatch, None);
        assert!(report.rel_err <= 1.1 * theirs, "{name}: {} vs the reference's {theirs}", report.rel_err);
    }
}
