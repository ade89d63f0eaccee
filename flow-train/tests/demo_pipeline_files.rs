//! The demo pipeline is a complete diffusers folder: every file `Flux2Pipeline.from_pretrained` reads is
//! written, the tokenizer pads on the left and carries FLUX.2's chat format (without them diffusers stops
//! with "tokenizer.chat_template is not set"). `tools/demo_in_diffusers.py` loads the folder in diffusers
//! and compares images with ours (docs/inference.md).

use burn::backend::Flex;
use flow_train::demo::{DemoPipelineSpec, write_pipeline};

#[test]
fn the_demo_pipeline_holds_every_file_diffusers_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pipeline");
    write_pipeline::<Flex>(&root, &DemoPipelineSpec::default(), &Default::default()).unwrap();
    let files = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/chat_template.jinja",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ];
    for f in files {
        assert!(root.join(f).is_file(), "missing {f}");
    }
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("model_index.json")).unwrap()).unwrap();
    for component in ["scheduler", "text_encoder", "tokenizer", "transformer", "vae"] {
        assert!(root.join(component).is_dir() && index[component].is_array(), "{component} in model_index.json");
    }
    let tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tokenizer/tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tokenizer["padding_side"], "left", "FLUX.2 pads prompts on the left");
    assert_eq!(tokenizer["pad_token"], "<pad>");
    let template = std::fs::read_to_string(root.join("tokenizer/chat_template.jinja")).unwrap();
    assert!(template.contains("[SYSTEM_PROMPT]") && template.contains("[INST]"), "{template}");
    // The written folder loads in our own pipeline too (same tokenizer files).
    let options = flow_train::pipeline::PipelineOptions {
        text_encoder_out_layers: Some(DemoPipelineSpec::default().text_encoder_out_layers()),
        max_sequence_length: Some(64),
        ..Default::default()
    };
    flow_train::pipeline::Flux2Pipeline::<Flex>::load(&root.display().to_string(), &options, &Default::default())
        .unwrap();
}
