//! Loader behaviour beyond the happy path: layouts round-trip, shards, bf16, and every error names
//! what is wrong.

use flux2_test_support::dit_fixture as parity;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::DType;
use flux2_dit::{Checkpoint, TensorStore, save_bfl_file, save_diffusers_folder};
use flux2_ops::writer::{PendingTensor, write_safetensors};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dit").join(name)
}

/// Copies a fixture's inputs/expected into `dst` so a rewritten transformer can be checked against them.
fn copy_io(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.join("transformer")).unwrap();
    for f in ["inputs.safetensors", "expected.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
}

/// Rewrites a safetensors file through `edit(name) -> Option<new name>` (None drops the tensor),
/// plus optional extra tensors.
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&str) -> Option<String>, extra: Vec<(String, Vec<usize>)>) {
    let store = TensorStore::open(&[src.to_path_buf()]).unwrap();
    let mut keys: Vec<String> = store.keys().map(String::from).collect();
    keys.sort();
    let mut tensors = Vec::new();
    for key in keys {
        let Some(new) = edit(&key) else { continue };
        let data = store.read(&key, DType::F32).unwrap();
        tensors.push(PendingTensor::ready(new, data, DType::F32));
    }
    for (name, shape) in extra {
        let n = shape.iter().product();
        tensors.push(PendingTensor::ready(name, burn::tensor::TensorData::new(vec![0f32; n], shape), DType::F32));
    }
    write_safetensors(dst, tensors, &BTreeMap::new()).unwrap();
}

