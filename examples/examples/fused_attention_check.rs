//! The fused attention's forward and gradients against plain matmul-softmax-matmul on any device (the
//! CPU version of this check is `flux2-dit/tests/fused_attention.rs`; this one exists for the GPU), and
//! the model's matmul path (`flux2_ops::matmul`: cuBLAS on CUDA) against an f32 CPU reference for the
//! operand layouts the model produces (transposed weights, narrowed blocks, head views), with its
//! autodiff input gradient.
//!
//! ```sh
//! cargo run --release --features cuda -p examples --example fused_attention_check -- --device cuda:0
//! cargo run --release -p examples --example fused_attention_check -- --device cpu
//! ```
//! The reference runs in f32 on the same (dtype-rounded) inputs. Tolerances (max |diff| / max |ref|):
//! 2e-5 on CPU f32; 5e-3 on CUDA f32 (Burn's CUDA matmuls run f32 as TF32, see docs/cuda.md); 3e-2 for bf16
//! (scores and probabilities are rounded to bf16 before the value matmul, as in FlashAttention). Exits with
//! status 1 on any failure.

use burn::backend::Autodiff;
use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Distribution, Tensor};
use flux2_ops::fused_attention::{AttentionBlocks, FusedAttentionBackend, fused_attention_with};

fn plain<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, scale: f32) -> Tensor<B, 4> {
    softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3).matmul(v)
}

fn rel<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    let a = a.cast(DType::F32);
    let b = b.cast(DType::F32);
    let diff: f32 = (a - b.clone()).abs().max().into_scalar().elem_f32();
    let norm: f32 = b.abs().max().into_scalar().elem_f32();
    diff / norm
}

trait ElemF32 {
    fn elem_f32(self) -> f32;
}

impl<E: burn::tensor::ElementConversion> ElemF32 for E {
    fn elem_f32(self) -> f32 {
        self.elem::<f32>()
    }
}

/// Runs one case; returns the four relative errors (out, dq, dk, dv).
fn case<B: AutodiffBackend + FusedAttentionBackend>(
    device: &B::Device,
    sq: [usize; 4],
    sk: [usize; 4],
    blocks: Option<AttentionBlocks>,
    dtype: DType,
) -> [f32; 4] {
    let n = Distribution::Normal(0.0, 1.0);
    let q0 = Tensor::<B::InnerBackend, 4>::random(sq, n, device).mul_scalar(1.5).cast(dtype);
    let k0 = Tensor::<B::InnerBackend, 4>::random(sk, n, device).mul_scalar(1.5).cast(dtype);
    let v0 = Tensor::<B::InnerBackend, 4>::random(sk, n, device).cast(dtype);
    let w = Tensor::<B, 4>::random(sq, n, device);
    let scale = 1.0 / (sq[3] as f32).sqrt();
    let blocks = blocks.unwrap_or_else(|| AttentionBlocks::for_shape(sq[0], sq[1], sq[2], sk[2]));
    let run = |fused: bool| {
        // The reference computes in f32 from the same rounded inputs.
        let cast = |t: &Tensor<B::InnerBackend, 4>| if fused { t.clone() } else { t.clone().cast(DType::F32) };
        let q = Tensor::<B, 4>::from_inner(cast(&q0)).require_grad();
        let k = Tensor::<B, 4>::from_inner(cast(&k0)).require_grad();
        let v = Tensor::<B, 4>::from_inner(cast(&v0)).require_grad();
        let out = if fused {
            fused_attention_with(q.clone(), k.clone(), v.clone(), scale, blocks)
        } else {
            plain(q.clone(), k.clone(), v.clone(), scale)
        };
        let grads = out.clone().cast(DType::F32).mul(w.clone()).sum().backward();
        let g = |t: &Tensor<B, 4>| t.grad(&grads).expect("gradient");
        [out.inner(), g(&q), g(&k), g(&v)]
    };
    let r = run(false);
    let f = run(true);
    let [r0, r1, r2, r3] = r;
    let [f0, f1, f2, f3] = f;
    [rel(f0, r0), rel(f1, r1), rel(f2, r2), rel(f3, r3)]
}

