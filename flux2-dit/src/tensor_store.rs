//! Memory-mapped safetensors files with one key index across shards.
//!
//! Tensors are read straight from the mapping, one at a time, so loading a 64 GB checkpoint needs the
//! page cache and one tensor of heap, never a second copy of the model.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// One logical checkpoint spread over one or more safetensors files.
pub struct TensorStore {
    files: Vec<MappedFile>,
    entries: HashMap<String, Entry>,
    used: BTreeSet<String>,
    /// `__metadata__` of the first file (string map in the safetensors header).
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore").field("files", &self.file_list()).field("tensors", &self.entries.len()).finish()
    }
}

impl TensorStore {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut store = TensorStore { files: Vec::new(), entries: HashMap::new(), used: BTreeSet::new(), metadata: HashMap::new() };
        for path in paths {
            store.add_file(path)?;
        }
        Ok(store)
    }

    /// A diffusers-style sharded checkpoint: `<name>.safetensors.index.json` lists the shard of every key.
    pub fn open_index(index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Safetensors { path: index.to_path_buf(), message: format!("bad index json: {e}") })?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Safetensors {
            path: index.to_path_buf(),
            message: "index has no `weight_map` object".into(),
        })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        let paths: Vec<PathBuf> = shards.into_iter().map(|s| dir.join(s)).collect();
        Self::open(&paths)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only; a checkpoint modified by another process while we read it
        // is outside what any loader can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            message: match tensor_past_end(&mmap) {
                Some(detail) => format!("{e}: {detail} (a truncated download?)"),
                None => e.to_string(),
            },
        })?;
        let index = self.files.len();
        if index == 0 {
            self.metadata = meta.metadata().clone().unwrap_or_default();
        }
        for (name, info) in meta.tensors() {
            let (begin, end) = info.data_offsets;
            self.entries.insert(name, Entry { file: index, dtype: info.dtype, shape: info.shape.clone(), begin, end });
        }
        self.files.push(MappedFile { path: path.to_path_buf(), mmap, data_start: 8 + header_len });
        Ok(())
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    pub fn file_list(&self) -> String {
        self.files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    pub fn file_of(&self, key: &str) -> PathBuf {
        self.entries.get(key).map(|e| self.files[e.file].path.clone()).unwrap_or_default()
    }

    /// Reads `key` as host data converted to `dtype`; marks the key used.
    pub fn read(&mut self, key: &str, dtype: DType) -> Result<TensorData> {
        let entry = self
            .entries
            .get(key)
            .ok_or_else(|| Error::MissingKey { key: key.to_string(), files: self.file_list() })?
            .clone();
        let file = &self.files[entry.file];
        let bytes = file
            .mmap
            .get(file.data_start + entry.begin..file.data_start + entry.end)
            .ok_or_else(|| Error::Safetensors { path: file.path.clone(), message: format!("tensor `{key}` lies outside the file") })?;
        let stored = match entry.dtype {
            Dtype::F32 => DType::F32,
            Dtype::BF16 => DType::BF16,
            Dtype::F16 => DType::F16,
            Dtype::F64 => DType::F64,
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            other => {
                return Err(Error::UnsupportedDtype { key: key.to_string(), file: file.path.clone(), dtype: format!("{other:?}") });
            }
        };
        if dtype.is_float() && !stored.is_float() {
            // An integer tensor where a weight belongs is a wrong or damaged file, not a conversion.
            return Err(Error::UnsupportedDtype {
                key: key.to_string(),
                file: file.path.clone(),
                dtype: format!("{stored:?} (a float weight is expected here)"),
            });
        }
        self.used.insert(key.to_string());
        let data = TensorData::from_bytes_vec(bytes.to_vec(), entry.shape.clone(), stored);
        Ok(if stored == dtype { data } else { data.convert_dtype(dtype) })
    }

    /// Reads `key` as an f32 tensor of rank `D` on `device` (fixture inputs, reference outputs).
    pub fn read_tensor<B: Backend, const D: usize>(&mut self, key: &str, device: &B::Device) -> Result<Tensor<B, D>> {
        let data = self.read(key, DType::F32)?;
        if data.shape.len() != D {
            return Err(Error::Safetensors {
                path: self.file_of(key),
                message: format!("`{key}` has shape {:?}, expected rank {D}", data.shape),
            });
        }
        Ok(Tensor::from_data(data, (device, DType::F32)))
    }

    /// Position ids stored as i64 [B, N, axes] (or [N, axes]); returns batch element 0's, the only ones
    /// the transformer uses.
    pub fn read_position_ids(&mut self, key: &str) -> Result<crate::PositionIds> {
        let data = self.read(key, DType::I64)?;
        let bad = |message: String| Error::Safetensors { path: self.file_of(key), message };
        let (rows, axes) = match data.shape.as_slice() {
            [_, n, a] | [n, a] if *a > 0 => (*n, *a),
            other => return Err(bad(format!("`{key}` has shape {other:?}, expected [B, N, axes]"))),
        };
        let values: Vec<i64> = data.to_vec().map_err(|e| bad(format!("`{key}`: {e:?}")))?;
        Ok(crate::PositionIds::from_flat(values[..rows * axes].to_vec(), axes))
    }

    /// Keys never read, for "unexpected key" errors.
    pub fn unused_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.keys().filter(|k| !self.used.contains(*k)).cloned().collect();
        keys.sort();
        keys
    }
}

/// For a file whose header points past its end: the first such tensor, its end offset and the bytes
/// there are (the safetensors crate only says "not fully covered").
fn tensor_past_end(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let available = bytes.len() - 8 - n;
    let mut past: Vec<(u64, &str)> = header
        .as_object()?
        .iter()
        .filter_map(|(name, info)| Some((info.get("data_offsets")?.get(1)?.as_u64()?, name.as_str())))
        .filter(|(end, _)| *end as usize > available)
        .collect();
    past.sort();
    let (end, name) = past.first()?;
    Some(format!("tensor `{name}` ends at data byte {end}, the file holds {available}"))
}
