//! Edit datasets: targets matched to control images by stem, control size rules, the error listing
//! targets without controls, flips applied to controls too.

mod common;

use common::*;
use dataset_buckets::{
    BadInputPolicy, ControlRules, DatasetConfig, DatasetSet, Error, LoadOptions, ProblemKind, SampleRef, Size,
    control_geometry,
};
use image::{Rgb, RgbImage};

#[test]
fn controls_matched_by_stem_in_every_folder() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "target/a.png"), 96, 96);
    write_quadrants(&p(root, "target/sub/b.jpg"), 96, 96);
    write_quadrants(&p(root, "src1/a.jpg"), 128, 64);
    write_quadrants(&p(root, "src1/b.webp"), 64, 128);
    write_quadrants(&p(root, "src2/a.png"), 80, 80);
    write_quadrants(&p(root, "src2/b.PNG"), 80, 80);
    let mut c = DatasetConfig::for_folder(root.join("target"));
    c.control_path = vec![root.join("src1"), root.join("src2")];
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let recs = set.datasets()[0].records();
    assert_eq!(recs.len(), 2);
    let names = |i: usize| -> Vec<String> {
        recs[i].controls.iter().map(|c| c.path.strip_prefix(root).expect("under root").display().to_string()).collect()
    };
    assert_eq!(names(0), ["src1/a.jpg", "src2/a.png"]);
    assert_eq!(names(1), ["src1/b.webp", "src2/b.PNG"]);
    // Controls keep their own sizes (floored to multiples of 16), independent of the target bucket.
    let controls = set.prepare_controls(SampleRef { dataset: 0, sample: 0 }).expect("controls");
    assert_eq!(controls.iter().map(|c| c.size).collect::<Vec<_>>(), [Size::new(128, 64), Size::new(80, 80)]);
}

#[test]
fn missing_controls_are_listed_in_one_error() {
    let dir = tempdir();
    let root = dir.path();
    for name in ["a", "b", "c", "d"] {
        write_quadrants(&p(root, &format!("target/{name}.png")), 96, 96);
    }
    write_quadrants(&p(root, "src/a.png"), 96, 96);
    write_quadrants(&p(root, "src/c.png"), 96, 96);
    let mut c = DatasetConfig::for_folder(root.join("target"));
    c.control_path = vec![root.join("src")];
    let err = DatasetSet::load(&[c.clone()], &quiet()).expect_err("missing controls");
    let Error::BadInput { problems } = &err else { panic!("{err}") };
    let missing: Vec<String> = problems
        .iter()
        .filter(|p| p.kind == ProblemKind::MissingControl)
        .map(|p| p.path.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(missing, ["b.png", "d.png"]);
    let message = err.to_string();
    assert!(message.contains("b.png") && message.contains("d.png"), "{message}");
    assert!(message.contains(&root.join("src").display().to_string()), "names the control folder: {message}");

    let skip = LoadOptions { on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let set = DatasetSet::load(&[c], &skip).expect("skip");
    assert_eq!(set.datasets()[0].records().len(), 2);
}

#[test]
fn ambiguous_and_unusable_controls() {
    let dir = tempdir();
    let root = dir.path();
    for name in ["dup", "small", "thin", "ok"] {
        write_quadrants(&p(root, &format!("target/{name}.png")), 96, 96);
    }
    write_quadrants(&p(root, "src/dup.png"), 96, 96);
    write_quadrants(&p(root, "src/dup.jpg"), 96, 96);
    write_quadrants(&p(root, "src/small.png"), 40, 96);
    write_quadrants(&p(root, "src/thin.png"), 900, 100);
    write_quadrants(&p(root, "src/ok.png"), 96, 96);
    let mut c = DatasetConfig::for_folder(root.join("target"));
    c.control_path = vec![root.join("src")];
    let skip = LoadOptions { on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let set = DatasetSet::load(&[c], &skip).expect("load");
    let mut kinds: Vec<(String, ProblemKind)> = set
        .problems()
        .iter()
        .map(|p| (p.path.file_name().expect("name").to_string_lossy().into_owned(), p.kind))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("dup.png".to_string(), ProblemKind::AmbiguousControl),
            ("small.png".to_string(), ProblemKind::BadControl),
            ("thin.png".to_string(), ProblemKind::BadControl),
        ]
    );
    assert_eq!(set.datasets()[0].records().len(), 1);
}

#[test]
fn control_folder_inside_dataset_is_not_trained_on() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "a.png"), 96, 96);
    write_quadrants(&p(root, "control/a.png"), 96, 96);
    let mut c = DatasetConfig::for_folder(root);
    c.control_path = vec![root.join("control")];
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    assert_eq!(set.datasets()[0].records().len(), 1);
}

