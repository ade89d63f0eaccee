//! Measures the two pure-Rust CPU backends on a FLUX.2-architecture forward pass, to pick the default
//! for tests and the embedded demo (numbers in docs/cpu-backend.md).
//!
//! `cargo run --release -p flux2-dit --example cpu_backends`

use std::time::Instant;

use burn::backend::{Flex, NdArray};
use burn::tensor::{DType, Tensor, backend::Backend};
use flux2_dit::{Flux2Config, Flux2Transformer, PositionIds, RandomSource};

fn bench<B: Backend>(name: &str, config: &Flux2Config, (h, w, txt): (usize, usize, usize), batch: usize) -> f64 {
    let device = Default::default();
    let model = Flux2Transformer::<B>::from_source(config, &mut RandomSource::new(0), DType::F32, &device)
        .expect("random init");
    let rope = model.rope(&PositionIds::text(txt), &PositionIds::image(h, w));
    let x = Tensor::<B, 3>::random(
        [batch, h * w, config.in_channels],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let c = Tensor::<B, 3>::random(
        [batch, txt, config.joint_attention_dim],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let t = Tensor::<B, 1>::full([batch], 0.5, &device);
    let g = Tensor::<B, 1>::full([batch], 4.0, &device);
    let run = || {
        let out = model.forward(x.clone(), c.clone(), t.clone(), Some(g.clone()), &rope);
        let _ = out.into_data();
    };
    run();
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        run();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!("{name:8} {:>9.1} ms (median of 5; min {:.1})", times[2], times[0]);
    times[2]
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The demo/test scale: D=128 (4 heads x 32), 2 double + 4 single blocks, 16x16 latents + 64 text tokens.
    let small = Flux2Config {
        num_layers: 2,
        num_single_layers: 4,
        attention_head_dim: 32,
        num_attention_heads: 4,
        in_channels: 64,
        joint_attention_dim: 192,
        axes_dims_rope: vec![8, 8, 8, 8],
        ..Flux2Config::dev()
    };
    // A wider slice: D=512 (8 x 64), 1 double + 2 single blocks, 32x32 latents + 128 text tokens.
    let wide = Flux2Config {
        num_layers: 1,
        num_single_layers: 2,
        attention_head_dim: 64,
        num_attention_heads: 8,
        in_channels: 128,
        joint_attention_dim: 512,
        axes_dims_rope: vec![16, 16, 16, 16],
        ..Flux2Config::dev()
    };
    println!("{threads} threads, f32 forward");
    for (label, config, shape, batch) in [
        ("small D=128 256+64 tok, batch 2", &small, (16, 16, 64), 2),
        ("wide D=512 1024+128 tok, batch 1", &wide, (32, 32, 128), 1),
    ] {
        println!("{label}:");
        let f = bench::<Flex>("flex", config, shape, batch);
        let n = bench::<NdArray>("ndarray", config, shape, batch);
        println!("  ndarray/flex = {:.2}", n / f);
    }
}
