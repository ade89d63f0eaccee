//! Loader behaviour on small checkpoints written here: every key layout, partial depth, lazy shards,
//! dtypes, and errors that name the file, key, shape or field at fault.

mod common;
#[path = "../examples/support/parity_check.rs"]
mod parity_check;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, Tensor};
use mistral_encoder::TensorStore;
use mistral_encoder::loader::{KEY_PREFIXES, LoadPlan, load_text_model, stored_dtype};
use mistral_encoder::{EncoderOptions, MistralConfig, MistralEncoder, PromptEmbeds, PromptTokenizer, TokenBatch};
use safetensors::{Dtype, tensor::TensorView};

type B = burn::backend::Flex;

const CONFIG: &str = r#"{"model_type":"mistral","vocab_size":32,"hidden_size":8,"intermediate_size":12,
"num_hidden_layers":3,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":6,"rms_norm_eps":1e-5,
"rope_parameters":{"rope_theta":1000000000.0,"rope_type":"default"},"sliding_window":null}"#;

fn config() -> MistralConfig {
    MistralConfig::from_json_str(CONFIG, Path::new("config.json")).unwrap()
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Language-model tensors (names without prefix) plus vision/LM-head extras, as f32.
fn tiny_weights() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let c = config();
    let (h, i, q, kv) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    let mut w = BTreeMap::new();
    let mut seed = 1;
    let mut add = |name: String, shape: Vec<usize>| {
        seed += 1;
        let n = shape.iter().product();
        let v = if name.ends_with("norm.weight") {
            values(seed, n).iter().map(|x| 1.0 + 0.2 * x).collect()
        } else {
            values(seed, n)
        };
        w.insert(name, (shape, v));
    };
    add("embed_tokens.weight".into(), vec![c.vocab_size, h]);
    for n in 0..c.num_hidden_layers {
        let p = format!("layers.{n}.");
        add(format!("{p}self_attn.q_proj.weight"), vec![q, h]);
        add(format!("{p}self_attn.k_proj.weight"), vec![kv, h]);
        add(format!("{p}self_attn.v_proj.weight"), vec![kv, h]);
        add(format!("{p}self_attn.o_proj.weight"), vec![h, q]);
        add(format!("{p}mlp.gate_proj.weight"), vec![i, h]);
        add(format!("{p}mlp.up_proj.weight"), vec![i, h]);
        add(format!("{p}mlp.down_proj.weight"), vec![h, i]);
        add(format!("{p}input_layernorm.weight"), vec![h]);
        add(format!("{p}post_attention_layernorm.weight"), vec![h]);
    }
    add("norm.weight".into(), vec![h]);
    w
}

fn to_bytes(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::BF16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
        Dtype::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        Dtype::I32 => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
        other => panic!("{other:?}"),
    }
}

fn write_safetensors(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>, Dtype)>) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, (shape, bytes, dtype))| (k.clone(), TensorView::new(*dtype, shape.clone(), bytes).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes a checkpoint folder with the given key prefix and dtype; `edit` may change the tensor map.
fn write_checkpoint(
    dir: &Path,
    prefix: &str,
    dtype: Dtype,
    edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<u8>, Dtype)>),
) {
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>, Dtype)> = tiny_weights()
        .into_iter()
        .map(|(k, (s, v))| (format!("{prefix}{k}"), (s, to_bytes(&v, dtype), dtype)))
        .collect();
    // Parts FLUX.2 never reads.
    tensors.insert("vision_tower.patch_conv.weight".into(), (vec![4, 3], to_bytes(&values(99, 12), dtype), dtype));
    tensors
        .insert("multi_modal_projector.linear_1.weight".into(), (vec![8, 4], to_bytes(&values(98, 32), dtype), dtype));
    tensors.insert("lm_head.weight".into(), (vec![32, 8], to_bytes(&values(97, 256), dtype), dtype));
    edit(&mut tensors);
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
}

fn ids_and_mask() -> (Vec<i64>, Vec<i64>) {
    // batch 2, L 6: second row left-padded by 2 (id 11 as in Tekken; any id works here).
    (vec![1, 5, 7, 9, 3, 4, 11, 11, 1, 20, 3, 4], vec![1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1])
}

fn run(dir: &Path, plan: LoadPlan, layers: &[usize]) -> (Vec<f32>, Vec<String>) {
    let mut store = TensorStore::open_dir(dir).unwrap();
    let model = load_text_model::<B>(&mut store, &config(), plan, &Default::default()).unwrap();
    let (ids, mask) = ids_and_mask();
    let out = model.stacked_hidden_states(&ids, &mask, 2, 6, layers).unwrap();
    (out.cast(DType::F32).into_data().to_vec::<f32>().unwrap(), store.used_keys())
}

