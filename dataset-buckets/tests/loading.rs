//! Loading datasets from folders: scan rules, captions, orientation, flips, repeats, resolutions,
//! bad input under both policies, and the epoch sampler.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::*;
use dataset_buckets::{
    BadInputPolicy, CaptionSource, DatasetConfig, DatasetSet, Error, LoadOptions, ProblemKind, SampleRef, Size, Stream,
};

fn load(configs: &[DatasetConfig]) -> Result<DatasetSet, Error> {
    DatasetSet::load(configs, &quiet())
}

fn rel_paths(set: &DatasetSet) -> Vec<String> {
    set.datasets()[0].records().iter().map(|r| r.rel_path.to_string_lossy().replace('\\', "/")).collect()
}

#[test]
fn scan_rules() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "b.png"), 80, 80);
    write_quadrants(&p(root, "A.JPG"), 80, 80);
    write_quadrants(&p(root, "sub/deeper/c.webp"), 80, 80);
    write_quadrants(&p(root, "sub/d.jpeg"), 80, 80);
    write_quadrants(&p(root, ".hidden.png"), 80, 80);
    write_quadrants(&p(root, ".thumbs/e.png"), 80, 80);
    write_quadrants(&p(root, "_latent_cache/f.png"), 80, 80);
    write_quadrants(&p(root, "_controls/g.png"), 80, 80);
    write_text(&p(root, "not_image.png.txt"), "x");
    write_text(&p(root, "notes.md"), "x");
    let set = load(&[DatasetConfig::for_folder(root)]).expect("load");
    assert_eq!(rel_paths(&set), ["A.JPG", "b.png", "sub/d.jpeg", "sub/deeper/c.webp"]);
}

#[test]
fn captions_from_files_with_default_and_trigger() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "a.png"), 80, 80);
    write_text(&p(root, "a.txt"), "a red square\n");
    write_quadrants(&p(root, "b.png"), 80, 80);
    write_quadrants(&p(root, "c.png"), 80, 80);
    write_text(&p(root, "c.txt"), "   ");
    write_quadrants(&p(root, "d.png"), 80, 80);
    write_text(&p(root, "d.caption"), "other extension");
    let mut c = DatasetConfig::for_folder(root);
    c.default_caption = Some("a thing".into());
    c.trigger_word = Some("sks".into());
    let set = load(&[c.clone()]).expect("load");
    let recs = set.datasets()[0].records();
    let got: Vec<(&str, CaptionSource)> = recs.iter().map(|r| (r.caption.as_str(), r.caption_source)).collect();
    assert_eq!(
        got,
        [
            ("sks a red square", CaptionSource::File),
            ("sks a thing", CaptionSource::Default),
            ("sks a thing", CaptionSource::Default),
            ("sks a thing", CaptionSource::Default),
        ]
    );
    c.caption_ext = ".caption".into();
    let set = load(&[c]).expect("load");
    assert_eq!(set.datasets()[0].records()[3].caption, "sks other extension");
}

#[test]
fn exif_orientation_is_applied_to_size_and_pixels() {
    let dir = tempdir();
    let root = dir.path();
    // Stored 160x80 (landscape) with orientation 6 = rotate 90 degrees clockwise to display.
    std::fs::write(p(root, "phone.jpg"), jpeg_with_orientation(160, 80, 6)).expect("write");
    let mut c = DatasetConfig::for_folder(root);
    c.resolution = vec![1024];
    let set = load(&[c]).expect("load");
    let rec = &set.datasets()[0].records()[0];
    assert_eq!(rec.size, Size::new(80, 160), "portrait after orientation");
    let img = set.prepare_image(SampleRef { dataset: 0, sample: 0 }).expect("prepare");
    let s = img.size;
    // After rotating clockwise the stored bottom-left (blue) is at the top-left, and the stored
    // top-left (red) at the top-right.
    let tl = img.pixel(s.width / 4, s.height / 4);
    let tr = img.pixel(3 * s.width / 4, s.height / 4);
    assert!(tl[2] > 200 && tl[0] < 60, "top-left should be blue, is {tl:?}");
    assert!(tr[0] > 200 && tr[2] < 60, "top-right should be red, is {tr:?}");
}