fn check<B: AutodiffBackend + FusedAttentionBackend>(device: &B::Device, f32_tol: f32, full_size: bool) -> bool {
    let mut ok = true;
    let cases: Vec<(&str, [usize; 4], [usize; 4], Option<AttentionBlocks>, DType, f32)> = vec![
        (
            "f32 37 tokens, blocks 8x11",
            [2, 3, 37, 64],
            [2, 3, 37, 64],
            Some(AttentionBlocks { query: 8, key: 11 }),
            DType::F32,
            f32_tol,
        ),
        (
            "f32 13x29 cross, blocks 5x7",
            [1, 2, 13, 32],
            [1, 2, 29, 32],
            Some(AttentionBlocks { query: 5, key: 7 }),
            DType::F32,
            f32_tol,
        ),
        (
            "f32 1000 tokens x 128, blocks 96x300",
            [1, 4, 1000, 128],
            [1, 4, 1000, 128],
            Some(AttentionBlocks { query: 96, key: 300 }),
            DType::F32,
            f32_tol,
        ),
        ("bf16 1000 tokens x 128, default blocks", [1, 8, 1000, 128], [1, 8, 1000, 128], None, DType::BF16, 3e-2),
        // Lengths that are no multiple of the CUDA one-kernel path's 64/32-row tiles, cross attention, batch 2.
        ("bf16 77x533 cross x 128, batch 2", [2, 3, 77, 128], [2, 3, 533, 128], None, DType::BF16, 3e-2),
        ("bf16 533x77 cross x 128, batch 2", [2, 3, 533, 128], [2, 3, 77, 128], None, DType::BF16, 3e-2),
        ("f16 1000 tokens x 128, default blocks", [1, 8, 1000, 128], [1, 8, 1000, 128], None, DType::F16, 1e-2),
        // Head dim 64: the block path on CUDA.
        ("bf16 300 tokens x 64, default blocks", [1, 4, 300, 64], [1, 4, 300, 64], None, DType::BF16, 3e-2),
        (
            "bf16 4608 tokens x 128, 48 heads, default blocks",
            [1, 48, 4608, 128],
            [1, 48, 4608, 128],
            None,
            DType::BF16,
            3e-2,
        ),
    ];
    for (name, sq, sk, blocks, dtype, tol) in cases {
        // The full-size case needs a 4 GB f32 reference score matrix: GPU only.
        if sq[2] > 2048 && !full_size {
            continue;
        }
        let errs = case::<B>(device, sq, sk, blocks, dtype);
        let pass = errs.iter().all(|e| e.is_finite() && *e <= tol);
        ok &= pass;
        println!(
            "{} {name}: rel_err out/dq/dk/dv = {} (tol {tol:e})",
            if pass { "PASS" } else { "FAIL" },
            errs.map(|e| format!("{e:.2e}")).join(" / ")
        );
    }
    ok
}

/// Max |diff| / max |ref| of a device tensor against an f32 CPU tensor.
fn rel_cpu<B: Backend, const D: usize>(a: Tensor<B, D>, reference: Tensor<Cpu, D>) -> f32 {
    let a = Tensor::<Cpu, D>::from_data(a.cast(DType::F32).into_data().convert::<f32>(), &Default::default());
    let diff: f32 = (a - reference.clone()).abs().max().into_scalar();
    diff / reference.abs().max().into_scalar()
}

type Cpu = burn::backend::Flex;

fn to_cpu<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Tensor<Cpu, D> {
    Tensor::from_data(t.clone().cast(DType::F32).into_data().convert::<f32>(), &Default::default())
}

