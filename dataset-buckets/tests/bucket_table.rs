//! Concrete bucket sizes against numbers recorded from ai-toolkit.
//!
//! The rows were printed by `tools/datasets/record_bucket_table.py`, which calls ai-toolkit's own
//! `get_bucket_for_image_size` (toolkit/buckets.py, divisibility 16) for the bucket and applies the
//! documented resize/crop rule (larger scale factor, sides rounded up, center offsets rounded down)
//! for the last four columns. A few rows are worked by hand below to show why they are what they are.

use dataset_buckets::{CropPlacement, Size, bucket_for_size, plan_geometry};

/// (width, height, resolution, bucket_w, bucket_h, resize_w, resize_h, crop_x, crop_y)
type Row = (u32, u32, u32, u32, u32, u32, u32, u32, u32);

const TABLE: &[Row] = &[
    (1024, 1024, 1024, 1024, 1024, 1024, 1024, 0, 0),
    (1024, 1024, 512, 512, 512, 512, 512, 0, 0),
    (1024, 1024, 768, 768, 768, 768, 768, 0, 0),
    (4000, 3000, 1024, 1168, 896, 1195, 897, 13, 0),
    (3000, 4000, 1024, 896, 1168, 897, 1195, 0, 13),
    (4000, 3000, 768, 896, 656, 896, 672, 0, 8),
    (4000, 3000, 512, 576, 448, 598, 449, 11, 0),
    (6000, 4000, 1024, 1248, 832, 1248, 832, 0, 0),
    (4000, 6000, 1024, 832, 1248, 832, 1248, 0, 0),
    (1920, 1080, 1024, 1360, 768, 1366, 768, 3, 0),
    (1080, 1920, 1024, 768, 1360, 768, 1366, 0, 3),
    (1920, 1080, 768, 1024, 576, 1024, 576, 0, 0),
    (1920, 1080, 512, 672, 384, 683, 384, 5, 0),
    (3840, 2160, 1024, 1360, 768, 1366, 768, 3, 0),
    (2048, 1536, 1024, 1168, 896, 1195, 896, 13, 0),
    (1536, 2048, 768, 656, 896, 672, 896, 8, 0),
    (800, 600, 1024, 800, 592, 800, 600, 0, 4),
    (600, 800, 1024, 592, 800, 600, 800, 4, 0),
    (640, 480, 512, 576, 448, 598, 448, 11, 0),
    (500, 500, 1024, 496, 512, 512, 512, 8, 0),
    (333, 777, 1024, 336, 768, 336, 784, 0, 8),
    (1001, 999, 1024, 992, 1008, 1011, 1008, 9, 0),
    (1000, 1000, 768, 768, 768, 768, 768, 0, 0),
    (1234, 567, 768, 1136, 512, 1136, 522, 0, 5),
    (567, 1234, 768, 512, 1136, 522, 1136, 5, 0),
    (2500, 1000, 1024, 1632, 640, 1633, 653, 0, 6),
    (1000, 2500, 1024, 640, 1632, 653, 1633, 6, 0),
    (3000, 1000, 1024, 1760, 592, 1776, 592, 8, 0),
    (4096, 1024, 1024, 2048, 512, 2048, 512, 0, 0),
    (1024, 4096, 1024, 512, 2048, 512, 2048, 0, 0),
    (5000, 800, 1024, 2560, 400, 2560, 410, 0, 5),
    (800, 5000, 1024, 400, 2560, 410, 2560, 5, 0),
    (100, 100, 1024, 96, 112, 113, 113, 8, 0),
    (64, 64, 512, 64, 64, 64, 64, 0, 0),
    (70, 130, 512, 64, 144, 78, 144, 7, 0),
    (4032, 3024, 1024, 1168, 896, 1195, 896, 13, 0),
    (3024, 4032, 1024, 896, 1168, 896, 1195, 0, 13),
    (2160, 3840, 768, 576, 1024, 576, 1024, 0, 0),
    (1280, 720, 1024, 1280, 720, 1280, 720, 0, 0),
    (1280, 720, 512, 672, 384, 683, 384, 5, 0),
    (1365, 2048, 1024, 832, 1248, 833, 1249, 0, 0),
    (2048, 1365, 1024, 1248, 832, 1249, 833, 0, 0),
    (1500, 1499, 1024, 1024, 1024, 1025, 1024, 0, 0),
    (1025, 1025, 1024, 1024, 1024, 1024, 1024, 0, 0),
    (1023, 1023, 1024, 1024, 1024, 1024, 1024, 0, 0),
    (12000, 9000, 1024, 1168, 896, 1195, 896, 13, 0),
    (768, 1344, 1024, 768, 1344, 768, 1344, 0, 0),
    (1344, 768, 1024, 1344, 768, 1344, 768, 0, 0),
];

