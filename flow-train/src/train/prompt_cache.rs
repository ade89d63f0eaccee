//! Caption embeddings on disk (`cache_text_embeddings`): every caption variant a run needs (with its
//! trigger, DOP class and dropout variants) and every sample prompt is written once to the dataset's
//! cache, keyed by content, so a rerun or a resume whose prompts are all cached never loads the text
//! encoder (36 GB of FLUX.2 [dev]'s 30 encoder layers in bf16).
//!
//! The key is everything the embedding depends on: the encoder's identity (model path or repository,
//! which fixes its weights and tokenizer; dtype; qtype; random-weights seed), the stacked layers, the
//! token length and the text. The file name is a digest of the key, and the key itself is stored in the
//! file and checked on reading, so an edited caption or a changed setting is a miss, never a wrong hit.
//! Writes are atomic (dataset-buckets' cache writer).

use std::path::{Path, PathBuf};

use dataset_buckets::{CachedTensor, Entry, StoreDtype, read_entry, write_entry};

/// Folder of the caption embeddings, inside a dataset folder (next to the latent cache's `_latent_cache`).
pub const FOLDER: &str = "_t_e_cache/prompts";

/// A content-keyed store of caption embeddings.
#[derive(Debug, Clone)]
pub struct PromptDisk {
    dir: PathBuf,
    /// Encoder identity, layers and length: the key of every entry without its text.
    settings: String,
}

impl PromptDisk {
    /// Embeddings of the encoder `identity` stacking `layers` over `max_length` tokens, under `dir`.
    pub fn new(dir: PathBuf, identity: &str, layers: &[usize], max_length: usize) -> Self {
        PromptDisk { dir, settings: format!("{identity} | layers {layers:?} | {max_length} tokens") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, caption: &str) -> Entry {
        let key = format!("{} | {caption}", self.settings);
        let digest = blake3::hash(key.as_bytes()).to_hex();
        Entry { path: self.dir.join(format!("{}.safetensors", &digest[..32])), key, source: self.dir.clone() }
    }

    /// The stored embedding of `caption`, if any (a file with another key or an unreadable file is a
    /// miss: it is recomputed and rewritten).
    pub fn load(&self, caption: &str) -> Option<CachedTensor> {
        let entry = self.entry(caption);
        if !entry.path.is_file() {
            return None;
        }
        read_entry(&entry).ok()
    }

    /// Stores the embedding of `caption` (f32, bit-exact on reloading).
    pub fn store(&self, caption: &str, tensor: &CachedTensor) -> Result<(), String> {
        write_entry(&self.entry(caption), tensor, &self.settings, StoreDtype::F32).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_keyed_by_every_setting_and_the_text() {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = PromptDisk::new(dir.path().to_path_buf(), "model bf16", &[10, 20, 30], 512);
        let t = CachedTensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("shape");
        assert!(disk.load("a sks ring").is_none());
        disk.store("a sks ring", &t).expect("store");
        assert_eq!(disk.load("a sks ring").expect("hit").data(), t.data());
        assert!(disk.load("a ring").is_none(), "another text");
        for other in [
            PromptDisk::new(dir.path().to_path_buf(), "model bf16 te-qfloat8", &[10, 20, 30], 512),
            PromptDisk::new(dir.path().to_path_buf(), "model bf16", &[10, 20], 512),
            PromptDisk::new(dir.path().to_path_buf(), "model bf16", &[10, 20, 30], 256),
        ] {
            assert!(other.load("a sks ring").is_none(), "{other:?}");
        }
    }
}
