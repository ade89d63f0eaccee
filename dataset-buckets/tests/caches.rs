//! Disk and memory caches: reuse across loads, staleness, damage, atomic writes, text embeddings,
//! control latents, storage dtypes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use dataset_buckets::{
    CacheOptions, CachedTensor, Caches, DatasetConfig, DatasetSet, Entry, EntryStatus, SampleRef, StoreDtype,
    atomic_write, entry_status, read_entry, write_entry,
};
use image::{Rgb, RgbImage};

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn caching_config(root: &Path) -> DatasetConfig {
    let mut c = DatasetConfig::for_folder(root);
    c.resolution = vec![64];
    c.cache_latents_to_disk = true;
    c
}

fn solid(path: &Path, color: [u8; 3]) {
    write_image(path, &RgbImage::from_pixel(96, 96, Rgb(color)));
}

#[test]
fn built_once_reused_by_the_next_load() {
    let dir = tempdir();
    let root = dir.path();
    solid(&p(root, "a.png"), [200, 0, 0]);
    solid(&p(root, "b.png"), [0, 200, 0]);
    let mut c = caching_config(root);
    c.num_repeats = 3; // repeats share one cache file
    c.flip_x = true; // flips get their own
    let vae = FakeVae::new("fake-vae v1");
    {
        let set = DatasetSet::load(&[c.clone()], &quiet()).expect("load");
        let s = Caches::new(CacheOptions::default()).build_latents(&set, &vae).expect("build");
        assert_eq!((s.built, s.reused), (4, 0));
        assert_eq!(vae.calls(), 4);
    }
    let names = files_in(&root.join("_latent_cache"));
    assert_eq!(names.len(), 4);
    assert!(names.iter().all(|n| n.ends_with(".safetensors") && !n.starts_with('.')), "{names:?}");

    // A new load (as a new process would do) reuses everything.
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let caches = Caches::new(CacheOptions::default());
    let s = caches.build_latents(&set, &vae).expect("build");
    assert_eq!((s.built, s.reused, s.rebuilt_stale), (0, 4, 0));
    assert_eq!(vae.calls(), 4);
    let t = caches.latent(&set, SampleRef { dataset: 0, sample: 0 }, &vae).expect("latent");
    assert_eq!(t.shape(), [3, 8, 8]);
    assert!((t.data()[0] - 200.0).abs() < 1.0);
    assert_eq!(vae.calls(), 4, "read from disk, not encoded");
    // The cached value equals a fresh encode of the prepared image.
    let direct = dataset_buckets::LatentEncoder::encode(
        &vae,
        &set.prepare_image(SampleRef { dataset: 0, sample: 5 }).expect("prep"),
    )
    .expect("encode");
    assert_eq!(*caches.latent(&set, SampleRef { dataset: 0, sample: 5 }, &vae).expect("latent"), direct);
}

#[test]
fn edited_image_is_stale_and_rebuilt() {
    let dir = tempdir();
    let root = dir.path();
    solid(&p(root, "a.png"), [200, 0, 0]);
    solid(&p(root, "b.png"), [0, 200, 0]);
    let c = caching_config(root);
    let vae = FakeVae::new("fake-vae v1");
    let set = DatasetSet::load(std::slice::from_ref(&c), &quiet()).expect("load");
    Caches::new(CacheOptions::default()).build_latents(&set, &vae).expect("build");

    solid(&p(root, "a.png"), [0, 0, 200]); // same size, new content
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let caches = Caches::new(CacheOptions::default());
    let s = caches.build_latents(&set, &vae).expect("build");
    assert_eq!((s.reused, s.rebuilt_stale, s.built), (1, 1, 0));
    let t = caches.latent(&set, SampleRef { dataset: 0, sample: 0 }, &vae).expect("latent");
    assert!((t.data().last().copied().unwrap_or_default() - 200.0).abs() < 1.0, "blue now");
    assert_eq!(files_in(&root.join("_latent_cache")).len(), 2, "rebuilt in place, no orphan");
}

