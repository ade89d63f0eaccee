//! `flux2-train quantize`: a bf16 checkpoint written once as a float8 file in ComfyUI's layout, so
//! later runs read half the bytes and skip quantizing (see `flux2_ops::quant::float8_file`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use flux2_ops::host_memory::HostMemory;
use flux2_ops::quant::QType;
use flux2_ops::quant::float8_file::WriteSummary;
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `quantize`.
#[derive(clap::Args, Debug)]
#[command(after_help = "EXAMPLES:
  flux2-train quantize --model FLUX.2-dev/flux2-dev.safetensors --out flux2-dev-fp8.safetensors
  flux2-train quantize --text-encoder FLUX.2-dev/text_encoder --out te-fp8/model.safetensors

The transformer file keeps the BFL names (ComfyUI loads it as a diffusion model; `--model` and the job's
model.name_or_path take it here); its block Linears are float8 with one scale each, the embedders,
modulation and final layer stay as stored. The text-encoder file holds the 30 layers FLUX.2 runs, with
config.json copied beside it so that its folder is a text_encoder/ folder.")]
pub struct QuantizeArgs {
    /// A bf16 transformer checkpoint in BFL layout (flux2-dev.safetensors, or a folder holding it).
    #[arg(long, value_name = "SRC", conflicts_with = "text_encoder", required_unless_present = "text_encoder")]
    pub model: Option<PathBuf>,
    /// A Mistral text-encoder folder (text_encoder/ of a FLUX.2 pipeline: config.json + shards).
    #[arg(long, value_name = "SRC")]
    pub text_encoder: Option<PathBuf>,
    /// Text-encoder layers to keep (default: 30, or all of a smaller model's; FLUX.2 stacks the hidden
    /// states of layers 10, 20 and 30).
    #[arg(long)]
    pub layers: Option<usize>,
    /// The weight type: float8 (e4m3, one scale per tensor: the type such files hold; qfloat8 means the same here).
    #[arg(long, default_value = "float8", value_parser = parse_qtype)]
    pub qtype: QType,
    /// The file to write (atomically: it appears only when complete).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

fn parse_qtype(name: &str) -> Result<QType, String> {
    match QType::parse(name).map_err(|e| e.to_string())? {
        q @ (QType::Float8 | QType::QFloat8) => Ok(q),
        other => Err(format!(
            "qtype `{other}`: quantized files are float8 (ComfyUI's layout); other qtypes quantize while loading (model.qtype)"
        )),
    }
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "quantizing [{bar:30}] {bytes}/{total_bytes} read, {bytes_per_sec}, ETA {eta}, {elapsed} elapsed",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One tensor written: `bytes` more of the `total` source bytes the file holds.
fn advance(bar: &ProgressBar, bytes: u64, total: u64) {
    bar.set_length(total);
    bar.inc(bytes);
}

pub fn run(args: QuantizeArgs) -> Result<ExitCode, String> {
    if args.out.exists() && args.out.is_dir() {
        return Err(format!("--out {}: a folder; give the file to write", args.out.display()));
    }
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let started = Instant::now();
    let summary = match (&args.model, &args.text_encoder) {
        (Some(model), _) => quantize_transformer(model, &args.out)?,
        (None, Some(dir)) => quantize_text_encoder(dir, args.layers, &args.out)?,
        (None, None) => return Err("give --model or --text-encoder".into()),
    };
    let gb = |b: u64| b as f64 / 1e9;
    eprintln!(
        "wrote {} in {:.0} s: {} float8 layers, {} tensors kept, {} left out; {:.2} GB read, {:.2} GB written",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        summary.float8_layers,
        summary.kept,
        summary.dropped,
        gb(summary.bytes_read),
        gb(summary.bytes_written)
    );
    // The source is memory-mapped: its pages read count in the peak (issue 17's budget is file + 8 GiB).
    if let Some(memory) = HostMemory::now() {
        eprintln!("host memory: {memory}");
    }
    Ok(ExitCode::SUCCESS)
}

fn quantize_transformer(model: &Path, out: &Path) -> Result<WriteSummary, String> {
    let checkpoint = flux2_dit::Checkpoint::open(model).map_err(|e| e.to_string())?;
    let bar = bar();
    let summary = flux2_dit::write_float8_file(&checkpoint, out, &|bytes, total| advance(&bar, bytes, total))
        .map_err(|e| e.to_string());
    bar.finish_and_clear();
    summary
}

fn quantize_text_encoder(dir: &Path, layers: Option<usize>, out: &Path) -> Result<WriteSummary, String> {
    let store = flux2_ops::TensorStore::open_dir(dir).map_err(|e| e.to_string())?;
    let config = dir.join("config.json");
    let config = mistral_encoder::MistralConfig::from_file(&config).map_err(|e| e.to_string())?;
    let layers = layers.unwrap_or(config.num_hidden_layers.min(30));
    if layers == 0 || layers > config.num_hidden_layers {
        return Err(format!("--layers {layers}: the checkpoint has {} layers", config.num_hidden_layers));
    }
    let bar = bar();
    let summary = mistral_encoder::write_float8_file(&store, layers, out, &|bytes, total| advance(&bar, bytes, total))
        .map_err(|e| e.to_string());
    bar.finish_and_clear();
    let summary = summary?;
    let beside = out.parent().unwrap_or(Path::new(".")).join("config.json");
    if !beside.exists() {
        std::fs::copy(dir.join("config.json"), &beside)
            .map_err(|e| format!("cannot write {}: {e}", beside.display()))?;
        eprintln!("copied config.json to {}", beside.display());
    }
    Ok(summary)
}
