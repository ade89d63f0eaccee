//! The fused element-wise ops (`flux2_ops::fused_norm`, `flux2_ops::fused_gates`) against the tensor-op
//! compositions they replace (flux2-dit's `norm.rs`, `rope.rs`, `modulation.rs` and blocks), forward and
//! every gradient, on any autodiff backend whose inner backend has the kernels: the CPU test
//! (`flux2-dit/tests/fused_ops.rs`) and the GPU check (`examples/fused_ops_check.rs`) run the same cases.

use burn::module::Param;
use burn::tensor::activation::silu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Distribution, ElementConversion, Tensor};
use flux2_dit::modulation::ModParams;
use flux2_dit::norm::{RmsNorm, layer_norm};
use flux2_dit::rope::RopeTable;
use flux2_ops::{fused_gates, fused_norm};

/// One compared case: its name and (quantity, max |diff| / max |ref|) pairs, the forward first.
pub struct CaseResult {
    pub name: String,
    pub errors: Vec<(&'static str, f32)>,
}

impl CaseResult {
    /// Whether the forward is within `tol[0]` and every gradient within `tol[1]` (NaN fails).
    pub fn passes(&self, tol: [f32; 2]) -> bool {
        self.errors.iter().enumerate().all(|(i, (_, e))| e.is_finite() && *e <= tol[usize::from(i > 0)])
    }

    pub fn line(&self, tol: [f32; 2]) -> String {
        let list: Vec<String> = self.errors.iter().map(|(n, e)| format!("{n} {e:.2e}")).collect();
        let verdict = if self.passes(tol) { "PASS" } else { "FAIL" };
        format!("{verdict} {}: {} (tol {:e} / {:e})", self.name, list.join(", "), tol[0], tol[1])
    }
}

/// Tolerances (forward, gradients) per dtype: f32 differs by summation order only; in bf16 the
/// composition rounds every intermediate, the kernels only where the forward's casts are.
pub fn tolerance(dtype: DType) -> [f32; 2] {
    match dtype {
        DType::F32 => [1e-5, 1e-5],
        _ => [2e-2, 3e-2],
    }
}

fn rel<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    let (a, b) = (a.cast(DType::F32), b.cast(DType::F32));
    let diff: f32 = (a - b.clone()).abs().max().into_scalar().elem();
    let norm: f32 = b.abs().max().into_scalar().elem();
    diff / norm
}

/// RMSNorm + RoPE on x `shape` = [b, h, s, d] with the table rows offset..offset + s of a longer table.
pub fn rms_norm_rope<B: AutodiffBackend>(
    device: &B::Device,
    shape: [usize; 4],
    offset: usize,
    dtype: DType,
) -> CaseResult {
    let n = Distribution::Normal(0.0, 1.0);
    let [_, _, s, d] = shape;
    let angles = Tensor::<B, 2>::random([offset + s + 5, d], Distribution::Uniform(-3.0, 3.0), device);
    let table = RopeTable { cos: angles.clone().cos(), sin: angles.sin() };
    let weight = Tensor::<B, 1>::random([d], Distribution::Uniform(0.5, 1.5), device).cast(dtype);
    let norm = RmsNorm { weight: Param::from_tensor(weight).set_require_grad(false), eps: 1e-6 };
    let x0 = Tensor::<B::InnerBackend, 4>::random(shape, n, device).mul_scalar(2.0).cast(dtype);
    let w = Tensor::<B, 4>::random(shape, n, device);
    let run = |fused: bool| {
        let x = Tensor::<B, 4>::from_inner(x0.clone()).require_grad();
        let out = if fused {
            fused_norm::rms_norm_rope(x.clone(), &norm.weight.val(), &table.cos, &table.sin, offset, norm.eps)
                .unwrap_or_else(|_| panic!("no fused RMSNorm + RoPE for this backend"))
        } else {
            let rows = |t: &Tensor<B, 2>| t.clone().narrow(0, offset, s);
            RopeTable { cos: rows(&table.cos), sin: rows(&table.sin) }.apply(norm.forward(x.clone()))
        };
        let grads = out.clone().cast(DType::F32).mul(w.clone()).sum().backward();
        (out.inner(), x.grad(&grads).expect("input gradient"))
    };
    let (r_out, r_dx) = run(false);
    let (f_out, f_dx) = run(true);
    CaseResult {
        name: format!("{dtype:?} rms_norm_rope {shape:?} at row {offset}"),
        errors: vec![("out", rel(f_out, r_out)), ("dx", rel(f_dx, r_dx))],
    }
}

