//! Patchify layout and inverse, latent normalization inverse, tiling, random init.

mod common;

use burn::tensor::{DType, Distribution, Tensor, TensorData};
use common::{B, fixture, values};
use flux2_vae::{LatentNorm, LoadOptions, Parts, TileOptions, Vae, VaeConfig, patchify, unpatchify};

#[test]
fn patchify_channel_order_is_c4_py2_px() {
    let device = Default::default();
    let (c, h, w) = (3, 4, 6);
    let data: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
    let z = Tensor::<B, 4>::from_data(TensorData::new(data, [1, c, h, w]), (&device, DType::F32));
    let p = patchify(z.clone()).unwrap();
    assert_eq!(p.dims(), [1, 4 * c, h / 2, w / 2]);
    let pv = values(p.clone());
    for ch in 0..c {
        for py in 0..2 {
            for px in 0..2 {
                for i in 0..h / 2 {
                    for j in 0..w / 2 {
                        let out = pv[((ch * 4 + py * 2 + px) * (h / 2) + i) * (w / 2) + j];
                        let src = (ch * h + 2 * i + py) * w + 2 * j + px;
                        assert_eq!(out, src as f32);
                    }
                }
            }
        }
    }
    assert_eq!(values(unpatchify(p).unwrap()), values(z));
}

#[test]
fn patchify_round_trips_random_batches_exactly() {
    let device = Default::default();
    for dims in [[2, 32, 8, 6], [1, 4, 2, 2], [3, 1, 10, 4]] {
        let z = Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let back = unpatchify(patchify(z.clone()).unwrap()).unwrap();
        assert_eq!(values(back), values(z));
    }
    assert!(patchify(Tensor::<B, 4>::zeros([1, 2, 3, 4], &device)).is_err());
    assert!(unpatchify(Tensor::<B, 4>::zeros([1, 6, 3, 4], &device)).is_err());
}

#[test]
fn normalization_inverts() {
    let device = Default::default();
    let mean = Tensor::<B, 1>::random([8], Distribution::Normal(0.0, 1.0), &device);
    let var = Tensor::<B, 1>::random([8], Distribution::Uniform(0.1, 3.0), &device);
    let norm = LatentNorm::from_stats(mean, var, 1e-4);
    let z = Tensor::<B, 4>::random([2, 2, 6, 4], Distribution::Normal(0.0, 2.0), &device);
    let back = norm.decode(norm.encode(z.clone()).unwrap()).unwrap();
    for (a, b) in values(back).iter().zip(values(z)) {
        assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
    assert!(norm.normalize(Tensor::zeros([1, 4, 2, 2], &device)).is_err());
}

#[test]
fn tiling_with_one_tile_is_exact_and_small_tiles_stay_close() {
    let device = Default::default();
    let vae = Vae::<B>::load(fixture("nonsquare").join("vae"), &device, &LoadOptions::default()).unwrap();
    let image = Tensor::<B, 4>::random([1, 3, 64, 96], Distribution::Uniform(-1.0, 1.0), &device);
    let whole = TileOptions { tile_size: 128, overlap: 32 };
    let plain = values(vae.encode_image(image.clone()).unwrap());
    assert_eq!(values(vae.encode_image_tiled(image.clone(), &whole).unwrap()), plain);
    let tiled = vae.encode_image_tiled(image, &TileOptions { tile_size: 48, overlap: 16 }).unwrap();
    assert_eq!(tiled.dims(), [1, 16, 4, 6]);
    let (rel, _) = flux2_vae::parity::error_measures(&values(tiled), &plain);
    assert!(rel.is_finite() && rel < 1.0, "tiled encode rel_err {rel}");

    let latents = Tensor::<B, 4>::random([2, 16, 4, 6], Distribution::Normal(0.0, 1.0), &device);
    let plain = values(vae.decode_latents(latents.clone()).unwrap());
    assert_eq!(values(vae.decode_latents_tiled(latents.clone(), &whole).unwrap()), plain);
    let tiled = vae.decode_latents_tiled(latents, &TileOptions { tile_size: 48, overlap: 16 }).unwrap();
    assert_eq!(tiled.dims(), [2, 3, 64, 96]);
    let (rel, _) = flux2_vae::parity::error_measures(&values(tiled), &plain);
    assert!(rel.is_finite() && rel < 1.0, "tiled decode rel_err {rel}");

    let bad = TileOptions { tile_size: 40, overlap: 16 };
    assert!(vae.decode_latents_tiled(Tensor::zeros([1, 16, 4, 6], &device), &bad).is_err());
    let bad = TileOptions { tile_size: 32, overlap: 32 };
    assert!(vae.encode_image_tiled(Tensor::zeros([1, 3, 64, 96], &device), &bad).is_err());
}

#[test]
fn random_vae_is_deterministic_and_shaped_like_flux2() {
    let device = Default::default();
    let mut cfg = VaeConfig::flux2();
    cfg.block_out_channels = vec![32, 32, 64, 64];
    let a = Vae::<B>::random(cfg.clone(), &device, DType::F32, Parts::Both, 7).unwrap();
    let b = Vae::<B>::random(cfg, &device, DType::F32, Parts::Both, 7).unwrap();
    let image = Tensor::<B, 4>::random([1, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &device);
    let la = a.encode_image(image.clone()).unwrap();
    assert_eq!(la.dims(), [1, 128, 2, 2]);
    assert_eq!(values(la.clone()), values(b.encode_image(image).unwrap()));
    let out = a.decode_latents(la).unwrap();
    assert_eq!(out.dims(), [1, 3, 32, 32]);
    assert!(values(out).iter().all(|v| v.is_finite()));
}
