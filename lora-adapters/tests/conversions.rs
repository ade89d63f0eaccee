//! Files convert between every pair of layouts: a LoRA loaded from layout X and saved as layout Y gives
//! the outputs of the original adapter. Starts from the diffusers/PEFT fixtures (all Linears incl. the
//! final modulation; q/v-only adapters on fused qkv layers, which become block-diagonal when fused).

mod common;

use burn::tensor::DType;
use common::{B, fixture, forward, rel_err};
use flux2_dit::{Checkpoint, Flux2Transformer};
use lora_adapters::{LoraLayout, SaveOptions, load_into, save};

const LAYOUTS: [LoraLayout; 3] = [LoraLayout::AiToolkit, LoraLayout::Diffusers, LoraLayout::Kohya];

#[test]
fn every_layout_converts_into_every_other() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["lora_all_linears", "lora_qv_only"] {
        let src = fixture(case);
        let fresh = || -> Flux2Transformer<B> {
            Checkpoint::open(&src.join("transformer")).unwrap().load::<B>(DType::F32, &Default::default()).unwrap()
        };
        let base = forward(&fresh());
        let mut original = fresh();
        load_into(&mut original, &src.join("lora.safetensors"), "peft", 1.0).unwrap();
        let expected = forward(&original);
        assert!(rel_err(&base, &expected) > 1e-3, "{case}: the LoRA must change the output");

        for from in LAYOUTS {
            let first = tmp.path().join(format!("{case}-{from:?}.safetensors"));
            save(&original, "peft", &first, &SaveOptions { layout: from, dtype: DType::F32, ..Default::default() })
                .unwrap();
            let mut loaded = fresh();
            load_into(&mut loaded, &first, "x", 1.0).unwrap();
            for to in LAYOUTS {
                let second = tmp.path().join(format!("{case}-{from:?}-{to:?}.safetensors"));
                save(&loaded, "x", &second, &SaveOptions { layout: to, dtype: DType::F32, ..Default::default() })
                    .unwrap();
                let mut model = fresh();
                load_into(&mut model, &second, "y", 1.0).unwrap();
                let err = rel_err(&forward(&model), &expected);
                assert!(err < 1e-5, "{case}: {from:?} -> {to:?}: rel_err {err:e}");
            }
        }
    }
}