#[test]
fn flips_repeats_and_resolutions_multiply_samples_in_ai_toolkit_order() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "wide.png"), 400, 200);
    write_quadrants(&p(root, "tall.png"), 200, 400);
    let mut c = DatasetConfig::for_folder(root);
    c.flip_x = true;
    c.flip_y = true;
    c.num_repeats = 3;
    c.resolution = vec![128, 256];
    let set = load(&[c]).expect("load");
    let ds = &set.datasets()[0];
    assert_eq!(ds.records().len(), 2);
    assert_eq!(ds.samples().len(), 2 * 4 * 3 * 2);
    // Resolution-major, then flip variant (none, x, y, xy), then repeat, then file.
    let first: Vec<(u32, bool, bool, u32, usize)> =
        ds.samples().iter().take(8).map(|s| (s.resolution, s.flip_x, s.flip_y, s.repeat, s.record)).collect();
    assert_eq!(
        first,
        [
            (128, false, false, 0, 0),
            (128, false, false, 0, 1),
            (128, false, false, 1, 0),
            (128, false, false, 1, 1),
            (128, false, false, 2, 0),
            (128, false, false, 2, 1),
            (128, true, false, 0, 0),
            (128, true, false, 0, 1),
        ]
    );
    let variants: Vec<(bool, bool)> = ds.samples().iter().step_by(6).take(4).map(|s| (s.flip_x, s.flip_y)).collect();
    assert_eq!(variants, [(false, false), (true, false), (false, true), (true, true)]);
    // 200x400 @128: scale to 16384 px -> 90.5 x 181.0 -> 80x192 (15360), 80x176, 96x176 (16896 > cap)...
    let rows: Vec<(u32, Size, usize)> = ds.bucket_rows().iter().map(|r| (r.resolution, r.size, r.samples)).collect();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.2 == 12));
    for r in &rows {
        assert!(r.1.area() <= u64::from(r.0) * u64::from(r.0));
    }
    // Buckets merge equal sizes only; here all four differ.
    assert_eq!(ds.buckets().len(), 4);
}

#[test]
fn flipped_copies_are_mirrored() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "q.png"), 128, 128);
    let mut c = DatasetConfig::for_folder(root);
    c.flip_x = true;
    c.flip_y = true;
    c.resolution = vec![128];
    let set = load(&[c]).expect("load");
    let tl = |sample| {
        let img = set.prepare_image(SampleRef { dataset: 0, sample }).expect("prepare");
        img.pixel(10, 10)
    };
    assert_eq!(tl(0), [255, 0, 0]); // red
    assert_eq!(tl(1), [0, 255, 0]); // x flip: green
    assert_eq!(tl(2), [0, 0, 255]); // y flip: blue
    assert_eq!(tl(3), [255, 255, 255]); // both: white
}

