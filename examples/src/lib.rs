//! What the examples share: the CI-sized `--small` FLUX.2 config (`bench_train_step --small`, and
//! `sparse_checkpoint --small` writes the checkpoint `bench_train_step --small --load` reads).

use flux2_dit::Flux2Config;

/// FLUX.2 [dev]'s architecture at CI size: D=128 (4 heads x 32), 2 double + 2 single blocks.
pub fn small_config() -> Flux2Config {
    Flux2Config {
        in_channels: 16,
        num_layers: 2,
        num_single_layers: 2,
        attention_head_dim: 32,
        num_attention_heads: 4,
        joint_attention_dim: 64,
        timestep_guidance_channels: 32,
        axes_dims_rope: vec![8, 8, 8, 8],
        ..Flux2Config::dev()
    }
}
