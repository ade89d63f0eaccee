//! Checkpoint resolution, layout detection, config inference and the errors users see.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Tensor};
use common::{B, fixture, values};
use flux2_vae::TensorStore;
use flux2_vae::checkpoint::detect_naming;
use flux2_vae::infer_config::infer_config;
use flux2_vae::key_map::Layout;
use flux2_vae::loader::{inspect_checkpoint, open_store};
use flux2_vae::{Error, LoadOptions, Vae, VaeConfig, resolve_checkpoint};
use half::bf16;
use safetensors::tensor::{Dtype, TensorView};

/// Raw copy of every tensor of a fixture's weights: name -> (dtype, shape, bytes).
fn raw_tensors(case: &str) -> HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let resolved = resolve_checkpoint(fixture(case).join("vae")).unwrap();
    let store = open_store(&resolved).unwrap();
    let names: Vec<String> = store.keys().map(str::to_string).collect();
    names
        .into_iter()
        .map(|n| {
            let t = store.get(&n).unwrap();
            let v = (t.dtype, t.shape.to_vec(), t.bytes.to_vec());
            (n, v)
        })
        .collect()
}

fn write(path: &Path, tensors: &HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn config_of(case: &str) -> VaeConfig {
    VaeConfig::from_json_file(fixture(case).join("vae/config.json")).unwrap()
}

fn encode_reference(case: &str, vae: &Vae<B>) -> f64 {
    let device = Default::default();
    let inputs = TensorStore::open_file(fixture(case).join("inputs.safetensors")).unwrap();
    let expected = TensorStore::open_file(fixture(case).join("expected.safetensors")).unwrap();
    let image = Tensor::<B, 4>::from_data(inputs.read("image", DType::F32).unwrap(), (&device, DType::F32));
    let out = values(vae.encode_image(image).unwrap());
    let reference = expected.read("latents", DType::F32).unwrap().to_vec::<f32>().unwrap();
    flux2_vae::parity::error_measures(&out, &reference).0
}

#[test]
fn detects_both_layouts() {
    for (case, layout) in
        [("tiny_default", Layout::Diffusers), ("bfl_naming", Layout::Bfl), ("batch2_sharded", Layout::Diffusers)]
    {
        let (store, info) = inspect_checkpoint(fixture(case).join("vae"), None).unwrap();
        assert_eq!(detect_naming(&store).unwrap().layout, layout, "{case}");
        assert_eq!(info.naming.prefix, "");
        assert!(!info.config_inferred);
    }
}

#[test]
fn infers_config_from_shapes() {
    for case in [
        "tiny_default",
        "bfl_naming",
        "no_quant_convs",
        "no_mid_attention",
        "uneven_decoder",
        "three_blocks",
        "batch2_sharded",
    ] {
        let resolved = resolve_checkpoint(fixture(case).join("vae")).unwrap();
        let store = open_store(&resolved).unwrap();
        let naming = detect_naming(&store).unwrap();
        let inferred = infer_config(&store, &naming, 2).unwrap();
        assert_eq!(inferred, config_of(case), "{case}");
    }
}

#[test]
fn lone_bfl_file_needs_a_config_when_groups_are_not_32() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ae.safetensors");
    std::fs::copy(fixture("bfl_naming").join("vae/ae.safetensors"), &file).unwrap();
    let device = Default::default();
    let err = Vae::<B>::load(&file, &device, &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("config.json") && msg.contains("norm_num_groups"), "{msg}");
    let options = LoadOptions { config: Some(config_of("bfl_naming")), ..Default::default() };
    let vae = Vae::<B>::load(&file, &device, &options).unwrap();
    assert!(encode_reference("bfl_naming", &vae) < 1e-4);
}

#[test]
fn sibling_config_only_when_it_is_a_flux2_vae_config() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("weights.safetensors");
    std::fs::copy(fixture("tiny_default").join("vae/diffusion_pytorch_model.safetensors"), &file).unwrap();
    std::fs::write(tmp.path().join("config.json"), r#"{"_class_name": "Flux2Transformer2DModel"}"#).unwrap();
    assert_eq!(resolve_checkpoint(&file).unwrap().config, None);
    std::fs::copy(fixture("tiny_default").join("vae/config.json"), tmp.path().join("config.json")).unwrap();
    assert_eq!(resolve_checkpoint(&file).unwrap().config, Some(tmp.path().join("config.json")));
    let vae = Vae::<B>::load(&file, &Default::default(), &LoadOptions::default()).unwrap();
    assert!(encode_reference("tiny_default", &vae) < 1e-4);
}

