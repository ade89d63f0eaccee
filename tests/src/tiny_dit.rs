//! The toy FLUX.2 transformer config of the block-level tests (checkpointing, offloading): 2 double and
//! 3 single blocks of width 16, so a full training step runs in milliseconds on the CPU.

use flux2_dit::Flux2Config;

pub fn tiny_config() -> Flux2Config {
    Flux2Config {
        in_channels: 8,
        num_layers: 2,
        num_single_layers: 3,
        attention_head_dim: 8,
        num_attention_heads: 2,
        joint_attention_dim: 12,
        timestep_guidance_channels: 16,
        axes_dims_rope: vec![2, 2, 2, 2],
        ..Flux2Config::dev()
    }
}

/// FLUX.2 [dev]'s architecture at CI size (`bench_train_step --small`, `sparse_checkpoint --small`): D=128 (4 heads x 32), 2 double + 2 single blocks.
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
