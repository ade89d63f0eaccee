//! Prints the FLUX.2 inference schedule as one JSON line:
//!
//! ```text
//! cargo run --release -p flow-train --example schedule -- --image-seq-len 4096 --steps 28
//! {"mu":...,"sigmas":[1.0,...,0.0]}
//! ```
//!
//! `--image-seq-len` is the number of noisy image tokens, (H/16)*(W/16) for an H x W image.

use std::process::ExitCode;

use flow_train::Flux2Schedule;
use serde::Serialize;

/// The output line. Sigmas are the schedule's f32 values widened to f64, so they print exactly as
/// Python prints diffusers' float32 sigmas (`scheduler.sigmas.tolist()`), digit for digit.
#[derive(Serialize)]
struct Line {
    mu: f64,
    sigmas: Vec<f64>,
}

fn parse(args: &[String]) -> Result<(usize, usize), String> {
    let mut seq_len = None;
    let mut steps = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let slot = match key {
            "--image-seq-len" => &mut seq_len,
            "--steps" => &mut steps,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        };
        let value = match inline {
            Some(v) => v,
            None => it.next().cloned().ok_or_else(|| format!("`{key}` needs a value"))?,
        };
        *slot = Some(value.parse::<usize>().map_err(|e| format!("`{key} {value}`: {e}"))?);
    }
    Ok((seq_len.ok_or("missing `--image-seq-len S`")?, steps.ok_or("missing `--steps N`")?))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (seq_len, steps) = match parse(&args) {
        Ok(v) => v,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            eprintln!("usage: schedule --image-seq-len S --steps N");
            return ExitCode::from(2);
        }
    };
    let schedule = match Flux2Schedule::new(seq_len, steps) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let line = Line { mu: schedule.mu, sigmas: schedule.sigmas.iter().map(|&s| f64::from(s)).collect() };
    match serde_json::to_string(&line) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
