//! Block-level checkpointing (`BlockCheckpointing`) changes memory, not results: the loss and every
//! gradient equal those of the plain forward + `loss.backward()` within f32 rounding, for LoRA on the
//! blocks only, on every Linear (the embedding stage then trains too), with two forwards in one loss
//! (one with the adapter switched off, as DOP's prior pass), and with LoRA dropout (the recompute
//! must draw the forward's masks).

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use flux2_dit::checkpoint::dropout_seed;
use flux2_dit::{BlockCheckpointing, Flux2Transformer, PositionIds, RandomSource, RopeTable};
use flux2_ops::relative_error;
use lora_adapters::{AdapterHandle, LoraConfig, Targets, inject};

type B = Autodiff<Flex>;

/// The backend RNG (`B::seed`, LoRA dropout masks) is process-wide: tests of this binary that seed it
/// must not interleave, or one test's reseeding lands between another's forward and recompute.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

use flux2_test_support::tiny_dit::tiny_config as tiny;

struct Case {
    model: Flux2Transformer<B>,
    adapter: AdapterHandle,
    x: Tensor<B, 3>,
    ctx: Tensor<B, 3>,
    target: Tensor<B, 3>,
    rope: RopeTable<B>,
}

fn case(targets: Targets, dropout: f64) -> Case {
    let device = Default::default();
    let c = tiny();
    let mut model = Flux2Transformer::<B>::from_source(&c, &mut RandomSource::new(3), DType::F32, &device).unwrap();
    let adapter = inject(&mut model, "ck", &LoraConfig { rank: 4, alpha: 4.0, dropout, targets, seed: 5 }).unwrap();
    // B starts at zero; random factors make every gradient non-trivial.
    let mut k = 0;
    for (_, l) in model.linears_mut() {
        for a in &mut l.adapters {
            for p in [&mut a.down, &mut a.up] {
                k += 1;
                <Flex as Backend>::seed(&device, 100 + k);
                let v = Tensor::<B, 2>::random(p.val().dims(), Distribution::Normal(0.0, 0.3), &device);
                *p = Param::initialized(p.id, v.require_grad());
            }
        }
    }
    <Flex as Backend>::seed(&device, 7);
    let normal = Distribution::Normal(0.0, 1.0);
    let (h, w, txt) = (3, 4, 5);
    Case {
        rope: model.rope(&PositionIds::text(txt), &PositionIds::image(h, w)),
        x: Tensor::random([2, h * w, c.in_channels], normal, &device),
        ctx: Tensor::random([2, txt, c.joint_attention_dim], normal, &device),
        target: Tensor::random([2, h * w, c.in_channels], normal, &device),
        model,
        adapter,
    }
}

fn t(v: [f32; 2]) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [2]), &Default::default())
}

/// The loss of one or two forwards (the second with the adapter off, as DOP's prior), through `f`.
fn loss(
    c: &Case,
    two: bool,
    f: &mut dyn FnMut(Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 1>) -> Tensor<B, 3>,
) -> Tensor<B, 1> {
    let pred = f(c.x.clone(), c.ctx.clone(), t([0.3, 0.8]));
    let mut total = (pred.clone() - c.target.clone()).square().mean();
    if two {
        let prior = c.adapter.without(|| f(c.x.clone(), c.ctx.clone() * 0.5, t([0.6, 0.1])));
        let kept = f(c.x.clone(), c.ctx.clone() * 0.5, t([0.6, 0.1]));
        total = total + (kept - prior.detach()).square().mean() * 0.7;
    }
    total
}

/// Loss value and every factor gradient (model Linear order, A then B).
fn gradients(c: &Case, grads: &<B as burn::tensor::backend::AutodiffBackend>::Gradients) -> Vec<TensorData> {
    let mut out = Vec::new();
    for (path, l) in c.model.linears() {
        for a in &l.adapters {
            for p in [&a.down, &a.up] {
                let g = p.val().grad(grads).unwrap_or_else(|| panic!("{path}: no gradient"));
                out.push(g.into_data());
            }
        }
    }
    out
}

