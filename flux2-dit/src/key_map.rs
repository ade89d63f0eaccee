//! THE mapping table between the two checkpoint layouts. The model's own parameter names are BFL's
//! (`flux2-dev.safetensors`, also what ComfyUI and ai-toolkit LoRAs use); diffusers' names are derived
//! from them here and nowhere else.
//!
//! | BFL | diffusers |
//! |---|---|
//! | `img_in` / `txt_in` | `x_embedder` / `context_embedder` |
//! | `time_in.{in,out}_layer` | `time_guidance_embed.timestep_embedder.linear_{1,2}` |
//! | `guidance_in.{in,out}_layer` | `time_guidance_embed.guidance_embedder.linear_{1,2}` |
//! | `double_stream_modulation_{img,txt}.lin`, `single_stream_modulation.lin` | same with `.linear` |
//! | `double_blocks.i.img_attn.qkv` | `transformer_blocks.i.attn.to_{q,k,v}` (rows q, k, v) |
//! | `double_blocks.i.txt_attn.qkv` | `transformer_blocks.i.attn.add_{q,k,v}_proj` |
//! | `double_blocks.i.{img,txt}_attn.norm.{query,key}_norm.scale` | `...attn.norm_{q,k}` / `norm_added_{q,k}` `.weight` |
//! | `double_blocks.i.img_attn.proj` / `txt_attn.proj` | `...attn.to_out.0` / `attn.to_add_out` |
//! | `double_blocks.i.{img,txt}_mlp.{0,2}` | `...{ff,ff_context}.linear_{in,out}` |
//! | `single_blocks.i.linear1` / `linear2` | `single_transformer_blocks.i.attn.to_qkv_mlp_proj` / `attn.to_out` |
//! | `single_blocks.i.norm.{query,key}_norm.scale` | `single_transformer_blocks.i.attn.norm_{q,k}.weight` |
//! | `final_layer.linear` | `proj_out` |
//! | `final_layer.adaLN_modulation.1` [shift; scale] | `norm_out.linear` [scale; shift] (halves swapped) |

/// Prefixes BFL-layout files may carry (ComfyUI saves with `model.diffusion_model.`).
pub const BFL_PREFIXES: &[&str] = &["model.diffusion_model.", "diffusion_model."];

/// Where the rows of one model tensor live in a diffusers checkpoint: the listed tensors' rows
/// concatenated in order. `Whole` takes a tensor entirely; `Half` one half of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    Whole(String),
    /// (key, which half: 0 = first, 1 = second).
    Half(String, usize),
}

impl Rows {
    pub fn key(&self) -> &str {
        match self {
            Rows::Whole(k) | Rows::Half(k, _) => k,
        }
    }
}

