//! End-to-end inference against diffusers' `Flux2Pipeline` (issue 11): every committed case of
//! `tests/fixtures/pipeline/` (tiny pipelines saved and run by `tools/fixtures/gen_pipeline.py`) within 1e-4
//! relative error of diffusers' float image; Pillow-exact reference preparation; the fixtures' sensitivity;
//! loading through a Hub cache snapshot; and the errors users meet.

#[path = "../examples/pipeline_parity.rs"]
mod parity;

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{DType, Tensor};
use flow_train::pipeline::{
    Flux2Pipeline, GenerateOptions, HubOptions, LoraSpec, PipelineOptions, ReferenceImage, Stage, image_to_rgb8,
    read_latents, resample::resize_lanczos, save_image_tensor,
};
use flux2_dit::TensorStore;
use flux2_ops::relative_error;
use image::GenericImageView;
use parity::{BF16_TOLERANCE, CaseInputs, ModelFolders, TOLERANCE, case_dirs, load_case, run_case};

type B = Flex;

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pipeline")
}

fn case(name: &str) -> PathBuf {
    fixture_root().join(name)
}

fn data(t: Tensor<B, 4>) -> burn::tensor::TensorData {
    t.cast(DType::F32).into_data().convert::<f32>()
}

fn expected_image(name: &str) -> burn::tensor::TensorData {
    let store = TensorStore::open(&[case(name).join("expected.safetensors")]).unwrap();
    store.read("image", DType::F32).unwrap()
}