#[test]
fn prepared_image_has_bucket_size_and_centre_crop() {
    let dir = tempdir();
    let root = dir.path();
    // 300x100 @ 64: area capped at 4096 -> bucket 112x32 (from 110.85 x 36.95: 96x32, 96x48, 112x32,
    // 112x48 -> 112x32 = 3584 is closest without exceeding), resized to 112x38, crop y = 3.
    write_quadrants(&p(root, "w.png"), 300, 100);
    let mut c = DatasetConfig::for_folder(root);
    c.resolution = vec![64];
    let options = LoadOptions { min_image_side: 16, ..quiet() };
    let set = DatasetSet::load(&[c], &options).expect("load");
    let s = &set.datasets()[0].samples()[0];
    assert_eq!(s.bucket(), Size::new(112, 32));
    assert_eq!(s.geometry.resize_to, Size::new(112, 38));
    assert_eq!((s.geometry.crop.x, s.geometry.crop.y), (0, 3));
    let img = set.prepare_image(SampleRef { dataset: 0, sample: 0 }).expect("prepare");
    assert_eq!(img.size, Size::new(112, 32));
    assert_eq!(img.rgb.len(), 112 * 32 * 3);
    let chw = img.to_chw_signed();
    assert_eq!(chw.len(), 3 * 112 * 32);
    assert!(chw.iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[test]
fn random_crop_is_seeded_and_fixed_per_sample() {
    let dir = tempdir();
    let root = dir.path();
    // 1000x100 @256: bucket 816x80, resized to 816x82: two rows of slack for the crop.
    write_quadrants(&p(root, "pano.png"), 1000, 100);
    let mut c = DatasetConfig::for_folder(root);
    c.resolution = vec![256];
    c.random_crop = true;
    c.num_repeats = 8;
    let with_seed = |seed| {
        let set = DatasetSet::load(&[c.clone()], &LoadOptions { seed, min_image_side: 16, ..quiet() }).expect("load");
        set.datasets()[0].samples().iter().map(|s| (s.geometry.crop.x, s.geometry.crop.y)).collect::<Vec<_>>()
    };
    let a = with_seed(1);
    assert!(a.iter().all(|&(x, y)| x == 0 && y <= 2));
    assert_eq!(a, with_seed(1));
    assert_ne!(a, with_seed(2));
    // Each repeat draws its own crop, as ai-toolkit's repeated file items do.
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert!(distinct.len() > 1);
}

#[test]
fn bad_input_stops_by_default_naming_every_file() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "good.png"), 80, 80);
    std::fs::write(p(root, "zero.png"), b"").expect("write");
    std::fs::write(p(root, "garbage.jpg"), b"this is not an image at all").expect("write");
    write_text(&p(root, "text.webp"), "hello");
    let mut png = Vec::new();
    quadrants(200, 200).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).expect("png");
    std::fs::write(p(root, "cut.png"), &png[..png.len() / 2]).expect("write");
    let mut jpg = Vec::new();
    quadrants(200, 200).write_to(&mut std::io::Cursor::new(&mut jpg), image::ImageFormat::Jpeg).expect("jpg");
    std::fs::write(p(root, "cut.jpg"), &jpg[..jpg.len() * 2 / 3]).expect("write");
    write_quadrants(&p(root, "tiny.png"), 40, 200);
    write_quadrants(&p(root, "badcap.png"), 80, 80);
    std::fs::write(p(root, "badcap.txt"), [0xff, 0xfe, 0x00, 0xc3]).expect("write");

    let err = load(&[DatasetConfig::for_folder(root)]).expect_err("must stop");
    let Error::BadInput { problems } = &err else { panic!("unexpected error {err}") };
    let by_file: HashMap<String, ProblemKind> =
        problems.iter().map(|p| (p.path.file_name().expect("name").to_string_lossy().into_owned(), p.kind)).collect();
    assert_eq!(by_file.get("zero.png"), Some(&ProblemKind::EmptyFile));
    assert_eq!(by_file.get("garbage.jpg"), Some(&ProblemKind::UnknownFormat));
    assert_eq!(by_file.get("text.webp"), Some(&ProblemKind::UnknownFormat));
    assert_eq!(by_file.get("cut.png"), Some(&ProblemKind::Corrupt));
    assert_eq!(by_file.get("cut.jpg"), Some(&ProblemKind::Corrupt));
    assert_eq!(by_file.get("tiny.png"), Some(&ProblemKind::TooSmall));
    assert_eq!(by_file.get("badcap.txt"), Some(&ProblemKind::CaptionUnreadable));
    assert_eq!(problems.len(), 7, "{err}");
    let message = err.to_string();
    for name in ["zero.png", "garbage.jpg", "text.webp", "cut.png", "cut.jpg", "tiny.png", "badcap.txt"] {
        assert!(message.contains(name), "message must name {name}: {message}");
    }
    assert!(message.contains("on_bad_input: skip"));

    let skip = LoadOptions { on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let set = DatasetSet::load(&[DatasetConfig::for_folder(root)], &skip).expect("skip loads the rest");
    assert_eq!(rel_paths(&set), ["good.png"]);
    assert_eq!(set.problems().len(), 7);
    assert_eq!(set.files_found(), 8);
}

