//! `Flux2Config::parameter_count` (the formula behind the 32,223,281,152 of FLUX.2 [dev], checked in
//! `config.rs` without allocating the model) equals the parameters of a model actually built from the
//! config, over configs that exercise every term of the formula.

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::DType;
use flux2_dit::{Flux2Config, Flux2Transformer, RandomSource};

fn tiny() -> Flux2Config {
    Flux2Config {
        in_channels: 16,
        num_layers: 2,
        num_single_layers: 2,
        attention_head_dim: 8,
        num_attention_heads: 2,
        joint_attention_dim: 24,
        timestep_guidance_channels: 32,
        axes_dims_rope: vec![2, 2, 2, 2],
        ..Flux2Config::dev()
    }
}

#[test]
fn formula_counts_the_parameters_of_a_built_model() {
    let configs = [
        ("guidance", tiny()),
        ("no guidance", Flux2Config { guidance_embeds: false, ..tiny() }),
        (
            "out_channels, mlp_ratio 2, uneven rope",
            Flux2Config {
                out_channels: Some(8),
                mlp_ratio: 2.0,
                attention_head_dim: 12,
                axes_dims_rope: vec![2, 4, 4, 2],
                ..tiny()
            },
        ),
        ("single blocks only", Flux2Config { num_layers: 0, num_single_layers: 3, ..tiny() }),
        (
            "double blocks only, 3 heads",
            Flux2Config { num_layers: 3, num_single_layers: 0, num_attention_heads: 3, ..tiny() },
        ),
        ("256 timestep channels", Flux2Config { timestep_guidance_channels: 256, joint_attention_dim: 40, ..tiny() }),
    ];
    for (name, config) in configs {
        let model =
            Flux2Transformer::<Flex>::from_source(&config, &mut RandomSource::new(0), DType::F32, &Default::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.num_params() as u64, config.parameter_count(), "{name}");
    }
}
