//! The shifted-matmul convolution gives the backend convolution's result (own test binary: the
//! algorithm is a process-wide setting).

mod common;

use burn::tensor::{DType, Tensor, TensorData};
use common::{B, fixture, values};
use flux2_vae::parity::{error_measures, run_fixture};
use flux2_vae::{ConvAlgorithm, LoadOptions, Vae, set_band_elements, set_conv_algorithm};

#[test]
fn shifted_matmul_matches_backend_conv() {
    let device = Default::default();
    for case in ["tiny_default", "uneven_decoder", "three_blocks", "bfl_naming"] {
        set_conv_algorithm(ConvAlgorithm::ShiftedMatmul);
        for c in run_fixture::<B>(fixture(case), &device, &LoadOptions::default()).unwrap() {
            assert!(c.rel_err < 1e-4, "{case} {}: rel_err {:e}", c.name, c.rel_err);
        }
        // Also with row bands and in bf16. Two bf16 paths round differently, so each is measured
        // against the f32 result: the shifted path may not be much worse than the backend's own bf16.
        let image = deterministic_image(&device);
        set_conv_algorithm(ConvAlgorithm::Backend);
        set_band_elements(usize::MAX);
        let f32_vae = Vae::<B>::load(fixture(case).join("vae"), &device, &LoadOptions::default()).unwrap();
        let exact = values(f32_vae.encode_image(image.clone()).unwrap());
        drop(f32_vae);
        let vae = Vae::<B>::load(fixture(case).join("vae"), &device, &LoadOptions::default().with_dtype(DType::BF16))
            .unwrap();
        let backend_err = error_measures(&values(vae.encode_image(image.clone()).unwrap()), &exact).0;
        set_conv_algorithm(ConvAlgorithm::ShiftedMatmul);
        set_band_elements(100);
        let shifted_err = error_measures(&values(vae.encode_image(image).unwrap()), &exact).0;
        eprintln!("{case}: bf16 rel err vs f32: backend {backend_err:e}, shifted+banded {shifted_err:e}");
        assert!(
            shifted_err < (2.0 * backend_err).max(1e-2),
            "{case} bf16 banded: {shifted_err:e} vs f32 (backend bf16: {backend_err:e})"
        );
        set_band_elements(0);
        set_conv_algorithm(ConvAlgorithm::Auto);
    }
    assert_eq!(flux2_vae::conv_algorithm::conv_algorithm(), ConvAlgorithm::Auto);
}

/// A smooth, seed-free test image in [-1, 1] so the bf16 comparison does not depend on the RNG.
fn deterministic_image(device: &burn::tensor::Device<B>) -> Tensor<B, 4> {
    let (h, w) = (48usize, 32usize);
    let values: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            ((x as f32 * 0.37 + y as f32 * 0.23 + c as f32).sin() * 0.9).clamp(-1.0, 1.0)
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 3, h, w]), device)
}