/// (1 + scale) LayerNorm(x) + shift on x `shape` = [b, s, d] with trainable shift and scale.
pub fn modulated_layer_norm<B: AutodiffBackend>(device: &B::Device, shape: [usize; 3], dtype: DType) -> CaseResult {
    let n = Distribution::Normal(0.0, 1.0);
    let [b, _, d] = shape;
    let x0 = Tensor::<B::InnerBackend, 3>::random(shape, n, device).mul_scalar(3.0).add_scalar(0.5).cast(dtype);
    let shift0 = Tensor::<B::InnerBackend, 3>::random([b, 1, d], n, device).cast(dtype);
    let scale0 = Tensor::<B::InnerBackend, 3>::random([b, 1, d], n, device).mul_scalar(0.5).cast(dtype);
    let w = Tensor::<B, 3>::random(shape, n, device);
    let run = |fused: bool| {
        let x = Tensor::<B, 3>::from_inner(x0.clone()).require_grad();
        let shift = Tensor::<B, 3>::from_inner(shift0.clone()).require_grad();
        let scale = Tensor::<B, 3>::from_inner(scale0.clone()).require_grad();
        let m = ModParams { shift: shift.clone(), scale: scale.clone(), gate: shift.clone() };
        let out = if fused {
            fused_norm::modulated_layer_norm(x.clone(), &m.shift, &m.scale, 1e-6)
                .unwrap_or_else(|_| panic!("no fused modulated LayerNorm for this backend"))
        } else {
            m.modulate(layer_norm(x.clone(), 1e-6))
        };
        let grads = out.clone().cast(DType::F32).mul(w.clone()).sum().backward();
        let g = |t: &Tensor<B, 3>| t.grad(&grads).expect("gradient");
        (out.inner(), g(&x), g(&shift), g(&scale))
    };
    let (r, f) = (run(false), run(true));
    CaseResult {
        name: format!("{dtype:?} modulated_layer_norm {shape:?}"),
        errors: vec![
            ("out", rel(f.0, r.0)),
            ("dx", rel(f.1, r.1)),
            ("dshift", rel(f.2, r.2)),
            ("dscale", rel(f.3, r.3)),
        ],
    }
}

/// SwiGLU over the ranges [start, start + n) and [start + n, start + 2n) of t [b, s, width] (the rest of t
/// gets no gradient).
pub fn swiglu<B: AutodiffBackend>(
    device: &B::Device,
    shape: [usize; 3],
    start: usize,
    n: usize,
    dtype: DType,
) -> CaseResult {
    let t0 = Tensor::<B::InnerBackend, 3>::random(shape, Distribution::Normal(0.0, 2.0), device).cast(dtype);
    let w = Tensor::<B, 3>::random([shape[0], shape[1], n], Distribution::Normal(0.0, 1.0), device);
    let run = |fused: bool| {
        let t = Tensor::<B, 3>::from_inner(t0.clone()).require_grad();
        let out = if fused {
            fused_gates::swiglu(t.clone(), start, n).unwrap_or_else(|_| panic!("no fused SwiGLU for this backend"))
        } else {
            silu(t.clone().narrow(2, start, n)) * t.clone().narrow(2, start + n, n)
        };
        // A second use of t, as the blocks make of the same Linear output (q, k, v beside the MLP halves).
        let other = t.clone().sum().cast(DType::F32).mul_scalar(0.01);
        let grads = (out.clone().cast(DType::F32).mul(w.clone()).sum() + other).backward();
        (out.inner(), t.grad(&grads).expect("gradient"))
    };
    let (r, f) = (run(false), run(true));
    CaseResult {
        name: format!("{dtype:?} swiglu {shape:?} [{start}, +{n}, +{n}]"),
        errors: vec![("out", rel(f.0, r.0)), ("dt", rel(f.1, r.1))],
    }
}

