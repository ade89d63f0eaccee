//! Codes and scales equal to the reference quantizers' (optimum-quanto 0.2.4 and torchao 0.10, as
//! ai-toolkit runs them) on the committed fixture `tests/fixtures/quant/reference.safetensors`
//! (`tools/fixtures/gen_quant.py`: bf16 weights with an all-zero row and an outlier).

use std::path::PathBuf;

use burn::tensor::DType;
use flux2_ops::TensorStore;
use flux2_ops::quant::{Arith, QType, quantize};

fn fixture() -> TensorStore {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant/reference.safetensors");
    TensorStore::open_file(&path).expect("the committed quantizer fixture")
}

fn floats(store: &TensorStore, key: &str) -> Vec<f32> {
    store.read(key, DType::F32).expect(key).to_vec().expect("f32")
}

fn bytes(store: &TensorStore, key: &str) -> Vec<u8> {
    store.read_as_stored(key).expect(key).to_vec().expect("u8")
}

#[test]
fn codes_scales_and_zero_points_equal_the_references() {
    let store = fixture();
    for case in ["a", "b", "c"] {
        let shape: [usize; 2] = store.shape(&format!("{case}.weight")).expect("weight").try_into().expect("2-D");
        let w = floats(&store, &format!("{case}.weight"));
        for name in ["qfloat8", "float8", "qint8", "int8", "uint4", "uint8"] {
            let qtype = QType::parse(name).expect("supported");
            let q = quantize(&w, shape, qtype, Arith::Bf16);
            let key = |what: &str| format!("{case}.{name}.{what}");
            let mut codes = bytes(&store, &key("codes"));
            if qtype == QType::QFloat8 {
                // optimum-quanto divides an all-zero row by its zero scale: 0/0 gives NaN codes (0xff),
                // so its dequantized row is NaN. We store zeros there (checked below); elsewhere equal.
                for (r, row) in w.chunks(shape[1]).enumerate() {
                    if row.iter().all(|v| *v == 0.0) {
                        assert!(codes[r * shape[1]..(r + 1) * shape[1]].iter().all(|c| *c == 0xff), "{case}: NaN row");
                        codes[r * shape[1]..(r + 1) * shape[1]].fill(0);
                        assert!(q.dequantize()[r * shape[1]..(r + 1) * shape[1]].iter().all(|v| *v == 0.0));
                    }
                }
            }
            let differing = q.codes.iter().zip(&codes).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{case} {name}: {differing} of {} codes differ", codes.len());
            assert_eq!(q.scales, floats(&store, &key("scales")), "{case} {name}: scales");
            if store.contains(&key("zero_points")) {
                assert_eq!(q.zero_points, bytes(&store, &key("zero_points")), "{case} {name}: zero points");
            }
        }
    }
}
