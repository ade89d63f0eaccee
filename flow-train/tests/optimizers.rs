//! The optimizers (`flow_train::optim`) against the reference implementations ai-toolkit runs, on the
//! numbers `tools/optim/gen_optimizer_reference.py` committed in `tests/fixtures/optim/`: parameters and
//! complete state after 4 steps with a varying learning rate, for several option sets of each. Plus:
//! save -> load -> continue equals an uninterrupted run bit for bit (every optimizer), the state-memory
//! ratios, and errors that name the tensor or key at fault.
//!
//! Tolerances (relative to the largest reference magnitude of each tensor), with the measured errors
//! printed by `cargo test --release -p flow-train --test optimizers -- --nocapture`:
//! * f32 AdamW, Lion, adamw8bit parameters: 1e-6; states 1e-6 (AdamW, Lion, adamw8bit's f32 moments
//!   and block scales); adamw8bit codes: equal wherever the block scale is nonzero (all-zero blocks
//!   decode to 0 whatever the code).
//! * Adafactor and Prodigy: 1e-5 (they divide by reductions over the whole tensor, whose f32 summation
//!   order differs between PyTorch and Burn); Prodigy's D statistics 1e-5 relative.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use flow_train::Error;
use flow_train::job::{TrainConfig, resolve_optimizer};
use flow_train::optim::{
    AdafactorSettings, AdamW8bitSettings, Optimizer, OptimizerKind, OptimizerPlan, OptimizerState, ProdigySettings,
    build_optimizer, dynamic_map,
};
use safetensors::SafeTensors;

type B = Flex;

/// `tests/fixtures/optim/<name>`; `FLOW_TRAIN_OPTIM_FIXTURES` overrides the folder (for a test binary
/// copied to another machine, e.g. the CUDA run).
fn fixture(name: &str) -> PathBuf {
    std::env::var_os("FLOW_TRAIN_OPTIM_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim"))
        .join(name)
}

// ---- the generator's input recipe (exact dyadic numbers) ----

fn pattern(n: usize, salt: i64) -> Vec<f32> {
    (0..n as i64).map(|i| ((i * 7919 + salt * 104729 + 17) % 2047 - 1023) as f32 / 1024.0).collect()
}

#[derive(Clone, Debug, serde::Deserialize)]
struct Spec {
    shape: [usize; 2],
    init: String,
    zero_first_grad: bool,
}

fn initial(t: usize, s: &Spec) -> Vec<f32> {
    let n = s.shape[0] * s.shape[1];
    if s.init == "zeros" { vec![0.0; n] } else { pattern(n, 1000 + t as i64).iter().map(|v| v * 0.25).collect() }
}

fn gradient(step: usize, t: usize, s: &Spec) -> Vec<f32> {
    let [rows, cols] = s.shape;
    if s.zero_first_grad && step == 1 {
        return vec![0.0; rows * cols];
    }
    let p = pattern(rows * cols, 31 * step as i64 + 7 * t as i64 + 1);
    (0..rows * cols).map(|k| p[k] * 2f32.powi(-((k / cols) as i32 % 5)) * 2f32.powi(-6)).collect()
}

fn tensor_on<Bk: Backend>(values: Vec<f32>, shape: [usize; 2], device: &Bk::Device) -> Tensor<Bk, 2> {
    Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
}

fn tensor(values: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
    tensor_on(values, shape, &Default::default())
}

fn values<Bk: Backend>(t: &Tensor<Bk, 2>) -> Vec<f32> {
    t.to_data().convert_dtype(DType::F32).to_vec().unwrap()
}

/// Runs `steps` (1-based numbers) of `opt` from `params`.
fn run<Bk: Backend>(
    opt: &mut dyn Optimizer<Bk>,
    specs: &[Spec],
    lrs: &[f64],
    steps: std::ops::RangeInclusive<usize>,
    mut params: Vec<Tensor<Bk, 2>>,
) -> Vec<Tensor<Bk, 2>> {
    let device = params[0].device();
    for step in steps {
        let grads = specs.iter().enumerate().map(|(t, s)| tensor_on(gradient(step, t, s), s.shape, &device)).collect();
        params = opt.step(lrs[step - 1], params, grads).unwrap();
    }
    params
}