#[test]
fn encoder_identity_is_part_of_the_key() {
    let dir = tempdir();
    let root = dir.path();
    solid(&p(root, "a.png"), [1, 2, 3]);
    let set = DatasetSet::load(&[caching_config(root)], &quiet()).expect("load");
    let caches = Caches::new(CacheOptions::default());
    caches.build_latents(&set, &FakeVae::new("vae A")).expect("build");
    let b = FakeVae::new("vae B");
    let s = caches.build_latents(&set, &b).expect("build");
    assert_eq!(s.built, 1);
    assert_eq!(b.calls(), 1);
}

#[test]
fn damaged_files_are_detected_and_rebuilt() {
    let dir = tempdir();
    let root = dir.path();
    solid(&p(root, "a.png"), [1, 2, 3]);
    let set = DatasetSet::load(&[caching_config(root)], &quiet()).expect("load");
    let vae = FakeVae::new("v");
    let caches = Caches::new(CacheOptions::default());
    caches.build_latents(&set, &vae).expect("build");
    let entry = caches.latent_entry(&set, SampleRef { dataset: 0, sample: 0 }, "v").expect("entry");
    assert_eq!(entry_status(&entry.path, &entry.key), EntryStatus::Valid);
    let bytes = std::fs::read(&entry.path).expect("read");
    std::fs::write(&entry.path, &bytes[..bytes.len() - 7]).expect("truncate");
    assert!(matches!(entry_status(&entry.path, &entry.key), EntryStatus::Damaged(_)));
    std::fs::write(&entry.path, b"garbage").expect("garbage");
    assert!(matches!(entry_status(&entry.path, &entry.key), EntryStatus::Damaged(_)));
    let s = caches.build_latents(&set, &vae).expect("rebuild");
    assert_eq!(s.rebuilt_damaged, 1);
    assert_eq!(entry_status(&entry.path, &entry.key), EntryStatus::Valid);
    // `latent` also repairs on demand.
    std::fs::write(&entry.path, &bytes[..10]).expect("truncate");
    let t = caches.latent(&set, SampleRef { dataset: 0, sample: 0 }, &vae).expect("latent");
    assert_eq!(t.shape(), [3, 8, 8]);
    assert_eq!(entry_status(&entry.path, &entry.key), EntryStatus::Valid);
}

fn tensor(n: usize, v: f32) -> CachedTensor {
    CachedTensor::new(vec![n], vec![v; n]).expect("tensor")
}

#[test]
fn atomic_writes_never_expose_partial_files() {
    let dir = tempdir();
    let entry =
        Entry { path: dir.path().join("cache/x_0.safetensors"), key: "k1".into(), source: PathBuf::from("x.png") };
    // A crash mid-write leaves only a hidden temp file: the entry is still missing, not damaged.
    std::fs::create_dir_all(dir.path().join("cache")).expect("mkdir");
    std::fs::write(dir.path().join("cache/.x_0.safetensors.999.0.tmp"), b"half").expect("write");
    assert_eq!(entry_status(&entry.path, "k1"), EntryStatus::Missing);

    // Writers replace the file over and over while a reader checks it: never partial.
    let big = 1 << 16;
    write_entry(&entry, &tensor(big, 1.0), "id", StoreDtype::F32).expect("write");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let entry = entry.clone();
        std::thread::spawn(move || {
            let mut checks = 0;
            while !done.load(Ordering::SeqCst) {
                assert_eq!(entry_status(&entry.path, &entry.key), EntryStatus::Valid);
                let t = read_entry(&entry).expect("read");
                assert!(t.data().iter().all(|v| *v == t.data()[0]), "mixed contents");
                checks += 1;
            }
            checks
        })
    };
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let entry = entry.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    write_entry(&entry, &tensor(big, (w * 100 + i) as f32), "id", StoreDtype::F32).expect("write");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    assert!(reader.join().expect("reader") > 0);
    let leftovers: Vec<String> = files_in(&dir.path().join("cache"))
        .into_iter()
        .filter(|n| n.ends_with(".tmp") && !n.contains(".999."))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    atomic_write(&dir.path().join("cache/plain.bin"), b"abc").expect("write");
    assert_eq!(std::fs::read(dir.path().join("cache/plain.bin")).expect("read"), b"abc");
}