#[test]
fn repository_root_resolves_to_its_vae_folder() {
    let resolved = resolve_checkpoint(fixture("tiny_default")).unwrap();
    assert!(resolved.weights.ends_with("vae/diffusion_pytorch_model.safetensors"), "{resolved:?}");
    let resolved = resolve_checkpoint(fixture("batch2_sharded").join("vae")).unwrap();
    assert!(resolved.weights.to_string_lossy().ends_with(".safetensors.index.json"));
}

#[test]
fn prefixed_bundle_and_bf16_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let options = LoadOptions { config: Some(config_of("tiny_default")), ..Default::default() };
    // ComfyUI-style prefix.
    let prefixed: HashMap<_, _> =
        raw_tensors("tiny_default").into_iter().map(|(k, v)| (format!("first_stage_model.{k}"), v)).collect();
    let path = tmp.path().join("bundle.safetensors");
    write(&path, &prefixed);
    let vae = Vae::<B>::load(&path, &device, &options).unwrap();
    assert!(encode_reference("tiny_default", &vae) < 1e-4);
    // Weights stored in bf16, model in f32 (converted tensor by tensor).
    let as_bf16: HashMap<_, _> = raw_tensors("tiny_default")
        .into_iter()
        .map(|(k, (d, s, b))| {
            if d != Dtype::F32 {
                return (k, (d, s, b));
            }
            let bytes: Vec<u8> = b
                .chunks_exact(4)
                .flat_map(|c| bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
                .collect();
            (k, (Dtype::BF16, s, bytes))
        })
        .collect();
    let path = tmp.path().join("bf16.safetensors");
    write(&path, &as_bf16);
    let vae = Vae::<B>::load(&path, &device, &options).unwrap();
    let err = encode_reference("tiny_default", &vae);
    assert!(err < 5e-2 && err > 1e-6, "bf16-stored weights: rel_err {err:e}");
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = raw_tensors("tiny_default");
    tensors.remove("encoder.mid_block.attentions.0.to_k.weight").unwrap();
    write(&tmp.path().join("diffusion_pytorch_model.safetensors"), &tensors);
    std::fs::copy(fixture("tiny_default").join("vae/config.json"), tmp.path().join("config.json")).unwrap();
    let err = Vae::<B>::load(tmp.path(), &Default::default(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
    assert!(err.to_string().contains("encoder.mid_block.attentions.0.to_k.weight"), "{err}");
    assert!(err.to_string().contains("diffusion_pytorch_model.safetensors"), "{err}");
}

#[test]
fn bfl_missing_tensor_names_the_bfl_key() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = raw_tensors("bfl_naming");
    tensors.remove("decoder.up.1.upsample.conv.bias").unwrap();
    write(&tmp.path().join("ae.safetensors"), &tensors);
    std::fs::copy(fixture("bfl_naming").join("vae/config.json"), tmp.path().join("config.json")).unwrap();
    let err = Vae::<B>::load(tmp.path(), &Default::default(), &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("decoder.up.1.upsample.conv.bias") && msg.contains("decoder.up_blocks.2.upsamplers.0.conv.bias"),
        "{msg}"
    );
}

#[test]
fn shape_mismatch_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = raw_tensors("tiny_default");
    let t = tensors.get_mut("decoder.conv_out.weight").unwrap();
    t.1 = vec![t.1[1], t.1[0], t.1[2], t.1[3]];
    write(&tmp.path().join("diffusion_pytorch_model.safetensors"), &tensors);
    std::fs::copy(fixture("tiny_default").join("vae/config.json"), tmp.path().join("config.json")).unwrap();
    let err = Vae::<B>::load(tmp.path(), &Default::default(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("decoder.conv_out.weight")
            && msg.contains("diffusion_pytorch_model.safetensors")
            && msg.contains("[2, 3, 3, 3]")
            && msg.contains("[3, 2, 3, 3]"),
        "{msg}"
    );
}

#[test]
fn config_that_disagrees_with_weights() {
    let device = Default::default();
    let mut cfg = config_of("tiny_default");
    cfg.mid_block_add_attention = false;
    let options = LoadOptions { config: Some(cfg), ..Default::default() };
    let err = Vae::<B>::load(fixture("tiny_default").join("vae"), &device, &options).unwrap_err();
    assert!(matches!(err, Error::UnusedTensors { .. }), "{err}");
    assert!(
        err.to_string().contains("attentions.0") && err.to_string().contains("diffusion_pytorch_model.safetensors"),
        "{err}"
    );
    let mut cfg = config_of("tiny_default");
    cfg.latent_channels = 8;
    let options = LoadOptions { config: Some(cfg), ..Default::default() };
    let err = Vae::<B>::load(fixture("tiny_default").join("vae"), &device, &options).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

#[test]
fn malformed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    // Not a safetensors file at all.
    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    let err = Vae::<B>::load(&garbage, &device, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Safetensors { .. }) && err.to_string().contains("garbage.safetensors"), "{err}");
    // Truncated.
    let bytes = std::fs::read(fixture("tiny_default").join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let truncated = tmp.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let err = Vae::<B>::load(&truncated, &device, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Safetensors { .. }) && err.to_string().contains("truncated.safetensors"), "{err}");
    // Valid safetensors, but not a VAE.
    let mut other = HashMap::new();
    other.insert("double_blocks.0.img_attn.qkv.weight".to_string(), (Dtype::F32, vec![1], vec![0u8; 4]));
    let not_vae = tmp.path().join("dit.safetensors");
    write(&not_vae, &other);
    let err = Vae::<B>::load(&not_vae, &device, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::UnknownLayout { .. }), "{err}");
    // Missing path, empty folder.
    let err = Vae::<B>::load(tmp.path().join("nope"), &device, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NoCheckpoint { .. }), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = Vae::<B>::load(&empty, &device, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no .safetensors"), "{err}");
}