fn load_err(path: &Path) -> String {
    match Checkpoint::open(path).and_then(|c| c.load::<B>(DType::F32, &Default::default())) {
        Ok(_) => panic!("{} loaded but should fail", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn layouts_round_trip_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("guidance_b1");
    let model = Checkpoint::open(&src.join("transformer")).unwrap().load::<B>(DType::F32, &Default::default()).unwrap();

    let bfl = tmp.path().join("bfl");
    copy_io(&src, &bfl);
    save_bfl_file(&model, &bfl.join("transformer/flux2.safetensors"), "model.diffusion_model.", DType::F32).unwrap();
    assert!(parity::run_fixture::<B>(&bfl, &Default::default()).unwrap() < 1e-6, "BFL save lost information");

    let diffusers = tmp.path().join("diffusers");
    copy_io(&src, &diffusers);
    let reloaded =
        Checkpoint::open(&bfl.join("transformer")).unwrap().load::<B>(DType::F32, &Default::default()).unwrap();
    save_diffusers_folder(&reloaded, &diffusers.join("transformer"), DType::F32).unwrap();
    assert!(parity::run_fixture::<B>(&diffusers, &Default::default()).unwrap() < 1e-6);
    // The diffusers files we write carry diffusers' own key set.
    let ours = TensorStore::open(&[diffusers.join("transformer/diffusion_pytorch_model.safetensors")]).unwrap();
    let theirs = TensorStore::open(&[src.join("transformer/diffusion_pytorch_model.safetensors")]).unwrap();
    let mut a: Vec<_> = ours.keys().collect();
    let mut b: Vec<_> = theirs.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn sharded_diffusers_checkpoint_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("guidance_b1");
    let dir = tmp.path().join("sharded");
    copy_io(&src, &dir);
    let t = dir.join("transformer");
    std::fs::copy(src.join("transformer/config.json"), t.join("config.json")).unwrap();
    let whole = src.join("transformer/diffusion_pytorch_model.safetensors");
    let in_first = |k: &str| k.starts_with("transformer_blocks") || k.starts_with("x_");
    rewrite(&whole, &t.join("part-1.safetensors"), |k| in_first(k).then(|| k.to_string()), vec![]);
    rewrite(&whole, &t.join("part-2.safetensors"), |k| (!in_first(k)).then(|| k.to_string()), vec![]);
    let store = TensorStore::open(&[whole]).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = store
        .keys()
        .map(|k| {
            (
                k.to_string(),
                serde_json::Value::from(if in_first(k) { "part-1.safetensors" } else { "part-2.safetensors" }),
            )
        })
        .collect();
    std::fs::write(
        t.join("diffusion_pytorch_model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    assert!(parity::run_fixture::<B>(&dir, &Default::default()).unwrap() < 1e-6);
}

#[test]
fn bf16_model_stays_close() {
    let src = fixture("guidance_b1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bf16");
    copy_io(&src, &dir);
    let model =
        Checkpoint::open(&src.join("transformer")).unwrap().load::<B>(DType::BF16, &Default::default()).unwrap();
    assert_eq!(model.dtype(), DType::BF16);
    save_bfl_file(&model, &dir.join("transformer/flux2.safetensors"), "", DType::BF16).unwrap();
    std::fs::copy(src.join("transformer/config.json"), dir.join("transformer/config.json")).unwrap();
    // Loading a bf16 file into an f32 model: weights are bf16-rounded, so the error is bf16-sized.
    let err = parity::run_fixture::<B>(&dir, &Default::default()).unwrap();
    assert!(err > 1e-6 && err < 2e-2, "bf16 weights: rel_err {err}");
}

#[test]
fn missing_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("flux2.safetensors");
    rewrite(
        &fixture("bfl_inferred/transformer/flux2.safetensors"),
        &file,
        |k| (k != "single_blocks.1.linear2.weight").then(|| k.to_string()),
        vec![],
    );
    let msg = load_err(&file);
    assert!(msg.contains("single_blocks.1.linear2.weight") && msg.contains("flux2.safetensors"), "{msg}");
}

#[test]
fn unexpected_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("flux2.safetensors");
    rewrite(
        &fixture("bfl_inferred/transformer/flux2.safetensors"),
        &file,
        |k| Some(k.to_string()),
        vec![("double_blocks.0.img_attn.bias".into(), vec![3])],
    );
    let msg = load_err(&file);
    assert!(msg.contains("double_blocks.0.img_attn.bias") && msg.contains("flux2.safetensors"), "{msg}");
}

#[test]
fn shape_mismatch_names_key_file_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("transformer");
    std::fs::create_dir_all(&t).unwrap();
    let src = fixture("guidance_b1/transformer");
    std::fs::copy(src.join("diffusion_pytorch_model.safetensors"), t.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    let config = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"joint_attention_dim\": 24", "\"joint_attention_dim\": 20");
    std::fs::write(t.join("config.json"), config).unwrap();
    let msg = load_err(&t);
    assert!(
        msg.contains("context_embedder.weight")
            && msg.contains("diffusion_pytorch_model.safetensors")
            && msg.contains("[16, 20]")
            && msg.contains("[16, 24]"),
        "{msg}"
    );
}

#[test]
fn corrupt_files_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("broken.safetensors");
    std::fs::write(&file, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    assert!(load_err(&file).contains("broken.safetensors"));
    std::fs::write(&file, b"").unwrap();
    assert!(load_err(&file).contains("broken.safetensors"));
    let msg = load_err(&tmp.path().join("absent"));
    assert!(msg.contains("absent"), "{msg}");
}

/// Rewrites the fixture transformer with one tensor replaced by `data`; returns the folder.
fn with_tensor(tmp: &Path, key: &str, data: burn::tensor::TensorData, dtype: DType) -> PathBuf {
    let t = tmp.join("transformer");
    std::fs::create_dir_all(&t).unwrap();
    let src = fixture("guidance_b1/transformer");
    std::fs::copy(src.join("config.json"), t.join("config.json")).unwrap();
    let store = TensorStore::open(&[src.join("diffusion_pytorch_model.safetensors")]).unwrap();
    let mut keys: Vec<String> = store.keys().map(String::from).collect();
    keys.sort();
    let mut tensors = Vec::new();
    for k in keys {
        let original = store.read(&k, DType::F32).unwrap();
        if k == key {
            assert_eq!(data.shape, original.shape);
            tensors.push(PendingTensor::ready(k, data.clone(), dtype));
        } else {
            tensors.push(PendingTensor::ready(k, original, DType::F32));
        }
    }
    write_safetensors(&t.join("diffusion_pytorch_model.safetensors"), tensors, &BTreeMap::new()).unwrap();
    t
}

/// A NaN or an infinity in a base weight is an error at load naming the tensor and the file (it
/// used to give an all-black image and exit 0).
#[test]
fn non_finite_weights_are_named_at_load() {
    let store_key = "context_embedder.weight";
    let shape = TensorStore::open(&[fixture("guidance_b1/transformer/diffusion_pytorch_model.safetensors")])
        .unwrap()
        .shape(store_key)
        .unwrap()
        .to_vec();
    for bad in [f32::NAN, f32::INFINITY] {
        let tmp = tempfile::tempdir().unwrap();
        let mut values = vec![0.01f32; shape.iter().product()];
        values[3] = bad;
        let t = with_tensor(tmp.path(), store_key, burn::tensor::TensorData::new(values, shape.clone()), DType::F32);
        let msg = load_err(&t);
        assert!(
            msg.contains(store_key)
                && msg.contains("diffusion_pytorch_model.safetensors")
                && msg.contains("NaN or infinite"),
            "{msg}"
        );
    }
}

/// An integer tensor where a float weight belongs is refused, not converted.
#[test]
fn integer_tensors_are_not_weights() {
    let store_key = "context_embedder.weight";
    let shape = TensorStore::open(&[fixture("guidance_b1/transformer/diffusion_pytorch_model.safetensors")])
        .unwrap()
        .shape(store_key)
        .unwrap()
        .to_vec();
    let tmp = tempfile::tempdir().unwrap();
    let ints = burn::tensor::TensorData::new(vec![1i32; shape.iter().product()], shape);
    let t = with_tensor(tmp.path(), store_key, ints, DType::I32);
    let msg = load_err(&t);
    assert!(msg.contains(store_key) && msg.contains("I32") && msg.contains("float weight"), "{msg}");
}

/// A failed write says "cannot write", naming the file (it said "cannot read").
#[test]
fn failed_writes_say_write() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    // A folder cannot be created under a regular file.
    let target = blocker.join("sub").join("out.safetensors");
    let tensor = PendingTensor::ready("t", burn::tensor::TensorData::new(vec![1f32], [1]), DType::F32);
    let msg = write_safetensors(&target, vec![tensor], &BTreeMap::new()).unwrap_err().to_string();
    assert!(msg.starts_with("cannot write") && msg.contains("out.safetensors"), "{msg}");
}

/// A truncated checkpoint names the first tensor past the end.
#[test]
fn truncated_checkpoint_names_a_tensor_past_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(fixture("guidance_b1/transformer/diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let msg = load_err(&file);
    assert!(
        msg.contains("diffusion_pytorch_model.safetensors")
            && msg.contains("ends at data byte")
            && msg.contains("truncated"),
        "{msg}"
    );
}