#[test]
fn all_committed_cases_match_diffusers() {
    let cases = case_dirs(&fixture_root()).unwrap();
    assert!(cases.len() >= 4, "expected at least 4 pipeline cases, found {}", cases.len());
    let mut folders = ModelFolders::default();
    let (mut with_refs, mut with_loras) = (0, 0);
    for dir in cases {
        let inputs = CaseInputs::read(&dir).unwrap();
        with_refs += usize::from(!inputs.references.is_empty());
        with_loras += usize::from(!inputs.loras.is_empty());
        let report = run_case::<B>(&dir, &mut folders, DType::F32, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        eprintln!("{}: {report:?}", dir.display());
        assert!(report.image < TOLERANCE, "{}: image rel_err {:e}", dir.display(), report.image);
        for (what, err) in [("prompt_embeds", report.prompt_embeds), ("final_latents", report.final_latents)] {
            let err = err.unwrap_or_else(|| panic!("{}: committed fixtures carry {what}", dir.display()));
            assert!(err < TOLERANCE, "{}: {what} rel_err {err:e}", dir.display());
        }
    }
    assert!(with_refs >= 2 && with_loras >= 2, "cases with references {with_refs}, with LoRAs {with_loras}");
}

/// Every model in bf16 against diffusers' bf16 run of the same call.
#[test]
fn bf16_cases_match_diffusers_bf16() {
    let mut folders = ModelFolders::default();
    for dir in case_dirs(&fixture_root()).unwrap() {
        let report = run_case::<B>(&dir, &mut folders, DType::BF16, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        eprintln!("{} (bf16): {report:?}", dir.display());
        assert!(report.image < BF16_TOLERANCE, "{}: bf16 image rel_err {:e}", dir.display(), report.image);
    }
}

#[test]
fn reference_preparation_and_lanczos_equal_pillow() {
    let dir = fixture_root().join("resample");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    let (mut resized, mut prepared) = (0, 0);
    for c in cases {
        let input = dir.join(c["input"].as_str().unwrap());
        let output = image::open(dir.join(c["output"].as_str().unwrap())).unwrap().to_rgb8();
        match c["kind"].as_str().unwrap() {
            "resize" => {
                let src = image::open(&input).unwrap().to_rgb8();
                let (w, h) = (c["width"].as_u64().unwrap() as u32, c["height"].as_u64().unwrap() as u32);
                let ours = resize_lanczos(&src, w, h);
                let differing = ours.pixels().zip(output.pixels()).filter(|(a, b)| a != b).count();
                assert_eq!((ours.dimensions(), differing), ((w, h), 0), "{c}: pixels differ from Pillow");
                resized += 1;
            }
            "prepare" => {
                let max_area = c["max_area"].as_u64().unwrap() as usize;
                let ours = ReferenceImage::open(&input).unwrap().prepare(16, max_area).unwrap();
                assert_eq!((ours.width as u32, ours.height as u32), output.dimensions(), "{c}");
                let plane = ours.width * ours.height;
                for (x, y, p) in output.enumerate_pixels() {
                    for ch in 0..3 {
                        let expected = 2.0 * (p[ch] as f32 / 255.0) - 1.0;
                        let got = ours.data[ch * plane + y as usize * ours.width + x as usize];
                        assert_eq!(got, expected, "{c}: pixel ({x}, {y}) channel {ch}");
                    }
                }
                prepared += 1;
            }
            other => panic!("unknown case kind {other}"),
        }
    }
    assert!(resized >= 4 && prepared >= 2, "{resized} resize and {prepared} prepare cases");
    // The resize path of `prepare` is really taken by some case (the area limit is below the input area).
    let input_area = |c: &serde_json::Value| {
        let (w, h) = image::open(dir.join(c["input"].as_str().unwrap())).unwrap().dimensions();
        (w * h) as u64
    };
    assert!(cases.iter().any(|c| c["kind"] == "prepare" && c["max_area"].as_u64().unwrap() < input_area(c)));
}

/// The fixtures can fail: small changes of the inputs move the image far beyond the tolerance.
#[test]
fn fixtures_are_sensitive_to_every_input() {
    let mut folders = ModelFolders::default();
    let device = Default::default();
    let inputs = CaseInputs::read(&case("t2i")).unwrap();
    let expected = expected_image("t2i");
    let pipe = load_case::<B>(&inputs, &mut folders, DType::F32, &device).unwrap();
    let err_with = |prompt: &str, change: &dyn Fn(&mut GenerateOptions<B>)| {
        let mut options = inputs.generate_options::<B>(&device).unwrap();
        change(&mut options);
        relative_error(&data(pipe.generate(prompt, options, None).unwrap()), &expected).unwrap()
    };
    assert!(err_with(&inputs.prompt, &|_| {}) < TOLERANCE);
    type Change<'a> = (&'a str, &'a str, &'a dyn Fn(&mut GenerateOptions<B>));
    let changes: [Change; 3] = [
        ("guidance 4 -> 3.9", &inputs.prompt, &|o| o.guidance = 3.9),
        ("one more step", &inputs.prompt, &|o| o.steps += 1),
        ("one word of the prompt", &inputs.prompt.replace("red", "grey"), &|_| {}),
    ];
    for (what, prompt, change) in changes {
        let err = err_with(prompt, change);
        assert!(err > 10.0 * TOLERANCE, "{what}: image moved only {err:e}");
    }
    // (The committed text encoder only has embedding rows for the fixtures' tokens; "grey" maps to zeros.)
    // One token less of padding (max_sequence_length 63 instead of 64) shifts every text position.
    let mut shorter = inputs.pipeline_options(DType::F32);
    shorter.max_sequence_length = Some(63);
    let model = folders.plain(&inputs.model).unwrap();
    let pipe = Flux2Pipeline::<B>::load(model.to_str().unwrap(), &shorter, &device).unwrap();
    let err = relative_error(
        &data(pipe.generate(inputs.prompt.as_str(), inputs.generate_options::<B>(&device).unwrap(), None).unwrap()),
        &expected,
    )
    .unwrap();
    assert!(err > 10.0 * TOLERANCE, "max_sequence_length 63: image moved only {err:e}");
}

/// A Hub repository id resolves through the cache (`HF_HUB_OFFLINE`): same image as the folder.
#[test]
fn hub_cache_snapshot_loads_like_the_folder() {
    let mut folders = ModelFolders::default();
    let inputs = CaseInputs::read(&case("t2i")).unwrap();
    let plain = folders.plain(&inputs.model).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let commit = "a".repeat(40);
    let repo_dir = cache.path().join("models--tiny--flux2");
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), &commit).unwrap();
    copy_tree(&plain, &repo_dir.join("snapshots").join(&commit));

    let hub = HubOptions { cache_dir: Some(cache.path().to_path_buf()), token: None, offline: true, endpoint: None };
    let options = PipelineOptions { hub, ..inputs.pipeline_options(DType::F32) };
    let device = Default::default();
    let pipe = Flux2Pipeline::<B>::load("tiny/flux2", &options, &device).unwrap();
    assert_eq!(pipe.files.root.as_deref(), Some(repo_dir.join("snapshots").join(&commit).as_path()));
    let image = pipe.generate(inputs.prompt.as_str(), inputs.generate_options::<B>(&device).unwrap(), None).unwrap();
    assert!(relative_error(&data(image), &expected_image("t2i")).unwrap() < TOLERANCE);

    // Without the text encoder's files the error lists them (nothing is downloaded offline).
    std::fs::remove_file(repo_dir.join("snapshots").join(&commit).join("text_encoder/model.safetensors")).unwrap();
    let err = Flux2Pipeline::<B>::load("tiny/flux2", &options, &device).unwrap_err().to_string();
    assert!(err.contains("text_encoder/model.safetensors") && err.contains("HF_HUB_OFFLINE"), "{err}");
    // ... and a pipeline without the text encoder still loads.
    let without = PipelineOptions { load_text_encoder: false, ..options };
    assert!(Flux2Pipeline::<B>::load("tiny/flux2", &without, &device).unwrap().text_encoder.is_none());
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let src = entry.unwrap().path();
        let dst = to.join(src.file_name().unwrap());
        if src.is_dir() { copy_tree(&src, &dst) } else { std::fs::copy(&src, &dst).map(|_| ()).unwrap() }
    }
}

