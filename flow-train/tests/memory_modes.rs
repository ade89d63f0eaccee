//! Where the models live during a run:
//! - caption embeddings on disk (`cache_text_embeddings`): the first run writes every caption variant
//!   and sample prompt to the dataset's `_t_e_cache/prompts`; a second run of the same job never loads
//!   the text encoder and trains exactly as the first;
//! - `model.low_vram`: the VAE is on the device only while it works.

use burn::backend::{Autodiff, Flex};
use flow_train::job::{JobFormat, load_job_str};
use flow_train::train::{RunOptions, TrainModels, train};

type A = Autodiff<Flex>;

#[test]
fn a_rerun_with_every_caption_cached_never_loads_the_text_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    flow_train::demo::prepare(root).expect("demo inputs are written");
    let run = |name: &str| {
        let text = flow_train::demo::DEMO_JOB
            .replace("output/demo", &root.display().to_string())
            .replace("name: demo_ring_lora", &format!("name: {name}"))
            .replace("steps: 300", "steps: 4");
        let job = load_job_str(&text, JobFormat::Yaml, name).expect("demo job is valid");
        assert!(job.plan.datasets.iter().all(|d| d.cache_text_embeddings), "the demo caches text embeddings");
        let models = TrainModels::<A>::load(&job, &Default::default()).expect("demo pipeline loads");
        train(&job, models, RunOptions { progress: false, ..RunOptions::default() }).expect("training runs")
    };
    let first = run("first");
    assert!(first.text_encoder_loaded, "nothing was cached yet");
    let cache = root.join("dataset").join(flow_train::train::prompt_cache::FOLDER);
    let files = std::fs::read_dir(&cache).expect("the prompt cache folder exists").count();
    assert!(files > 0, "caption embeddings are on disk in {}", cache.display());
    let second = run("second");
    assert!(!second.text_encoder_loaded, "the second run must take every caption from the disk cache");
    assert_eq!(first.final_loss, second.final_loss, "the cached embeddings are the encoded ones, bit for bit");
}

/// `model.low_vram`: the VAE is dropped after caching the latents and re-read for each preview; the run
/// trains and renders its samples as without it.
#[test]
fn low_vram_parks_the_vae_between_uses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    flow_train::demo::prepare(root).expect("demo inputs are written");
    let run = |name: &str, low_vram: bool| {
        let text = flow_train::demo::DEMO_JOB
            .replace("output/demo", &root.display().to_string())
            .replace("name: demo_ring_lora", &format!("name: {name}"))
            .replace("steps: 300", "steps: 2")
            .replace("sample_every: 100", "sample_every: 1")
            .replace("quantize_te: false\n", &format!("quantize_te: false\n        low_vram: {low_vram}\n"));
        let job = load_job_str(&text, JobFormat::Yaml, name).expect("demo job is valid");
        assert_eq!(job.plan.model.low_vram, low_vram);
        let models = TrainModels::<A>::load(&job, &Default::default()).expect("demo pipeline loads");
        let summary =
            train(&job, models, RunOptions { progress: false, ..RunOptions::default() }).expect("training runs");
        let samples = std::fs::read_dir(summary.output_dir.join("samples")).map(|d| d.count()).unwrap_or(0);
        (summary, samples)
    };
    let (resident, resident_samples) = run("resident", false);
    let (parked, parked_samples) = run("parked", true);
    assert_eq!(resident.vae_reloads, 0);
    assert!(parked.vae_reloads >= 2, "re-read for the previews at steps 0, 1 and 2: {}", parked.vae_reloads);
    assert!(parked_samples > 0 && parked_samples == resident_samples, "{parked_samples} vs {resident_samples}");
    assert_eq!(parked.final_loss, resident.final_loss, "parking changes where the VAE lives, not what it computes");
}
