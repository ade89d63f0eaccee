//! Job files: ai-toolkit FLUX.2 jobs parse unchanged, unknown keys become warnings, recognised but
//! unsupported keys stop with their path, bad values name their path, and the resolved plan maps to
//! the workspace's types.

use std::path::PathBuf;

use flow_train::job::{
    DeviceSpec, JobError, JobFormat, JobReport, LrSchedule, Precision, Severity, TextEncoderPlan, check_job,
    check_job_str, load_job, load_job_str, substitute_env,
};
use flow_train::optim::OptimizerPlan;
use flow_train::{LossType, TimestepBias, TimestepType};
use lora_adapters::{LoraLayout, Targets};
use serde_yaml::Value;

fn jobs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs")
}

/// A minimal valid job.
const BASE: &str = r#"
job: extension
config:
  name: unit
  process:
    - type: diffusion_trainer
      network: {type: lora, linear: 8}
      datasets:
        - folder_path: data/a
      model: {name_or_path: black-forest-labs/FLUX.2-dev, arch: flux2}
      sample:
        samples:
          - prompt: first
          - prompt: second
"#;

/// `BASE` with the given `(path, yaml value)` pairs set (paths like `config.process[0].train.lr`;
/// missing mappings are created).
fn job_with(edits: &[(&str, &str)]) -> String {
    let mut root: Value = serde_yaml::from_str(BASE).unwrap();
    for (path, value) in edits {
        let value: Value = serde_yaml::from_str(value).unwrap();
        set(&mut root, path, value);
    }
    serde_yaml::to_string(&root).unwrap()
}

fn set(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (n, part) in parts.iter().enumerate() {
        let (key, index) = match part.find('[') {
            Some(i) => (&part[..i], Some(part[i + 1..part.len() - 1].parse::<usize>().unwrap())),
            None => (*part, None),
        };
        let last = n + 1 == parts.len();
        let map = cur.as_mapping_mut().unwrap();
        let key_v = Value::String(key.to_string());
        if last && index.is_none() {
            map.insert(key_v, value);
            return;
        }
        if !map.contains_key(&key_v) {
            map.insert(
                key_v.clone(),
                if index.is_some() { Value::Sequence(vec![]) } else { Value::Mapping(Default::default()) },
            );
        }
        cur = map.get_mut(&key_v).unwrap();
        if let Some(i) = index {
            let seq = cur.as_sequence_mut().unwrap();
            while seq.len() <= i {
                seq.push(Value::Mapping(Default::default()));
            }
            if last {
                seq[i] = value;
                return;
            }
            cur = &mut seq[i];
        }
    }
}

fn check(text: &str) -> JobReport {
    check_job_str(text, JobFormat::Yaml, "test.yaml").unwrap()
}

fn paths(report: &JobReport, severity: Severity) -> Vec<String> {
    report.of(severity).map(|d| d.path.clone()).collect()
}

fn error_at<'a>(report: &'a JobReport, path: &str) -> &'a str {
    report
        .of(Severity::Error)
        .find(|d| d.path == path)
        .map(|d| d.message.as_str())
        .unwrap_or_else(|| panic!("no error at {path}; got {:#?}", report.diagnostics))
}

#[test]
fn base_job_is_valid() {
    let report = check(BASE);
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    assert_eq!(paths(&report, Severity::Warning), Vec::<String>::new());
    let plan = report.plan.unwrap();
    assert_eq!(plan.lora.rank, 8);
    assert_eq!(plan.lora.alpha, 8.0, "linear_alpha defaults to linear (scale 1)");
    assert_eq!(plan.lora.targets, Targets::Blocks);
    assert_eq!(plan.train.steps, 1000);
    assert_eq!(plan.train.optimizer.lr(), 1e-6, "ai-toolkit's default lr");
    assert_eq!(plan.train.timesteps.timestep_type, TimestepType::Sigmoid);
    assert_eq!(plan.device, DeviceSpec::Auto);
    assert_eq!(plan.output_dir, PathBuf::from("output/unit"));
    assert_eq!(plan.sample.prompts.len(), 2);
    assert_eq!((plan.sample.prompts[0].width, plan.sample.prompts[0].steps), (512, 20));
}