#[test]
fn broken_shard_index() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("batch2_sharded").join("vae");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let shard: PathBuf = tmp.path().join("diffusion_pytorch_model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    let err = Vae::<B>::load(tmp.path(), &Default::default(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ShardIndex { .. }), "{err}");
    assert!(err.to_string().contains("00002-of-00002"), "{err}");
}

#[test]
fn wrong_model_config_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny_default").join("vae/diffusion_pytorch_model.safetensors"),
        tmp.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("config.json"), r#"{"_class_name": "AutoencoderKL", "latent_channels": 16}"#)
        .unwrap();
    let err = Vae::<B>::load(tmp.path(), &Default::default(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Config { field: "_class_name", .. }), "{err}");
}

#[test]
fn unsupported_model_dtype() {
    let options = LoadOptions::default().with_dtype(DType::I32);
    let err = Vae::<B>::load(fixture("tiny_default").join("vae"), &Default::default(), &options).unwrap_err();
    assert!(matches!(err, Error::ModelDtype(_)), "{err}");
}

#[test]
fn bad_input_shapes() {
    let device = Default::default();
    let vae = Vae::<B>::load(fixture("tiny_default").join("vae"), &device, &LoadOptions::default()).unwrap();
    let err = vae.encode_image(Tensor::zeros([1, 3, 24, 32], &device)).unwrap_err();
    assert!(err.to_string().contains("multiples of 16"), "{err}");
    let err = vae.encode_image(Tensor::zeros([1, 4, 32, 32], &device)).unwrap_err();
    assert!(err.to_string().contains("3 channels"), "{err}");
    let err = vae.decode_latents(Tensor::zeros([1, 15, 2, 2], &device)).unwrap_err();
    assert!(err.to_string().contains("16 channels"), "{err}");
}

/// A truncated checkpoint (the data ends before the header's last offset) is an error naming the file,
/// not an out-of-bounds panic at the first read.
#[test]
fn truncated_file_names_a_tensor_past_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("diffusion_pytorch_model.safetensors");
    write(&file, &raw_tensors("tiny_default"));
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 64]).unwrap();
    std::fs::copy(fixture("tiny_default").join("vae/config.json"), tmp.path().join("config.json")).unwrap();
    let err = Vae::<B>::load(tmp.path(), &Default::default(), &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("diffusion_pytorch_model.safetensors") && err.contains("not fully covered"), "{err}");
}

/// NaN in a VAE weight is an error at load naming the parameter and the file.
#[test]
fn non_finite_weights_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = raw_tensors("tiny_default");
    let key = "decoder.conv_in.weight";
    let (dtype, _, bytes) = tensors.get_mut(key).unwrap();
    assert_eq!(*dtype, Dtype::F32);
    bytes[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    write(&tmp.path().join("diffusion_pytorch_model.safetensors"), &tensors);
    std::fs::copy(fixture("tiny_default").join("vae/config.json"), tmp.path().join("config.json")).unwrap();
    let err = Vae::<B>::load(tmp.path(), &Default::default(), &LoadOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::NonFinite { .. })
            && text.contains(key)
            && text.contains("diffusion_pytorch_model.safetensors"),
        "{text}"
    );
}
