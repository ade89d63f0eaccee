//! LoRA files: every layout round-trips to the same outputs, adapters switch and merge correctly,
//! targets select what they say.

mod common;

use flux2_test_support::dit_fixture as parity;

use std::path::Path;

use burn::tensor::DType;
use common::{B, fixture, forward, tiny};
use flux2_dit::{Checkpoint, Flux2Config, Flux2Transformer, RandomSource};
use lora_adapters::{
    LoraConfig, LoraLayout, SaveOptions, Targets, inject, load_into, merge, read_factors, save, unmerge,
};
use proptest::prelude::*;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Copies a LoRA fixture with `lora` replaced by `file`.
fn fixture_with(src: &Path, dst: &Path, file: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["inputs.safetensors", "expected.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let t = dst.join("transformer");
    std::fs::create_dir_all(&t).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(src.join("transformer").join(f), t.join(f)).unwrap();
    }
    std::fs::copy(file, dst.join("lora.safetensors")).unwrap();
}

#[test]
fn every_layout_reproduces_the_peft_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["lora_all_linears", "lora_qv_only"] {
        let src = fixture(case);
        let mut model =
            Checkpoint::open(&src.join("transformer")).unwrap().load::<B>(DType::F32, &Default::default()).unwrap();
        load_into(&mut model, &src.join("lora.safetensors"), "peft", 1.0).unwrap();
        for layout in [LoraLayout::AiToolkit, LoraLayout::Diffusers, LoraLayout::Kohya] {
            let file = tmp.path().join(format!("{case}-{layout:?}.safetensors"));
            let options = SaveOptions { layout, dtype: DType::F32, ..Default::default() };
            save(&model, "peft", &file, &options).unwrap();
            let dir = tmp.path().join(format!("{case}-{layout:?}"));
            fixture_with(&src, &dir, &file);
            let err = parity::run_fixture::<B>(&dir, &Default::default()).unwrap();
            assert!(err < 1e-5, "{case} via {layout:?}: rel_err {err:e}");
        }
    }
}

#[test]
fn default_targets_are_the_160_block_linears_of_flux2_dev() {
    let config = Flux2Config {
        attention_head_dim: 8,
        num_attention_heads: 1,
        in_channels: 4,
        joint_attention_dim: 4,
        timestep_guidance_channels: 4,
        axes_dims_rope: vec![2, 2, 2, 2],
        ..Flux2Config::dev()
    };
    let model = Flux2Transformer::<B>::from_source(&config, &mut RandomSource::new(0), DType::F32, &Default::default())
        .unwrap();
    let count = |t: Targets| model.linears().iter().filter(|(p, _)| t.selects(p)).count();
    assert_eq!(count(Targets::Blocks), 160);
    assert_eq!(count(Targets::DiffusersDefault), 16);
    assert_eq!(count(Targets::Everything), model.linears().len());
    let only_img_attn =
        Targets::Filtered { only_if_contains: vec!["img_attn".into()], ignore_if_contains: vec!["proj".into()] };
    assert_eq!(count(only_img_attn), 8);
    // diffusers names work in filters too (`to_qkv_mlp_proj` is single_blocks.*.linear1).
    let by_diffusers =
        Targets::Filtered { only_if_contains: vec!["to_qkv_mlp_proj".into()], ignore_if_contains: vec![] };
    assert_eq!(count(by_diffusers), 48);
}

#[test]
fn fresh_adapter_is_identity_until_trained_and_switches_off() {
    let device = Default::default();
    let mut model =
        Flux2Transformer::<B>::from_source(&tiny(1, 1), &mut RandomSource::new(1), DType::F32, &device).unwrap();
    let base = forward(&model);
    let handle = inject(&mut model, "a", &LoraConfig { rank: 2, alpha: 4.0, ..Default::default() }).unwrap();
    assert_eq!(max_abs_diff(&base, &forward(&model)), 0.0, "B = 0 must leave outputs unchanged");
    // Give B values, as training would.
    let mut factors = lora_adapters::extract(&model, "a").unwrap();
    for (_, f) in &mut factors {
        let n = f.up.num_elements();
        f.up = burn::tensor::TensorData::new(vec![0.05f32; n], f.up.shape.clone());
    }
    lora_adapters::remove(&mut model, "a").unwrap();
    let handle2 = lora_adapters::attach(&mut model, "a", factors, 1.0, 0.0).unwrap();
    drop(handle);
    let with = forward(&model);
    assert!(max_abs_diff(&base, &with) > 1e-3);
    let off = handle2.without(|| forward(&model));
    assert_eq!(max_abs_diff(&base, &off), 0.0);
    handle2.set_multiplier(0.0);
    assert_eq!(max_abs_diff(&base, &forward(&model)), 0.0);
    handle2.set_multiplier(1.0);
    assert_eq!(max_abs_diff(&with, &forward(&model)), 0.0);
    assert!(inject(&mut model, "a", &LoraConfig::default()).is_err(), "duplicate names are rejected");
}