#[test]
fn truncated_jpeg_found_even_without_full_decode() {
    let dir = tempdir();
    let root = dir.path();
    let mut jpg = Vec::new();
    quadrants(200, 200).write_to(&mut std::io::Cursor::new(&mut jpg), image::ImageFormat::Jpeg).expect("jpg");
    std::fs::write(p(root, "cut.jpg"), &jpg[..jpg.len() - 10]).expect("write");
    // Data after the end-of-image marker (motion photos, trailers) is fine.
    let mut trailer = jpg.clone();
    trailer.extend_from_slice(b"trailing bytes of some other container");
    std::fs::write(p(root, "trailer.jpg"), &trailer).expect("write");
    let options = LoadOptions { verify_images: false, on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let set = DatasetSet::load(&[DatasetConfig::for_folder(root)], &options).expect("load");
    assert_eq!(rel_paths(&set), ["trailer.jpg"]);
    assert_eq!(set.problems()[0].kind, ProblemKind::Corrupt);
}

#[test]
fn truncated_webp_is_corrupt() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "ok.webp"), 120, 120);
    let bytes = std::fs::read(p(root, "ok.webp")).expect("read");
    std::fs::write(p(root, "cut.webp"), &bytes[..bytes.len() / 2]).expect("write");
    let options = LoadOptions { on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let set = DatasetSet::load(&[DatasetConfig::for_folder(root)], &options).expect("load");
    assert_eq!(rel_paths(&set), ["ok.webp"]);
    assert_eq!(set.problems().len(), 1);
    assert_eq!(set.problems()[0].path.file_name().and_then(|n| n.to_str()), Some("cut.webp"));
}

#[test]
fn empty_and_missing_folders() {
    let dir = tempdir();
    let root = dir.path();
    write_text(&p(root, "readme.txt"), "no images here");
    let err = load(&[DatasetConfig::for_folder(root)]).expect_err("empty");
    assert!(matches!(err, Error::EmptyDataset { skipped: 0, .. }), "{err}");
    assert!(err.to_string().contains(&root.display().to_string()));

    let missing = root.join("nope");
    let err = load(&[DatasetConfig::for_folder(&missing)]).expect_err("missing");
    assert!(matches!(err, Error::MissingFolder { key: "folder_path", .. }), "{err}");
    assert!(err.to_string().contains("nope"));

    // Everything bad and skipped: still an error, saying how many were skipped.
    std::fs::write(p(root, "zero.png"), b"").expect("write");
    let skip = LoadOptions { on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let err = DatasetSet::load(&[DatasetConfig::for_folder(root)], &skip).expect_err("all skipped");
    assert!(matches!(err, Error::EmptyDataset { skipped: 1, .. }), "{err}");
}

#[test]
fn extreme_aspect_is_reported() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "ok.png"), 64, 64);
    write_quadrants(&p(root, "strip.png"), 8, 4000);
    let mut c = DatasetConfig::for_folder(root);
    c.resolution = vec![64];
    let options = LoadOptions { min_image_side: 1, on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let set = DatasetSet::load(&[c], &options).expect("load");
    assert_eq!(set.problems().len(), 1);
    assert_eq!(set.problems()[0].kind, ProblemKind::ExtremeAspect);
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempdir();
    write_quadrants(&p(dir.path(), "a.png"), 80, 80);
    let mut c = DatasetConfig::for_folder(dir.path());
    c.caption_dropout_rate = 1.5;
    let err = load(&[c]).expect_err("bad rate");
    assert!(err.to_string().contains("caption_dropout_rate"), "{err}");
    let mut c = DatasetConfig::for_folder(dir.path());
    c.cache_text_embeddings = true;
    c.shuffle_tokens = true;
    let err = load(&[c]).expect_err("conflict");
    assert!(err.to_string().contains("cache_text_embeddings"), "{err}");
}