/// The job as ai-toolkit's UI saves it for FLUX.2 (our copy in its schema) parses unchanged: every key
/// is known, every value has the right type, its quantization (qfloat8 for both models) and low_vram
/// are read, nothing stops it, and it resolves to the UI's settings.
#[test]
fn ai_toolkit_ui_flux2_job_parses_unchanged() {
    let path = jobs_dir().join("ai_toolkit_flux2_ui.yaml");
    let report = check_job(&path).unwrap();
    assert_eq!(paths(&report, Severity::Warning), Vec::<String>::new(), "{:#?}", report.diagnostics);
    assert_eq!(paths(&report, Severity::Error), Vec::<String>::new(), "{:#?}", report.diagnostics);
    // Recognised keys without effect are notes with reasons, not warnings.
    let notes = paths(&report, Severity::Note);
    for key in ["sqlite_db_path", "network.conv", "train.bypass_guidance_embedding", "save.save_format"] {
        assert!(notes.contains(&format!("config.process[0].{key}")), "{key} not noted: {notes:?}");
    }
    // The file itself is read completely.
    let p = &report.file.config.process[0];
    assert_eq!(p.network.linear, 32);
    assert_eq!(p.train.optimizer, "adamw8bit");
    assert_eq!(p.sample.samples.len(), 4);

    let text = std::fs::read_to_string(&path).unwrap();
    let job = load_job_str(&text, JobFormat::Yaml, "ui").unwrap();
    let plan = &job.plan;
    assert!(plan.model.low_vram);
    let qfloat8 = Some(flux2_ops::quant::QType::QFloat8);
    assert_eq!((plan.model.quantize, plan.model.quantize_te), (qfloat8, qfloat8));
    // An unsupported qtype is one error naming the key and the supported list; qtype_te absent: qtype.
    let bad = text.replace("qtype: qfloat8", "qtype: nvfp4").replace("        qtype_te: qfloat8\n", "");
    let err = load_job_str(&bad, JobFormat::Yaml, "ui-nvfp4").unwrap_err().to_string();
    assert!(err.contains("model.qtype") && err.contains("`nvfp4`") && err.contains("qfloat8, float8"), "{err}");
    let mixed = text.replace("qtype_te: qfloat8", "qtype_te: uint4");
    let plan = load_job_str(&mixed, JobFormat::Yaml, "ui-mixed").unwrap().plan;
    assert_eq!(plan.model.quantize_te, Some(flux2_ops::quant::QType::UInt(4)));
    let plan = &job.plan;
    assert_eq!((plan.lora.rank, plan.lora.alpha), (32, 32.0));
    assert_eq!(plan.device, DeviceSpec::Cuda { index: 0 });
    assert_eq!(plan.model.name_or_path, "black-forest-labs/FLUX.2-dev");
    assert_eq!(plan.model.dtype, Precision::Bf16);
    assert_eq!((plan.save.every, plan.save.keep, plan.save.dtype), (250, 4, Precision::Bf16));
    assert_eq!(plan.save.layout, LoraLayout::AiToolkit);
    assert_eq!(plan.train.steps, 3000);
    let OptimizerPlan::AdamW8bit(o) = plan.train.optimizer else { panic!("{:?}", plan.train.optimizer) };
    assert_eq!((o.block_size, o.min_8bit_size), (2048, 4096));
    assert_eq!(o.adam.lr, 1e-4);
    assert_eq!(o.adam.weight_decay, 1e-4);
    assert_eq!(o.adam.eps, 1e-6);
    assert_eq!(plan.train.timesteps.timestep_type, TimestepType::Weighted);
    assert_eq!(plan.train.timesteps.bias, TimestepBias::Balanced);
    assert_eq!(plan.train.loss, LossType::Mse);
    assert_eq!(plan.train.ema_decay, None);
    assert_eq!(plan.train.dop, None);
    assert_eq!(plan.train.text_encoder, TextEncoderPlan::Live);
    assert_eq!(plan.datasets[0].resolution, vec![512, 768, 1024]);
    assert_eq!(plan.datasets[0].caption_dropout_rate, 0.05);
    let seeds: Vec<u64> = plan.sample.prompts.iter().map(|s| s.seed).collect();
    assert_eq!(seeds, [42, 43, 44, 45], "walk_seed");
    assert!(plan.sample.prompts.iter().all(|s| s.width == 1024 && s.guidance_scale == 4.0 && s.steps == 25));
    assert_eq!(plan.meta["name"], "flux2_ui_job_v1", "[name] replaced");
    // adamw8bit is a real 8-bit optimizer now: nothing to warn about.
    assert_eq!(job.warnings().count(), 0, "{:?}", job.diagnostics);
}