fn start<Bk: Backend>(specs: &[Spec], device: &Bk::Device) -> Vec<Tensor<Bk, 2>> {
    specs.iter().enumerate().map(|(t, s)| tensor_on(initial(t, s), s.shape, device)).collect()
}

// ---- fixtures ----

#[derive(Debug, serde::Deserialize)]
struct Case {
    name: String,
    optimizer: String,
    optimizer_params: serde_json::Value,
    lr: f64,
    lrs: Vec<f64>,
    tensors: Vec<Spec>,
    scalars: serde_json::Value,
}

struct Fixture {
    cases: Vec<Case>,
    tensors: BTreeMap<String, TensorData>,
}

fn load_fixture(name: &str) -> Fixture {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&meta.metadata().as_ref().unwrap()["reference"]).unwrap();
    let cases = serde_json::from_value(reference["cases"].clone()).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file
        .iter()
        .map(|(k, v)| {
            let dtype = match v.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::U8 => DType::U8,
                other => panic!("{k}: {other:?}"),
            };
            (k.to_string(), TensorData::from_bytes_vec(v.data().to_vec(), v.shape().to_vec(), dtype))
        })
        .collect();
    Fixture { cases, tensors }
}

fn plan_of(case: &Case) -> OptimizerPlan {
    let train = TrainConfig {
        optimizer: case.optimizer.clone(),
        lr: case.lr,
        optimizer_params: serde_json::from_value(case.optimizer_params.clone()).unwrap(),
        ..TrainConfig::default()
    };
    let mut out = Vec::new();
    resolve_optimizer(&train, &case.name, &mut out).unwrap_or_else(|| panic!("{}: {out:?}", case.name))
}

/// max |got - want| / max |want| (absolute when the reference is all zero).
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let diff = got.iter().zip(want).fold(0f64, |m, (g, w)| m.max((*g as f64 - *w as f64).abs()));
    if scale == 0.0 { diff } else { diff / scale }
}

fn f32s(d: &TensorData) -> Vec<f32> {
    d.to_vec().unwrap()
}

/// Allowed errors of one fixture file.
#[derive(Clone, Copy)]
struct Tol {
    /// Parameters, relative to the largest reference magnitude of each tensor.
    param: f64,
    /// f32 state tensors, likewise.
    state: f64,
    /// Fraction of 8-bit codes (in blocks with a nonzero scale) that may differ from the reference by one
    /// step of the code table (0 on the CPU: none may differ).
    codes: f64,
}

