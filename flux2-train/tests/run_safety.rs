//! The `flux2-train` process under crashes, signals and concurrent runs (issue 20), on the embedded
//! demo shortened to a few steps. Each case stops a real child process at a chosen point: the
//! `FLUX2_TRAIN_CRASH_AT` hook aborts it at an exact moment, SIGINT is sent once the loss log shows a
//! step (a file event, not a timer).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flux2-train");

fn demo_job(root: &Path, name: &str, steps: u32) -> PathBuf {
    flow_train::demo::prepare(root).unwrap();
    let text = flow_train::demo::DEMO_JOB
        .replace("output/demo", &root.display().to_string())
        .replace("name: demo_ring_lora", &format!("name: {name}"))
        .replace("steps: 300", &format!("steps: {steps}"))
        .replace("log_every: 50", "log_every: 1")
        .replace("save_every: 100", "save_every: 2")
        .replace("sample_every: 100", "sample_every: 1000");
    let path = root.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn train(job: &Path, crash_at: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    command.arg("train").arg(job);
    match crash_at {
        Some(point) => command.env("FLUX2_TRAIN_CRASH_AT", point),
        None => command.env_remove("FLUX2_TRAIN_CRASH_AT"),
    };
    command.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Killed after the last step's training state but before the final LoRA: the next `train` writes the
/// final LoRA (and the last samples and pruning) instead of saying the job is complete; the run after
/// that has nothing to do.
#[test]
fn a_run_killed_inside_the_final_save_is_completed_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let job = demo_job(dir.path(), "final", 3);
    let out = dir.path().join("final");
    let crashed = train(&job, Some("before-final-lora"));
    assert!(!crashed.status.success(), "aborted: {}", stderr(&crashed));
    assert!(out.join("training_state/step_000000003/state.json").is_file(), "the last state was written");
    assert!(!out.join("final.safetensors").exists(), "the final LoRA was not");
    // What a kill during a LoRA write leaves behind.
    std::fs::write(out.join(".final_000000002.safetensors.999999999.0.tmp"), b"half").unwrap();

    let resumed = train(&job, None);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("completed the final save"), "{}", stderr(&resumed));
    assert!(out.join("final.safetensors").is_file());
    assert!(
        !out.join(".final_000000002.safetensors.999999999.0.tmp").exists(),
        "a dead writer's temporary file is removed"
    );

    let again = train(&job, None);
    assert!(again.status.success() && stderr(&again).contains("nothing to do"), "{}", stderr(&again));
}

/// A second run on the same output folder while one holds it is refused, naming the holder.
#[test]
fn a_second_run_in_the_same_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = demo_job(dir.path(), "locked", 2);
    let out = dir.path().join("locked");
    std::fs::create_dir_all(&out).unwrap();
    let held = flow_train::train::run_lock::acquire(&out).unwrap();
    let refused = train(&job, None);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("in use by another training run") && message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    assert!(!out.join("loss_log.jsonl").exists(), "the refused run wrote nothing");
    drop(held);
    let ok = train(&job, None);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

/// Ctrl-C (SIGINT) saves a checkpoint after the current step and exits with status 130.
#[cfg(unix)]
#[test]
fn ctrl_c_saves_and_exits_130() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let job = demo_job(dir.path(), "interrupted", 100_000);
    let out = dir.path().join("interrupted");
    let mut child = Command::new(BIN)
        .arg("train")
        .arg(&job)
        .env_remove("FLUX2_TRAIN_CRASH_AT")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = out.join("loss_log.jsonl");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2) {
        assert!(started.elapsed().as_secs() < 300, "no training step within 300 s");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was interrupted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "signal {:?}: {message}", output.status.signal());
    assert!(message.contains("stopped after"), "{message}");
    let states = std::fs::read_dir(out.join("training_state")).unwrap().count();
    assert!(states >= 1, "a checkpoint was saved");
}