/// A hand-written job in ai-toolkit's classic example style: legacy keys, inline prompt flags.
#[test]
fn classic_style_job_reads_legacy_keys() {
    let report = check_job(&jobs_dir().join("ai_toolkit_flux2_classic.yaml")).unwrap();
    assert_eq!(paths(&report, Severity::Error), Vec::<String>::new(), "{:#?}", report.diagnostics);
    assert_eq!(paths(&report, Severity::Warning), Vec::<String>::new());
    let p = &report.file.config.process[0];
    assert_eq!(p.train.lr, 1e-4, "1e-4 is a number");
    assert_eq!(p.train.gradient_accumulation_steps, 1);
    assert_eq!(p.model.quantize_te, Some(true), "quantize_te defaults to quantize, as in ai-toolkit");
    assert_eq!(p.save.dtype, Precision::Fp16, "float16");
    let s = &p.sample.samples;
    assert_eq!(s.len(), 3, "prompts: became samples");
    assert_eq!(s[1].prompt, "[trigger] as an oil painting, portrait, dramatic lighting");
    assert_eq!((s[1].width, s[1].height), (Some(768), Some(1024)), "--w / --h flags");
    assert_eq!((s[0].width, s[0].height), (Some(1024), Some(1024)));

    let text = std::fs::read_to_string(jobs_dir().join("ai_toolkit_flux2_classic.yaml")).unwrap();
    let job = load_job_str(&text, JobFormat::Yaml, "classic").unwrap();
    assert_eq!(job.plan.model.quantize, Some(flux2_ops::quant::QType::QFloat8), "qtype defaults to qfloat8");
    assert_eq!(job.plan.train.ema_decay, Some(0.99));
    assert_eq!(job.plan.trigger_word.as_deref(), Some("p3r5on"));
    assert_eq!(job.plan.dataset_options.trigger_word.as_deref(), Some("p3r5on"));
    assert_eq!(job.plan.device, DeviceSpec::Cuda { index: 0 });
}

#[test]
fn repository_job_loads_clean_and_toml_matches_yaml() {
    let yaml = load_job(&jobs_dir().join("flux2_lora.yaml")).unwrap();
    assert_eq!(yaml.diagnostics, vec![], "no warnings or notes");
    let toml = load_job(&jobs_dir().join("flux2_lora.toml")).unwrap();
    assert_eq!(toml.diagnostics, vec![]);
    assert_eq!(yaml.file, toml.file);
    assert_eq!(yaml.plan, toml.plan);
    assert_eq!(yaml.plan.lora.seed, 42);
    assert_eq!(yaml.plan.sample.prompts[1].width, 768);
}

/// The full-size rehearsal job (`train --random-weights`, docs/performance.md) is a plain job: clean,
/// checkpointing on, 1024x1024, 5 steps.
#[test]
fn rehearsal_job_loads_clean() {
    let job = load_job(&jobs_dir().join("flux2_dev_rehearsal.yaml")).unwrap();
    assert_eq!(job.diagnostics, vec![], "no warnings or notes");
    assert!(job.plan.train.gradient_checkpointing);
    assert_eq!(job.plan.train.steps, 5);
    assert_eq!(job.plan.model.random_weights, None, "random weights come from the command line only");
}

/// Printing the resolved file gives a job that reads back to the same file, with no unknown key:
/// every typed field is in the key table.
#[test]
fn resolved_file_round_trips_and_every_field_is_a_known_key() {
    let edits = [
        ("config.process[0].datasets[1]", "{folder_path: data/reg, is_reg: true, control_path: [c1]}"),
        ("config.process[0].sample.samples[0]", "{prompt: p, seed: 3, ctrl_img: a.png, neg: x}"),
        (
            "config.process[0].train.lr_scheduler_params",
            "{num_warmup_steps: 10, eta_min: 0.0, start_factor: 0.5, end_factor: 1.0, total_iters: 5}",
        ),
        ("config.process[0].network.dropout", "0.1"),
        ("config.process[0].model.vae_path", "vae.safetensors"),
        ("config.process[0].train.unet_lr", "0.0002"),
        ("config.process[0].trigger_word", "tok"),
    ];
    let first = check(&job_with(&edits));
    assert!(!first.has_errors(), "{:#?}", first.diagnostics);
    let printed = serde_yaml::to_string(&first.file).unwrap();
    let second = check(&printed);
    assert_eq!(paths(&second, Severity::Warning), Vec::<String>::new(), "{printed}");
    assert!(!second.has_errors(), "{:#?}", second.diagnostics);
    assert_eq!(first.file, second.file);
    assert_eq!(first.plan, second.plan);
}

