//! `flux2-train sample`: one image from a FLUX.2 model, equal to diffusers' `Flux2Pipeline` for the same
//! inputs (see `flow_train::pipeline`).

use flux2_ops::quant::QType;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::DType;
use burn::tensor::backend::Backend;
use flow_train::pipeline::{
    Flux2Pipeline, GenerateOptions, LoraSpec, PipelineOptions, ReferenceImage, Stage, read_latents, save_image,
    save_image_tensor,
};
use indicatif::{ProgressBar, ProgressStyle};

const AFTER_HELP: &str = "\
MODEL SOURCES (--model):
  a diffusers FLUX.2 folder      model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/
  a Hugging Face repo id         black-forest-labs/FLUX.2-dev (optionally @revision); files are downloaded into
                                 the Hugging Face cache (HF_HUB_CACHE / HF_HOME) or taken from it; HF_TOKEN for
                                 gated repositories; HF_HUB_OFFLINE=1 uses the cache only
  a transformer checkpoint       a BFL file such as flux2-dev.safetensors (or a diffusers transformer/ folder);
                                 the VAE comes from --vae or an ae.safetensors next to it, the text encoder from
                                 --text-encoder or the pipeline folder around it

EXAMPLES:
  flux2-train sample --model black-forest-labs/FLUX.2-dev --prompt \"a lighthouse at dusk\" \\
      --width 1024 --height 768 --steps 28 --seed 7 --device cuda:0 --dtype bf16 --out lighthouse.png
  flux2-train sample --model ./FLUX.2-dev --prompt \"the same scene in winter\" --reference photo.jpg \\
      --lora style.safetensors:0.8 --out winter.png

Reproducing a diffusers run exactly: pass its initial noise with --latents (a safetensors file holding
`latents` [1, 128, H/16, W/16]); --seed draws our own noise, which is not torch's random stream.";

/// Arguments of `sample`.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct SampleArgs {
    /// The model: a diffusers FLUX.2 folder, a Hugging Face repo id, or a transformer checkpoint (see below).
    #[arg(long)]
    pub model: String,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Image width in pixels (a multiple of 16). Default: the first reference's, else 1024.
    #[arg(long)]
    pub width: Option<usize>,
    /// Image height in pixels (a multiple of 16). Default: the first reference's, else 1024.
    #[arg(long)]
    pub height: Option<usize>,
    /// Denoising steps.
    #[arg(long, default_value_t = flow_train::DEFAULT_SAMPLE_STEPS)]
    pub steps: usize,
    /// Embedded guidance scale (FLUX.2 [dev] is guidance-distilled: one pass per step).
    #[arg(long, default_value_t = flow_train::DEFAULT_GUIDANCE)]
    pub guidance: f32,
    /// Seed of the starting noise (ignored with --latents).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A LoRA file (ai-toolkit/ComfyUI, diffusers/PEFT or Kohya) with an optional multiplier, FILE[:MULT];
    /// repeat for several.
    #[arg(long = "lora", value_name = "FILE[:MULT]")]
    pub loras: Vec<LoraSpec>,
    /// A reference (edit) image; repeat for several, in order. Resized above 1024x1024 px and center-cropped
    /// to multiples of 16 as diffusers does.
    #[arg(long = "reference", value_name = "IMAGE")]
    pub references: Vec<PathBuf>,
    /// Text-encoder hidden states stacked into the prompt embeddings, e.g. 10,20,30 (the default).
    #[arg(long, value_delimiter = ',', value_name = "L1,L2,..")]
    pub text_encoder_out_layers: Option<Vec<usize>>,
    /// Prompt length in tokens (default 512).
    #[arg(long, value_name = "N")]
    pub max_sequence_length: Option<usize>,
    /// Initial noise [1, 4*latent_channels, H/16, W/16] from a safetensors file (tensor `latents`, or its
    /// only tensor), to reproduce a run exactly.
    #[arg(long, value_name = "FILE")]
    pub latents: Option<PathBuf>,
    /// VAE for a lone transformer checkpoint: pipeline folder, repo id, vae/ folder or ae.safetensors.
    #[arg(long, value_name = "SOURCE")]
    pub vae: Option<String>,
    /// Text encoder for a lone transformer checkpoint: pipeline folder or repo id with text_encoder/ and tokenizer/.
    #[arg(long, value_name = "SOURCE")]
    pub text_encoder: Option<String>,
    /// cpu or cuda:N (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Model dtype: f32 (diffusers' default) or bf16 (half the memory).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub dtype: String,
    /// Store the transformer's Linears quantized: qfloat8, float8, qint8, int8 or uint2..uint8
    /// (ai-toolkit's `qtype` names; docs/memory.md).
    #[arg(long, value_name = "QTYPE", value_parser = parse_qtype)]
    pub qtype: Option<QType>,
    /// The same for the text encoder's Linears.
    #[arg(long = "qtype-te", value_name = "QTYPE", value_parser = parse_qtype)]
    pub qtype_te: Option<QType>,
    /// Keep this share (0-1) of the transformer's blocks and of the text encoder's layers in host memory,
    /// uploaded ahead of use (`layer_offloading`; CUDA only, a no-op on the CPU).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub offload: f64,
    /// Output image (.png, .jpg or .webp).
    #[arg(long, default_value = "image.png")]
    pub out: PathBuf,
    /// Also write the float image as safetensors (`image` [1, 3, H, W] f32 in [0, 1]).
    #[arg(long, value_name = "FILE")]
    pub save_tensor: Option<PathBuf>,
}

