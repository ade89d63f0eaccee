//! Parity of `flow_train::sample` with diffusers' `Flux2Pipeline` on fixture folders written by
//! `tools/fixtures/gen_sampler.py`:
//!
//! `cargo run --release -p flow-train --example sample_parity -- <dir> [<dir>...]`
//!
//! A folder holds `transformer/` (diffusers save_pretrained), `inputs.safetensors` (`prompt_embeds`
//! [B,L,J], `latents` [B,C,h,w], `ref_latents_<k>` [1,C,h_k,w_k]), `sampler.json` (`steps`, `guidance`,
//! `height`, `width`, `num_references`) and `expected.safetensors` (`latents` [B,C,h,w], `sigmas`,
//! `model_timesteps` [steps,B], `model_guidance` [B]). Runs in f32 on the CPU backend (`Flex`), checks
//! the schedule and the transformer's timesteps bit for bit, and prints `rel_err=<value>`
//! (‖out−ref‖/‖ref‖ of the final latents, worst folder) last; exits non-zero above 1e-4 or on any error.
//! When `expected.safetensors` has `latents_bf16` (diffusers with the transformer and prompt embeddings in
//! bf16), the same run in bf16 must match it within [`BF16_TOLERANCE`].

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, backend::Backend};
use flow_train::{Flux2Schedule, SampleOptions, sample, transformer_timestep};
use flux2_dit::{Checkpoint, TensorStore};
use flux2_ops::relative_error;

pub const TOLERANCE: f64 = 1e-4;
/// For the bf16 run against diffusers' bf16 run. bf16 kernels round differently per backend (measured
/// 4e-3..1e-2 on the committed fixtures, whose bf16 runs differ from their f32 runs by 0.6%..120%); an Euler
/// step accumulating in f32 instead of diffusers' dtype handling measured 3e-2..1.3e-1.
pub const BF16_TOLERANCE: f64 = 2e-2;

/// What one fixture folder gave.
#[derive(Debug, Clone)]
pub struct FixtureReport {
    /// ‖out−ref‖/‖ref‖ of the final latents.
    pub rel_err: f64,
    pub steps: usize,
    pub references: usize,
    /// With `latents_bf16` in the fixture: (‖ours−diffusers‖/‖diffusers‖ with both in bf16,
    /// ‖diffusers bf16 − diffusers f32‖/‖diffusers f32‖).
    pub bf16: Option<(f64, f64)>,
}

fn floats(store: &TensorStore, key: &str) -> Result<Vec<f32>, String> {
    let data = store.read(key, DType::F32).map_err(|e| e.to_string())?;
    data.to_vec().map_err(|e| format!("{key}: {e:?}"))
}