const FULL: LoadPlan = LoadPlan { layers: 3, final_norm: true, dtype: DType::F32, quantize: None, offload: 0.0 };

#[test]
fn every_key_layout_loads_the_same_model() {
    let tmp = common::TempDir::new("layouts");
    let mut results = Vec::new();
    for (n, prefix) in KEY_PREFIXES.iter().enumerate() {
        let dir = tmp.path().join(format!("layout{n}"));
        write_checkpoint(&dir, prefix, Dtype::F32, |_| {});
        let (out, used) = run(&dir, FULL, &[0, 2, 3]);
        assert!(
            used.iter().all(|k| k.starts_with(prefix) && !k.contains("vision") && !k.contains("lm_head")),
            "{used:?}"
        );
        results.push(out);
    }
    assert_eq!(results[0].len(), 2 * 6 * 3 * 8);
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
}

#[test]
fn layers_that_are_not_run_are_not_read() {
    let tmp = common::TempDir::new("partial");
    write_checkpoint(tmp.path(), "language_model.model.", Dtype::F32, |_| {});
    let plan = LoadPlan { layers: 2, final_norm: false, dtype: DType::F32, quantize: None, offload: 0.0 };
    let (partial, used) = run(tmp.path(), plan, &[1, 2]);
    assert!(used.iter().all(|k| !k.contains("layers.2.") && !k.ends_with("model.norm.weight")), "{used:?}");
    assert_eq!(used.len(), 1 + 2 * 9);
    // Same numbers as with the whole model loaded.
    let (full, _) = run(tmp.path(), FULL, &[1, 2]);
    assert_eq!(partial, full);
}

#[test]
fn final_hidden_state_is_normed_and_requires_the_norm() {
    let tmp = common::TempDir::new("norm");
    write_checkpoint(tmp.path(), "model.", Dtype::F32, |_| {});
    let mut store = TensorStore::open_dir(tmp.path()).unwrap();
    let model = load_text_model::<B>(
        &mut store,
        &config(),
        LoadPlan { layers: 3, final_norm: false, dtype: DType::F32, quantize: None, offload: 0.0 },
        &Default::default(),
    )
    .unwrap();
    let (ids, mask) = ids_and_mask();
    let err = model.stacked_hidden_states(&ids, &mask, 2, 6, &[3]).unwrap_err().to_string();
    assert!(err.contains("final norm"), "{err}");
    let err = model.stacked_hidden_states(&ids, &mask, 2, 6, &[4]).unwrap_err().to_string();
    assert!(err.contains("hidden state 4"), "{err}");

    // hidden_states[3] (== num_hidden_layers) is the RMS-normalized last layer: per-token RMS of the
    // output divided by the norm weight is 1.
    let (out, _) = run(tmp.path(), FULL, &[3]);
    let w = &tiny_weights()["norm.weight"].1;
    for token in out.chunks(8) {
        let ms: f32 = token.iter().zip(w).map(|(x, g)| (x / g).powi(2)).sum::<f32>() / 8.0;
        assert!((ms - 1.0).abs() < 1e-3, "{ms}");
    }
}

#[test]
fn bf16_and_f16_checkpoints_load_and_convert() {
    let tmp = common::TempDir::new("dtypes");
    let mut outs = Vec::new();
    for (n, dtype) in [Dtype::F32, Dtype::BF16, Dtype::F16].into_iter().enumerate() {
        let dir = tmp.path().join(format!("d{n}"));
        write_checkpoint(&dir, "model.language_model.", dtype, |_| {});
        let store = TensorStore::open_dir(&dir).unwrap();
        assert_eq!(
            stored_dtype(&store, "model.language_model.embed_tokens.weight").unwrap(),
            [DType::F32, DType::BF16, DType::F16][n]
        );
        outs.push(run(&dir, FULL, &[1, 3]).0);
    }
    let rel = |a: &[f32], b: &[f32]| {
        let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f32 = b.iter().map(|y| y.powi(2)).sum();
        (num / den).sqrt()
    };
    // Weight rounding only (compute is f32 in all three).
    assert!(rel(&outs[1], &outs[0]) < 2e-2, "{}", rel(&outs[1], &outs[0]));
    assert!(rel(&outs[2], &outs[0]) < 5e-3, "{}", rel(&outs[2], &outs[0]));
    // bf16 compute runs and stays close.
    let dir = tmp.path().join("d1");
    let mut store = TensorStore::open_dir(&dir).unwrap();
    let model =
        load_text_model::<B>(&mut store, &config(), LoadPlan { dtype: DType::BF16, ..FULL }, &Default::default())
            .unwrap();
    let (ids, mask) = ids_and_mask();
    let out = model.stacked_hidden_states(&ids, &mask, 2, 6, &[1, 3]).unwrap();
    assert_eq!(out.dtype(), DType::BF16);
    let out = out.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
    assert!(rel(&out, &outs[1]) < 5e-2, "{}", rel(&out, &outs[1]));
}

