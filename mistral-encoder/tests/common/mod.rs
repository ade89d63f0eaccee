//! Committed text-encoder fixtures (`tests/fixtures/text_encoder/`) laid out as plain fixture folders.
//!
//! The committed files are compressed: weights as `*.safetensors.zst` (mostly-zero embedding tables
//! compress to almost nothing) and the real Tekken `tokenizer.json` (17 MB) once for all cases as
//! `tokenizer.json.zst`. Each test decompresses what it needs into a fresh temporary folder.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

pub fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/text_encoder")
}

pub fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_root())
        .expect("tests/fixtures/text_encoder exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("prompts.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn unzstd(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(file))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out
}

/// The real Tekken tokenizer.json bytes.
pub fn tokenizer_json() -> Vec<u8> {
    unzstd(&fixtures_root().join("tokenizer.json.zst"))
}

/// A fresh empty temporary folder (removed by the returned guard).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "mistral-encoder-{tag}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let src = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if src.is_dir() {
            copy_tree(&src, &to.join(&name));
        } else if let Some(stem) = name.strip_suffix(".zst") {
            std::fs::write(to.join(stem), unzstd(&src)).unwrap();
        } else {
            std::fs::copy(&src, to.join(&name)).unwrap();
        }
    }
}

/// Materializes committed case `name` as a plain fixture folder (text_encoder/, tokenizer/tokenizer.json,
/// prompts.json, expected.safetensors).
pub fn materialize(name: &str) -> TempDir {
    let tmp = TempDir::new(name);
    copy_tree(&fixtures_root().join(name), tmp.path());
    let tok_dir = tmp.path().join("tokenizer");
    std::fs::create_dir_all(&tok_dir).unwrap();
    std::fs::write(tok_dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    tmp
}