#[test]
fn storage_dtypes_round_trip() {
    let dir = tempdir();
    let values = vec![0.0f32, 1.5, -2.25, 1e-3, 123.456];
    let t = CachedTensor::new(vec![5], values.clone()).expect("tensor");
    for (dtype, tol) in [(StoreDtype::F32, 0.0), (StoreDtype::F16, 0.06), (StoreDtype::Bf16, 0.5)] {
        let entry =
            Entry { path: dir.path().join(format!("{dtype:?}.safetensors")), key: "k".into(), source: PathBuf::new() };
        write_entry(&entry, &t, "id", dtype).expect("write");
        let back = read_entry(&entry).expect("read");
        for (a, b) in back.data().iter().zip(&values) {
            assert!((a - b).abs() <= tol, "{dtype:?}: {a} vs {b}");
        }
    }
    // An empty tensor (e.g. an encoder's output for an empty caption) is a valid entry too.
    let entry = Entry { path: dir.path().join("empty.safetensors"), key: "e".into(), source: PathBuf::new() };
    write_entry(&entry, &CachedTensor::new(vec![0, 4], Vec::new()).expect("tensor"), "id", StoreDtype::F32)
        .expect("write");
    assert_eq!(entry_status(&entry.path, "e"), EntryStatus::Valid);
    assert_eq!(read_entry(&entry).expect("read").shape(), [0, 4]);
}

#[test]
fn memory_only_cache_writes_nothing_and_encodes_once() {
    let dir = tempdir();
    let root = dir.path();
    solid(&p(root, "a.png"), [1, 2, 3]);
    let mut c = DatasetConfig::for_folder(root);
    c.resolution = vec![64];
    c.cache_latents = true;
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let vae = FakeVae::new("v");
    let caches = Caches::new(CacheOptions::default());
    let s = caches.build_latents(&set, &vae).expect("build");
    assert_eq!(s.in_memory, 1);
    for _ in 0..3 {
        caches.latent(&set, SampleRef { dataset: 0, sample: 0 }, &vae).expect("latent");
    }
    assert_eq!(vae.calls(), 1);
    assert!(!root.join("_latent_cache").exists());
}

#[test]
fn uncached_datasets_encode_live() {
    let dir = tempdir();
    let root = dir.path();
    solid(&p(root, "a.png"), [1, 2, 3]);
    let mut c = DatasetConfig::for_folder(root);
    c.resolution = vec![64];
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let vae = FakeVae::new("v");
    let caches = Caches::new(CacheOptions::default());
    assert_eq!(caches.build_latents(&set, &vae).expect("build"), Default::default());
    caches.latent(&set, SampleRef { dataset: 0, sample: 0 }, &vae).expect("latent");
    caches.latent(&set, SampleRef { dataset: 0, sample: 0 }, &vae).expect("latent");
    assert_eq!(vae.calls(), 2);
    assert!(!root.join("_latent_cache").exists());
}

#[test]
fn chosen_cache_folder_keeps_data_folders_clean() {
    let data = tempdir();
    let cache = tempdir();
    solid(&p(data.path(), "one/a.png"), [1, 2, 3]);
    solid(&p(data.path(), "two/a.png"), [4, 5, 6]); // same stem, different folder
    let mut c = caching_config(data.path());
    c.cache_text_embeddings = true;
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let caches = Caches::new(CacheOptions { folder: Some(cache.path().to_path_buf()), ..Default::default() });
    caches.build_latents(&set, &FakeVae::new("v")).expect("latents");
    caches.build_text(&set, &FakeText::new("t")).expect("text");
    assert_eq!(files_in(&cache.path().join("latents")).len(), 2);
    assert_eq!(files_in(&cache.path().join("text")).len(), 2);
    assert!(!data.path().join("one/_latent_cache").exists());
    assert!(!data.path().join("one/_t_e_cache").exists());
}