fn load_err(dir: &Path) -> String {
    let mut store = match TensorStore::open_dir(dir) {
        Ok(store) => store,
        Err(e) => return e.to_string(),
    };
    load_text_model::<B>(&mut store, &config(), FULL, &Default::default()).unwrap_err().to_string()
}

#[test]
fn bad_checkpoints_give_named_errors() {
    let tmp = common::TempDir::new("errors");

    let dir = tmp.path().join("shape");
    write_checkpoint(&dir, "model.", Dtype::F32, |t| {
        t.insert("model.layers.1.self_attn.q_proj.weight".into(), (vec![8, 8], vec![0; 256], Dtype::F32));
    });
    let e = load_err(&dir);
    assert!(
        e.contains("model.layers.1.self_attn.q_proj.weight")
            && e.contains("[8, 8]")
            && e.contains("[12, 8]")
            && e.contains("model.safetensors"),
        "{e}"
    );

    let dir = tmp.path().join("missing");
    write_checkpoint(&dir, "model.", Dtype::F32, |t| {
        t.remove("model.layers.2.mlp.up_proj.weight");
    });
    let e = load_err(&dir);
    assert!(e.contains("model.layers.2.mlp.up_proj.weight") && e.contains("not found"), "{e}");

    let dir = tmp.path().join("dtype");
    write_checkpoint(&dir, "model.", Dtype::F32, |t| {
        t.insert("model.layers.0.input_layernorm.weight".into(), (vec![8], vec![0; 32], Dtype::I32));
    });
    let e = load_err(&dir);
    assert!(e.contains("model.layers.0.input_layernorm.weight") && e.contains("I32"), "{e}");

    let dir = tmp.path().join("layout");
    write_checkpoint(&dir, "transformer.", Dtype::F32, |_| {});
    let e = load_err(&dir);
    assert!(e.contains("embed_tokens.weight") && e.contains("language_model.model."), "{e}");

    let dir = tmp.path().join("garbage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"definitely not safetensors").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors file"), "{e}");

    let dir = tmp.path().join("empty");
    std::fs::create_dir_all(&dir).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("no *.safetensors"), "{e}");

    let e = load_err(&tmp.path().join("does-not-exist"));
    assert!(e.contains("does-not-exist"), "{e}");
}

#[test]
fn encoder_errors_name_the_file_or_field() {
    let tmp = common::TempDir::new("encoder-errors");
    let root = tmp.path();
    write_checkpoint(&root.join("text_encoder"), "model.", Dtype::F32, |_| {});
    let device = Default::default();

    let e = MistralEncoder::<B>::from_flux2_dir(root, EncoderOptions::default(), &device).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("not found"), "{e}");

    // A valid tokenizer.json without FLUX.2's chat tokens.
    let tok_dir = root.join("tokenizer");
    std::fs::create_dir_all(&tok_dir).unwrap();
    std::fs::write(
        tok_dir.join("tokenizer.json"),
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"a":0,"<unk>":1},"unk_token":"<unk>"}}"#,
    )
    .unwrap();
    let e = PromptTokenizer::from_file(&tok_dir.join("tokenizer.json")).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("<s>"), "{e}");
    std::fs::write(tok_dir.join("tokenizer.json"), b"{ not json").unwrap();
    let e = PromptTokenizer::from_file(&tok_dir.join("tokenizer.json")).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");

    // Layers deeper than the model (FLUX.2's defaults on a 3-layer model).
    std::fs::write(tok_dir.join("tokenizer.json"), common::tokenizer_json()).unwrap();
    let e = MistralEncoder::<B>::from_flux2_dir(root, EncoderOptions::default(), &device).unwrap_err().to_string();
    assert!(e.contains("hidden state 30") && e.contains("num_hidden_layers = 3"), "{e}");

    // Config inconsistent with itself.
    std::fs::write(
        root.join("text_encoder/config.json"),
        CONFIG.replace("\"num_key_value_heads\":1", "\"num_key_value_heads\":3"),
    )
    .unwrap();
    let options = EncoderOptions { hidden_states_layers: vec![1], ..Default::default() };
    let e = MistralEncoder::<B>::from_flux2_dir(root, options.clone(), &device).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("num_key_value_heads"), "{e}");

    // And with everything in place the tiny model encodes real prompts (ids < 32 are not guaranteed by
    // Tekken, so the vocabulary check must catch that cleanly).
    std::fs::write(root.join("text_encoder/config.json"), CONFIG).unwrap();
    let encoder = MistralEncoder::<B>::from_flux2_dir(root, options, &device).unwrap();
    let e = encoder.encode(&["a cat"]).unwrap_err().to_string();
    assert!(e.contains("outside the embedding table"), "{e}");
}