pub fn run(args: SampleArgs) -> Result<(), String> {
    if args.device == "cpu" {
        return run_on::<burn::backend::Flex>(&args, &Default::default());
    }
    #[cfg(feature = "cuda")]
    if let Some(index) = args.device.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
        use flow_train::out_of_memory;
        // A failed GPU allocation panics inside cubecl: one message instead (flow_train::out_of_memory).
        out_of_memory::set_phase("loading the models and sampling");
        return out_of_memory::guard(
            || run_on::<burn::backend::Cuda>(&args, &burn::backend::cuda::CudaDevice::new(index)),
            || flux2_ops::cuda::device::memory_info(index),
        )
        .map_err(|oom| format!("{oom}\n{}", oom.sampling_advice()))?;
    }
    Err(format!(
        "--device {}: expected cpu{}",
        args.device,
        if cfg!(feature = "cuda") {
            " or cuda:N"
        } else {
            " (this build has no GPU backend: rebuild with --features cuda for cuda:N)"
        }
    ))
}

fn run_on<B: Backend>(args: &SampleArgs, device: &B::Device) -> Result<(), String> {
    // Cheap checks first, before minutes of loading.
    let references =
        args.references.iter().map(ReferenceImage::open).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let latents = args.latents.as_ref().map(|p| read_latents::<B>(p, device)).transpose().map_err(|e| e.to_string())?;
    for lora in &args.loras {
        if !lora.path.is_file() {
            return Err(format!("--lora {}: no such file", lora.path.display()));
        }
    }
    let options = PipelineOptions {
        dtype: if args.dtype == "bf16" { DType::BF16 } else { DType::F32 },
        text_encoder_out_layers: args.text_encoder_out_layers.clone(),
        max_sequence_length: args.max_sequence_length,
        vae: args.vae.clone(),
        text_encoder: args.text_encoder.clone(),
        quantize: args.qtype,
        quantize_text_encoder: args.qtype_te,
        offload_transformer: args.offload,
        offload_text_encoder: args.offload,
        ..PipelineOptions::default()
    };

    let started = Instant::now();
    let spinner = ProgressBar::new_spinner().with_message(format!("loading {}", args.model));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut pipe = Flux2Pipeline::<B>::load(&args.model, &options, device).map_err(|e| e.to_string())?;
    pipe.load_loras(&args.loras).map_err(|e| e.to_string())?;
    spinner.finish_and_clear();
    eprintln!("loaded {} in {:.1} s", args.model, started.elapsed().as_secs_f64());

    let generate = GenerateOptions {
        height: args.height,
        width: args.width,
        steps: args.steps,
        guidance: args.guidance,
        seed: args.seed,
        latents,
        references,
    };
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>20} [{bar:30}] {pos}/{len} steps, {per_sec}, ETA {eta}, {elapsed} elapsed")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let mut on_stage = |stage: Stage| match stage {
        Stage::EncodingPrompt => bar.set_message("encoding the prompt"),
        Stage::EncodingReferences { count } => bar.set_message(format!("encoding {count} reference(s)")),
        Stage::Denoising { step, steps } => {
            if step == 0 {
                bar.set_message("denoising");
                bar.set_length(steps as u64);
                bar.reset_elapsed();
                bar.reset_eta();
            }
            bar.set_position(step as u64);
        }
        Stage::Decoding => bar.set_message("decoding"),
    };
    let image = pipe.generate(args.prompt.as_str(), generate, Some(&mut on_stage)).map_err(|e| e.to_string())?;
    bar.finish_and_clear();

    let [_, _, h, w] = image.dims();
    save_image(image.clone(), &args.out).map_err(|e| e.to_string())?;
    if let Some(path) = &args.save_tensor {
        save_image_tensor(image, path).map_err(|e| e.to_string())?;
    }
    eprintln!("{}x{} image written to {} in {:.1} s", w, h, args.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn parse_share(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("`{v}`: a share between 0 and 1 (0.5 = half of the blocks)")),
    }
}

fn parse_qtype(name: &str) -> Result<QType, String> {
    QType::parse(name).map_err(|e| e.to_string())
}
