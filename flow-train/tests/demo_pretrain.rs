//! The recipe of the demo's base (`flux2-train pretrain-demo`) runs end to end on a few steps: it writes a
//! diffusers folder the pipeline loader reads, with trained VAE and transformer weights (different from
//! the seeded random start) and latent statistics measured on the data, and the same options give the
//! same bytes. The full recipe (23 min) produced `flow-train/src/demo/base/`.

use burn::backend::{Autodiff, Flex};
use flow_train::demo::{PretrainOptions, pretrain, write_pipeline};
use flow_train::pipeline::{Flux2Pipeline, PipelineOptions};

fn options() -> PretrainOptions {
    PretrainOptions {
        images: 6,
        vae_steps: 3,
        vae_batch: 2,
        transformer_steps: 3,
        batch: 2,
        progress: false,
        ..PretrainOptions::default()
    }
}

#[test]
fn bad_sizes_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (options, field) in [
        (PretrainOptions { resolution: 100, ..options() }, "resolution"),
        (PretrainOptions { vae_crop: 256, ..options() }, "vae_crop"),
        (PretrainOptions { batch: 0, ..options() }, "batch"),
    ] {
        let err = pretrain::<Autodiff<Flex>>(dir.path(), &options, &Default::default()).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn a_short_pretraining_writes_a_trained_loadable_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, random) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("random"));
    let report = pretrain::<Autodiff<Flex>>(&a, &options(), &Default::default()).unwrap();
    assert!(report.vae_loss.is_finite() && report.transformer_loss.is_finite(), "{report:?}");
    pretrain::<Autodiff<Flex>>(&b, &options(), &Default::default()).unwrap();
    write_pipeline::<Flex>(&random, &flow_train::demo::DemoPipelineSpec::default(), &Default::default()).unwrap();
    for part in ["vae", "transformer"] {
        let file = |root: &std::path::Path| {
            std::fs::read(root.join(part).join("diffusion_pytorch_model.safetensors")).unwrap()
        };
        assert_eq!(file(&a), file(&b), "{part}: same options, same bytes");
        assert_ne!(file(&a), file(&random), "{part}: trained away from the random start");
    }
    let options = PipelineOptions {
        text_encoder_out_layers: Some(flow_train::demo::DemoPipelineSpec::default().text_encoder_out_layers()),
        max_sequence_length: Some(flow_train::demo::pretrain::DEMO_MAX_SEQUENCE_LENGTH),
        ..PipelineOptions::default()
    };
    let pipeline = Flux2Pipeline::<Flex>::load(&a.display().to_string(), &options, &Default::default()).unwrap();
    let (mean, var) = pipeline.vae.latent_norm().running_stats();
    let var: Vec<f32> = var.into_data().to_vec().unwrap();
    let mean: Vec<f32> = mean.into_data().to_vec().unwrap();
    assert!(var.iter().all(|v| v.is_finite() && *v > 0.0) && mean.iter().any(|m| *m != 0.0), "{mean:?} {var:?}");
}