#[test]
fn unknown_keys_become_warnings_with_full_paths() {
    let text = job_with(&[
        ("colour", "blue"),
        ("config.process[0].train.gradiant_checkpointing", "true"),
        ("config.process[0].datasets[0].flipx", "true"),
        ("config.process[0].network.network_kwargs.algo", "lokr"),
        ("config.process[0].sample.samples[1].promt", "oops"),
    ]);
    let report = check(&text);
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    let mut warned = paths(&report, Severity::Warning);
    warned.sort();
    assert_eq!(
        warned,
        [
            "colour",
            "config.process[0].datasets[0].flipx",
            "config.process[0].network.network_kwargs.algo",
            "config.process[0].sample.samples[1].promt",
            "config.process[0].train.gradiant_checkpointing",
        ]
    );
    let typo = report.of(Severity::Warning).find(|d| d.path.ends_with("gradiant_checkpointing")).unwrap();
    assert!(typo.message.contains("did you mean `gradient_checkpointing`?"), "{}", typo.message);
    let flip = report.of(Severity::Warning).find(|d| d.path.ends_with("flipx")).unwrap();
    assert!(flip.message.contains("`flip_x`"), "{}", flip.message);
    // Still loads; the warnings travel with the job.
    let job = load_job_str(&text, JobFormat::Yaml, "t").unwrap();
    assert_eq!(job.warnings().count(), 5);
}

/// Layer offloading's shares are read with it, in 0..=1 (ai-toolkit's UI writes 0.5 for 50%).
#[test]
fn layer_offloading_shares_are_checked() {
    let on = |percent: &str| {
        check(&job_with(&[
            ("config.process[0].model.layer_offloading", "true"),
            ("config.process[0].model.layer_offloading_transformer_percent", percent),
        ]))
    };
    let half = on("0.5");
    let plan = half.plan.as_ref().expect("valid");
    assert_eq!((plan.model.offload_transformer, plan.model.offload_text_encoder), (0.5, 1.0));
    let bad = on("50");
    assert!(
        error_at(&bad, "config.process[0].model.layer_offloading_transformer_percent").contains("between 0 and 1"),
        "{:#?}",
        bad.diagnostics
    );
    let off = check(&job_with(&[("config.process[0].model.layer_offloading_transformer_percent", "0.3")]));
    assert_eq!(off.plan.as_ref().expect("valid").model.offload_transformer, 0.0, "read only with layer_offloading");
}

#[test]
fn unsupported_keys_error_with_their_path_only_when_set() {
    // At their ai-toolkit defaults they are accepted silently.
    let quiet = check(&job_with(&[
        ("config.process[0].model.auto_memory", "false"),
        ("config.process[0].datasets[0].mask_path", "null"),
        ("config.process[0].datasets[0].controls", "[]"),
        ("config.process[0].datasets[0].num_frames", "1"),
        ("config.process[0].train.noise_multiplier", "1.0"),
        ("config.process[0].train.loss_target", "noise"),
        ("config.process[0].save.push_to_hub", "false"),
    ]));
    assert!(!quiet.has_errors(), "{:#?}", quiet.diagnostics);
    assert_eq!(paths(&quiet, Severity::Warning), Vec::<String>::new());

    let loud = check(&job_with(&[
        ("config.process[0].model.auto_memory", "true"),
        ("config.process[0].datasets[0].mask_path", "masks/"),
        ("config.process[0].datasets[0].num_frames", "16"),
        ("config.process[0].train.noise_multiplier", "1.1"),
        ("config.process[0].save.push_to_hub", "true"),
        ("config.process[0].train.loss_type", "wavelet"),
        ("config.process[0].network.type", "lokr"),
        ("config.process[0].train.gradient_accumulation_steps", "-1"),
        ("config.process[0].logging.use_wandb", "true"),
    ]));
    assert!(loud.plan.is_none());
    assert!(
        error_at(&loud, "config.process[0].model.auto_memory").starts_with("true is not supported yet"),
        "{}",
        error_at(&loud, "config.process[0].model.auto_memory")
    );
    assert!(
        error_at(&loud, "config.process[0].datasets[0].mask_path")
            .starts_with("masks/ is not supported yet (loss masks")
    );
    assert!(error_at(&loud, "config.process[0].datasets[0].num_frames").starts_with("16 is not supported yet"));
    assert!(error_at(&loud, "config.process[0].train.noise_multiplier").starts_with("1.1 is not supported yet"));
    assert!(error_at(&loud, "config.process[0].save.push_to_hub").starts_with("true is not supported yet"));
    assert!(error_at(&loud, "config.process[0].train.loss_type").starts_with("wavelet is not supported yet"));
    assert!(error_at(&loud, "config.process[0].network.type").starts_with("lokr is not supported yet"));
    assert!(
        error_at(&loud, "config.process[0].train.gradient_accumulation_steps").starts_with("-1 is not supported yet")
    );
    assert!(error_at(&loud, "config.process[0].logging.use_wandb").starts_with("true is not supported yet"));
    // One error per key: the value rule and the typed read do not both report `wavelet`.
    assert_eq!(paths(&loud, Severity::Error).iter().filter(|p| p.ends_with("loss_type")).count(), 1);
    assert_eq!(loud.of(Severity::Error).count(), 9, "{:#?}", loud.diagnostics);
}