fn sampler_fixture() -> (tempfile::TempDir, Vec<DatasetConfig>) {
    let dir = tempdir();
    let root = dir.path();
    for i in 0..7 {
        write_quadrants(&p(root, &format!("main/w{i}.png")), 128, 64);
    }
    for i in 0..5 {
        write_quadrants(&p(root, &format!("main/t{i}.png")), 64, 128);
    }
    for i in 0..3 {
        write_quadrants(&p(root, &format!("reg/r{i}.png")), 64, 64);
    }
    let mut main = DatasetConfig::for_folder(root.join("main"));
    main.resolution = vec![64];
    main.num_repeats = 2;
    let mut reg = DatasetConfig::for_folder(root.join("reg"));
    reg.resolution = vec![64];
    reg.is_reg = true;
    (dir, vec![main, reg])
}

#[test]
fn epochs_are_seeded_bucket_pure_and_complete() {
    let (_dir, configs) = sampler_fixture();
    let set = DatasetSet::load(&configs, &LoadOptions { seed: 5, ..quiet() }).expect("load");
    let sampler = set.sampler(Stream::Main, 4).without_padding();
    let e0 = sampler.epoch(0);
    assert_eq!(e0, sampler.epoch(0), "same epoch, same batches");
    assert_ne!(e0, sampler.epoch(1), "epochs differ");
    assert_eq!(sampler.batches_per_epoch(), e0.len());
    // 14 wide samples -> 4 batches, 10 tall -> 3 batches.
    assert_eq!(e0.len(), 7);
    let mut count: HashMap<usize, usize> = HashMap::new();
    for b in &e0 {
        assert_eq!(b.dataset, 0, "reg set is not in the main stream");
        for r in &b.samples {
            assert_eq!(set.sample(*r).expect("sample").bucket(), b.bucket, "batch mixes buckets");
            *count.entry(r.sample).or_default() += 1;
        }
    }
    assert_eq!(count.len(), 24);
    assert!(count.values().all(|&c| c == 1), "each sample once per epoch");

    // A new process with the same seed gets the same epochs.
    let again = DatasetSet::load(&configs, &LoadOptions { seed: 5, ..quiet() }).expect("load");
    assert_eq!(again.sampler(Stream::Main, 4).without_padding().epoch(3), sampler.epoch(3));
}

#[test]
fn short_batches_are_padded_like_ai_toolkit() {
    let (_dir, configs) = sampler_fixture();
    let set = DatasetSet::load(&configs, &quiet()).expect("load");
    let batches = set.sampler(Stream::Main, 4).epoch(0);
    assert!(batches.iter().all(|b| b.samples.len() == 4));
    // 14 wide samples: 3 full batches + 2 padded by repeating the batch's own first two.
    let short: Vec<_> = batches
        .iter()
        .filter(|b| {
            let distinct: std::collections::HashSet<_> = b.samples.iter().collect();
            distinct.len() < 4
        })
        .collect();
    assert_eq!(short.len(), 2);
    for b in short {
        assert_eq!(b.samples[2..], b.samples[..2]);
    }
}

#[test]
fn reg_stream_and_dataset_batch_size() {
    let (_dir, mut configs) = sampler_fixture();
    configs[1].batch_size = Some(2);
    let set = DatasetSet::load(&configs, &quiet()).expect("load");
    assert!(set.has_reg());
    let reg = set.sampler(Stream::Reg, 8).epoch(0);
    assert_eq!(reg.len(), 2);
    assert!(reg.iter().all(|b| b.dataset == 1 && b.samples.len() == 2));
    let paths: Vec<PathBuf> =
        reg.iter().flat_map(|b| b.samples.iter()).map(|r| set.record(*r).expect("record").path.clone()).collect();
    assert!(paths.iter().all(|p| p.to_string_lossy().contains("reg")));
}

