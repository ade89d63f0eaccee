//! The one mapping between diffusers parameter names and Black Forest Labs' `ae.safetensors` names.
//!
//! The model is built with diffusers names (`AutoencoderKLFlux2.state_dict()`); this module says where a
//! given checkpoint layout stores each of them. BFL names follow `src/flux2/autoencoder.py` of
//! black-forest-labs/flux2 (checked by `tools/fixtures/gen_vae.py --check-bfl`, which strict-loads a
//! renamed state dict into BFL's own module and compares outputs).
//!
//! | diffusers                                         | BFL                                          |
//! |---------------------------------------------------|----------------------------------------------|
//! | `encoder.down_blocks.{i}.resnets.{j}.*`           | `encoder.down.{i}.block.{j}.*`               |
//! | `encoder.down_blocks.{i}.downsamplers.0.conv`     | `encoder.down.{i}.downsample.conv`           |
//! | `decoder.up_blocks.{i}.resnets.{j}.*`             | `decoder.up.{n-1-i}.block.{j}.*`             |
//! | `decoder.up_blocks.{i}.upsamplers.0.conv`         | `decoder.up.{n-1-i}.upsample.conv`           |
//! | `*.resnets.{j}.conv_shortcut`                     | `*.block.{j}.nin_shortcut`                   |
//! | `{enc,dec}.mid_block.resnets.{0,1}`               | `{enc,dec}.mid.block_{1,2}`                  |
//! | `{enc,dec}.mid_block.attentions.0.group_norm`     | `{enc,dec}.mid.attn_1.norm`                  |
//! | `...attentions.0.to_{q,k,v}` (Linear [C,C])       | `...attn_1.{q,k,v}` (1x1 conv [C,C,1,1])     |
//! | `...attentions.0.to_out.0` (Linear)               | `...attn_1.proj_out` (1x1 conv)              |
//! | `{enc,dec}.conv_norm_out`                         | `{enc,dec}.norm_out`                         |
//! | `quant_conv` / `post_quant_conv`                  | `encoder.quant_conv` / `decoder.post_quant_conv` |
//! | `bn.running_mean`, `bn.running_var`               | same                                         |
//!
//! `conv_in`, `conv_out` and the ResNet leaves `norm1/conv1/norm2/conv2` keep their names.

/// Naming scheme of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// diffusers `AutoencoderKLFlux2` (`vae/diffusion_pytorch_model.safetensors`).
    Diffusers,
    /// Black Forest Labs `ae.safetensors` (also what ComfyUI loads, possibly with a prefix).
    Bfl,
}

/// Where a layout stores one diffusers parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredName {
    /// Name inside the checkpoint (without any file-level prefix).
    pub name: String,
    /// Stored as a 1x1 conv kernel [out, in, 1, 1] where diffusers has a Linear [out, in].
    pub conv1x1_for_linear: bool,
}

/// ResNet leaves: (diffusers, BFL).
const RESNET_LEAVES: &[(&str, &str)] = &[
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("conv_shortcut", "nin_shortcut"),
];

/// Mid-block attention leaves: (diffusers, BFL, BFL stores a 1x1 conv for a diffusers Linear).
const ATTENTION_LEAVES: &[(&str, &str, bool)] = &[
    ("group_norm", "norm", false),
    ("to_q", "q", true),
    ("to_k", "k", true),
    ("to_v", "v", true),
    ("to_out.0", "proj_out", true),
];

