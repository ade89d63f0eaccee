//! `flux2-train quantize` on the embedded demo pipeline: the transformer and the text encoder written as
//! float8 files, then `sample` from them gives the image of the bf16 files up to float8 rounding.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::DType;

const BIN: &str = env!("CARGO_BIN_EXE_flux2-train");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

fn image(path: &Path) -> Vec<f32> {
    let store = flux2_ops::TensorStore::open(&[path.to_path_buf()]).unwrap();
    store.read("image", DType::F32).unwrap().to_vec().unwrap()
}

fn sample(model: &Path, text_encoder: &Path, vae: &Path, out: &Path) -> Vec<f32> {
    let png = out.with_extension("png");
    let s = |p: &Path| p.display().to_string();
    let layers = flow_train::demo::DemoPipelineSpec::default().text_encoder_out_layers();
    let layers: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
    ok(run(&[
        "sample",
        "--model",
        &s(model),
        "--text-encoder",
        &s(text_encoder),
        "--vae",
        &s(vae),
        "--prompt",
        "a red ring",
        "--steps",
        "4",
        "--text-encoder-out-layers",
        &layers.join(","),
        "--out",
        &s(&png),
        "--save-tensor",
        &s(out),
    ]));
    image(out)
}

#[test]
fn float8_files_sample_like_the_bf16_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let demo = flow_train::demo::prepare(&root.join("demo")).unwrap();
    let pipeline = demo.pipeline;
    // The demo ships a diffusers folder; `quantize` reads BFL files, as flux2-dev.safetensors is.
    let model = flux2_dit::Checkpoint::open(&pipeline.join("transformer"))
        .unwrap()
        .load::<burn::backend::Flex>(DType::F32, &Default::default())
        .unwrap();
    let bf16 = root.join("flux2-bf16.safetensors");
    flux2_dit::save_bfl_file(&model, &bf16, "", DType::BF16).unwrap();

    let fp8 = root.join("fp8/flux2-fp8.safetensors");
    let log = ok(run(&["quantize", "--model", &bf16.display().to_string(), "--out", &fp8.display().to_string()]));
    assert!(log.contains("float8 layers"), "{log}");
    assert!(std::fs::metadata(&fp8).unwrap().len() < std::fs::metadata(&bf16).unwrap().len());

    // A pipeline folder whose text_encoder/ is the float8 file (config.json is copied beside it).
    let te_pipeline = root.join("te-fp8");
    copy_dir(&pipeline, &te_pipeline);
    std::fs::remove_dir_all(te_pipeline.join("text_encoder")).unwrap();
    let te_file = te_pipeline.join("text_encoder/model.safetensors");
    let log = ok(run(&[
        "quantize",
        "--text-encoder",
        &pipeline.join("text_encoder").display().to_string(),
        "--out",
        &te_file.display().to_string(),
    ]));
    assert!(log.contains("copied config.json"), "{log}");

    let dense = sample(&bf16, &pipeline, &pipeline, &root.join("dense.safetensors"));
    let quantized = sample(&fp8, &te_pipeline, &pipeline, &root.join("fp8.safetensors"));
    let err = flux2_ops::relative_error_slices(&quantized, &dense).unwrap();
    println!("float8 transformer + text encoder files: image relative error {err:.3e} against the bf16 files");
    assert!(err > 0.0 && err < 0.1, "float8 files: image relative error {err:.3e} against the bf16 files");

    // Refusals name what is wrong.
    let again = run(&[
        "quantize",
        "--model",
        &fp8.display().to_string(),
        "--out",
        &root.join("x.safetensors").display().to_string(),
    ]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("quantized already"));
    let uint4 = run(&["quantize", "--model", &bf16.display().to_string(), "--qtype", "uint4", "--out", "x"]);
    assert!(!uint4.status.success() && String::from_utf8_lossy(&uint4.stderr).contains("float8"));
}

fn copy_dir(from: &Path, to: &PathBuf) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
