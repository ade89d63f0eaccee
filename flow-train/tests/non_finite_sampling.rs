//! A NaN in the sampler's inputs is an error, not an all-black image written with exit 0.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use flow_train::pipeline::{Flux2Pipeline, GenerateOptions, PipelineOptions, generate_latents};

#[test]
fn nan_prompt_embeddings_fail_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let paths = flow_train::demo::prepare(dir.path()).unwrap();
    let options = PipelineOptions { load_text_encoder: false, ..PipelineOptions::default() };
    let pipeline =
        Flux2Pipeline::<Flex>::load(&paths.pipeline.display().to_string(), &options, &Default::default()).unwrap();
    let d = pipeline.transformer.config.joint_attention_dim;
    let mut values = vec![0.1f32; 4 * d];
    values[5] = f32::NAN;
    let embeds = Tensor::<Flex, 3>::from_data(TensorData::new(values, [1, 4, d]), &Default::default());
    let generate = GenerateOptions { height: Some(32), width: Some(32), steps: 2, ..GenerateOptions::default() };
    let err =
        generate_latents(&pipeline.transformer, &pipeline.vae, embeds.clone(), generate, None).unwrap_err().to_string();
    assert!(err.contains("NaN or infinite") && err.contains("no image was written"), "{err}");

    let finite = embeds.clone().mask_fill(embeds.is_nan(), 0.1);
    let generate = GenerateOptions { height: Some(32), width: Some(32), steps: 2, ..GenerateOptions::default() };
    generate_latents(&pipeline.transformer, &pipeline.vae, finite, generate, None).expect("finite inputs sample");
}
