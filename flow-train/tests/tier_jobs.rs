//! The job files of the FLUX.2 guides' hardware tiers (`examples/jobs/flux2_tier_{24,48,80}gb.yaml`) load
//! clean and train, unchanged except for what points them at the embedded demo (model, dataset, a CPU
//! device, two steps, small previews): float8 + layer offloading + cached embeddings, float8 + low_vram +
//! DOP, bf16 batch 2. On the CPU, layer offloading is off and says so (nothing offloaded); on CUDA it is
//! measured by `bench_train_step --offload` (docs/memory.md).

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use flow_train::job::{JobFormat, load_job, load_job_str};
use flow_train::train::{RunOptions, TrainModels, train};
use serde_yaml::Value;

type A = Autodiff<Flex>;

fn job_file(tier: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/jobs/flux2_tier_{tier}.yaml"))
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut at = v;
    for (i, key) in path.iter().enumerate() {
        at = match key.parse::<usize>() {
            Ok(n) => &mut at[n],
            Err(_) if i + 1 == path.len() => {
                at[*key] = value;
                return;
            }
            Err(_) => &mut at[*key],
        };
    }
}

/// The tier's job pointed at the demo under `root`.
fn on_demo(tier: &str, root: &Path) -> String {
    let text = std::fs::read_to_string(job_file(tier)).unwrap();
    let mut v: Value = serde_yaml::from_str(&text).unwrap();
    let p = ["config", "process", "0"];
    let at = |rest: &[&'static str]| -> Vec<&'static str> { p.iter().copied().chain(rest.iter().copied()).collect() };
    let s = |x: &str| Value::String(x.to_string());
    set(&mut v, &at(&["device"]), s("cpu"));
    set(&mut v, &at(&["training_folder"]), s(&root.join("out").display().to_string()));
    set(&mut v, &at(&["model", "name_or_path"]), s(&root.join("pipeline").display().to_string()));
    let kwargs = "{text_encoder_out_layers: [1, 2, 3], max_sequence_length: 64}";
    set(&mut v, &at(&["model", "model_kwargs"]), serde_yaml::from_str(kwargs).unwrap());
    set(&mut v, &at(&["datasets", "0", "folder_path"]), s(&root.join("dataset").display().to_string()));
    set(&mut v, &at(&["datasets", "0", "resolution"]), serde_yaml::from_str("[128]").unwrap());
    set(&mut v, &at(&["network", "linear"]), Value::from(4));
    set(&mut v, &at(&["network", "linear_alpha"]), Value::from(4));
    set(&mut v, &at(&["train", "steps"]), Value::from(2));
    set(&mut v, &at(&["sample", "sample_every"]), Value::from(1000));
    set(&mut v, &at(&["sample", "width"]), Value::from(128));
    set(&mut v, &at(&["sample", "height"]), Value::from(128));
    set(&mut v, &at(&["sample", "sample_steps"]), Value::from(2));
    serde_yaml::to_string(&v).unwrap()
}

fn train_tier(tier: &str) -> (flow_train::job::LoadedJob, flow_train::train::TrainSummary) {
    let clean = load_job(&job_file(tier)).unwrap();
    assert_eq!(clean.diagnostics, vec![], "{tier}: the job file as shipped has no errors, warnings or notes");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    flow_train::demo::prepare(root).unwrap();
    let job = load_job_str(&on_demo(tier, root), JobFormat::Yaml, tier).unwrap();
    let models = TrainModels::<A>::load(&job, &Default::default()).unwrap();
    let summary = train(&job, models, RunOptions { progress: false, ..RunOptions::default() }).unwrap();
    assert_eq!(summary.steps, 2, "{tier}");
    assert!(summary.final_loss.is_some_and(f32::is_finite), "{tier}: {:?}", summary.final_loss);
    assert!(summary.lora.is_file(), "{tier}: the final LoRA");
    (job, summary)
}

#[test]
fn tier_24gb_float8_offloaded_trains_with_offloading_off_on_the_cpu() {
    let (job, summary) = train_tier("24gb");
    let m = &job.plan.model;
    assert_eq!(m.quantize, Some(flux2_ops::quant::QType::Float8));
    assert_eq!((m.offload_transformer, m.offload_text_encoder), (1.0, 1.0));
    assert!(m.low_vram && job.plan.train.gradient_checkpointing);
    assert_eq!(summary.offloaded_bytes, 0, "offloading is off on the CPU backends (host and device are one memory)");
}

#[test]
fn tier_48gb_float8_low_vram_dop_trains() {
    let (job, summary) = train_tier("48gb");
    assert!(job.plan.model.low_vram && job.plan.model.quantize.is_some());
    assert!(job.plan.train.dop.is_some(), "diff_output_preservation is on");
    assert!(summary.vae_reloads >= 1, "low_vram re-reads the VAE for the final previews");
}

#[test]
fn tier_80gb_bf16_batch_2_trains() {
    let (job, summary) = train_tier("80gb");
    assert_eq!(job.plan.model.quantize, None);
    assert_eq!(summary.items, 4, "two steps of batch 2");
}