#[test]
fn bad_values_name_the_key_path_and_the_value() {
    let report = check(&job_with(&[
        ("config.process[0].train.lr", "fast"),
        ("config.process[0].train.steps", "-5"),
        ("config.process[0].train.timestep_type", "cubic"),
        ("config.process[0].datasets[0].resolution", "[512, big]"),
        ("config.process[0].datasets[1]", "{folder_path: data/b, caption_dropout_rate: 1.5}"),
        ("config.process[0].datasets[2]", "{folder_path: data/c, flip_x: yes}"),
        ("config.process[0].sample.samples[1].width", "10"),
        ("config.process[0].network.linear", "0"),
        ("config.process[0].network.network_kwargs.only_if_contains", "[img_attn, '']"),
        ("config.process[0].train.optimizer", "automagic"),
        ("config.process[0].device", "tpu"),
    ]));
    let lr = error_at(&report, "config.process[0].train.lr");
    assert!(lr.contains("invalid type: string \"fast\""), "{lr}");
    assert!(error_at(&report, "config.process[0].train.steps").contains("-5"));
    let tt = error_at(&report, "config.process[0].train.timestep_type");
    assert!(tt.contains("cubic") && tt.contains("weighted"), "{tt}");
    let res = error_at(&report, "config.process[0].datasets[0].resolution");
    assert!(res.contains("big"), "{res}");
    let rate = error_at(&report, "config.process[0].datasets[1].caption_dropout_rate");
    assert!(rate.contains("1.5"), "{rate}");
    let yes = error_at(&report, "config.process[0].datasets[2].flip_x");
    assert!(yes.contains("write true or false"), "{yes}");
    assert!(error_at(&report, "config.process[0].sample.samples[1].width").contains("10 is too small"));
    assert!(error_at(&report, "config.process[0].network.linear").contains("at least 1"));
    assert!(
        error_at(&report, "config.process[0].network.network_kwargs.only_if_contains[1]").contains("empty pattern")
    );
    // Every problem is reported in one go.
    assert!(report.of(Severity::Error).count() >= 9, "{:#?}", report.diagnostics);

    // The error type lists them all, one per line, with paths.
    let err = load_job_str(
        &job_with(&[("config.process[0].train.lr", "fast"), ("config.process[0].train.optimizer", "automagic")]),
        JobFormat::Yaml,
        "bad.yaml",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("job file bad.yaml: 1 error"), "{text}");
    assert!(text.contains("error: config.process[0].train.lr: invalid type"), "{text}");
    // Mapping errors (optimizer names) come after range checks pass:
    let err = load_job_str(&job_with(&[("config.process[0].train.optimizer", "automagic")]), JobFormat::Yaml, "o.yaml")
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "config.process[0].train.optimizer: automagic is not supported (supported: adamw, adamw8bit (also spelled \
             adam8bit, adamw8), adafactor, prodigy (also prodigyopt), lion"
        ),
        "{err}"
    );
    let err = load_job_str(&job_with(&[("config.process[0].device", "tpu")]), JobFormat::Yaml, "d.yaml").unwrap_err();
    assert!(err.to_string().contains("config.process[0].device: tpu is not a device"), "{err}");
}

#[test]
fn required_keys_and_model_family() {
    let mut root: Value = serde_yaml::from_str(BASE).unwrap();
    root["config"]["process"][0].as_mapping_mut().unwrap().remove("network");
    let report = check(&serde_yaml::to_string(&root).unwrap());
    assert!(error_at(&report, "config.process[0].network").contains("fine-tunes the whole model"));

    let report = check(&job_with(&[("config.process[0].model", "{name_or_path: x}")]));
    assert!(error_at(&report, "config.process[0].model.arch").contains("arch: flux2"));
    let report = check(&job_with(&[("config.process[0].model.arch", "flux")]));
    assert!(error_at(&report, "config.process[0].model.arch").starts_with("flux is not supported"));
    let report = check(&job_with(&[("config.process[0].model.arch", "flux2:dev")]));
    assert!(!report.has_errors(), "arch tags are dropped as ai-toolkit does: {:#?}", report.diagnostics);
    let report = check(&job_with(&[("job", "train"), ("config.process[1]", "{type: diffusion_trainer}")]));
    assert!(error_at(&report, "job").contains("extension"));
    assert!(error_at(&report, "config.process[1]").contains("only one process"));
    let report = check(&job_with(&[("config.process[0].train.noise_scheduler", "ddpm")]));
    assert!(error_at(&report, "config.process[0].train.noise_scheduler").contains("flowmatch"));
}

