//! The autoencoder trains: every weight gets a gradient under autodiff, an optimizer step on the
//! reconstruction loss lowers it, and the trained weights written with `save_diffusers_folder` load back to
//! the same model.

mod common;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{DType, Distribution, Tensor};
use common::{B, values};
use flux2_vae::{LoadOptions, Parts, RandomSource, Vae, VaeConfig, save_diffusers_folder};

type AD = Autodiff<B>;

fn tiny() -> VaeConfig {
    let flux2 = VaeConfig::flux2();
    VaeConfig {
        down_block_types: flux2.down_block_types[..2].to_vec(),
        up_block_types: flux2.up_block_types[..2].to_vec(),
        block_out_channels: vec![8, 8],
        layers_per_block: 1,
        latent_channels: 4,
        norm_num_groups: 4,
        ..flux2
    }
}

fn reconstruction_loss(vae: &Vae<AD>, image: Tensor<AD, 4>) -> Tensor<AD, 1> {
    let z = vae.encode_mean(image.clone()).unwrap();
    let out = vae.decode_raw(z).unwrap();
    (out - image).square().mean()
}

#[test]
fn every_weight_trains_and_saves_back() {
    let device = Default::default();
    let vae = Vae::<AD>::from_source(tiny(), &mut RandomSource::new(3), &device, DType::F32, Parts::Both).unwrap();
    let names = vae.named_parameters().len();
    assert!(names > 20, "{names} named weights");

    // Frozen as loaded: no weight takes part in autodiff.
    let image = Tensor::<AD, 4>::random([2, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &device);
    let grads = reconstruction_loss(&vae, image.clone()).backward();
    assert_eq!(GradientsParams::from_grads(grads, &vae).len(), 0);

    let mut vae = vae.trainable();
    let mut optim = AdamConfig::new().init::<AD, Vae<AD>>();
    let first = values(reconstruction_loss(&vae, image.clone()).inner())[0];
    let mut last = first;
    for _ in 0..8 {
        let loss = reconstruction_loss(&vae, image.clone());
        last = values(loss.clone().inner())[0];
        let grads = GradientsParams::from_grads(loss.backward(), &vae);
        assert_eq!(grads.len(), names, "every named weight has a gradient");
        vae = optim.step(1e-2, vae, grads);
    }
    assert!(last < 0.8 * first, "reconstruction loss {first} -> {last}");

    // Written and loaded again: the same weights and the same decode.
    let dir = tempfile::tempdir().unwrap();
    let trained: Vae<B> = vae.valid();
    save_diffusers_folder(&trained, dir.path(), DType::F32).unwrap();
    let loaded = Vae::<B>::load(dir.path(), &device, &LoadOptions::default()).unwrap();
    let (a, b) = (trained.named_parameters(), loaded.named_parameters());
    assert_eq!(a.len(), b.len());
    for ((na, da), (nb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(da.to_vec::<f32>().unwrap(), db.to_vec::<f32>().unwrap(), "{na}");
    }
    let z = Tensor::<B, 4>::random([1, 16, 2, 2], Distribution::Normal(0.0, 1.0), &device);
    let (x, y) = (trained.decode_latents(z.clone()).unwrap(), loaded.decode_latents(z).unwrap());
    assert_eq!(values(x), values(y));
}