/// x + gate * y with x, y [b, s, d] and a trainable [b, 1, d] gate.
pub fn gated_residual<B: AutodiffBackend>(device: &B::Device, shape: [usize; 3], dtype: DType) -> CaseResult {
    let n = Distribution::Normal(0.0, 1.0);
    let [b, _, d] = shape;
    let (x0, y0) = (
        Tensor::<B::InnerBackend, 3>::random(shape, n, device),
        Tensor::<B::InnerBackend, 3>::random(shape, n, device),
    );
    let g0 = Tensor::<B::InnerBackend, 3>::random([b, 1, d], n, device);
    let [x0, y0, g0] = [x0, y0, g0].map(|t| t.cast(dtype));
    let w = Tensor::<B, 3>::random(shape, n, device);
    let run = |fused: bool| {
        let x = Tensor::<B, 3>::from_inner(x0.clone()).require_grad();
        let y = Tensor::<B, 3>::from_inner(y0.clone()).require_grad();
        let gate = Tensor::<B, 3>::from_inner(g0.clone()).require_grad();
        let out = if fused {
            fused_gates::gated_residual(x.clone(), &gate, y.clone())
                .unwrap_or_else(|_| panic!("no fused gated residual for this backend"))
        } else {
            x.clone() + gate.clone() * y.clone()
        };
        let grads = out.clone().cast(DType::F32).mul(w.clone()).sum().backward();
        let g = |t: &Tensor<B, 3>| t.grad(&grads).expect("gradient");
        (out.inner(), g(&x), g(&y), g(&gate))
    };
    let (r, f) = (run(false), run(true));
    CaseResult {
        name: format!("{dtype:?} gated_residual {shape:?}"),
        errors: vec![("out", rel(f.0, r.0)), ("dx", rel(f.1, r.1)), ("dy", rel(f.2, r.2)), ("dgate", rel(f.3, r.3))],
    }
}

/// Every case in each of `dtypes`: odd lengths, a table offset, head dims 128 and 64, batch 2; with
/// `full_size` also FLUX.2 [dev]'s [1, 48, 4608, 128] and [1, 4608, 6144] (GPU).
pub fn all<B: AutodiffBackend>(device: &B::Device, dtypes: &[DType], full_size: bool) -> Vec<(CaseResult, [f32; 2])> {
    let mut out = Vec::new();
    for &dtype in dtypes {
        let mut ropes = vec![([2, 3, 77, 128], 512), ([1, 4, 33, 64], 7)];
        let mut norms = vec![[2, 77, 3072], [1, 5, 100]];
        if full_size {
            ropes.push(([1, 48, 4608, 128], 0));
            norms.push([1, 4608, 6144]);
        }
        for (shape, offset) in ropes {
            out.push((rms_norm_rope::<B>(device, shape, offset, dtype), tolerance(dtype)));
        }
        for &shape in &norms {
            out.push((modulated_layer_norm::<B>(device, shape, dtype), tolerance(dtype)));
            out.push((gated_residual::<B>(device, shape, dtype), tolerance(dtype)));
        }
        // The double blocks' MLP halves, and the single blocks' [q k v | gate | up] layout.
        let swiglus = if full_size {
            vec![([1, 4608, 2 * 18432], 0, 18432), ([1, 4608, 3 * 6144 + 2 * 18432], 3 * 6144, 18432)]
        } else {
            vec![([2, 33, 2 * 96], 0, 96), ([1, 17, 3 * 64 + 2 * 80], 3 * 64, 80)]
        };
        for (shape, start, n) in swiglus {
            out.push((swiglu::<B>(device, shape, start, n, dtype), tolerance(dtype)));
        }
    }
    out
}