#[test]
fn network_settings_map_to_lora_adapters() {
    let job = load_job_str(
        &job_with(&[
            ("config.process[0].network", "{type: LoRA, rank: 16, alpha: 4, network_kwargs: {only_if_contains: [double_blocks], ignore_if_contains: [img_mlp]}}"),
            ("config.process[0].training_seed", "7"),
            ("config.process[0].save.lora_layout", "kohya"),
        ]),
        JobFormat::Yaml,
        "n",
    )
    .unwrap();
    let lora = &job.plan.lora;
    assert_eq!((lora.rank, lora.alpha, lora.seed), (16, 4.0, 7), "legacy rank / alpha");
    assert_eq!(
        lora.targets,
        Targets::Filtered {
            only_if_contains: vec!["double_blocks".into()],
            ignore_if_contains: vec!["img_mlp".into()]
        }
    );
    assert!(lora.targets.selects("double_blocks.0.img_attn.qkv"));
    assert!(!lora.targets.selects("double_blocks.0.img_mlp.0"));
    assert!(!lora.targets.selects("single_blocks.3.linear1"));
    assert_eq!(job.plan.save.layout, LoraLayout::Kohya);
    // The resolved file shows the filled values under their current names.
    let net = &job.file.config.process[0].network;
    assert_eq!((net.linear, net.linear_alpha, net.rank, net.alpha), (16, Some(4.0), None, None));
}

#[test]
fn optimizers_take_their_params_with_ai_toolkit_defaults() {
    let job = load_job_str(
        &job_with(&[
            ("config.process[0].train.optimizer", "Prodigy"),
            ("config.process[0].train.lr", "1e-4"),
            (
                "config.process[0].train.optimizer_params",
                "{d_coef: 2, growth_rate: .inf, use_bias_correction: true, weight_decay: '0.01'}",
            ),
        ]),
        JobFormat::Yaml,
        "prodigy.yaml",
    )
    .unwrap();
    let OptimizerPlan::Prodigy(p) = job.plan.train.optimizer else { panic!("{:?}", job.plan.train.optimizer) };
    assert_eq!((p.lr, p.weight_decay, p.eps), (1.0, 0.01, 1e-6), "lr < 0.1 -> 1.0");
    assert_eq!((p.d_coef, p.growth_rate, p.use_bias_correction, p.d0), (2.0, f64::INFINITY, true, 1e-6));
    assert_eq!(job.warnings().count(), 0, "{:?}", job.diagnostics);
    assert!(job.diagnostics.iter().any(|d| d.path == "config.process[0].train.lr" && d.severity == Severity::Note));

    let job = load_job_str(
        &job_with(&[
            ("config.process[0].train.optimizer", "adafactor"),
            ("config.process[0].train.optimizer_params", "{beta1: 0.9, eps: [1.0e-30, 2.0e-3], clip_threshold: 0.5}"),
        ]),
        JobFormat::Yaml,
        "adafactor.yaml",
    )
    .unwrap();
    let OptimizerPlan::Adafactor(a) = job.plan.train.optimizer else { panic!("{:?}", job.plan.train.optimizer) };
    assert_eq!((a.beta1, a.eps, a.clip_threshold), (Some(0.9), [1e-30, 2e-3], 0.5));
    assert_eq!((a.relative_step, a.scale_parameter, a.warmup_init), (false, false, false), "ai-toolkit's defaults");
    assert_eq!(a.weight_decay, 0.0);

    let job =
        load_job_str(&job_with(&[("config.process[0].train.optimizer", "lion")]), JobFormat::Yaml, "l.yaml").unwrap();
    let OptimizerPlan::Lion(l) = job.plan.train.optimizer else { panic!("{:?}", job.plan.train.optimizer) };
    assert_eq!((l.betas, l.weight_decay), ([0.9, 0.99], 0.0));

    // A key of another optimizer names the optimizers that take it; bitsandbytes-only switches stop.
    let report = check(&job_with(&[
        ("config.process[0].train.optimizer", "lion"),
        ("config.process[0].train.optimizer_params", "{d_coef: 2, block_size: 256}"),
    ]));
    assert_eq!(
        error_at(&report, "config.process[0].train.optimizer_params.d_coef"),
        "lion does not take `d_coef` (it is a parameter of prodigy)"
    );
    assert!(error_at(&report, "config.process[0].train.optimizer_params.block_size").contains("adamw8bit"));
    let report = check(&job_with(&[
        ("config.process[0].train.optimizer", "adamw8bit"),
        ("config.process[0].train.optimizer_params", "{percentile_clipping: 5, is_paged: true}"),
    ]));
    assert!(error_at(&report, "config.process[0].train.optimizer_params.percentile_clipping").contains("percentile"));
    assert!(paths(&report, Severity::Note).contains(&"config.process[0].train.optimizer_params.is_paged".to_string()));
}

