//! Every committed diffusers fixture: encode and decode match the reference within 1e-4 (f32), and the
//! bf16 model stays within what PyTorch's own bf16 run gives on these tiny models.

mod common;

use burn::tensor::DType;
use common::{B, all_fixtures, fixture};
use flux2_vae::parity::run_fixture;
use flux2_vae::{LoadOptions, Parts, Vae};

#[test]
fn all_fixtures_match_diffusers_f32() {
    let fixtures = all_fixtures();
    assert!(fixtures.len() >= 8, "expected the committed fixtures, found {fixtures:?}");
    let device = Default::default();
    for dir in fixtures {
        let results = run_fixture::<B>(&dir, &device, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(results.len(), 2, "{}", dir.display());
        for c in results {
            assert!(c.rel_err < 1e-4, "{} {}: rel_err {:e}", dir.display(), c.name, c.rel_err);
        }
    }
}

#[test]
fn bf16_model_stays_close() {
    let device = Default::default();
    for case in ["tiny_default", "bfl_naming", "nonsquare"] {
        let options = LoadOptions::default().with_dtype(DType::BF16);
        let results = run_fixture::<B>(fixture(case), &device, &options).unwrap();
        for c in results {
            // PyTorch bf16 vs f32 on the same fixtures: 7e-3 .. 6.7e-2.
            assert!(c.rel_err < 1e-1, "{case} {}: bf16 rel_err {:e}", c.name, c.rel_err);
        }
    }
}

#[test]
fn f16_model_runs() {
    let device = Default::default();
    let options = LoadOptions::default().with_dtype(DType::F16);
    for c in run_fixture::<B>(fixture("tiny_default"), &device, &options).unwrap() {
        assert!(c.rel_err < 1e-1, "{}: f16 rel_err {:e}", c.name, c.rel_err);
    }
}

#[test]
fn encoder_only_and_decoder_only_loads() {
    let device = Default::default();
    for case in ["tiny_default", "bfl_naming"] {
        let dir = fixture(case);
        let enc =
            Vae::<B>::load(dir.join("vae"), &device, &LoadOptions::default().with_parts(Parts::EncoderOnly)).unwrap();
        let dec =
            Vae::<B>::load(dir.join("vae"), &device, &LoadOptions::default().with_parts(Parts::DecoderOnly)).unwrap();
        let full = Vae::<B>::load(dir.join("vae"), &device, &LoadOptions::default()).unwrap();
        let image = burn::tensor::Tensor::<B, 4>::random(
            [1, 3, 32, 32],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let a = common::values(enc.encode_image(image.clone()).unwrap());
        let b = common::values(full.encode_image(image).unwrap());
        assert_eq!(a, b);
        let latents = full.encode_image(burn::tensor::Tensor::zeros([1, 3, 32, 32], &device)).unwrap();
        let a = common::values(dec.decode_latents(latents.clone()).unwrap());
        let b = common::values(full.decode_latents(latents.clone()).unwrap());
        assert_eq!(a, b);
        assert!(matches!(enc.decode_latents(latents).unwrap_err(), flux2_vae::Error::MissingPart("decoder")));
        let img = burn::tensor::Tensor::<B, 4>::zeros([1, 3, 32, 32], &device);
        assert!(matches!(dec.encode_image(img).unwrap_err(), flux2_vae::Error::MissingPart("encoder")));
    }
}

#[test]
fn batch_items_are_independent() {
    // Batch of two equals the two single-image runs (GroupNorm is per image).
    let device = Default::default();
    let vae = Vae::<B>::load(fixture("batch2_sharded").join("vae"), &device, &LoadOptions::default()).unwrap();
    let image =
        burn::tensor::Tensor::<B, 4>::random([2, 3, 32, 32], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
    let both = common::values(vae.encode_image(image.clone()).unwrap());
    let first = common::values(vae.encode_image(image.clone().narrow(0, 0, 1)).unwrap());
    let second = common::values(vae.encode_image(image.narrow(0, 1, 1)).unwrap());
    assert_eq!(both, [first, second].concat());
}
