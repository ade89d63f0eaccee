//! Real Tekken tokenization (the committed, compressed tokenizer.json converted from mistral-common's
//! tekken_240911.json) against the ids diffusers produced at FLUX.2's default length of 512.

mod common;

use mistral_encoder::{PromptTokenizer, SYSTEM_MESSAGE};
use std::path::Path;

#[derive(serde::Deserialize)]
struct Expected {
    max_sequence_length: usize,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    padding: usize,
    input_ids: Vec<i64>,
}

fn tokenizer() -> PromptTokenizer {
    PromptTokenizer::from_bytes(&common::tokenizer_json(), Path::new("tokenizer.json")).unwrap()
}

#[test]
fn flux2_ids_at_512_match_diffusers() {
    let text = std::fs::read_to_string(common::fixtures_root().join("tokenization.json")).unwrap();
    let expected: Expected = serde_json::from_str(&text).unwrap();
    assert_eq!(expected.max_sequence_length, 512);
    let tok = tokenizer();
    let prompts: Vec<&str> = expected.cases.iter().map(|c| c.prompt.as_str()).collect();
    let batch = tok.tokenize_prompts(&prompts, SYSTEM_MESSAGE, 512).unwrap();
    assert_eq!((batch.batch, batch.seq_len), (prompts.len(), 512));
    let mut saw_truncation = false;
    for (b, case) in expected.cases.iter().enumerate() {
        let ids = batch.ids(b);
        let mask = batch.mask(b);
        assert!(ids[..case.padding].iter().all(|&id| id == 11), "prompt {b}: left padding with <pad>");
        assert!(
            mask[..case.padding].iter().all(|&m| m == 0) && mask[case.padding..].iter().all(|&m| m == 1),
            "prompt {b}: mask"
        );
        assert_eq!(&ids[case.padding..], case.input_ids.as_slice(), "prompt {b}: {:?}", case.prompt);
        saw_truncation |= case.padding == 0 && *case.input_ids.last().unwrap() != 4;
    }
    assert!(saw_truncation, "the fixture should contain a prompt truncated before its [/INST]");
}

#[test]
fn format_tokens_have_the_documented_ids() {
    let tok = tokenizer();
    let ids: Vec<u32> = ["<s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]"]
        .iter()
        .map(|t| tok.token_to_id(t).unwrap())
        .collect();
    assert_eq!(ids, [1, 11, 3, 4, 17, 18, 10]);
    assert_eq!(tok.pad_id(), 11);
}

#[test]
fn img_markers_never_reach_the_ids_and_bos_comes_once() {
    let tok = tokenizer();
    let batch = tok.tokenize_prompts(&["[IMG]a[IMG] cat[IMG]"], SYSTEM_MESSAGE, 512).unwrap();
    let valid: Vec<i64> = batch.ids(0)[512 - batch.valid_len(0)..].to_vec();
    assert!(!valid.contains(&10), "[IMG] (id 10) must be removed");
    assert_eq!(valid.iter().filter(|&&id| id == 1).count(), 1);
    assert_eq!(&valid[..2], &[1, 17]);
    assert_eq!(&valid[valid.len() - 1..], &[4]);
    let plain = tok.tokenize_prompts(&["a cat"], SYSTEM_MESSAGE, 512).unwrap();
    assert_eq!(batch, plain);
}

#[test]
fn short_limit_truncates_on_the_right() {
    let tok = tokenizer();
    let full =
        tok.encode_raw(&mistral_encoder::format_prompt("a very long prompt about a cat", SYSTEM_MESSAGE)).unwrap();
    let batch = tok.tokenize_prompts(&["a very long prompt about a cat"], SYSTEM_MESSAGE, 10).unwrap();
    let head: Vec<i64> = full[..10].iter().map(|&i| i as i64).collect();
    assert_eq!(batch.ids(0), head.as_slice());
    assert_eq!(batch.valid_len(0), 10);
}