#[test]
fn matches_recorded_ai_toolkit_numbers() {
    for &(w, h, res, bw, bh, rw, rh, cx, cy) in TABLE {
        let fit = bucket_for_size(w, h, res, 16);
        assert!(fit.fits, "{w}x{h}@{res}");
        assert_eq!(fit.size, Size::new(bw, bh), "bucket of {w}x{h} at {res}");
        let g = plan_geometry(Size::new(w, h), fit.size, CropPlacement::Center);
        assert_eq!(g.resize_to, Size::new(rw, rh), "resize of {w}x{h} at {res}");
        assert_eq!((g.crop.x, g.crop.y), (cx, cy), "crop offset of {w}x{h} at {res}");
        assert_eq!((g.crop.width, g.crop.height), (bw, bh));
    }
}

/// Worked by hand.
/// - 4000x3000 @1024: area 12e6 > 1024^2 so s = sqrt(1048576/12e6) = 0.29560; sides 1182.4 x 886.8,
///   / 16 = 73.9 x 55.4 -> candidates 1168x880 (1027840), 1168x896 (1046528), 1184x880 (1041920),
///   1184x896 (1060864 > cap, dropped); closest to 1048576 is 1168x896.
/// - 500x500 @1024: smaller than the cap, so no upscaling: target 250000, 500/16 = 31.25 ->
///   496x496 (246016), 496x512 (253952), 512x496 (253952), 512x512 (262144). 496x512 and 512x496 tie
///   at distance 3952; the earlier candidate wins, so a square image gets a 496x512 bucket.
/// - 1023x1023 @1024: target 1046529; 63.94 -> 1008 or 1024: 1024x1024 (distance 2047) beats
///   1008x1024 (distance 14337) and fits the cap, so this one is slightly upscaled.
#[test]
fn hand_worked_rows() {
    assert_eq!(bucket_for_size(4000, 3000, 1024, 16).size, Size::new(1168, 896));
    assert_eq!(bucket_for_size(500, 500, 1024, 16).size, Size::new(496, 512));
    assert_eq!(bucket_for_size(1023, 1023, 1024, 16).size, Size::new(1024, 1024));
}

/// Divisibility is a parameter: ai-toolkit's SD1 value 64 gives coarser buckets.
#[test]
fn other_divisibility() {
    // 4000x3000 @1024 with d = 64: 18.47 x 13.86 units -> 1152x832 (958464), 1152x896 (1032192),
    // 1216x832 (1011712), 1216x896 (1089536 > cap); closest is 1152x896.
    assert_eq!(bucket_for_size(4000, 3000, 1024, 64).size, Size::new(1152, 896));
}

/// Strips: a 4x16384 image at 1024 still fits (16x16384 = 262144 px, widened to one 16-px unit), but
/// a 2x600000 strip's scaled width (1.87 px) floors to 0 and the 16-px-wide candidate has 8.97 Mpx,
/// above the cap: ai-toolkit then falls back to (16, floored height), here marked as not fitting.
/// (Both values recorded from ai-toolkit's function.)
#[test]
fn extreme_aspect_takes_marked_fallback() {
    let strip = bucket_for_size(4, 16384, 1024, 16);
    assert!(strip.fits);
    assert_eq!(strip.size, Size::new(16, 16384));
    let fit = bucket_for_size(2, 600_000, 1024, 16);
    assert!(!fit.fits);
    assert_eq!(fit.size, Size::new(16, 560_864));
    let fit = bucket_for_size(10, 5000, 64, 16);
    assert!(!fit.fits);
    assert_eq!(fit.size, Size::new(16, 1424));
}
