//! Checks a job file and prints what the trainer would run.
//!
//! ```text
//! cargo run --release -p flow-train --example check_job -- <job.yaml|job.json|job.toml> [--plan-only]
//! ```
//!
//! Prints the errors, warnings and notes (each with its key path), the resolved job in ai-toolkit's
//! schema with every default written out, and the training plan. Exit status: 0 when the job can
//! run, 1 when it has errors, 2 when the file cannot be read or parsed.

use std::path::PathBuf;
use std::process::ExitCode;

use flow_train::job::{JobReport, Severity, check_job};

const USAGE: &str = "usage: check_job <job.yaml|job.json|job.toml> [--plan-only]\n\
    Checks an ai-toolkit-style FLUX.2 job file: errors, warnings and notes with key paths, the resolved\n\
    job (every default filled) and the training plan. See docs/user-guide.md.";

fn main() -> ExitCode {
    let mut path: Option<PathBuf> = None;
    let mut plan_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--plan-only" => plan_only = true,
            _ if path.is_none() && !arg.starts_with("--") => path = Some(PathBuf::from(arg)),
            _ => {
                eprintln!("unexpected argument `{arg}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let report = match check_job(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    print_report(&report, plan_only);
    if report.has_errors() { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn print_report(report: &JobReport, plan_only: bool) {
    if !plan_only {
        println!("# resolved job: {} (ai-toolkit schema, every default filled)", report.origin);
        match serde_yaml::to_string(&report.file) {
            Ok(text) => print!("{text}"),
            Err(e) => println!("# (cannot print: {e})"),
        }
    }
    if let Some(plan) = &report.plan {
        println!("\n# training plan");
        match serde_yaml::to_string(plan) {
            Ok(text) => print!("{text}"),
            Err(e) => println!("# (cannot print: {e})"),
        }
    }
    println!();
    for (severity, title) in [(Severity::Note, "notes"), (Severity::Warning, "warnings"), (Severity::Error, "errors")] {
        let items: Vec<_> = report.of(severity).collect();
        if items.is_empty() {
            continue;
        }
        println!("# {title} ({})", items.len());
        for d in items {
            println!("{d}");
        }
    }
    let errors = report.of(Severity::Error).count();
    let warnings = report.of(Severity::Warning).count();
    if errors == 0 {
        println!("# OK: {} can run ({warnings} warning{})", report.origin, if warnings == 1 { "" } else { "s" });
    } else {
        println!(
            "# {} cannot run: {errors} error{} (see docs/user-guide.md)",
            report.origin,
            if errors == 1 { "" } else { "s" }
        );
    }
}