#[test]
fn missing_control_folder_is_an_error() {
    let dir = tempdir();
    write_quadrants(&p(dir.path(), "t/a.png"), 96, 96);
    let mut c = DatasetConfig::for_folder(dir.path().join("t"));
    c.control_path = vec![dir.path().join("nowhere")];
    let err = DatasetSet::load(&[c], &quiet()).expect_err("missing");
    assert!(matches!(err, Error::MissingFolder { key: "control_path", .. }), "{err}");
}

/// FLUX.2 reference rules, worked by hand.
#[test]
fn control_geometry_rules() {
    let rules = ControlRules::default();
    // Under the cap: only floored to multiples of 16, cropped in the middle.
    let g = control_geometry(Size::new(1000, 700), &rules).expect("ok");
    assert_eq!(g.resize_to, Size::new(1000, 700));
    assert_eq!(g.size(), Size::new(992, 688));
    assert_eq!((g.crop.x, g.crop.y), (4, 6));
    // 4000x3000: s = sqrt(1048576 / 12e6) = 0.295603 -> 1182.41 x 886.81 -> 1182x886 -> 1168x880.
    let g = control_geometry(Size::new(4000, 3000), &rules).expect("ok");
    assert_eq!(g.resize_to, Size::new(1182, 886));
    assert_eq!(g.size(), Size::new(1168, 880));
    assert_eq!((g.crop.x, g.crop.y), (7, 3));
    // Limits: min side 64, aspect ratio 8.
    assert!(control_geometry(Size::new(63, 500), &rules).is_err());
    assert!(control_geometry(Size::new(64, 512), &rules).is_ok());
    assert!(control_geometry(Size::new(64, 513), &rules).is_err());
}

#[test]
fn controls_flip_with_their_target_and_transparency_uses_the_background() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "t/x.png"), 96, 96);
    write_quadrants(&p(root, "c1/x.png"), 96, 96);
    write_rgba_png(&p(root, "c2/x.png"), &transparent(64, 64));
    let mut c = DatasetConfig::for_folder(root.join("t"));
    c.control_path = vec![root.join("c1"), root.join("c2")];
    c.flip_x = true;
    c.control_transparent_color = [10, 20, 30];
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let plain = set.prepare_controls(SampleRef { dataset: 0, sample: 0 }).expect("controls");
    let flipped = set.prepare_controls(SampleRef { dataset: 0, sample: 1 }).expect("controls");
    assert!(set.sample(SampleRef { dataset: 0, sample: 1 }).expect("sample").flip_x);
    assert_eq!(plain[0].pixel(5, 5), [255, 0, 0]);
    assert_eq!(flipped[0].pixel(5, 5), [0, 255, 0]);
    assert_eq!(plain[1].pixel(0, 0), [10, 20, 30]);
}

#[test]
fn large_controls_are_capped() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "t/x.png"), 96, 96);
    write_image(&p(root, "c/x.png"), &RgbImage::from_pixel(300, 200, Rgb([9, 9, 9])));
    let mut c = DatasetConfig::for_folder(root.join("t"));
    c.control_path = vec![root.join("c")];
    let options = LoadOptions { control: ControlRules { max_pixels: 128 * 128, ..Default::default() }, ..quiet() };
    let set = DatasetSet::load(&[c], &options).expect("load");
    let ctl = &set.prepare_controls(SampleRef { dataset: 0, sample: 0 }).expect("controls")[0];
    // s = sqrt(16384 / 60000) = 0.52256 -> 156x104 -> 144x96.
    assert_eq!(ctl.size, Size::new(144, 96));
    assert!(ctl.size.area() <= 128 * 128);
}
