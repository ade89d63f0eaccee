//! The embedded demo really learns (issue acceptance test, CPU, about two minutes in release):
//!
//! 1. Trained on the demo images, the LoRA lowers the flow-matching loss on those images, at fixed
//!    noise and timesteps, by at least 20% compared with the base model (29% measured 2026-12-08 on the
//!    pretrained base, which already draws the backgrounds; 54% on the random base it replaced).
//! 2. With Differential Output Preservation on, the LoRA changes the model's predictions on
//!    non-trigger prompts (the captions with the trigger replaced by the class word) less than the
//!    same training without DOP.
//! 3. A LoRA trained on the base quantized to qfloat8 (`model.quantize`) lowers the loss of the
//!    unquantized base too.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use dataset_buckets::{DatasetSet, LatentEncoder, SampleRef};
use flow_train::job::{JobFormat, LoadedJob, load_job_str};
use flow_train::pipeline::{Flux2Pipeline, PipelineOptions};
use flow_train::train::encoders::{PromptBank, VaeLatents, from_cached};
use flow_train::train::evaluate::{EvalItem, fixed_noise_loss, prediction_change};
use flow_train::train::{RunOptions, TrainModels, train};

type B = Flex;
type A = Autodiff<Flex>;

const STEPS: u32 = 150;
const SIGMAS: [f32; 3] = [0.25, 0.5, 0.75];
const EVAL_SEED: u64 = 1234;

fn demo_job(root: &Path, name: &str, dop: bool) -> LoadedJob {
    demo_job_with(root, name, dop, false)
}

fn demo_job_with(root: &Path, name: &str, dop: bool, fp8: bool) -> LoadedJob {
    let mut text = flow_train::demo::DEMO_JOB
        .replace("output/demo", &root.display().to_string())
        .replace("name: demo_ring_lora", &format!("name: {name}"))
        .replace("steps: 300", &format!("steps: {STEPS}"))
        .replace("gradient_checkpointing: false", "gradient_checkpointing: false\n        disable_sampling: true");
    if fp8 {
        text = text.replace("quantize: false\n", "quantize: true\n        qtype: qfloat8\n");
        assert!(text.contains("qtype: qfloat8"), "the demo job sets quantize");
    }
    // The demo job trains with DOP; the plain variant without.
    let dop_lines = "        diff_output_preservation: true\n        diff_output_preservation_class: ring\n";
    assert!(text.contains(dop_lines), "the demo job sets DOP");
    if !dop {
        text = text.replace(dop_lines, "");
    }
    load_job_str(&text, JobFormat::Yaml, name).expect("demo job is valid")
}

fn pipeline_options(job: &LoadedJob) -> PipelineOptions {
    PipelineOptions {
        text_encoder_out_layers: job.plan.model.text_encoder_out_layers.clone(),
        max_sequence_length: job.plan.model.max_sequence_length,
        ..PipelineOptions::default()
    }
}

fn load(job: &LoadedJob) -> Flux2Pipeline<B> {
    Flux2Pipeline::<B>::load(&job.plan.model.name_or_path, &pipeline_options(job), &Default::default())
        .expect("demo pipeline loads")
}

fn run(job: &LoadedJob) -> std::path::PathBuf {
    let models = TrainModels::<A>::load(job, &Default::default()).expect("demo pipeline loads");
    let summary = train(job, models, RunOptions { progress: false, ..RunOptions::default() }).expect("training runs");
    assert_eq!(summary.steps, STEPS);
    // Batches of 2 in every epoch (12 images, so 25 epochs), not only the first.
    assert_eq!(summary.items, 2 * u64::from(STEPS));
    summary.lora
}