#[test]
fn merge_and_unmerge_match_the_unmerged_forward() {
    let src = fixture("lora_all_linears");
    let mut model =
        Checkpoint::open(&src.join("transformer")).unwrap().load::<B>(DType::F32, &Default::default()).unwrap();
    let base = forward(&model);
    let handle = load_into(&mut model, &src.join("lora.safetensors"), "l", 0.7).unwrap();
    let live = forward(&model);
    merge(&mut model, "l").unwrap();
    let merged = forward(&model);
    assert!(max_abs_diff(&live, &merged) < 1e-4, "merged differs by {}", max_abs_diff(&live, &merged));
    // While merged the multiplier does nothing, and unmerging removes what was merged (at 0.7).
    handle.set_multiplier(0.2);
    assert!(max_abs_diff(&merged, &forward(&model)) < 1e-6);
    unmerge(&mut model, "l").unwrap();
    handle.set_multiplier(0.7);
    assert!(max_abs_diff(&live, &forward(&model)) < 1e-4);
    lora_adapters::remove(&mut model, "l").unwrap();
    assert!(max_abs_diff(&base, &forward(&model)) < 1e-4);
}

#[test]
fn bad_files_give_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model =
        Flux2Transformer::<B>::from_source(&tiny(1, 1), &mut RandomSource::new(1), DType::F32, &Default::default())
            .unwrap();
    // A LoRA for a different width.
    let src = fixture("lora_all_linears/lora.safetensors");
    let msg = read_factors(&model, &src).unwrap_err().to_string();
    assert!(msg.contains("lora.safetensors") && msg.contains("shapes"), "{msg}");
    // Not a LoRA at all.
    let t = fixture("guidance_b1/transformer/diffusion_pytorch_model.safetensors");
    let msg = read_factors(&model, &t).unwrap_err().to_string();
    assert!(msg.contains("no LoRA tensors"), "{msg}");
    let garbage = tmp.path().join("x.safetensors");
    std::fs::write(&garbage, b"nope").unwrap();
    assert!(read_factors(&model, &garbage).unwrap_err().to_string().contains("x.safetensors"));
}

/// A LoRA file whose factor or alpha holds NaN/Inf is refused naming the file, module and tensor.
#[test]
fn non_finite_factors_and_alphas_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model =
        Flux2Transformer::<B>::from_source(&tiny(1, 1), &mut RandomSource::new(1), DType::F32, &Default::default())
            .unwrap();
    inject(&mut model, "n", &LoraConfig { rank: 2, alpha: 2.0, ..Default::default() }).unwrap();
    let factors = lora_adapters::extract(&model, "n").unwrap();
    for (what, bad) in [("lora_A/down", f32::NAN), ("lora_B/up", f32::INFINITY), ("alpha", f32::NAN)] {
        let mut broken = factors.clone();
        let f = &mut broken[0].1;
        match what {
            "lora_A/down" => f.down = set_first(&f.down, bad),
            "lora_B/up" => f.up = set_first(&f.up, bad),
            _ => f.scale = bad,
        }
        let mut m = model.clone();
        lora_adapters::remove(&mut m, "n").unwrap();
        lora_adapters::attach(&mut m, "n", broken, 1.0, 0.0).unwrap();
        let file = tmp.path().join(format!("{}.safetensors", what.replace('/', "_")));
        save(&m, "n", &file, &SaveOptions { layout: LoraLayout::Kohya, dtype: DType::F32, ..Default::default() })
            .unwrap();
        let msg = read_factors(&model, &file).unwrap_err().to_string();
        assert!(
            msg.contains(file.file_name().unwrap().to_str().unwrap())
                && msg.contains(what)
                && msg.contains("NaN or infinite"),
            "{msg}"
        );
    }
}

fn set_first(t: &burn::tensor::TensorData, value: f32) -> burn::tensor::TensorData {
    let mut v = t.to_vec::<f32>().unwrap();
    v[0] = value;
    burn::tensor::TensorData::new(v, t.shape.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Any rank/alpha/layout/dtype: save then load reproduces the adapter's outputs.
    #[test]
    fn round_trip_any_rank(rank in 1usize..6, alpha in 0.5f32..16.0, layout_ix in 0usize..3, seed in 0u64..1000) {
        let layout = [LoraLayout::AiToolkit, LoraLayout::Diffusers, LoraLayout::Kohya][layout_ix];
        let device = Default::default();
        let mut model = Flux2Transformer::<B>::from_source(&tiny(1, 1), &mut RandomSource::new(seed), DType::F32, &device).unwrap();
        inject(&mut model, "p", &LoraConfig { rank, alpha, targets: Targets::Everything, seed, ..Default::default() }).unwrap();
        let mut factors = lora_adapters::extract(&model, "p").unwrap();
        let mut rng = flux2_ops::Rng::new(seed + 1);
        for (_, f) in &mut factors {
            let n = f.up.num_elements();
            f.up = burn::tensor::TensorData::new((0..n).map(|_| rng.normal() as f32 * 0.1).collect::<Vec<f32>>(), f.up.shape.clone());
        }
        lora_adapters::remove(&mut model, "p").unwrap();
        lora_adapters::attach(&mut model, "p", factors, 1.0, 0.0).unwrap();
        let expected = forward(&model);
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("p.safetensors");
        save(&model, "p", &file, &SaveOptions { layout, dtype: DType::F32, ..Default::default() }).unwrap();
        lora_adapters::remove(&mut model, "p").unwrap();
        load_into(&mut model, &file, "p", 1.0).unwrap();
        let got = forward(&model);
        prop_assert!(max_abs_diff(&expected, &got) < 1e-4, "{layout:?}: {}", max_abs_diff(&expected, &got));
    }
}
