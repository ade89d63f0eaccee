//! What `save` writes besides the factors: the storage dtype (bf16 by default), the `flux2.*` header
//! metadata (rank, alpha, targets, base model, trigger, step, software), and how `lora_adapter_metadata`
//! (diffusers/PEFT) sets the scale on load: `lora_alpha / r`, alpha = rank when the entry is absent.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::DType;
use common::{B, forward, rel_err, tiny, trained_adapter};
use flux2_dit::{Flux2Transformer, RandomSource, TensorStore};
use flux2_ops::writer::{PendingTensor, write_safetensors};
use lora_adapters::{
    LoraConfig, LoraLayout, LoraMetadata, SaveOptions, Targets, extract, load_into, read_factors, remove, save,
};

/// The JSON header of a safetensors file.
fn header(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + len]).unwrap()
}

fn model(seed: u64) -> Flux2Transformer<B> {
    Flux2Transformer::<B>::from_source(&tiny(1, 1), &mut RandomSource::new(seed), DType::F32, &Default::default())
        .unwrap()
}

/// A model of `seed` with a trained rank-`rank` adapter `name` (alpha `alpha`, seed `seed + 1`) on the
/// block Linears, saved in the diffusers layout in f32 to `file`.
fn saved_diffusers_f32(seed: u64, name: &str, rank: usize, alpha: f32, file: &Path) -> Flux2Transformer<B> {
    let mut model = model(seed);
    let config = LoraConfig { rank, alpha, targets: Targets::Blocks, seed: seed + 1, ..Default::default() };
    trained_adapter(&mut model, name, &config);
    let options = SaveOptions { layout: LoraLayout::Diffusers, dtype: DType::F32, ..Default::default() };
    save(&model, name, file, &options).unwrap();
    model
}

/// Rewrites a LoRA file with the same tensors plus `extra` and `metadata` as its header.
fn rewrite(src: &Path, dst: &Path, metadata: &BTreeMap<String, String>, extra: Vec<PendingTensor<'static>>) {
    let store = TensorStore::open(&[src.to_path_buf()]).unwrap();
    let mut keys: Vec<String> = store.keys().map(String::from).collect();
    keys.sort();
    let mut tensors: Vec<PendingTensor> =
        keys.iter().map(|k| PendingTensor::ready(k.clone(), store.read(k, DType::F32).unwrap(), DType::F32)).collect();
    tensors.extend(extra);
    write_safetensors(dst, tensors, metadata).unwrap();
}

#[test]
fn default_save_is_bf16_and_the_header_records_the_training() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = model(3);
    let config = LoraConfig { rank: 3, alpha: 6.0, targets: Targets::Blocks, seed: 4, ..Default::default() };
    trained_adapter(&mut model, "t", &config);
    let expected = forward(&model);
    let modules = extract(&model, "t").unwrap().len();

    let metadata = LoraMetadata {
        base_model: Some("black-forest-labs/FLUX.2-dev".into()),
        trigger_word: Some("sks".into()),
        step: Some(1250),
        targets: Some(Targets::Blocks.label()),
        extra: BTreeMap::from([
            ("name".to_string(), "demo".to_string()),
            // Reserved names must not overwrite what save computes.
            ("flux2.rank".to_string(), "99".to_string()),
            ("format".to_string(), "numpy".to_string()),
        ]),
        ..Default::default()
    };
    let file = tmp.path().join("t.safetensors");
    let options = SaveOptions { metadata, ..Default::default() };
    assert_eq!((options.layout, options.dtype), (LoraLayout::AiToolkit, DType::BF16));
    save(&model, "t", &file, &options).unwrap();

    let h = header(&file);
    let meta = h["__metadata__"].as_object().unwrap();
    let get = |k: &str| meta.get(k).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("no `{k}` in {meta:?}"));
    assert_eq!(get("format"), "pt");
    assert_eq!(get("flux2.rank"), "3");
    assert_eq!(get("flux2.alpha"), "6");
    assert_eq!(get("flux2.targets"), "blocks");
    assert_eq!(get("flux2.base_model"), "black-forest-labs/FLUX.2-dev");
    assert_eq!(get("flux2.trigger_word"), "sks");
    assert_eq!(get("flux2.step"), "1250");
    assert_eq!(get("flux2.layout"), "AiToolkit");
    assert!(get("flux2.software").starts_with("flux2-burn lora-adapters "), "{}", get("flux2.software"));
    assert_eq!(get("name"), "demo");

    let tensors: Vec<(&String, &serde_json::Value)> = h.iter().filter(|(k, _)| *k != "__metadata__").collect();
    assert_eq!(tensors.len(), 2 * modules);
    for (key, info) in &tensors {
        assert!(key.starts_with("diffusion_model.") && key.ends_with(".weight"), "{key}");
        assert_eq!(info["dtype"], "BF16", "{key}");
    }

    // Reloading the bf16 file reproduces the adapter up to bf16 rounding of A and B.
    remove(&mut model, "t").unwrap();
    load_into(&mut model, &file, "t", 1.0).unwrap();
    let err = rel_err(&forward(&model), &expected);
    assert!(err > 0.0 && err < 1e-2, "bf16 reload rel_err {err:e}");
}