#[test]
fn seeds_sizes_progress_and_outputs() {
    let mut folders = ModelFolders::default();
    let device = Default::default();
    let inputs = CaseInputs::read(&case("edit_two_references")).unwrap();
    let mut pipe = load_case::<B>(&inputs, &mut folders, DType::F32, &device).unwrap();
    let embeds = pipe.encode_prompt(&inputs.prompt).unwrap();
    pipe.drop_text_encoder();
    let err = pipe.generate("a prompt", GenerateOptions::default(), None).unwrap_err().to_string();
    assert!(err.contains("no text encoder"), "{err}");

    // Size from the first reference (64x64), seeded noise: deterministic, seed-dependent.
    let references = inputs.generate_options::<B>(&device).unwrap().references;
    let seeded =
        |seed: u64| GenerateOptions::<B> { steps: 2, seed, references: references.clone(), ..Default::default() };
    let mut stages = Vec::new();
    let a = pipe.generate(embeds.clone(), seeded(5), Some(&mut |s: Stage| stages.push(s))).unwrap();
    assert_eq!(a.dims(), [1, 3, 64, 64]);
    assert_eq!(
        stages,
        vec![
            Stage::EncodingReferences { count: 2 },
            Stage::Denoising { step: 0, steps: 2 },
            Stage::Denoising { step: 1, steps: 2 },
            Stage::Denoising { step: 2, steps: 2 },
            Stage::Decoding
        ]
    );
    let b = pipe.generate(embeds.clone(), seeded(5), None).unwrap();
    let c = pipe.generate(embeds.clone(), seeded(6), None).unwrap();
    assert_eq!(relative_error(&data(a.clone()), &data(b)).unwrap(), 0.0);
    assert!(relative_error(&data(a.clone()), &data(c)).unwrap() > 1e-3);
    let values: Vec<f32> = data(a.clone()).to_vec().unwrap();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));

    // Explicit size without references; PNG rounding; the float tensor file round-trips.
    let wide = pipe
        .generate(
            embeds.clone(),
            GenerateOptions { height: Some(32), width: Some(80), steps: 1, ..Default::default() },
            None,
        )
        .unwrap();
    assert_eq!(wide.dims(), [1, 3, 32, 80]);
    let rgb = image_to_rgb8(a.clone()).unwrap();
    assert_eq!(rgb.get_pixel(3, 2)[1], (values[64 * 64 + 2 * 64 + 3] * 255.0).round_ties_even() as u8);
    let tmp = tempfile::tempdir().unwrap();
    save_image_tensor(a.clone(), &tmp.path().join("image.safetensors")).unwrap();
    let back: Tensor<B, 4> = read_latents(&tmp.path().join("image.safetensors"), &device).unwrap();
    assert_eq!(relative_error(&data(back), &data(a)).unwrap(), 0.0);
}