/// Runs every case of `file` on `device` and checks it against the reference.
fn check_fixture<Bk: Backend>(file: &str, tol: Tol, device: &Bk::Device) {
    let fx = load_fixture(file);
    for case in &fx.cases {
        let plan = plan_of(case);
        let shapes: Vec<[usize; 2]> = case.tensors.iter().map(|s| s.shape).collect();
        let mut opt = build_optimizer::<Bk>(&plan, &shapes, device).unwrap();
        assert_eq!(opt.name(), plan.kind().name());
        let params = run(opt.as_mut(), &case.tensors, &case.lrs, 1..=case.lrs.len(), start(&case.tensors, device));
        let (param_tol, state_tol) = (tol.param, tol.state);
        let (mut codes_off, mut codes_total) = (0usize, 0usize);
        let (mut worst_param, mut worst_state) = (0f64, 0f64);
        for (i, p) in params.iter().enumerate() {
            let want = f32s(&fx.tensors[&format!("{}.{i}.param", case.name)]);
            let err = rel_err(&values(p), &want);
            assert!(err <= param_tol, "{file} {}: param {i} rel err {err:.3e} > {param_tol:e}", case.name);
            worst_param = worst_param.max(err);
        }
        let state = opt.state();
        let expected: Vec<&String> =
            fx.tensors.keys().filter(|k| k.starts_with(&format!("{}.", case.name)) && !k.ends_with(".param")).collect();
        assert_eq!(
            state.tensors.keys().map(|k| format!("{}.{k}", case.name)).collect::<Vec<_>>(),
            expected.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "{file} {}: state tensors",
            case.name
        );
        let block_size = match plan {
            OptimizerPlan::AdamW8bit(s) => Some(s.block_size),
            _ => None,
        };
        for (key, got) in &state.tensors {
            let want = &fx.tensors[&format!("{}.{key}", case.name)];
            assert_eq!(got.shape, want.shape, "{key}");
            if got.dtype == DType::U8 {
                // Codes: equal wherever the block scale is nonzero.
                let absmax = f32s(&fx.tensors[&format!("{}.{}", case.name, key.replace("state", "absmax"))]);
                let bs = block_size.unwrap();
                let (g, w): (Vec<u8>, Vec<u8>) = (got.to_vec().unwrap(), want.to_vec().unwrap());
                for (j, (a, b)) in g.iter().zip(&w).enumerate() {
                    if absmax[j / bs] != 0.0 {
                        assert!(
                            a.abs_diff(*b) <= u8::from(tol.codes > 0.0),
                            "{file} {}: {key}[{j}] code {a}, reference {b}",
                            case.name
                        );
                        codes_off += usize::from(a != b);
                        codes_total += 1;
                    }
                }
            } else {
                let err = rel_err(&f32s(got), &f32s(want));
                assert!(err <= state_tol, "{file} {}: {key} rel err {err:.3e} > {state_tol:e}", case.name);
                worst_state = worst_state.max(err);
            }
        }
        let mut scalars = String::new();
        if plan.kind() == OptimizerKind::Prodigy {
            for key in ["d", "d_max", "d_numerator", "d_hat", "d_denom"] {
                let (got, want) = (state.scalars[key].as_f64().unwrap(), case.scalars[key].as_f64().unwrap());
                let err = (got - want).abs() / want.abs();
                assert!(err <= tol.state, "{file} {}: {key} = {got}, reference {want} (rel err {err:.2e})", case.name);
                scalars += &format!(" {key} {err:.1e}");
            }
            assert_eq!(state.scalars["p0_zero"], case.scalars["p0_zero"]);
        }
        assert_eq!(state.scalars["step"], case.scalars["step"], "{file} {}", case.name);
        assert!(
            codes_off as f64 <= tol.codes * codes_total as f64,
            "{file} {}: {codes_off} of {codes_total} codes differ",
            case.name
        );
        println!(
            "{file} {:<26} params max rel err {worst_param:.2e}, state {worst_state:.2e}{}{scalars}",
            case.name,
            if codes_total > 0 {
                format!(", codes: {} of {codes_total} equal", codes_total - codes_off)
            } else {
                String::new()
            }
        );
    }
}

/// CPU tolerances (see the file's docs).
const EXACT: Tol = Tol { param: 1e-6, state: 1e-6, codes: 0.0 };
const REDUCED: Tol = Tol { param: 2e-6, state: 2e-6, codes: 0.0 };

/// Every fixture file with its CPU tolerance.
const FIXTURES: [(&str, Tol); 6] = [
    ("adamw.safetensors", EXACT),
    ("lion.safetensors", EXACT),
    ("adafactor.safetensors", REDUCED),
    ("prodigy.safetensors", REDUCED),
    ("adamw8bit_default.safetensors", EXACT),
    ("adamw8bit_block256.safetensors", EXACT),
];