#[test]
fn ai_toolkit_entry_deserializes() {
    let json = r#"{
        "folder_path": "/data/cats",
        "caption_ext": "txt",
        "caption_dropout_rate": 0.05,
        "shuffle_tokens": false,
        "cache_latents_to_disk": true,
        "resolution": [512, 768, 1024],
        "control_path": "/data/cats_src",
        "num_repeats": 2,
        "loss_multiplier": 1,
        "network_weight": 0.8,
        "trigger_word": "sks",
        "num_workers": 2,
        "square_crop": false,
        "augments": []
    }"#;
    let c: DatasetConfig = serde_json::from_str(json).expect("parse");
    assert_eq!(c.resolution, [512, 768, 1024]);
    assert_eq!(c.control_folders(), [PathBuf::from("/data/cats_src")]);
    assert_eq!(c.num_repeats, 2);
    assert_eq!(c.loss_multiplier, 1.0);
    assert_eq!(c.trigger_word.as_deref(), Some("sks"));
    assert_eq!(c.unsupported_keys(), ["augments", "square_crop"]);
    let single: DatasetConfig =
        serde_json::from_str(r#"{"folder_path": "x", "resolution": 1024, "control_path": null}"#).expect("parse");
    assert_eq!(single.resolution, [1024]);
    assert!(single.control_folders().is_empty());
    let ui: DatasetConfig = serde_json::from_str(
        r#"{"folder_path": "x", "control_path_1": "a", "control_path_2": "b", "control_path": ""}"#,
    )
    .expect("parse");
    assert_eq!(ui.control_folders(), [PathBuf::from("a"), PathBuf::from("b")]);
}

/// A PNG declaring 65000 x 65000 pixels (what a 4 MB file can claim) is refused from its header,
/// before anything is allocated, naming the file and the limit; under `on_bad_input: skip` it is
/// skipped and the rest of the folder loads.
#[test]
fn decompression_bombs_are_refused_before_decoding() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "fine.png"), 80, 80);
    std::fs::write(p(root, "bomb.png"), png_declaring(65_000, 65_000)).unwrap();
    let err = load(&[DatasetConfig::for_folder(root)]).expect_err("must stop");
    let Error::BadInput { problems } = &err else { panic!("unexpected error {err}") };
    assert_eq!(problems.len(), 1, "{err}");
    assert_eq!(problems[0].kind, ProblemKind::TooLarge);
    let message = err.to_string();
    assert!(
        message.contains("bomb.png") && message.contains("65000x65000") && message.contains("FLUX2_MAX_IMAGE_PIXELS"),
        "{message}"
    );

    let skip = LoadOptions { on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let set = DatasetSet::load(&[DatasetConfig::for_folder(root)], &skip).expect("skips the bomb");
    assert_eq!(rel_paths(&set), ["fine.png"]);
    assert_eq!(dataset_buckets::DEFAULT_MAX_IMAGE_PIXELS, 178_956_970, "PIL's limit");
}

/// A named pipe among the images is skipped, and one standing in for a caption is a problem naming
/// it: neither blocks the loader.
#[cfg(unix)]
#[test]
fn named_pipes_do_not_hang_the_loader() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "a.png"), 80, 80);
    write_quadrants(&p(root, "b.png"), 80, 80);
    for fifo in ["pipe.png", "b.txt"] {
        let status = std::process::Command::new("mkfifo").arg(p(root, fifo)).status().expect("mkfifo runs");
        assert!(status.success());
    }
    let err = load(&[DatasetConfig::for_folder(root)]).expect_err("the pipe caption is a problem");
    let Error::BadInput { problems } = &err else { panic!("unexpected error {err}") };
    assert_eq!(problems.len(), 1, "{err}");
    assert_eq!(problems[0].kind, ProblemKind::CaptionUnreadable);
    assert!(err.to_string().contains("b.txt") && err.to_string().contains("not a regular file"), "{err}");
    let skip = LoadOptions { on_bad_input: BadInputPolicy::Skip, ..quiet() };
    let set = DatasetSet::load(&[DatasetConfig::for_folder(root)], &skip).expect("skips");
    assert_eq!(rel_paths(&set), ["a.png"], "pipe.png is not an image file");
}