#[test]
fn training_features_resolve() {
    let job = load_job_str(
        &job_with(&[
            ("config.process[0].trigger_word", "sks"),
            (
                "config.process[0].train",
                r#"{
                diff_output_preservation: true, diff_output_preservation_class: dog,
                diff_output_preservation_multiplier: 0.5, do_differential_guidance: true,
                content_or_style: content, loss_type: pseudo_huber, cache_text_embeddings: true,
                lr_scheduler: cosine, lr_scheduler_params: {eta_min: 1.0e-6}, steps: 400, lr: 2.0e-4,
                gradient_accumulation: 4, ema_config: {use_ema: true}, max_denoising_steps: 900,
                timestep_type: shift, dtype: bf16}"#,
            ),
        ]),
        JobFormat::Yaml,
        "t",
    )
    .unwrap();
    let t = &job.plan.train;
    let dop = t.dop.as_ref().unwrap();
    assert_eq!((dop.multiplier, dop.class.as_str()), (0.5, "dog"));
    assert_eq!(t.differential_guidance, Some(3.0));
    assert_eq!(t.timesteps.bias, TimestepBias::HighNoise);
    assert_eq!(t.timesteps.timestep_type, TimestepType::Shift);
    assert_eq!(t.timesteps.max_denoising_steps, 900);
    assert_eq!(t.loss, LossType::PseudoHuber);
    assert_eq!(t.text_encoder, TextEncoderPlan::CachedEmbeddings);
    assert!(
        job.plan.datasets.iter().all(|d| d.cache_text_embeddings),
        "train.cache_text_embeddings reaches every dataset"
    );
    assert_eq!(t.lr_schedule, LrSchedule::Cosine { total_steps: 400, eta_min: 1e-6 });
    assert_eq!(t.accumulation.batches_per_step, 4);
    assert_eq!(t.ema_decay, Some(0.999));
    // The printed file keeps ai-toolkit's bias names.
    let printed = serde_yaml::to_string(&job.file).unwrap();
    assert!(printed.contains("content_or_style: content"), "{printed}");

    let report = check(&job_with(&[("config.process[0].train.diff_output_preservation", "true")]));
    assert!(error_at(&report, "config.process[0].train.diff_output_preservation_class").contains("class"));
    assert!(error_at(&report, "config.process[0].train.diff_output_preservation").contains("trigger word"));

    let report = check(&job_with(&[
        ("config.process[0].train.gradient_accumulation", "2"),
        ("config.process[0].train.gradient_accumulation_steps", "4"),
    ]));
    assert!(error_at(&report, "config.process[0].train.gradient_accumulation_steps").contains("mutually exclusive"));

    let report = check(&job_with(&[("config.process[0].train.lr_scheduler", "constant_with_warmup")]));
    assert_eq!(report.plan.as_ref().unwrap().train.lr_schedule, LrSchedule::ConstantWithWarmup { warmup_steps: 1000 });
    assert!(
        paths(&report, Severity::Warning)
            .contains(&"config.process[0].train.lr_scheduler_params.num_warmup_steps".into())
    );
    let report = check(&job_with(&[("config.process[0].train.lr_scheduler", "cosine_with_restarts")]));
    assert!(error_at(&report, "config.process[0].train.lr_scheduler").contains("not supported yet"));
}