#[test]
fn text_embeddings_cached_with_dropout_caption_and_caption_staleness() {
    let dir = tempdir();
    let root = dir.path();
    solid(&p(root, "a.png"), [1, 2, 3]);
    write_text(&p(root, "a.txt"), "a red square");
    solid(&p(root, "b.png"), [1, 2, 3]);
    let mut c = DatasetConfig::for_folder(root);
    c.resolution = vec![64];
    c.trigger_word = Some("sks".into());
    c.default_caption = Some("a thing".into());
    c.caption_dropout_rate = 0.1;
    c.cache_text_embeddings = true;
    let te = FakeText::new("fake-te");
    let set = DatasetSet::load(&[c.clone()], &quiet()).expect("load");
    let caches = Caches::new(CacheOptions::default());
    let s = caches.build_text(&set, &te).expect("build");
    assert_eq!(s.built, 3, "two captions and the dropout caption");
    let a = SampleRef { dataset: 0, sample: 0 };
    assert_eq!(decode_fake_text(&caches.text(&set, a, &te, false).expect("text")), "sks a red square");
    assert_eq!(decode_fake_text(&caches.text(&set, a, &te, true).expect("text")), "sks");
    assert_eq!(te.calls(), 3, "served from disk");

    write_text(&p(root, "a.txt"), "a blue square");
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let s = caches.build_text(&set, &te).expect("build");
    assert_eq!((s.rebuilt_stale, s.reused), (1, 2));
    assert_eq!(decode_fake_text(&caches.text(&set, a, &te, false).expect("text")), "sks a blue square");
}

#[test]
fn control_latents_are_cached_per_flip() {
    let dir = tempdir();
    let root = dir.path();
    write_quadrants(&p(root, "t/x.png"), 96, 96);
    write_quadrants(&p(root, "c/x.png"), 128, 64);
    let mut c = caching_config(&root.join("t"));
    c.control_path = vec![root.join("c")];
    c.flip_x = true;
    let set = DatasetSet::load(&[c], &quiet()).expect("load");
    let vae = FakeVae::new("v");
    let caches = Caches::new(CacheOptions::default());
    let s = caches.build_latents(&set, &vae).expect("build");
    assert_eq!(s.built, 4, "target + control, plain + flipped");
    assert_eq!(files_in(&root.join("c/_latent_cache")).len(), 2);
    let ctl = caches.control_latents(&set, SampleRef { dataset: 0, sample: 1 }, &vae).expect("controls");
    assert_eq!(ctl.len(), 1);
    assert_eq!(ctl[0].shape(), [3, 8, 16]);
    assert_eq!(vae.calls(), 4);
}

/// A writer killed mid-write leaves `.<file>.<pid>.<n>.tmp` behind: the next build removes those of
/// processes that no longer exist and keeps a live writer's (another run sharing the dataset).
#[cfg(target_os = "linux")]
#[test]
fn temporary_files_of_killed_writers_are_removed() {
    let dir = tempdir();
    let root = dir.path();
    solid(&p(root, "a.png"), [200, 0, 0]);
    let cache = root.join("_latent_cache");
    std::fs::create_dir_all(&cache).unwrap();
    // No Linux pid reaches 999999999 (pid_max is at most 2^22); pid 1 always exists.
    let dead = ".a_0.safetensors.999999999.0.tmp";
    let live = ".a_0.safetensors.1.3.tmp";
    write_text(&cache.join(dead), "half");
    write_text(&cache.join(live), "being written");
    let set = DatasetSet::load(&[caching_config(root)], &quiet()).expect("load");
    Caches::new(CacheOptions::default()).build_latents(&set, &FakeVae::new("v")).expect("build");
    let names = files_in(&cache);
    assert!(!names.contains(&dead.to_string()), "{names:?}");
    assert!(names.contains(&live.to_string()), "{names:?}");
}