#[test]
fn peft_scale_is_lora_alpha_over_r_and_alpha_defaults_to_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("peft.safetensors");
    saved_diffusers_f32(5, "p", 4, 2.0, &file);
    let peft: serde_json::Value =
        serde_json::from_str(header(&file)["__metadata__"]["lora_adapter_metadata"].as_str().unwrap()).unwrap();
    assert_eq!((peft["transformer.r"].as_u64(), peft["transformer.lora_alpha"].as_f64()), (Some(4), Some(2.0)));

    let fresh = self::model(5);
    let scales =
        |path: &Path| -> Vec<f32> { read_factors(&fresh, path).unwrap().into_iter().map(|(_, f)| f.scale).collect() };
    assert!(scales(&file).iter().all(|&s| s == 0.5), "{:?}", scales(&file));

    // No lora_adapter_metadata: alpha = r, scale 1.
    let bare = tmp.path().join("bare.safetensors");
    rewrite(&file, &bare, &BTreeMap::new(), vec![]);
    assert!(scales(&bare).iter().all(|&s| s == 1.0), "{:?}", scales(&bare));

    // Another alpha in the header changes every scale; PEFT's rank-stabilized variant divides by sqrt(r).
    let header_with = |name: &str, json: &str| {
        let path = tmp.path().join(name);
        let metadata = BTreeMap::from([("lora_adapter_metadata".to_string(), json.to_string())]);
        rewrite(&file, &path, &metadata, vec![]);
        path
    };
    let other = header_with("other.safetensors", r#"{"transformer.r": 4, "transformer.lora_alpha": 12.0}"#);
    assert!(scales(&other).iter().all(|&s| s == 3.0), "{:?}", scales(&other));
    let rslora = header_with(
        "rslora.safetensors",
        r#"{"transformer.r": 4, "transformer.lora_alpha": 12.0, "transformer.use_rslora": true}"#,
    );
    assert!(scales(&rslora).iter().all(|&s| s == 6.0), "{:?}", scales(&rslora));

    let broken = header_with("broken.safetensors", "{ not json");
    let e = read_factors(&fresh, &broken).unwrap_err().to_string();
    assert!(e.contains("broken.safetensors") && e.contains("lora_adapter_metadata"), "{e}");
}

#[test]
fn tensors_that_are_not_lora_factors_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("lora.safetensors");
    let model = saved_diffusers_f32(8, "d", 2, 2.0, &file);
    // A DoRA file: PEFT adds a per-output magnitude vector that a plain LoRA load would silently drop.
    let key = "transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector";
    let out = model.config.num_attention_heads * model.config.attention_head_dim;
    let magnitude = PendingTensor::ready(key, burn::tensor::TensorData::new(vec![1f32; out], [out]), DType::F32);
    let dora = tmp.path().join("dora.safetensors");
    rewrite(&file, &dora, &BTreeMap::new(), vec![magnitude]);
    let e = read_factors(&model, &dora).unwrap_err().to_string();
    assert!(e.contains("dora.safetensors") && e.contains(key) && e.contains("not LoRA factors"), "{e}");
    // The same file without it loads.
    assert!(read_factors(&model, &file).is_ok());
}

/// A rank wider than a targeted layer (100000 on 16-wide layers) is refused before any factor is
/// allocated, naming the layer and its widths; rank 0 likewise.
#[test]
fn ranks_beyond_a_layer_are_refused_naming_it() {
    use flux2_dit::{Flux2Transformer, RandomSource};
    use lora_adapters::{Error, LoraConfig, Targets, inject};
    let mut model = Flux2Transformer::<B>::from_source(
        &common::tiny(1, 1),
        &mut RandomSource::new(1),
        burn::tensor::DType::F32,
        &Default::default(),
    )
    .unwrap();
    for rank in [100_000, 0] {
        let err = inject(
            &mut model,
            "big",
            &LoraConfig { rank, alpha: 1.0, dropout: 0.0, targets: Targets::Blocks, seed: 1 },
        )
        .unwrap_err();
        assert!(matches!(err, Error::Rank { max: 16, .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("rank {rank}")) && text.contains("network.linear") && text.contains("blocks."),
            "{text}"
        );
    }
    assert!(model.linears().iter().all(|(_, l)| l.adapters.is_empty()), "nothing attached");
}
