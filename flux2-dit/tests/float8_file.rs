//! Float8 checkpoints in ComfyUI's layout: `write_float8_file` (what `flux2-train quantize` runs) writes
//! the block Linears as F8_E4M3 codes with one F32 scale each, the loader keeps them quantized exactly as
//! stored, the older "scaled fp8" key names load the same, and damaged files are errors naming the key.

use flux2_test_support::dit_fixture as parity;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{DType, TensorData};
use flux2_dit::{Checkpoint, TensorStore, save_bfl_file, write_float8_file};
use flux2_ops::quant::float8_file;
use flux2_ops::writer::{PendingTensor, write_safetensors};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dit").join(name)
}

/// A fixture folder whose transformer is `file` (the fixture's inputs and expected outputs copied).
fn case_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("transformer")).unwrap();
    for f in ["inputs.safetensors", "expected.safetensors"] {
        std::fs::copy(fixture("guidance_b1").join(f), dir.join(f)).unwrap();
    }
    dir
}

/// Rewrites `src` to `dst` keeping every tensor's stored bytes and dtype, with keys renamed by `edit`
/// (None drops one) and `extra` raw tensors added.
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&str) -> Option<String>, extra: Vec<PendingTensor<'static>>) {
    let store = TensorStore::open(&[src.to_path_buf()]).unwrap();
    let mut keys: Vec<String> = store.keys().map(String::from).collect();
    keys.sort();
    let mut tensors = extra;
    for key in keys {
        let Some(name) = edit(&key) else { continue };
        let stored = store.get(&key).unwrap();
        let float8 = stored.dtype == safetensors::Dtype::F8_E4M3;
        let dtype = if float8 { DType::U8 } else { flux2_ops::store::burn_dtype(stored.dtype).unwrap() };
        let data = TensorData::from_bytes_vec(stored.bytes.to_vec(), stored.shape.to_vec(), dtype);
        tensors.push(PendingTensor { float8, ..PendingTensor::ready(name, data, dtype) });
    }
    write_safetensors(dst, tensors, &BTreeMap::new()).unwrap();
}

fn write_fp8(root: &Path) -> (PathBuf, PathBuf) {
    let model = Checkpoint::open(&fixture("guidance_b1").join("transformer"))
        .unwrap()
        .load::<B>(DType::F32, &Default::default())
        .unwrap();
    let bf16 = case_dir(root, "bf16").join("transformer/flux2.safetensors");
    save_bfl_file(&model, &bf16, "model.diffusion_model.", DType::BF16).unwrap();
    let fp8 = case_dir(root, "fp8").join("transformer/flux2.safetensors");
    let summary = write_float8_file(&Checkpoint::open(&bf16).unwrap(), &fp8, &|_, _| {}).unwrap();
    assert!(summary.float8_layers > 0 && summary.bytes_written < summary.bytes_read, "{summary:?}");
    (bf16, fp8)
}

