//! `flux2-train train <job>`.

use std::path::PathBuf;

/// Arguments of `train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// ai-toolkit job file (`.yaml`, `.yml`, `.json` or `.toml`).
    pub job: PathBuf,
}

pub fn run(args: TrainArgs) -> Result<(), String> {
    let job = flow_train::job::load_job(&args.job).map_err(|e| e.to_string())?;
    for warning in job.warnings() {
        eprintln!("{warning}");
    }
    Err("the training loop is not wired yet".into())
}
