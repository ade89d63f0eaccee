//! Property tests of the bucket invariants over random sizes, resolutions and divisibilities.

use dataset_buckets::{ControlRules, CropPlacement, Rng, Size, bucket_for_size, control_geometry, plan_geometry};
use proptest::prelude::*;

fn divisibility() -> impl Strategy<Value = u32> {
    prop_oneof![Just(8u32), Just(16), Just(32), Just(64)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Sides are positive multiples of the divisibility; a fitting bucket's area is at most res^2.
    #[test]
    fn bucket_area_and_divisibility(w in 1u32..20_000, h in 1u32..20_000, res in 16u32..2049, d in divisibility()) {
        let fit = bucket_for_size(w, h, res, d);
        prop_assert!(fit.size.width > 0 && fit.size.height > 0);
        prop_assert_eq!(fit.size.width % d, 0);
        prop_assert_eq!(fit.size.height % d, 0);
        if fit.fits {
            prop_assert!(fit.size.area() <= u64::from(res) * u64::from(res));
        }
    }

    /// A bucket always fits when both scaled sides are at least one divisibility unit.
    #[test]
    fn fits_unless_a_scaled_side_is_below_one_unit(w in 1u32..20_000, h in 1u32..20_000, res in 16u32..2049, d in divisibility()) {
        let total = f64::from(w) * f64::from(h);
        let s = (total.min(f64::from(res) * f64::from(res)) / total).sqrt();
        let (sw, sh) = (f64::from(w) * s, f64::from(h) * s);
        if sw >= f64::from(d) && sh >= f64::from(d) {
            prop_assert!(bucket_for_size(w, h, res, d).fits);
        }
    }

    /// The bucket's aspect ratio differs from the image's by at most the rounding of each side to the
    /// divisibility grid: each bucket side is within one unit `d` of the scaled side.
    #[test]
    fn aspect_error_bounded(w in 64u32..12_000, h in 64u32..12_000, res in 256u32..2049, d in divisibility()) {
        let total = f64::from(w) * f64::from(h);
        let s = (total.min(f64::from(res) * f64::from(res)) / total).sqrt();
        let (sw, sh) = (f64::from(w) * s, f64::from(h) * s);
        prop_assume!(sw > 2.0 * f64::from(d) && sh > 2.0 * f64::from(d));
        let b = bucket_for_size(w, h, res, d).size;
        let df = f64::from(d);
        prop_assert!((f64::from(b.width) - sw).abs() < df + 1e-9);
        prop_assert!((f64::from(b.height) - sh).abs() < df + 1e-9);
        let err = ((f64::from(b.width) / f64::from(b.height)).ln() - (sw / sh).ln()).abs();
        let bound = -(1.0 - df / sw).ln() - (1.0 - df / sh).ln();
        prop_assert!(err <= bound + 1e-12, "{}x{} -> {}: error {} > bound {}", w, h, b, err, bound);
    }

    /// No upscaling beyond rounding: the bucket area exceeds the image area by less than one unit row
    /// and column of the grid.
    #[test]
    fn small_images_are_not_upscaled(w in 16u32..1024, h in 16u32..1024, d in divisibility()) {
        let res = 2048;
        let b = bucket_for_size(w, h, res, d).size;
        prop_assert!(b.width < w + d && b.height < h + d);
    }

    /// The resized image covers the bucket, and the crop (center or random) lies inside it.
    #[test]
    fn crop_inside_resized(w in 1u32..12_000, h in 1u32..12_000, res in 16u32..2049, d in divisibility(), seed in any::<u64>()) {
        let fit = bucket_for_size(w, h, res, d);
        prop_assume!(fit.fits);
        let source = Size::new(w, h);
        let mut rng = Rng::new(seed);
        for g in [
            plan_geometry(source, fit.size, CropPlacement::Center),
            plan_geometry(source, fit.size, CropPlacement::Random(&mut rng)),
        ] {
            prop_assert!(g.resize_to.width >= fit.size.width && g.resize_to.height >= fit.size.height);
            prop_assert!(g.crop.x + g.crop.width <= g.resize_to.width);
            prop_assert!(g.crop.y + g.crop.height <= g.resize_to.height);
            prop_assert_eq!(g.bucket(), fit.size);
            // The resize keeps the aspect ratio up to the rounding of one side.
            let ar_src = f64::from(w) / f64::from(h);
            let ar_dst = f64::from(g.resize_to.width) / f64::from(g.resize_to.height);
            let tol = 2.0 / f64::from(g.resize_to.width.min(g.resize_to.height)) + 1e-9;
            prop_assert!((ar_dst / ar_src - 1.0).abs() <= tol, "{} vs {}", ar_src, ar_dst);
        }
    }

    /// Control images: within the area cap, sides multiples of 16, crop inside the resized image.
    #[test]
    fn control_rules(w in 1u32..10_000, h in 1u32..10_000) {
        let rules = ControlRules::default();
        match control_geometry(Size::new(w, h), &rules) {
            Ok(g) => {
                prop_assert!(w >= 64 && h >= 64);
                prop_assert!(f64::from(w.max(h)) / f64::from(w.min(h)) <= 8.0);
                prop_assert!(g.size().area() <= rules.max_pixels);
                prop_assert_eq!(g.size().width % 16, 0);
                prop_assert_eq!(g.size().height % 16, 0);
                prop_assert!(g.crop.x + g.crop.width <= g.resize_to.width);
                prop_assert!(g.crop.y + g.crop.height <= g.resize_to.height);
                prop_assert!(g.resize_to.width <= w && g.resize_to.height <= h);
            }
            Err(_) => {
                prop_assert!(w < 64 || h < 64 || f64::from(w.max(h)) / f64::from(w.min(h)) > 8.0);
            }
        }
    }
}