/// `flux2_ops::matmul::matmul` on the layouts the model feeds it, forward and (under autodiff) the input
/// gradient of a frozen-weight product, against f32 products on the CPU from the same rounded inputs.
fn check_matmul<B: AutodiffBackend>(device: &B::Device) -> bool {
    use flux2_ops::matmul::matmul;
    let n = Distribution::Normal(0.0, 1.0);
    let mut ok = true;
    for (dtype, tol) in [(DType::F32, 1e-5f32), (DType::BF16, 1e-2)] {
        let rnd = |shape: [usize; 4]| Tensor::<B::InnerBackend, 4>::random(shape, n, device).cast(dtype);
        let mut report = |name: &str, err: f32| {
            let pass = err.is_finite() && err <= tol;
            ok &= pass;
            println!("{} matmul {dtype:?} {name}: rel_err {err:.2e} (tol {tol:e})", if pass { "PASS" } else { "FAIL" });
        };
        // Linear: x [257, 384] times a [320, 384] weight read transposed.
        let x = rnd([1, 1, 257, 384]).reshape([257, 384]);
        let w = rnd([1, 1, 320, 384]).reshape([320, 384]);
        let want = to_cpu(&x).matmul(to_cpu(&w).transpose());
        report("x Wt (transposed weight)", rel_cpu(matmul(x.clone(), w.clone().transpose()), want));
        // Attention tile: narrowed query rows times transposed keys, batch over heads.
        let q = rnd([1, 4, 300, 64]);
        let k = rnd([1, 4, 200, 64]);
        let qn = q.narrow(2, 10, 280);
        let want = to_cpu(&qn).matmul(to_cpu(&k).swap_dims(2, 3));
        report("q[10..290] Kt over 4 heads", rel_cpu(matmul(qn, k.swap_dims(2, 3)), want));
        // Heads view of a [B, S, H, d] buffer (batch dims not one stride: copied first).
        let h = rnd([2, 50, 3, 16]).swap_dims(1, 2);
        let r = rnd([2, 3, 16, 40]);
        let want = to_cpu(&h).matmul(to_cpu(&r));
        report("[B,S,H,d] head view x [B,H,d,40]", rel_cpu(matmul(h, r), want));
        // Autodiff: y = x Wᵀ with a frozen W; d x = g W.
        let xa = Tensor::<B, 2>::from_inner(x.clone()).require_grad();
        let y = matmul(xa.clone(), Tensor::<B, 2>::from_inner(w.clone()).transpose());
        let g = Tensor::<B, 2>::random([257, 320], n, device);
        let grads = y.cast(DType::F32).mul(g.clone()).sum().backward();
        let dx = xa.grad(&grads).expect("input gradient");
        let want = to_cpu(&g.inner()).matmul(to_cpu(&w));
        report("autodiff d x = g W", rel_cpu(dx, want));
    }
    ok
}

fn main() {
    let device = std::env::args().skip_while(|a| a != "--device").nth(1).unwrap_or_else(|| "cpu".into());
    let ok = if device == "cpu" {
        let device = Default::default();
        check_matmul::<Autodiff<burn::backend::Flex>>(&device)
            & check::<Autodiff<burn::backend::Flex>>(&device, 2e-5, false)
    } else {
        run_cuda(&device)
    };
    if !ok {
        std::process::exit(1);
    }
}

#[cfg(feature = "cuda")]
fn run_cuda(device: &str) -> bool {
    let Some(index) = device.strip_prefix("cuda:").and_then(|i| i.parse().ok()) else {
        eprintln!("--device {device}: expected cpu or cuda:N");
        std::process::exit(2);
    };
    type B = Autodiff<burn::backend::Cuda>;
    let device = burn::backend::cuda::CudaDevice::new(index);
    if !flux2_ops::matmul::is_registered::<B>() {
        println!("FAIL the cuBLAS matmul is not registered for Autodiff<Cuda>");
        return false;
    }
    let gemm_ok = check_matmul::<B>(&device);
    check::<B>(&device, 5e-3, true) && gemm_ok
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(device: &str) -> bool {
    eprintln!("--device {device}: this build has no CUDA (build with --features cuda)");
    std::process::exit(2);
}
