//! Adapter dropout (PEFT `lora_dropout` on the branch input) acts only while training: on an autodiff
//! backend it randomizes the adapter's delta with the right expectation; without autodiff (inference,
//! sampling) the output is exactly the no-dropout one.

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use flux2_dit::{AdapterSwitch, Linear, LowRankAdapter};

const ROWS: usize = 64;
const IN: usize = 5;
const OUT: usize = 6;
const RANK: usize = 2;

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i + seed) * 7919) % 23) as f32 / 23.0 - 0.5).collect()
}

/// A Linear with one adapter (scale 1.5) and its input.
fn layer<Bk: Backend>(dropout: f64) -> (Linear<Bk>, Tensor<Bk, 2>) {
    let device = Default::default();
    let t = |v: Vec<f32>, shape: [usize; 2]| Tensor::<Bk, 2>::from_data(TensorData::new(v, shape), &device);
    let mut linear = Linear::new(t(values(OUT * IN, 1), [OUT, IN]));
    linear.adapters.push(LowRankAdapter {
        down: Param::from_tensor(t(values(RANK * IN, 2), [RANK, IN])),
        up: Param::from_tensor(t(values(OUT * RANK, 3), [OUT, RANK])),
        scale: 1.5,
        dropout,
        merged: false,
        merged_factor: 0.0,
        name: "d".into(),
        switch: AdapterSwitch::new(1.0),
    });
    (linear, t(values(ROWS * IN, 4), [ROWS, IN]))
}

fn run<Bk: Backend>(linear: &Linear<Bk>, x: &Tensor<Bk, 2>) -> Vec<f32> {
    linear.forward(x.clone()).into_data().to_vec().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn dropout_is_inactive_without_autodiff() {
    let (plain, x) = layer::<Flex>(0.0);
    let (dropped, _) = layer::<Flex>(0.5);
    assert_eq!(run(&dropped, &x), run(&plain, &x));
}

#[test]
fn dropout_randomizes_the_branch_while_training_with_the_right_mean() {
    type AD = Autodiff<Flex>;
    // Fixed masks: the bound below has a ~2x margin over the sampling noise seen with this seed.
    AD::seed(&Default::default(), 7);
    let (plain, x) = layer::<AD>(0.0);
    let reference = run(&plain, &x);
    assert_eq!(run(&plain, &x), reference, "no dropout: deterministic on autodiff too");
    let (mut base, _) = layer::<AD>(0.0);
    base.adapters.clear();
    let base = run(&base, &x);
    let delta_scale = max_abs_diff(&reference, &base);
    assert!(delta_scale > 0.1, "the adapter must matter: {delta_scale}");

    let (dropped, _) = layer::<AD>(0.5);
    let first = run(&dropped, &x);
    let second = run(&dropped, &x);
    assert!(max_abs_diff(&first, &reference) > 1e-3, "dropout must change the training forward");
    assert!(max_abs_diff(&first, &second) > 1e-3, "each step draws a new mask");

    // Inverted dropout: the mean over many masks is the no-dropout output.
    let runs = 2000;
    let mut mean = vec![0f64; reference.len()];
    for _ in 0..runs {
        for (m, v) in mean.iter_mut().zip(run(&dropped, &x)) {
            *m += v as f64 / runs as f64;
        }
    }
    let worst = mean.iter().zip(&reference).map(|(m, r)| (m - *r as f64).abs()).fold(0.0, f64::max);
    println!("mean over {runs} masks: worst |mean - no-dropout| = {worst:.3e}, largest delta {delta_scale:.3e}");
    assert!(worst < 0.05 * delta_scale as f64, "mean off by {worst} (delta up to {delta_scale})");
}