#[test]
fn bad_inputs_give_named_errors() {
    let mut folders = ModelFolders::default();
    let device = Default::default();
    let inputs = CaseInputs::read(&case("t2i")).unwrap();
    let mut pipe = load_case::<B>(&inputs, &mut folders, DType::F32, &device).unwrap();
    let embeds = pipe.encode_prompt(&inputs.prompt).unwrap();
    let run = |options: GenerateOptions<B>| pipe.generate(embeds.clone(), options, None).unwrap_err().to_string();

    let err = run(GenerateOptions { height: Some(40), width: Some(64), steps: 1, ..Default::default() });
    assert!(err.contains("height 40") && err.contains("multiple of 16") && err.contains("48"), "{err}");
    let latents = inputs.generate_options::<B>(&device).unwrap().latents;
    let err = run(GenerateOptions { height: Some(64), latents, steps: 1, ..Default::default() });
    assert!(err.contains("height 64") && err.contains("latents"), "{err}");
    let err =
        run(GenerateOptions { latents: Some(Tensor::zeros([1, 8, 3, 4], &device)), steps: 1, ..Default::default() });
    assert!(err.contains("[1, 8, 3, 4]") && err.contains("[1, 16,"), "{err}");
    let err = run(GenerateOptions { height: Some(32), width: Some(32), steps: 0, ..Default::default() });
    assert!(err.contains("steps"), "{err}");
    let two = Tensor::cat(vec![embeds.embeds.clone(), embeds.embeds.clone()], 0);
    let err = pipe.generate(two, GenerateOptions::default(), None).unwrap_err().to_string();
    assert!(err.contains("one prompt at a time"), "{err}");

    // Reference images below 64 px, missing files, LoRAs that are not LoRAs.
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small.png");
    image::RgbImage::from_pixel(48, 80, image::Rgb([1, 2, 3])).save(&small).unwrap();
    let err = ReferenceImage::open(&small).unwrap_err().to_string();
    assert!(err.contains("small.png") && err.contains("48x80"), "{err}");
    let err = ReferenceImage::open(tmp.path().join("missing.png")).unwrap_err().to_string();
    assert!(err.contains("missing.png"), "{err}");
    let not_lora = case("t2i").join("latents.safetensors");
    let err = pipe.load_loras(&[LoraSpec::new(&not_lora, 1.0)]).unwrap_err().to_string();
    assert!(err.contains("latents.safetensors") && err.contains("LoRA"), "{err}");

    // Text-encoder layers that do not fit the transformer's joint_attention_dim.
    let model = folders.plain(&inputs.model).unwrap();
    let options = PipelineOptions { text_encoder_out_layers: Some(vec![1, 2]), ..inputs.pipeline_options(DType::F32) };
    let err = Flux2Pipeline::<B>::load(model.to_str().unwrap(), &options, &device).unwrap_err().to_string();
    assert!(err.contains("joint_attention_dim is 48") && err.contains("[1, 2]"), "{err}");
    let err = Flux2Pipeline::<B>::load(tmp.path().join("nothing").to_str().unwrap(), &options, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing") && err.contains("no such file or folder"), "{err}");
}