#[test]
fn every_fixture_file_is_checked() {
    let mut files: Vec<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".safetensors"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn adamw_matches_torch() {
    check_fixture::<B>("adamw.safetensors", EXACT, &Default::default());
}

#[test]
fn lion_matches_lion_pytorch() {
    check_fixture::<B>("lion.safetensors", EXACT, &Default::default());
}

#[test]
fn adafactor_matches_transformers() {
    check_fixture::<B>("adafactor.safetensors", REDUCED, &Default::default());
}

#[test]
fn prodigy_matches_prodigyopt() {
    check_fixture::<B>("prodigy.safetensors", REDUCED, &Default::default());
}

#[test]
fn adamw8bit_matches_bitsandbytes_kernels() {
    check_fixture::<B>("adamw8bit_default.safetensors", EXACT, &Default::default());
    check_fixture::<B>("adamw8bit_block256.safetensors", EXACT, &Default::default());
}

#[test]
fn dynamic_maps_equal_bitsandbytes() {
    let fx = load_fixture("adamw8bit_default.safetensors");
    for (signed, key) in [(true, "map.signed"), (false, "map.unsigned")] {
        let want = f32s(&fx.tensors[key]);
        let got = dynamic_map(signed);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{key}");
    }
}

/// Every optimizer (and the option sets that change its state layout).
fn all_plans() -> Vec<(String, OptimizerPlan)> {
    let mut plans: Vec<(String, OptimizerPlan)> =
        OptimizerKind::ALL.iter().map(|k| (k.name().to_string(), OptimizerPlan::new(*k, 1e-3))).collect();
    let p = AdamW8bitSettings { block_size: 256, min_8bit_size: 0, ..AdamW8bitSettings::new(1e-3) };
    plans.push(("adamw8bit block 256, all 8-bit".into(), OptimizerPlan::AdamW8bit(p)));
    let p = ProdigySettings { betas: [0.0, 0.999], slice_p: 3, ..ProdigySettings::new(1.0) };
    plans.push(("prodigy beta1 0, slice_p 3".into(), OptimizerPlan::Prodigy(p)));
    let p = AdafactorSettings { beta1: Some(0.9), scale_parameter: true, ..AdafactorSettings::new(1e-3) };
    plans.push(("adafactor beta1, scale_parameter".into(), OptimizerPlan::Adafactor(p)));
    plans
}

fn specs() -> Vec<Spec> {
    let spec = |shape, init: &str, zero_first_grad| Spec { shape, init: init.into(), zero_first_grad };
    vec![spec([48, 100], "pattern", true), spec([8, 16], "zeros", false), spec([1, 37], "pattern", false)]
}

/// For every optimizer on `device`: 2 steps, state saved to a file and loaded into a fresh optimizer,
/// 2 more steps, equal bit for bit (parameters and state) to 4 uninterrupted steps.
fn check_resume<Bk: Backend>(device: &Bk::Device) {
    let dir = std::env::temp_dir().join(format!("flow_train_optimizers_{}_{}", Bk::name(device), std::process::id()));
    let specs = specs();
    let shapes: Vec<[usize; 2]> = specs.iter().map(|s| s.shape).collect();
    let lrs = [1e-3, 5e-4, 1e-3, 2e-3];
    for (name, mut plan) in all_plans() {
        if let OptimizerPlan::Prodigy(s) = &mut plan {
            s.lr = 1.0;
        }
        let lrs: Vec<f64> = lrs.iter().map(|l| l * plan.lr() / 1e-3).collect();
        let mut straight = build_optimizer::<Bk>(&plan, &shapes, device).unwrap();
        let expected = run(straight.as_mut(), &specs, &lrs, 1..=4, start(&specs, device));

        let mut first = build_optimizer::<Bk>(&plan, &shapes, device).unwrap();
        let halfway = run(first.as_mut(), &specs, &lrs, 1..=2, start(&specs, device));
        let path = dir.join(format!("{}.safetensors", name.replace([' ', ','], "_")));
        first.state().save(&path).unwrap();
        // The trainer restores parameters from its own checkpoint: fresh tensors with the same values.
        let halfway: Vec<Tensor<Bk, 2>> = halfway.iter().map(|p| tensor_on(values(p), p.dims(), device)).collect();
        drop(first);
        let mut resumed = build_optimizer::<Bk>(&plan, &shapes, device).unwrap();
        resumed.load_state(OptimizerState::load(&path).unwrap()).unwrap();
        let got = run(resumed.as_mut(), &specs, &lrs, 3..=4, halfway);

        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            let bits = |t: &Tensor<Bk, 2>| values(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(g), bits(e), "{name}: tensor {i} differs after resume");
        }
        assert_eq!(resumed.state(), straight.state(), "{name}: state after resume");
        // The run moved the parameters (the comparison above is not trivially equal).
        assert_ne!(values(&expected[0]), initial(0, &specs[0]), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_load_continue_is_bit_exact() {
    check_resume::<B>(&Default::default());
}

/// The same checks on the GPU (`--features cuda`; run the test binary where a CUDA device is). GPU
/// arithmetic differs from the CPU references in the last bits (fused multiply-adds, reduction order,
/// division), so the tolerances are wider and an 8-bit code may land on the neighbouring table entry.
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;

    #[test]
    fn fixtures_on_cuda() {
        let device = CudaDevice::new(0);
        for (file, _) in FIXTURES {
            check_fixture::<Cuda>(file, Tol { param: 2e-5, state: 2e-5, codes: 1e-3 }, &device);
        }
    }

    #[test]
    fn resume_is_bit_exact_on_cuda() {
        check_resume::<Cuda>(&CudaDevice::new(0));
    }

    /// Informational: time per optimizer step for a rank-32 FLUX.2 LoRA's parameter count (195 M
    /// parameters in 320 factors: 160 x ([32, 6144] + [31918, 32])), after one warm-up step.
    #[test]
    fn step_time_on_cuda_for_a_rank_32_lora() {
        let device = CudaDevice::new(0);
        let shapes: Vec<[usize; 2]> = (0..160).flat_map(|_| [[32, 6144], [31918, 32]]).collect();
        let fill = |v: f32| -> Vec<Tensor<Cuda, 2>> { shapes.iter().map(|s| Tensor::full(*s, v, &device)).collect() };
        for kind in OptimizerKind::ALL {
            let plan = OptimizerPlan::new(kind, if kind == OptimizerKind::Prodigy { 1.0 } else { 1e-4 });
            let mut opt = build_optimizer::<Cuda>(&plan, &shapes, &device).unwrap();
            let (mut params, grads) = (fill(0.01), fill(1e-3));
            params = opt.step(plan.lr(), params, grads.clone()).unwrap();
            <Cuda as Backend>::sync(&device).unwrap();
            let t = std::time::Instant::now();
            for _ in 0..3 {
                params = opt.step(plan.lr(), params, grads.clone()).unwrap();
            }
            <Cuda as Backend>::sync(&device).unwrap();
            println!(
                "{:<10} {:>7.1} ms/step, state {:.2} GB",
                kind.name(),
                t.elapsed().as_secs_f64() * 1e3 / 3.0,
                opt.state_bytes() as f64 / 1e9
            );
        }
    }
}

#[test]
fn state_bytes_show_the_memory_each_optimizer_needs() {
    // A rank-16 LoRA on a 3072-wide layer: down [16, 3072], up [3072, 16].
    let shapes = [[16, 3072], [3072, 16]];
    let params = 2 * 16 * 3072u64;
    let device = Default::default();
    let bytes = |plan: &OptimizerPlan| build_optimizer::<B>(plan, &shapes, &device).unwrap().state_bytes();
    let plan = |k| OptimizerPlan::new(k, 1e-4);
    let adamw = bytes(&plan(OptimizerKind::AdamW));
    let adamw8bit = bytes(&plan(OptimizerKind::AdamW8bit));
    let lion = bytes(&plan(OptimizerKind::Lion));
    let adafactor = bytes(&plan(OptimizerKind::Adafactor));
    let prodigy = bytes(&plan(OptimizerKind::Prodigy));
    let p256 = AdamW8bitSettings { block_size: 256, min_8bit_size: 4096, ..AdamW8bitSettings::new(1e-4) };
    let adamw8bit_256 = bytes(&OptimizerPlan::AdamW8bit(p256));
    println!(
        "state bytes per parameter: adamw {:.4}, adamw8bit {:.4} (block 256: {:.4}), lion {:.4}, adafactor {:.4}, \
         prodigy {:.4}",
        adamw as f64 / params as f64,
        adamw8bit as f64 / params as f64,
        adamw8bit_256 as f64 / params as f64,
        lion as f64 / params as f64,
        adafactor as f64 / params as f64,
        prodigy as f64 / params as f64
    );
    assert_eq!(adamw, 8 * params);
    assert_eq!(
        adamw8bit,
        2 * params + 12 * 2 * 24,
        "2 bytes + 3 f32 (two scales, valid count) per 2048-block, 24 per tensor"
    );
    assert!((adamw as f64 / adamw8bit as f64) > 3.98, "adamw8bit is ~4x smaller");
    assert_eq!(adamw8bit_256, 2 * params + 12 * 2 * 192);
    assert_eq!(lion * 2, adamw);
    assert_eq!(adafactor, 4 * (16 + 3072) * 2);
    assert_eq!(prodigy, 16 * params, "before the first step p0 counts at full size");

    // Prodigy keeps no copy of a tensor that starts at zero (LoRA's up factor).
    let mut opt = build_optimizer::<B>(&plan(OptimizerKind::Prodigy), &shapes, &device).unwrap();
    let p = vec![tensor(vec![0.5; 16 * 3072], [16, 3072]), tensor(vec![0.0; 3072 * 16], [3072, 16])];
    let g = vec![tensor(vec![0.01; 16 * 3072], [16, 3072]), tensor(vec![0.02; 3072 * 16], [3072, 16])];
    opt.step(1.0, p, g).unwrap();
    assert_eq!(opt.state_bytes(), 16 * params - 4 * 3072 * 16 + 4);
}

#[test]
fn errors_name_the_tensor_or_key() {
    let device = Default::default();
    let shapes = [[4, 8], [8, 4]];
    let plan = OptimizerPlan::new(OptimizerKind::AdamW, 1e-3);
    let mut opt = build_optimizer::<B>(&plan, &shapes, &device).unwrap();
    let err = opt
        .step(
            1e-3,
            vec![tensor(vec![0.0; 32], [4, 8]), tensor(vec![0.0; 32], [4, 8])],
            vec![tensor(vec![0.0; 32], [4, 8]); 2],
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("tensor 1: parameter [4, 8] / gradient [4, 8], but adamw's state is for [8, 4]"),
        "{err}"
    );

    // A state of another optimizer, of other shapes, with a missing tensor.
    let lion = build_optimizer::<B>(&OptimizerPlan::new(OptimizerKind::Lion, 1e-3), &shapes, &device).unwrap();
    let err = opt.load_state(lion.state()).unwrap_err();
    assert!(err.to_string().contains("the state is lion's, the job's optimizer is adamw"), "{err}");
    let other = build_optimizer::<B>(&plan, &[[4, 8], [8, 5]], &device).unwrap();
    let err = opt.load_state(other.state()).unwrap_err();
    assert!(
        matches!(&err, Error::OptimizerState { key, reason } if key == "1.exp_avg" && reason.contains("[8, 5]")),
        "{err}"
    );
    let mut state = opt.state();
    state.tensors.remove("0.exp_avg_sq");
    assert_eq!(opt.load_state(state).unwrap_err().to_string(), "optimizer state: 0.exp_avg_sq: missing tensor");
    // adamw8bit with another block size.
    let p8 = |block_size| {
        OptimizerPlan::AdamW8bit(AdamW8bitSettings { block_size, min_8bit_size: 0, ..AdamW8bitSettings::new(1e-3) })
    };
    let state = build_optimizer::<B>(&p8(256), &shapes, &device).unwrap().state();
    let err = build_optimizer::<B>(&p8(2048), &shapes, &device).unwrap().load_state(state).unwrap_err();
    assert!(err.to_string().contains("block_size: the state was made with block_size 256, the job sets 2048"), "{err}");
}