/// Runs the sampler on one fixture folder; errors on any mismatch of schedule or timesteps.
pub fn run_fixture<B: Backend>(dir: &Path, device: &B::Device) -> Result<FixtureReport, String> {
    let settings_path = dir.join("sampler.json");
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&settings_path).map_err(|e| format!("{}: {e}", settings_path.display()))?,
    )
    .map_err(|e| format!("{}: {e}", settings_path.display()))?;
    let field = |key: &str| settings.get(key).ok_or_else(|| format!("{}: missing `{key}`", settings_path.display()));
    let steps = field("steps")?.as_u64().ok_or("sampler.json: `steps` is not an integer")? as usize;
    let guidance = field("guidance")?.as_f64().ok_or("sampler.json: `guidance` is not a number")? as f32;
    let height = field("height")?.as_u64().ok_or("sampler.json: `height` is not an integer")? as usize;
    let width = field("width")?.as_u64().ok_or("sampler.json: `width` is not an integer")? as usize;
    let num_refs =
        field("num_references")?.as_u64().ok_or("sampler.json: `num_references` is not an integer")? as usize;

    let model = Checkpoint::open(&dir.join("transformer"))
        .and_then(|c| c.load::<B>(DType::F32, device))
        .map_err(|e| e.to_string())?;
    let inputs = TensorStore::open(&[dir.join("inputs.safetensors")]).map_err(|e| e.to_string())?;
    let prompt_embeds: Tensor<B, 3> = inputs.read_tensor("prompt_embeds", device).map_err(|e| e.to_string())?;
    let latents: Tensor<B, 4> = inputs.read_tensor("latents", device).map_err(|e| e.to_string())?;
    let batch = latents.dims()[0];
    if latents.dims()[2..] != [height, width] {
        return Err(format!("latents {:?} do not match sampler.json's {height}x{width}", latents.dims()));
    }
    let references = (0..num_refs)
        .map(|k| inputs.read_tensor::<B, 4>(&format!("ref_latents_{k}"), device).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;

    let expected = TensorStore::open(&[dir.join("expected.safetensors")]).map_err(|e| e.to_string())?;
    // The schedule and what the transformer is fed, bit for bit.
    let schedule = Flux2Schedule::new(height * width, steps).map_err(|e| e.to_string())?;
    let sigmas = floats(&expected, "sigmas")?;
    if schedule.sigmas != sigmas {
        return Err(format!("sigmas {:?} != diffusers {sigmas:?}", schedule.sigmas));
    }
    let fed = floats(&expected, "model_timesteps")?;
    for (i, &t) in schedule.timesteps().iter().enumerate() {
        let ours: Vec<f32> = transformer_timestep::<B>(t, batch, DType::F32, device)
            .into_data()
            .to_vec()
            .map_err(|e| format!("{e:?}"))?;
        if ours != fed[i * batch..(i + 1) * batch] {
            return Err(format!(
                "step {i}: transformer timestep {ours:?} != diffusers {:?}",
                &fed[i * batch..(i + 1) * batch]
            ));
        }
    }
    let fed_guidance = floats(&expected, "model_guidance")?;
    if fed_guidance != vec![guidance; batch] {
        return Err(format!("guidance {guidance} != diffusers {fed_guidance:?}"));
    }

    let mut calls = Vec::new();
    let mut progress = |i: usize, n: usize| calls.push((i, n));
    let options = SampleOptions::from_latents(latents).steps(steps).guidance(guidance).references(references);
    let out = sample(&model, prompt_embeds, options, Some(&mut progress)).map_err(|e| e.to_string())?;
    if calls != (0..steps).map(|i| (i, steps)).collect::<Vec<_>>() {
        return Err(format!("progress callback calls {calls:?}"));
    }
    let reference = expected.read("latents", DType::F32).map_err(|e| e.to_string())?;
    let rel_err = relative_error(&out.cast(DType::F32).into_data(), &reference)?;

    // The bf16 run: model and prompt embeddings in bf16, latents in bf16 from the start (as in diffusers).
    let bf16 = if expected.contains("latents_bf16") {
        let model = Checkpoint::open(&dir.join("transformer"))
            .and_then(|c| c.load::<B>(DType::BF16, device))
            .map_err(|e| e.to_string())?;
        let options = SampleOptions::from_latents(inputs.read_tensor("latents", device).map_err(|e| e.to_string())?)
            .steps(steps)
            .guidance(guidance)
            .references(
                (0..num_refs)
                    .map(|k| inputs.read_tensor::<B, 4>(&format!("ref_latents_{k}"), device).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        let prompt_embeds: Tensor<B, 3> =
            inputs.read_tensor::<B, 3>("prompt_embeds", device).map_err(|e| e.to_string())?.cast(DType::BF16);
        let out = sample(&model, prompt_embeds, options, None).map_err(|e| e.to_string())?;
        if out.dtype() != DType::BF16 {
            return Err(format!("bf16 run returned {:?} latents", out.dtype()));
        }
        let reference_bf16 = expected.read("latents_bf16", DType::F32).map_err(|e| e.to_string())?;
        let err = relative_error(&out.cast(DType::F32).into_data(), &reference_bf16)?;
        let gap = relative_error(&reference_bf16, &reference)?;
        if err.is_nan() || err > BF16_TOLERANCE {
            return Err(format!(
                "bf16 run: rel_err {err:.3e} above {BF16_TOLERANCE} (diffusers bf16 vs f32: {gap:.3e})"
            ));
        }
        Some((err, gap))
    } else {
        None
    };
    Ok(FixtureReport { rel_err, steps, references: num_refs, bf16 })
}

#[allow(dead_code)]
fn main() {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        eprintln!("usage: sample_parity <fixture dir> [<fixture dir>...]");
        std::process::exit(2);
    }
    let device = Default::default();
    let mut worst = 0f64;
    for dir in &dirs {
        match run_fixture::<Flex>(Path::new(dir), &device) {
            Ok(report) => {
                let bf16 = report
                    .bf16
                    .map(|(e, g)| format!(" bf16_rel_err={e:.3e} (diffusers bf16 vs f32: {g:.3e})"))
                    .unwrap_or_default();
                println!(
                    "{dir}: steps={} references={}{bf16} rel_err={:.3e}",
                    report.steps, report.references, report.rel_err
                );
                worst = worst.max(report.rel_err);
            }
            Err(e) => {
                eprintln!("{dir}: error: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("rel_err={worst:.6e}");
    if worst.is_nan() || worst > TOLERANCE {
        eprintln!("FAIL: rel_err above {TOLERANCE}");
        std::process::exit(1);
    }
}