#[test]
fn env_vars_name_replacement_and_formats() {
    let text = "a: ${HOME_DIR}/x\nb: ${STEPS}\n";
    let out = substitute_env(text, "t", |k| match k {
        "HOME_DIR" => Some("/h".into()),
        "STEPS" => Some("10".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(out, "a: /h/x\nb: 10\n");
    let err = substitute_env("a: 1\nb: ${MISSING}\n", "t.yaml", |_| None).unwrap_err();
    assert!(matches!(err, JobError::Syntax { .. }));
    assert_eq!(
        err.to_string(),
        "job file t.yaml: line 2: environment variable MISSING is not set (the file uses ${MISSING})"
    );

    let report = check(&job_with(&[
        ("config.process[0].training_folder", "runs/[name]"),
        ("config.process[0].sample.samples[0].prompt", "'[name] style'"),
    ]));
    let plan = report.plan.unwrap();
    assert_eq!(plan.output_dir, PathBuf::from("runs/unit/unit"));
    assert_eq!(plan.sample.prompts[0].prompt, "unit style");

    // JSON is read too, and syntax errors name the file and position.
    let json = serde_json::to_string(&serde_yaml::from_str::<serde_json::Value>(BASE).unwrap()).unwrap();
    assert!(!check_job_str(&json, JobFormat::Json, "j.json").unwrap().has_errors());
    let err = check_job_str("job: [", JobFormat::Yaml, "broken.yaml").unwrap_err().to_string();
    assert!(err.starts_with("job file broken.yaml: not valid YAML:") && err.contains("line"), "{err}");
    let err = check_job(&jobs_dir().join("does_not_exist.yaml")).unwrap_err();
    assert!(matches!(err, JobError::Io { .. }));
}

#[test]
fn extras_supply_the_text_encoder_and_vae_of_a_lone_transformer_file() {
    let text = job_with(&[
        ("config.process[0].model.name_or_path", "/models/flux2-dev.safetensors"),
        ("config.process[0].model.extras_name_or_path", "black-forest-labs/FLUX.2-dev"),
    ]);
    let plan = load_job_str(&text, JobFormat::Yaml, "extras").unwrap().plan;
    assert_eq!(plan.model.text_encoder_path.as_deref(), Some("black-forest-labs/FLUX.2-dev"));
    assert_eq!(plan.model.vae_path.as_deref(), Some("black-forest-labs/FLUX.2-dev"));
    // Explicit component paths win over the extras.
    let text = job_with(&[
        ("config.process[0].model.extras_name_or_path", "extras"),
        ("config.process[0].model.vae_path", "/vae/ae.safetensors"),
        ("config.process[0].model.te_name_or_path", "/te"),
    ]);
    let plan = load_job_str(&text, JobFormat::Yaml, "explicit").unwrap().plan;
    assert_eq!(plan.model.vae_path.as_deref(), Some("/vae/ae.safetensors"));
    assert_eq!(plan.model.text_encoder_path.as_deref(), Some("/te"));
}

/// A JSON or TOML job saved with a UTF-8 byte-order mark reads like the YAML one does; a parse error
/// on a huge line quotes only its start.
#[test]
fn byte_order_marks_and_huge_lines() {
    let yaml = std::fs::read_to_string(jobs_dir().join("flux2_lora.yaml")).unwrap();
    let tree: Value = serde_yaml::from_str(&yaml).unwrap();
    let json = format!("\u{feff}{}", serde_json::to_string(&tree).unwrap());
    let from_json = load_job_str(&json, JobFormat::Json, "bom.json").expect("a BOM before JSON is accepted");
    assert_eq!(from_json.plan, load_job_str(&yaml, JobFormat::Yaml, "job.yaml").unwrap().plan);
    let toml = std::fs::read_to_string(jobs_dir().join("flux2_lora.toml")).unwrap();
    load_job_str(&format!("\u{feff}{toml}"), JobFormat::Toml, "bom.toml").expect("a BOM before TOML is accepted");

    let huge = format!("job = \"extension\"\nbroken = [{}\n", "1, ".repeat(70_000));
    let message = load_job_str(&huge, JobFormat::Toml, "huge.toml").unwrap_err().to_string();
    assert!(message.contains("huge.toml") && message.contains("not valid TOML"), "{message}");
    assert!(message.len() < 1000, "{} bytes of message", message.len());
}

/// Sizes that would allocate gigabytes or abort are errors of `--check`, naming the key: sample sides
/// and steps, the LoRA rank.
#[test]
fn absurd_sizes_are_check_errors() {
    let report = check(&job_with(&[
        ("config.process[0].sample.sample_steps", "4000000000"),
        ("config.process[0].sample.width", "100000"),
        ("config.process[0].network.linear", "100000"),
    ]));
    assert!(error_at(&report, "config.process[0].sample.sample_steps").contains("at most 1000"));
    assert!(error_at(&report, "config.process[0].sample.width").contains("at most 4096"));
    assert!(error_at(&report, "config.process[0].network.linear").contains("at most 3072"));
}

#[test]
fn a_huge_trigger_word_is_a_check_error() {
    let word = "x".repeat(50_000);
    let report = check(&job_with(&[("config.process[0].trigger_word", &format!("\"{word}\""))]));
    assert!(error_at(&report, "config.process[0].trigger_word").contains("at most 1000 bytes"));
}
