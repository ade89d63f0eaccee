//! Resuming the demo from a checkpoint continues bit for bit: stopping at step 40 and resuming gives
//! the same adapter, EMA, optimizer state and loss log at step 80 as an uninterrupted run (CPU,
//! release). Block-level gradient checkpointing (recomputation in the backward pass) changes the trained
//! adapter only within f32 rounding.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use flow_train::job::{JobFormat, LoadedJob, load_job_str};
use flow_train::train::{RunOptions, TrainModels, TrainSummary, train};

type A = Autodiff<Flex>;

/// 8-bit state for every tensor (the demo's factors are below bitsandbytes' default `min_8bit_size`
/// of 4096 values, which would keep most of them in 32 bits).
fn params(optimizer: &str) -> &'static str {
    if optimizer == "adamw8bit" {
        "\n        optimizer_params:\n          min_8bit_size: 0\n          block_size: 256"
    } else {
        ""
    }
}

fn job(root: &Path, name: &str, optimizer: &str) -> LoadedJob {
    let text = flow_train::demo::DEMO_JOB
        .replace("output/demo", &root.display().to_string())
        .replace("name: demo_ring_lora", &format!("name: {name}"))
        .replace("steps: 300", "steps: 80")
        .replace("save_every: 100", "save_every: 1000")
        .replace("optimizer: adamw", &format!("optimizer: {optimizer}{}", params(optimizer)))
        .replace("gradient_checkpointing: false", "gradient_checkpointing: false\n        disable_sampling: true")
        .replace("        linear_alpha: 8", "        linear_alpha: 8\n        dropout: 0.1")
        .replace(
            "        lr: 2e-3",
            "        lr: 2e-3\n        ema_config:\n          use_ema: true\n          ema_decay: 0.9",
        );
    load_job_str(&text, JobFormat::Yaml, name).expect("valid job")
}

fn run(job: &LoadedJob, stop_after: Option<u32>) -> TrainSummary {
    run_on::<A>(job, stop_after)
}

fn run_on<T: AutodiffBackend<InnerBackend = Flex>>(job: &LoadedJob, stop_after: Option<u32>) -> TrainSummary {
    let models = TrainModels::<T>::load(job, &Default::default()).unwrap();
    train(job, models, RunOptions { progress: false, stop_after, ..RunOptions::default() }).unwrap()
}

fn state_bytes(summary: &TrainSummary, step: u32) -> (Vec<u8>, Vec<u8>) {
    let dir = summary.output_dir.join(format!("training_state/step_{step:09}"));
    (std::fs::read(dir.join("adapter.safetensors")).unwrap(), std::fs::read(dir.join("optimizer.safetensors")).unwrap())
}

fn losses(summary: &TrainSummary) -> Vec<String> {
    // Everything but the wall-clock field.
    std::fs::read_to_string(summary.output_dir.join("loss_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| l.split(",\"elapsed_s\"").next().unwrap_or(l).to_string())
        .collect()
}

/// One test function: LoRA dropout draws from the backend's process-wide RNG, so two trainings must
/// not run in parallel threads of one test binary.
#[test]
fn resume_and_checkpointing_are_bit_exact() {
    resume_continues_bit_for_bit();
    gradient_checkpointing_changes_nothing();
}

fn resume_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    flow_train::demo::prepare(dir.path()).unwrap();
    let mut tail_loss = Vec::new();
    for optimizer in ["adamw", "adamw8bit"] {
        let whole = run(&job(dir.path(), &format!("whole_{optimizer}"), optimizer), None);
        let resumed_job = job(dir.path(), &format!("resumed_{optimizer}"), optimizer);
        let first = run(&resumed_job, Some(40));
        assert!(first.interrupted);
        assert_eq!(first.steps, 40);
        let second = run(&resumed_job, None);
        assert_eq!((second.start_step, second.steps), (40, 80));
        assert!(
            state_bytes(&whole, 80) == state_bytes(&second, 80),
            "{optimizer}: state at step 80 differs after resume"
        );
        assert_eq!(losses(&whole), losses(&second), "{optimizer}: loss logs differ");
        // The LoRA files' tensors (their headers name the run, which differs).
        let tensors = |path: &Path| flow_train::train::checkpoint::read_tensors(path).unwrap();
        assert!(tensors(&whole.lora) == tensors(&second.lora), "{optimizer}: final LoRA differs");
        let state_file = whole.output_dir.join("training_state/step_000000080/optimizer.safetensors");
        tail_loss.push((whole.final_loss.unwrap(), std::fs::metadata(state_file).unwrap().len()));
    }
    // 8-bit AdamW tracks AdamW (final loss, mean of the last 10% of steps) with ~4x less state.
    let [(adamw_loss, adamw_bytes), (q_loss, q_bytes)] = [tail_loss[0], tail_loss[1]];
    eprintln!("final loss adamw {adamw_loss:.4}, adamw8bit {q_loss:.4}; state files {adamw_bytes} vs {q_bytes} bytes");
    assert!((q_loss / adamw_loss - 1.0).abs() < 0.03, "adamw8bit loss {q_loss} vs adamw {adamw_loss}");
    assert!(adamw_bytes as f64 / q_bytes as f64 > 3.0, "state {q_bytes} bytes vs adamw {adamw_bytes}");
}

fn gradient_checkpointing_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    flow_train::demo::prepare(dir.path()).unwrap();
    let plain = run_on::<A>(&job(dir.path(), "plain", "adamw"), Some(15));
    let mut checkpointed_job = job(dir.path(), "checkpointed", "adamw");
    checkpointed_job.plan.train.gradient_checkpointing = true;
    let checkpointed = run_on::<A>(&checkpointed_job, Some(15));
    // Block recomputation sums the same products in another order: equal within f32 rounding (the
    // job has LoRA dropout: both draw the same per-block masks).
    let loss_values = |s: &TrainSummary| -> Vec<f64> {
        losses(s)
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(&format!("{l}}}")).unwrap()["loss"].as_f64().unwrap())
            .collect()
    };
    let (a, b) = (loss_values(&plain), loss_values(&checkpointed));
    assert_eq!(a.len(), 15);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "checkpointing changed the loss: {x} vs {y}");
    }
    let tensors = |s: &TrainSummary| flow_train::train::checkpoint::read_tensors(&s.lora).unwrap();
    for ((name, x), (_, y)) in tensors(&plain).iter().zip(tensors(&checkpointed).iter()) {
        let err = flux2_ops::relative_error(y, x).unwrap();
        assert!(err <= 1e-4, "checkpointing changed {name} by {err:e} after 15 steps");
    }
}
