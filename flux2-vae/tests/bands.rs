//! Row-banded computation gives the same result as whole-tensor computation (own test binary: the band
//! size is a process-wide setting).

mod common;

use burn::tensor::{Distribution, Tensor};
use common::{B, fixture, values};
use flux2_vae::parity::error_measures;
use flux2_vae::{LoadOptions, Vae, set_band_elements};

#[test]
fn banded_equals_unbanded() {
    let device = Default::default();
    for case in ["tiny_default", "uneven_decoder", "three_blocks"] {
        let vae = Vae::<B>::load(fixture(case).join("vae"), &device, &LoadOptions::default()).unwrap();
        let image = Tensor::<B, 4>::random([2, 3, 48, 80], Distribution::Uniform(-1.0, 1.0), &device);
        let f = vae.config().latent_scale_factor();
        let c = vae.config().patchified_channels();
        let latents = Tensor::<B, 4>::random([1, c, 48 / f, 80 / f], Distribution::Normal(0.0, 1.0), &device);
        set_band_elements(usize::MAX);
        let enc_whole = values(vae.encode_image(image.clone()).unwrap());
        let dec_whole = values(vae.decode_latents(latents.clone()).unwrap());
        // Bands of one or two rows: every halo, edge and odd-row case is exercised.
        for band in [1, 300, 1000] {
            set_band_elements(band);
            let enc = values(vae.encode_image(image.clone()).unwrap());
            let dec = values(vae.decode_latents(latents.clone()).unwrap());
            let (e1, _) = error_measures(&enc, &enc_whole);
            let (e2, _) = error_measures(&dec, &dec_whole);
            assert!(e1 < 1e-5 && e2 < 1e-5, "{case} band {band}: encode {e1:e} decode {e2:e}");
        }
        set_band_elements(0);
    }
}