#[test]
fn shards_that_hold_only_unused_weights_may_be_absent() {
    // The committed bf16 case keeps the LM head alone in shard 1 of 3; FLUX.2 never reads it.
    let dir = common::materialize("bf16_hub_layout_sharded");
    std::fs::remove_file(dir.path().join("text_encoder/model-00001-of-00003.safetensors")).unwrap();
    let report = parity_check::check::<B>(dir.path(), DType::F32, &Default::default()).unwrap();
    assert_eq!(report.token_mismatch, None);
    assert!(report.rel_err < 1e-4, "{}", report.rel_err);
}

#[test]
fn default_dtype_is_the_checkpoints() {
    let dir = common::materialize("bf16_hub_layout_sharded");
    let options = EncoderOptions { max_sequence_length: 40, hidden_states_layers: vec![0, 3], ..Default::default() };
    let encoder = MistralEncoder::<B>::from_flux2_dir(dir.path(), options, &Default::default()).unwrap();
    let embeds = encoder.encode(&["a cat", "a dog"]).unwrap();
    assert_eq!(embeds.embeds.dtype(), DType::BF16);
    assert_eq!(embeds.embeds.dims(), [2, 40, 2 * 16]);
}

#[test]
fn prompt_embeds_round_trip_through_safetensors() {
    let tmp = common::TempDir::new("embeds");
    let device = Default::default();
    for dtype in [DType::F32, DType::BF16] {
        let data = values(7, 2 * 3 * 4);
        let embeds = Tensor::<B, 3>::from_data(burn::tensor::TensorData::new(data, [2, 3, 4]), (&device, DType::F32))
            .cast(dtype);
        let tokens = TokenBatch::from_ids(&[vec![1, 2], vec![1, 2, 3, 4]], 3, 11).unwrap();
        let original = PromptEmbeds {
            embeds,
            tokens,
            hidden_states_layers: vec![10, 20, 30],
            prompts: vec!["a".into(), "b c".into()],
        };
        let path = tmp.path().join(format!("cache/{dtype:?}.safetensors"));
        original.save(&path).unwrap();
        let back = PromptEmbeds::<B>::load(&path, &device).unwrap();
        assert_eq!(back.embeds.dtype(), dtype);
        assert_eq!(back.tokens, original.tokens);
        assert_eq!(back.hidden_states_layers, vec![10, 20, 30]);
        assert_eq!(back.prompts, original.prompts);
        let a = original.embeds.clone().cast(DType::F32).into_data().to_vec::<f32>().unwrap();
        let b = back.embeds.clone().cast(DType::F32).into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, b, "bit-exact reload");

        // Per-caption cache entries and re-batching.
        let second = back.select(1).unwrap();
        assert_eq!(second.tokens.input_ids, vec![1, 2, 3]); // right-truncated, not padded
        assert_eq!(second.prompts, vec!["b c".to_string()]);
        let joined = PromptEmbeds::concat(vec![back.select(0).unwrap(), second]).unwrap();
        assert_eq!(joined.tokens, back.tokens);
        assert_eq!(joined.embeds.cast(DType::F32).into_data().to_vec::<f32>().unwrap(), b);
        assert!(back.select(2).is_err());
    }
    let e = PromptEmbeds::<B>::load(&tmp.path().join("nope.safetensors"), &device).unwrap_err().to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
}

/// NaN or an infinity in a weight is an error at load naming the key and the file.
#[test]
fn non_finite_weights_are_named() {
    let tmp = common::TempDir::new("nonfinite");
    for (name, bad) in [("nan", f32::NAN), ("inf", f32::NEG_INFINITY)] {
        let dir = tmp.path().join(name);
        write_checkpoint(&dir, "model.", Dtype::F32, |t| {
            let (_, bytes, _) = t.get_mut("model.layers.0.mlp.down_proj.weight").unwrap();
            bytes[4..8].copy_from_slice(&bad.to_le_bytes());
        });
        let e = load_err(&dir);
        assert!(
            e.contains("model.layers.0.mlp.down_proj.weight")
                && e.contains("model.safetensors")
                && e.contains("NaN or infinite"),
            "{e}"
        );
    }
}
