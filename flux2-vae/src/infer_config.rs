//! Architecture from tensor shapes, for checkpoints that come without a `config.json` (BFL's
//! `ae.safetensors`, single-file diffusers weights).
//!
//! Everything except `norm_num_groups` and `batch_norm_eps` is visible in the shapes. The loader passes
//! the FLUX.2 group count (32, hard-coded in BFL's code and the diffusers default) and eps is 1e-4 (same
//! sources). A model with other values needs its config.json (`LoadOptions::config` or a `config.json`
//! next to the weights).

use crate::checkpoint::Naming;
use crate::config::VaeConfig;
use crate::error::{Error, Result};
use crate::key_map::{Layout, stored_name};
use flux2_ops::TensorStore;

/// GroupNorm groups of every FLUX.2 autoencoder (not visible in any shape).
pub const FLUX2_NORM_GROUPS: usize = 32;

/// Infers a [`VaeConfig`] from the tensors of `store` named as `naming` says, with `norm_num_groups`
/// given (use [`FLUX2_NORM_GROUPS`] unless you know better).
pub fn infer_config(store: &TensorStore, naming: &Naming, norm_num_groups: usize) -> Result<VaeConfig> {
    let unknown = |reason: String| Error::UnknownLayout { path: store.path().into(), reason };
    let prefix = naming.prefix.as_str();
    let raw = |n: String| store.shape(&format!("{prefix}{n}")).map(<[usize]>::to_vec);
    // Levels and ResNets per level, counted in the layout's own numbering.
    let (enc_block, dec_block): (fn(usize, usize) -> String, fn(usize, usize) -> String) = match naming.layout {
        Layout::Diffusers => (
            |i, j| format!("encoder.down_blocks.{i}.resnets.{j}.conv1.weight"),
            |i, j| format!("decoder.up_blocks.{i}.resnets.{j}.conv1.weight"),
        ),
        Layout::Bfl => (
            |i, j| format!("encoder.down.{i}.block.{j}.conv1.weight"),
            |i, j| format!("decoder.up.{i}.block.{j}.conv1.weight"),
        ),
    };
    let count = |f: &dyn Fn(usize) -> String| (0..64).take_while(|&k| raw(f(k)).is_some()).count();
    let enc_levels = count(&|i| enc_block(i, 0));
    let dec_levels = count(&|i| dec_block(i, 0));
    let levels = enc_levels.max(dec_levels);
    if levels == 0 {
        return Err(unknown("no encoder or decoder blocks found".into()));
    }
    if enc_levels != 0 && dec_levels != 0 && enc_levels != dec_levels {
        return Err(unknown(format!("{enc_levels} encoder levels but {dec_levels} decoder levels")));
    }
    // From here on, address tensors by diffusers name through the key map.
    let shape = |name: &str| -> Option<Vec<usize>> {
        let s = stored_name(naming.layout, name, levels)?;
        raw(s.name)
    };
    let out_ch = |name: &str| shape(name).map(|s| s[0]);

    let decoder_levels_out = |i: usize| out_ch(&format!("decoder.up_blocks.{i}.resnets.0.conv1.weight"));
    let decoder_channels: Option<Vec<usize>> = if dec_levels > 0 {
        // up_blocks[i] works at level n-1-i; diffusers lists channels from level 0.
        (0..levels).rev().map(decoder_levels_out).collect()
    } else {
        None
    };
    let encoder_channels: Option<Vec<usize>> = if enc_levels > 0 {
        (0..levels).map(|i| out_ch(&format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"))).collect()
    } else {
        None
    };
    let block_out_channels = encoder_channels
        .clone()
        .or_else(|| decoder_channels.clone())
        .ok_or_else(|| unknown("cannot read block channels".into()))?;
    let layers_per_block =
        if enc_levels > 0 { count(&|j| enc_block(0, j)) } else { count(&|j| dec_block(0, j)).saturating_sub(1) };
    let latent_channels = shape("encoder.conv_out.weight")
        .map(|s| s[0] / 2)
        .or_else(|| shape("decoder.conv_in.weight").map(|s| s[1]))
        .ok_or_else(|| unknown("neither encoder.conv_out nor decoder.conv_in found".into()))?;
    let in_channels = shape("encoder.conv_in.weight").map(|s| s[1]).unwrap_or(3);
    let out_channels = shape("decoder.conv_out.weight").map(|s| s[0]).unwrap_or(3);
    let mid_block_add_attention = shape("encoder.mid_block.attentions.0.to_q.weight").is_some()
        || shape("decoder.mid_block.attentions.0.to_q.weight").is_some();

    let mut cfg = VaeConfig::flux2();
    cfg.in_channels = in_channels;
    cfg.out_channels = out_channels;
    cfg.down_block_types = vec!["DownEncoderBlock2D".into(); levels];
    cfg.up_block_types = vec!["UpDecoderBlock2D".into(); levels];
    cfg.decoder_block_out_channels = match decoder_channels {
        Some(dec) if dec != block_out_channels => Some(dec),
        _ => None,
    };
    cfg.block_out_channels = block_out_channels;
    cfg.layers_per_block = layers_per_block;
    cfg.latent_channels = latent_channels;
    cfg.use_quant_conv = shape("quant_conv.weight").is_some() || enc_levels == 0;
    cfg.use_post_quant_conv = shape("post_quant_conv.weight").is_some() || dec_levels == 0;
    cfg.mid_block_add_attention = mid_block_add_attention;
    cfg.norm_num_groups = norm_num_groups;
    cfg.validate().map_err(|e| {
        unknown(format!("the architecture inferred from shapes is not usable ({e}); provide the model's config.json"))
    })?;
    Ok(cfg)
}