#[test]
fn demo_lora_learns_and_dop_preserves() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    flow_train::demo::prepare(root).expect("demo inputs are written");
    let plain_job = demo_job(root, "plain", false);
    let dop_job = demo_job(root, "dop", true);
    let plain_lora = run(&plain_job);
    let dop_lora = run(&dop_job);
    let fp8_job = demo_job_with(root, "fp8", false, true);
    assert_eq!(fp8_job.plan.model.quantize, Some(flux2_ops::quant::QType::QFloat8));
    let fp8_lora = run(&fp8_job);

    // Evaluation items: every training image with its caption, and with the class caption.
    let pipeline = load(&plain_job);
    let device = Default::default();
    let set = DatasetSet::load(&plain_job.plan.datasets, &plain_job.plan.dataset_options).unwrap();
    let vae = VaeLatents { vae: &pipeline.vae, device, identity: "eval".into() };
    let mut bank = PromptBank::new(pipeline.text_encoder, "eval".into());
    let (mut items, mut class_items) = (Vec::new(), Vec::new());
    for sample in 0..set.datasets()[0].samples().len() {
        let r = SampleRef { dataset: 0, sample };
        let latents = from_cached::<B, 3>(&vae.encode(&set.prepare_image(r).unwrap()).unwrap(), &device)
            .unwrap()
            .unsqueeze_dim::<4>(0);
        let caption = set.caption(r).unwrap().to_string();
        assert!(caption.contains("sks"), "{caption}");
        let embed = |bank: &mut PromptBank<B>, c: &str| -> Tensor<B, 3> {
            from_cached::<B, 2>(&bank.embed(c).unwrap(), &device).unwrap().unsqueeze_dim::<3>(0)
        };
        items.push(EvalItem { latents: latents.clone(), text: embed(&mut bank, &caption) });
        class_items.push(EvalItem { latents, text: embed(&mut bank, &caption.replace("sks", "ring")) });
    }

    let mut model = pipeline.transformer;
    let base_loss = fixed_noise_loss(&model, &items, &SIGMAS, EVAL_SEED).unwrap();
    let plain = lora_adapters::load_into(&mut model, &plain_lora, "plain", 1.0).unwrap();
    plain.disable();
    let dop = lora_adapters::load_into(&mut model, &dop_lora, "dop", 1.0).unwrap();
    dop.disable();

    plain.enable();
    let lora_loss = fixed_noise_loss(&model, &items, &SIGMAS, EVAL_SEED).unwrap();
    let plain_change = prediction_change(&model, &plain, &class_items, &SIGMAS, EVAL_SEED).unwrap();
    plain.disable();
    dop.enable();
    let dop_change = prediction_change(&model, &dop, &class_items, &SIGMAS, EVAL_SEED).unwrap();
    let dop_loss = fixed_noise_loss(&model, &items, &SIGMAS, EVAL_SEED).unwrap();
    eprintln!(
        "fixed-noise loss: base {base_loss:.4}, LoRA {lora_loss:.4} ({:.0}% lower), DOP LoRA {dop_loss:.4}; \
         prediction change on class prompts: plain {plain_change:.5}, DOP {dop_change:.5}",
        100.0 * (1.0 - lora_loss / base_loss)
    );
    assert!(lora_loss <= 0.8 * base_loss, "LoRA loss {lora_loss} is not 20% below the base's {base_loss}");
    assert!(dop_change < plain_change, "DOP changed class prompts by {dop_change}, without DOP {plain_change}");

    dop.disable();
    let fp8 = lora_adapters::load_into(&mut model, &fp8_lora, "fp8", 1.0).unwrap();
    let fp8_loss = fixed_noise_loss(&model, &items, &SIGMAS, EVAL_SEED).unwrap();
    fp8.disable();
    eprintln!(
        "LoRA trained on the qfloat8 base, on the unquantized base: {fp8_loss:.4} ({:.0}% below the base)",
        100.0 * (1.0 - fp8_loss / base_loss)
    );
    assert!(fp8_loss <= 0.8 * base_loss, "fp8-trained LoRA loss {fp8_loss} is not 20% below the base's {base_loss}");
}
