//! `train --random-weights`: a pipeline folder holding only configs and the tokenizer (what
//! `flux2-train configs` writes for FLUX.2 [dev]) trains end to end with every model drawn at random,
//! with block-level gradient checkpointing on: the code path of the full-size rehearsal on the GPU,
//! at the demo's size on the CPU. Without `random_weights` the same folder is refused, naming it.

use burn::backend::{Autodiff, Flex};
use flow_train::demo::{DemoPipelineSpec, write_dataset, write_pipeline_configs};
use flow_train::job::{JobFormat, load_job_str};
use flow_train::train::{RunOptions, TrainModels, train};

type A = Autodiff<Flex>;

#[test]
fn a_configs_only_pipeline_trains_with_random_weights() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let spec = DemoPipelineSpec::default();
    write_pipeline_configs(&root.join("pipeline"), &spec).unwrap();
    write_dataset(&root.join("dataset")).unwrap();
    for weights in [
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        assert!(!root.join("pipeline").join(weights).exists(), "{weights} must not be written");
    }
    let text = flow_train::demo::DEMO_JOB
        .replace("output/demo", &root.display().to_string())
        .replace("steps: 300", "steps: 3")
        .replace("save_every: 100", "save_every: 1000")
        .replace("gradient_checkpointing: false", "gradient_checkpointing: true\n        disable_sampling: true");
    let mut job = load_job_str(&text, JobFormat::Yaml, "rehearsal").expect("valid job");
    assert!(job.plan.train.gradient_checkpointing);

    let Err(refused) = TrainModels::<A>::load(&job, &Default::default()) else { panic!("loaded without weight files") };
    let refused = refused.to_string();
    assert!(refused.contains("transformer") && refused.contains("safetensors"), "{refused}");

    job.plan.model.random_weights = Some(7);
    let models = TrainModels::<A>::load(&job, &Default::default()).unwrap();
    assert_eq!(models.transformer_config(), &spec.transformer);
    assert!(models.identity.contains("random-weights seed 7"), "{}", models.identity);
    let summary = train(&job, models, RunOptions { progress: false, ..RunOptions::default() }).unwrap();
    assert_eq!(summary.steps, 3);
    let (first, last) = (summary.first_loss.unwrap(), summary.final_loss.unwrap());
    assert!(first.is_finite() && last.is_finite(), "losses {first} -> {last}");
    assert!(summary.lora.is_file(), "{}", summary.lora.display());
}

#[test]
fn flux2_dev_configs_describe_the_real_model() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline_configs(dir.path(), &DemoPipelineSpec::flux2_dev()).unwrap();
    let t = flux2_dit::Flux2Config::from_json_file(&dir.path().join("transformer/config.json")).unwrap();
    assert_eq!(t, flux2_dit::Flux2Config::dev());
    let te = mistral_encoder::MistralConfig::from_file(&dir.path().join("text_encoder/config.json")).unwrap();
    // Layers 10, 20, 30 of a 5120-wide encoder: the transformer's 15360 prompt features.
    assert_eq!((te.hidden_size, te.num_hidden_layers, te.intermediate_size), (5120, 40, 32768));
    assert_eq!(3 * te.hidden_size, t.joint_attention_dim);
    let vae = flux2_vae::VaeConfig::from_json_file(dir.path().join("vae/config.json")).unwrap();
    assert_eq!(vae.patchified_channels(), t.in_channels);
    assert!(dir.path().join("tokenizer/tokenizer.json").is_file());
}
