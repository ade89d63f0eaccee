//! The shifted-matmul convolution gives the backend convolution's result (own test binary: the
//! algorithm is a process-wide setting).

mod common;

use burn::tensor::{DType, Distribution, Tensor};
use common::{B, fixture, values};
use flux2_vae::parity::{relative_error, run_fixture};
use flux2_vae::{ConvAlgorithm, LoadOptions, Vae, set_band_elements, set_conv_algorithm};

#[test]
fn shifted_matmul_matches_backend_conv() {
    let device = Default::default();
    for case in ["tiny_default", "uneven_decoder", "three_blocks", "bfl_naming"] {
        set_conv_algorithm(ConvAlgorithm::ShiftedMatmul);
        for c in run_fixture::<B>(fixture(case), &device, &LoadOptions::default()).unwrap() {
            assert!(c.rel_err < 1e-4, "{case} {}: rel_err {:e}", c.name, c.rel_err);
        }
        // Also with row bands and in bf16.
        let vae = Vae::<B>::load(fixture(case).join("vae"), &device, &LoadOptions::default().with_dtype(DType::BF16)).unwrap();
        let image = Tensor::<B, 4>::random([1, 3, 48, 32], Distribution::Uniform(-1.0, 1.0), &device);
        set_conv_algorithm(ConvAlgorithm::Backend);
        set_band_elements(usize::MAX);
        let reference = values(vae.encode_image(image.clone()).unwrap());
        set_conv_algorithm(ConvAlgorithm::ShiftedMatmul);
        set_band_elements(100);
        let shifted = values(vae.encode_image(image).unwrap());
        let (err, _) = relative_error(&shifted, &reference);
        assert!(err < 3e-2, "{case} bf16 banded: {err:e}");
        set_band_elements(0);
        set_conv_algorithm(ConvAlgorithm::Auto);
    }
    assert_eq!(flux2_vae::conv_algorithm::conv_algorithm(), ConvAlgorithm::Auto);
}