/// Maps a diffusers parameter name to its name in `layout`. `levels` is the number of resolution levels
/// (needed because BFL numbers decoder levels from full resolution upwards). `None` means the name is not
/// a parameter of this model.
pub fn stored_name(layout: Layout, name: &str, levels: usize) -> Option<StoredName> {
    let plain = |n: String| Some(StoredName { name: n, conv1x1_for_linear: false });
    match layout {
        Layout::Diffusers => plain(name.to_string()),
        Layout::Bfl => {
            if name.starts_with("bn.") {
                return plain(name.to_string());
            }
            if let Some(rest) = name.strip_prefix("quant_conv.") {
                return plain(format!("encoder.quant_conv.{rest}"));
            }
            if let Some(rest) = name.strip_prefix("post_quant_conv.") {
                return plain(format!("decoder.post_quant_conv.{rest}"));
            }
            let (part, rest) = name.split_once('.')?;
            if part != "encoder" && part != "decoder" {
                return None;
            }
            let (leaf_path, param) = rest.rsplit_once('.')?;
            let segs: Vec<&str> = leaf_path.split('.').collect();
            match segs.as_slice() {
                ["conv_in"] | ["conv_out"] => plain(name.to_string()),
                ["conv_norm_out"] => plain(format!("{part}.norm_out.{param}")),
                ["mid_block", "resnets", j, leaf @ ..] => {
                    let j: usize = j.parse().ok()?;
                    let bfl = resnet_leaf(&leaf.join("."))?;
                    plain(format!("{part}.mid.block_{}.{bfl}.{param}", j + 1))
                }
                ["mid_block", "attentions", "0", leaf @ ..] => {
                    let leaf = leaf.join(".");
                    let &(_, bfl, conv) = ATTENTION_LEAVES.iter().find(|(d, _, _)| *d == leaf)?;
                    Some(StoredName { name: format!("{part}.mid.attn_1.{bfl}.{param}"), conv1x1_for_linear: conv })
                }
                [blocks @ ("down_blocks" | "up_blocks"), i, kind, rest @ ..] => {
                    let i: usize = i.parse().ok()?;
                    if i >= levels {
                        return None;
                    }
                    let (bfl_blocks, level) =
                        if *blocks == "down_blocks" { ("down", i) } else { ("up", levels - 1 - i) };
                    match (*kind, rest) {
                        ("resnets", [j, leaf @ ..]) => {
                            let bfl = resnet_leaf(&leaf.join("."))?;
                            plain(format!("{part}.{bfl_blocks}.{level}.block.{j}.{bfl}.{param}"))
                        }
                        ("downsamplers", ["0", "conv"]) => {
                            plain(format!("{part}.down.{level}.downsample.conv.{param}"))
                        }
                        ("upsamplers", ["0", "conv"]) => plain(format!("{part}.up.{level}.upsample.conv.{param}")),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
    }
}

fn resnet_leaf(diffusers_leaf: &str) -> Option<&'static str> {
    RESNET_LEAVES.iter().find(|(d, _)| *d == diffusers_leaf).map(|(_, b)| *b)
}

/// Tensors present in checkpoints that are not model parameters (ignored when checking for leftovers).
pub fn is_ignored_buffer(stored: &str) -> bool {
    stored.ends_with("bn.num_batches_tracked")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bfl(name: &str) -> String {
        stored_name(Layout::Bfl, name, 4).unwrap().name
    }

    #[test]
    fn bfl_names() {
        assert_eq!(bfl("encoder.conv_in.weight"), "encoder.conv_in.weight");
        assert_eq!(
            bfl("encoder.down_blocks.1.resnets.0.conv_shortcut.bias"),
            "encoder.down.1.block.0.nin_shortcut.bias"
        );
        assert_eq!(bfl("encoder.down_blocks.2.downsamplers.0.conv.weight"), "encoder.down.2.downsample.conv.weight");
        assert_eq!(bfl("decoder.up_blocks.0.resnets.2.norm1.weight"), "decoder.up.3.block.2.norm1.weight");
        assert_eq!(bfl("decoder.up_blocks.2.upsamplers.0.conv.bias"), "decoder.up.1.upsample.conv.bias");
        assert_eq!(bfl("decoder.mid_block.resnets.1.conv2.weight"), "decoder.mid.block_2.conv2.weight");
        assert_eq!(bfl("encoder.mid_block.attentions.0.group_norm.bias"), "encoder.mid.attn_1.norm.bias");
        assert_eq!(bfl("decoder.conv_norm_out.weight"), "decoder.norm_out.weight");
        assert_eq!(bfl("quant_conv.weight"), "encoder.quant_conv.weight");
        assert_eq!(bfl("post_quant_conv.bias"), "decoder.post_quant_conv.bias");
        assert_eq!(bfl("bn.running_var"), "bn.running_var");
        let q = stored_name(Layout::Bfl, "encoder.mid_block.attentions.0.to_out.0.weight", 4).unwrap();
        assert_eq!(q.name, "encoder.mid.attn_1.proj_out.weight");
        assert!(q.conv1x1_for_linear);
        assert!(stored_name(Layout::Bfl, "encoder.down_blocks.4.resnets.0.conv1.weight", 4).is_none());
        assert!(stored_name(Layout::Bfl, "encoder.mystery.weight", 4).is_none());
    }
}