#[test]
fn float8_files_hold_comfy_keys_and_load_quantized_as_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let (bf16, fp8) = write_fp8(tmp.path());
    let store = TensorStore::open(&[fp8.clone()]).unwrap();
    let p = "model.diffusion_model.";
    let qkv = format!("{p}double_blocks.0.img_attn.qkv");
    assert_eq!(store.dtype(&format!("{qkv}.weight")), Some(safetensors::Dtype::F8_E4M3));
    assert_eq!(store.dtype(&format!("{qkv}.weight_scale")), Some(safetensors::Dtype::F32));
    assert_eq!(store.shape(&format!("{qkv}.weight_scale")), Some(&[][..]));
    assert_eq!(store.dtype(&format!("{p}single_blocks.0.linear2.weight")), Some(safetensors::Dtype::F8_E4M3));
    assert_eq!(store.dtype(&format!("{p}img_in.weight")), Some(safetensors::Dtype::BF16));
    assert_eq!(store.dtype(&format!("{p}double_stream_modulation_img.lin.weight")), Some(safetensors::Dtype::BF16));
    let meta = store.metadata();
    let listed: serde_json::Value = serde_json::from_str(&meta[float8_file::METADATA_KEY]).unwrap();
    assert_eq!(listed["layers"][&qkv]["format"], "float8_e4m3fn");

    let model = Checkpoint::open(&fp8).unwrap().load::<B>(DType::F32, &Default::default()).unwrap();
    assert!(model.double_blocks[0].img_attn.qkv.quantized.is_some());
    assert!(model.single_blocks[0].linear1.quantized.is_some());
    assert!(model.img_in.quantized.is_none() && model.double_stream_modulation_img.lin.quantized.is_none());
    // The loaded weight is exactly code x scale of the file.
    let host = float8_file::read_linear(
        &store,
        &qkv,
        model.double_blocks[0].img_attn.qkv.quantized.as_ref().map(|q| [q.out_features, q.in_features]).unwrap(),
    )
    .unwrap();
    let loaded: Vec<f32> = model.double_blocks[0].img_attn.qkv.base_weight().into_data().to_vec().unwrap();
    assert_eq!(loaded, host.dequantize());

    // Close to the bf16 model it came from (float8 with one scale per tensor), against diffusers' output.
    let dense = parity::run_fixture::<B>(bf16.parent().unwrap().parent().unwrap(), &Default::default()).unwrap();
    let quantized = parity::run_fixture::<B>(fp8.parent().unwrap().parent().unwrap(), &Default::default()).unwrap();
    println!("against diffusers' f32 output: float8 file rel_err {quantized:.3e}, bf16 file {dense:.3e}");
    assert!(quantized > dense && quantized < 0.1, "float8 file rel_err {quantized:.3e} (bf16 file {dense:.3e})");
}

#[test]
fn older_scaled_fp8_names_load_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, fp8) = write_fp8(tmp.path());
    let legacy = case_dir(tmp.path(), "legacy").join("transformer/flux2.safetensors");
    let marker =
        PendingTensor::ready("model.diffusion_model.scaled_fp8", TensorData::new(Vec::<f32>::new(), [0]), DType::F32);
    let input = PendingTensor::ready(
        "model.diffusion_model.single_blocks.0.linear1.scale_input",
        TensorData::new(vec![1.0f32], Vec::<usize>::new()),
        DType::F32,
    );
    rewrite(&fp8, &legacy, |k| Some(k.replace(".weight_scale", ".scale_weight")), vec![marker, input]);
    let load = |f: &Path| -> Vec<f32> {
        let m = Checkpoint::open(f).unwrap().load::<B>(DType::F32, &Default::default()).unwrap();
        m.single_blocks[0].linear1.base_weight().into_data().to_vec().unwrap()
    };
    assert_eq!(load(&legacy), load(&fp8));
}

#[test]
fn damaged_float8_files_are_errors_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, fp8) = write_fp8(tmp.path());
    let load_err = |f: &Path| match Checkpoint::open(f).and_then(|c| c.load::<B>(DType::F32, &Default::default())) {
        Ok(_) => panic!("{} loaded", f.display()),
        Err(e) => e.to_string(),
    };
    let scale = "model.diffusion_model.single_blocks.0.linear2.weight_scale";
    let no_scale = tmp.path().join("no_scale.safetensors");
    rewrite(&fp8, &no_scale, |k| (k != scale).then(|| k.to_string()), vec![]);
    let e = load_err(&no_scale);
    assert!(e.contains(scale), "{e}");

    let bad_scale = tmp.path().join("bad_scale.safetensors");
    let nan = PendingTensor::ready(scale, TensorData::new(vec![f32::NAN], Vec::<usize>::new()), DType::F32);
    rewrite(&fp8, &bad_scale, |k| (k != scale).then(|| k.to_string()), vec![nan]);
    let e = load_err(&bad_scale);
    assert!(e.contains(scale) && e.contains("NaN"), "{e}");

    // Quantizing a float8 file again is refused, naming a float8 tensor.
    let again = write_float8_file(&Checkpoint::open(&fp8).unwrap(), &tmp.path().join("again.safetensors"), &|_, _| {});
    let e = again.map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("F8_E4M3") && e.contains(".weight"), "{e}");
}