fn compare(name: &str, c: &Case, plain: (f32, Vec<TensorData>), ckpt: (f32, Vec<TensorData>)) {
    let loss_err = ((plain.0 - ckpt.0) / plain.0).abs();
    assert!(loss_err <= 1e-6, "{name}: loss {} vs checkpointed {} (rel {loss_err:e})", plain.0, ckpt.0);
    assert_eq!(plain.1.len(), ckpt.1.len());
    let paths: Vec<String> = c
        .model
        .linears()
        .into_iter()
        .flat_map(|(p, l)| {
            l.adapters.iter().flat_map(move |_| [format!("{p}.A"), format!("{p}.B")]).collect::<Vec<_>>()
        })
        .collect();
    for ((a, b), path) in plain.1.iter().zip(&ckpt.1).zip(paths) {
        let err = relative_error(b, a).unwrap();
        assert!(err <= 1e-6, "{name}: gradient of {path} differs by {err:e}");
        let norm: f32 = a.to_vec::<f32>().unwrap().iter().map(|v| v * v).sum();
        assert!(norm > 0.0, "{name}: gradient of {path} is zero (the test would not see a difference)");
    }
}

fn check(name: &str, targets: Targets, two: bool) {
    let _serial = serial();
    let c = case(targets, 0.0);
    let plain_loss = loss(&c, two, &mut |x, ctx, s| c.model.forward(x, ctx, s, Some(t([4.0, 2.0])), &c.rope));
    let plain = (plain_loss.clone().into_scalar(), gradients(&c, &plain_loss.backward()));

    let mut tape = BlockCheckpointing::new(&c.model, 11);
    let ckpt_loss = loss(&c, two, &mut |x, ctx, s| tape.forward(x, ctx, s, Some(t([4.0, 2.0])), &c.rope));
    let value = ckpt_loss.clone().into_scalar();
    let grads = tape.backward(ckpt_loss);
    compare(name, &c, plain, (value, gradients(&c, &grads)));
}

#[test]
fn lora_on_the_blocks() {
    check("blocks", Targets::Blocks, false);
}

#[test]
fn lora_everywhere_trains_the_embedding_stage_and_head_too() {
    check("everything", Targets::Everything, false);
}

#[test]
fn two_forwards_in_one_loss_one_with_the_adapter_off() {
    check("dop-like", Targets::Everything, true);
}

#[test]
fn dropout_masks_of_the_recompute_are_the_forwards() {
    let _serial = serial();
    let c = case(Targets::Blocks, 0.25);
    let device = Default::default();
    let seed = 42;
    // The plain graph with the tape's per-block seeds: the masks the checkpointed forward drew.
    let plain_loss = loss(&c, false, &mut |x, ctx, s| {
        c.model.forward_hooked(x, ctx, s, Some(t([4.0, 2.0])), &c.rope, &mut |i| {
            <B as Backend>::seed(&device, dropout_seed(seed, 0, i))
        })
    });
    let plain = (plain_loss.clone().into_scalar(), gradients(&c, &plain_loss.backward()));

    let mut tape = BlockCheckpointing::new(&c.model, seed);
    let ckpt_loss = loss(&c, false, &mut |x, ctx, s| tape.forward(x, ctx, s, Some(t([4.0, 2.0])), &c.rope));
    let value = ckpt_loss.clone().into_scalar();
    let grads = tape.backward(ckpt_loss);
    compare("dropout", &c, plain.clone(), (value, gradients(&c, &grads)));

    // And dropout really acted: the loss without it differs.
    let no_dropout = case(Targets::Blocks, 0.0);
    let l = loss(&no_dropout, false, &mut |x, ctx, s| {
        no_dropout.model.forward(x, ctx, s, Some(t([4.0, 2.0])), &no_dropout.rope)
    })
    .into_scalar();
    assert!((l - plain.0).abs() > 1e-4, "dropout changed nothing ({l} vs {})", plain.0);
}