/// The diffusers module path of a BFL module path (without `.weight`/`.scale`), for modules that map
/// one-to-one. Fused qkv returns `None`: see [`diffusers_sources`].
pub fn diffusers_module(bfl: &str) -> Option<String> {
    let simple: &[(&str, &str)] = &[
        ("img_in", "x_embedder"),
        ("txt_in", "context_embedder"),
        ("time_in.in_layer", "time_guidance_embed.timestep_embedder.linear_1"),
        ("time_in.out_layer", "time_guidance_embed.timestep_embedder.linear_2"),
        ("guidance_in.in_layer", "time_guidance_embed.guidance_embedder.linear_1"),
        ("guidance_in.out_layer", "time_guidance_embed.guidance_embedder.linear_2"),
        ("double_stream_modulation_img.lin", "double_stream_modulation_img.linear"),
        ("double_stream_modulation_txt.lin", "double_stream_modulation_txt.linear"),
        ("single_stream_modulation.lin", "single_stream_modulation.linear"),
        ("final_layer.linear", "proj_out"),
        ("final_layer.adaLN_modulation.1", "norm_out.linear"),
    ];
    if let Some((_, d)) = simple.iter().find(|(b, _)| *b == bfl) {
        return Some((*d).to_string());
    }
    let double: &[(&str, &str)] = &[
        ("img_attn.norm.query_norm", "attn.norm_q"),
        ("img_attn.norm.key_norm", "attn.norm_k"),
        ("txt_attn.norm.query_norm", "attn.norm_added_q"),
        ("txt_attn.norm.key_norm", "attn.norm_added_k"),
        ("img_attn.proj", "attn.to_out.0"),
        ("txt_attn.proj", "attn.to_add_out"),
        ("img_mlp.0", "ff.linear_in"),
        ("img_mlp.2", "ff.linear_out"),
        ("txt_mlp.0", "ff_context.linear_in"),
        ("txt_mlp.2", "ff_context.linear_out"),
    ];
    let single: &[(&str, &str)] = &[
        ("linear1", "attn.to_qkv_mlp_proj"),
        ("linear2", "attn.to_out"),
        ("norm.query_norm", "attn.norm_q"),
        ("norm.key_norm", "attn.norm_k"),
    ];
    let (index, rest, table, prefix) = if let Some(r) = bfl.strip_prefix("double_blocks.") {
        let (i, rest) = r.split_once('.')?;
        (i, rest, double, "transformer_blocks")
    } else if let Some(r) = bfl.strip_prefix("single_blocks.") {
        let (i, rest) = r.split_once('.')?;
        (i, rest, single, "single_transformer_blocks")
    } else {
        return None;
    };
    let (_, d) = table.iter().find(|(b, _)| *b == rest)?;
    Some(format!("{prefix}.{index}.{d}"))
}

/// The diffusers module paths making up the rows of a fused BFL qkv Linear (q, k, v in order), or
/// `None` if `bfl` is not a fused qkv. Also used by LoRA conversion (A copied, B split by rows).
pub fn diffusers_qkv_modules(bfl: &str) -> Option<[String; 3]> {
    let r = bfl.strip_prefix("double_blocks.")?;
    let (i, rest) = r.split_once('.')?;
    let names = match rest {
        "img_attn.qkv" => ["attn.to_q", "attn.to_k", "attn.to_v"],
        "txt_attn.qkv" => ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
        _ => return None,
    };
    Some(names.map(|n| format!("transformer_blocks.{i}.{n}")))
}

/// Where a BFL parameter (`<module>.weight` or `<module>.scale`) lives in a diffusers checkpoint.
pub fn diffusers_sources(bfl_param: &str) -> Option<Vec<Rows>> {
    let (module, param) = bfl_param.rsplit_once('.')?;
    let param = if param == "scale" { "weight" } else { param };
    if let Some(parts) = diffusers_qkv_modules(module) {
        return Some(parts.into_iter().map(|m| Rows::Whole(format!("{m}.{param}"))).collect());
    }
    let key = format!("{}.{param}", diffusers_module(module)?);
    if module == "final_layer.adaLN_modulation.1" {
        // BFL [shift; scale] from diffusers [scale; shift].
        return Some(vec![Rows::Half(key.clone(), 1), Rows::Half(key, 0)]);
    }
    Some(vec![Rows::Whole(key)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_fused_and_swapped_tensors() {
        assert_eq!(
            diffusers_sources("double_blocks.3.txt_attn.qkv.weight").unwrap(),
            vec![
                Rows::Whole("transformer_blocks.3.attn.add_q_proj.weight".into()),
                Rows::Whole("transformer_blocks.3.attn.add_k_proj.weight".into()),
                Rows::Whole("transformer_blocks.3.attn.add_v_proj.weight".into()),
            ]
        );
        assert_eq!(
            diffusers_sources("single_blocks.10.norm.key_norm.scale").unwrap(),
            vec![Rows::Whole("single_transformer_blocks.10.attn.norm_k.weight".into())]
        );
        assert_eq!(
            diffusers_sources("final_layer.adaLN_modulation.1.weight").unwrap(),
            vec![Rows::Half("norm_out.linear.weight".into(), 1), Rows::Half("norm_out.linear.weight".into(), 0)]
        );
        assert!(diffusers_sources("nonsense.weight").is_none());
    }
}
