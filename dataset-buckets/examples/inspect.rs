//! Inspect a dataset folder without any model: bucket table, counts, captions, controls, problems.
//!
//! ```text
//! cargo run --release -p dataset-buckets --example inspect -- <folder> --resolution 768,1024
//!     [--control <folder>]... [--caption-ext txt] [--trigger <word>] [--default-caption <text>]
//!     [--flip-x] [--flip-y] [--repeats N] [--divisibility 16] [--min-side 64] [--no-verify]
//!     [--batch N] [--seed N]
//! cargo run --release -p dataset-buckets --example inspect -- --config datasets.json
//! ```
//!
//! `--config` takes a JSON file holding one ai-toolkit dataset entry or a list of them. Problems are
//! listed rather than fatal (the inspector loads with `on_bad_input: skip`); the exit status is 1 when
//! there are any, so a training run with the default `stop` policy would refuse this data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use dataset_buckets::{BadInputPolicy, CaptionSource, DatasetConfig, DatasetSet, LoadOptions, Stream};

struct Args {
    configs: Vec<DatasetConfig>,
    options: LoadOptions,
    batch: usize,
}

fn usage() -> String {
    "usage: inspect <folder> [--resolution 768,1024] [--control DIR]... [--caption-ext EXT] [--trigger WORD] \
     [--default-caption TEXT] [--flip-x] [--flip-y] [--repeats N] [--divisibility N] [--min-side N] \
     [--no-verify] [--batch N] [--seed N]\n       inspect --config datasets.json [same options]"
        .to_string()
}

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, String> {
    let v = value.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: `{v}` is not a valid number"))
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut folder: Option<PathBuf> = None;
    let mut config_file: Option<PathBuf> = None;
    let mut config = DatasetConfig::default();
    let mut resolution: Option<Vec<u32>> = None;
    let mut options = LoadOptions { on_bad_input: BadInputPolicy::Skip, ..Default::default() };
    let mut batch = 1usize;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--resolution" => {
                let v = it.next().ok_or("--resolution needs a value like 768,1024")?;
                let parsed: Result<Vec<u32>, _> = v.split(',').map(|s| s.trim().parse::<u32>()).collect();
                resolution = Some(parsed.map_err(|_| format!("--resolution: `{v}` is not a list of numbers"))?);
            }
            "--control" => config.control_path.push(PathBuf::from(it.next().ok_or("--control needs a folder")?)),
            "--caption-ext" => config.caption_ext = it.next().ok_or("--caption-ext needs a value")?,
            "--trigger" => config.trigger_word = Some(it.next().ok_or("--trigger needs a value")?),
            "--default-caption" => config.default_caption = Some(it.next().ok_or("--default-caption needs a value")?),
            "--flip-x" => config.flip_x = true,
            "--flip-y" => config.flip_y = true,
            "--repeats" => config.num_repeats = number("--repeats", it.next())?,
            "--divisibility" => options.divisibility = number("--divisibility", it.next())?,
            "--min-side" => options.min_image_side = number("--min-side", it.next())?,
            "--seed" => options.seed = number("--seed", it.next())?,
            "--batch" => batch = number("--batch", it.next())?,
            "--no-verify" => options.verify_images = false,
            "--config" => config_file = Some(PathBuf::from(it.next().ok_or("--config needs a file")?)),
            "-h" | "--help" => return Err(usage()),
            other if other.starts_with("--") => return Err(format!("unknown option {other}\n{}", usage())),
            other => folder = Some(PathBuf::from(other)),
        }
    }
    let mut configs = match (config_file, folder) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let list = if value.is_array() { value } else { serde_json::Value::Array(vec![value]) };
            serde_json::from_value::<Vec<DatasetConfig>>(list).map_err(|e| format!("{}: {e}", file.display()))?
        }
        (None, Some(folder)) => vec![DatasetConfig { folder_path: Some(folder), ..config }],
        (None, None) => return Err(usage()),
    };
    if let Some(res) = resolution {
        for c in &mut configs {
            c.resolution = res.clone();
        }
    }
    Ok(Args { configs, options, batch })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let set = match DatasetSet::load(&args.configs, &args.options) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };

    for ds in set.datasets() {
        let cfg = ds.config();
        println!("dataset {}: {}", ds.index(), ds.root().display());
        let unsupported = cfg.unsupported_keys();
        if !unsupported.is_empty() {
            println!("  ignored config keys: {}", unsupported.join(", "));
        }
        let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
        for r in ds.records() {
            let name = match r.caption_source {
                CaptionSource::File => "caption file",
                CaptionSource::Default => "default_caption",
                CaptionSource::Empty => "no caption",
            };
            *sources.entry(name).or_default() += 1;
        }
        let captions: Vec<String> = sources.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "  images: {}   samples: {} (resolutions {:?}, repeats {}, flips x={} y={})   captions: {}",
            ds.records().len(),
            ds.samples().len(),
            cfg.resolution,
            cfg.num_repeats,
            cfg.flip_x,
            cfg.flip_y,
            captions.join(", ")
        );
        if let Some(trigger) = &ds.caption_rules().trigger {
            println!("  trigger: `{trigger}`{}", if cfg.is_reg { " (regularization: not prepended)" } else { "" });
        }
        let controls = cfg.control_folders();
        if !controls.is_empty() {
            let names: Vec<String> = controls.iter().map(|c| c.display().to_string()).collect();
            println!("  control folders: {}", names.join(", "));
        }
        println!("  {:>6}  {:>11}  {:>7}  {:>8}  {:>6}", "res", "bucket", "aspect", "samples", "share");
        let total = ds.samples().len().max(1) as f64;
        for row in ds.bucket_rows() {
            println!(
                "  {:>6}  {:>11}  {:>7.3}  {:>8}  {:>5.1}%",
                row.resolution,
                row.size.to_string(),
                f64::from(row.size.width) / f64::from(row.size.height),
                row.samples,
                100.0 * row.samples as f64 / total
            );
        }
        println!("  {} buckets", ds.buckets().len());
        if let Some(r) = ds.records().first() {
            println!("  first caption: {:?}", r.caption);
        }
        println!();
    }
    for (name, stream) in [("training", Stream::Main), ("regularization", Stream::Reg)] {
        let sampler = set.sampler(stream, args.batch);
        if !sampler.is_empty() {
            println!("{name} batches per epoch at batch size {}: {}", args.batch, sampler.batches_per_epoch());
        }
    }
    let used: usize = set.datasets().iter().map(|d| d.records().len()).sum();
    println!("image files found: {}, used: {used}", set.files_found());
    if set.problems().is_empty() {
        println!("no problems found");
        ExitCode::SUCCESS
    } else {
        println!("{} problem(s); with on_bad_input: stop training would refuse to start:", set.problems().len());
        for p in set.problems() {
            println!("  {p}");
        }
        ExitCode::from(1)
    }
}
