//! The demo shows its LoRA learning (issue 21): on the pretrained base, the demo job's LoRA pulls the
//! trigger prompts' samples towards the training images, and changes the samples of prompts without the
//! trigger (shapes the base knows) clearly less than those of the trigger prompts. Both directions are
//! checked on the numbers the demo prints (`flow_train::demo::compare`: same prompts and seeds with the
//! LoRA off and on). CPU, release, about a minute.

use burn::backend::{Autodiff, Flex};
use flow_train::job::{JobFormat, load_job_str};
use flow_train::train::{RunOptions, TrainModels, train};

#[test]
fn trigger_samples_move_to_the_concept_and_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let paths = flow_train::demo::prepare(root).unwrap();
    let text = flow_train::demo::DEMO_JOB
        .replace("output/demo", &root.display().to_string())
        .replace("gradient_checkpointing: false", "gradient_checkpointing: false\n        disable_sampling: true");
    let job = load_job_str(&text, JobFormat::Yaml, "demo").unwrap();
    let models = TrainModels::<Autodiff<Flex>>::load(&job, &Default::default()).unwrap();
    let summary = train(&job, models, RunOptions { progress: false, ..RunOptions::default() }).unwrap();
    let (result, strip) = flow_train::demo::compare::<Flex>(&paths, &job, &summary.lora, &Default::default()).unwrap();
    eprintln!(
        "trigger prompts: {:.3} -> {:.3} from the training images; the LoRA changes trigger samples by {:.3}, others by {:.3}",
        result.trigger_before, result.trigger_after, result.trigger_change, result.others_change
    );
    assert!(strip.is_file());
    // Measured 2026-12-08: 0.170 -> 0.150, changes 0.084 vs 0.049.
    assert!(
        result.trigger_after < 0.95 * result.trigger_before,
        "the LoRA did not bring the trigger samples closer to the training images: {} -> {}",
        result.trigger_before,
        result.trigger_after
    );
    assert!(
        result.trigger_change > 1.3 * result.others_change,
        "the LoRA is not specific to its trigger: it changes trigger samples by {}, others by {}",
        result.trigger_change,
        result.others_change
    );
}
