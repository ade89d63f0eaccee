//! Memory-mapped safetensors files (one file or a sharded set) and per-tensor dtype conversion.
//!
//! Nothing is read eagerly: headers are parsed at open time, and a tensor's bytes are touched only when
//! it is converted, so peak host memory while loading is one converted tensor, not the checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::error::{Error, Result};

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    metadata: Metadata,
}

/// A set of safetensors files seen as one name -> tensor map.
pub struct TensorStore {
    files: Vec<MappedFile>,
    /// tensor name -> index into `files`
    names: HashMap<String, usize>,
}

/// A stored tensor: its file, dtype, shape and raw little-endian bytes.
pub struct StoredTensor<'a> {
    pub path: &'a Path,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl TensorStore {
    /// Maps one `.safetensors` file.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut store = Self { files: Vec::new(), names: HashMap::new() };
        store.add_file(path.as_ref())?;
        Ok(store)
    }

    /// Maps all shards named by a diffusers/transformers `*.safetensors.index.json`.
    pub fn open_index(index_path: impl AsRef<Path>) -> Result<Self> {
        let index_path = index_path.as_ref();
        let bad = |reason: String| Error::ShardIndex { path: index_path.into(), reason };
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        // shard file -> names the index promises in it
        let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| bad(format!("`{name}` maps to a non-string")))?;
            if file.contains('/') || file.contains('\\') || file.contains("..") {
                return Err(bad(format!("shard name `{file}` is not a plain file name")));
            }
            shards.entry(file.to_string()).or_default().push(name.clone());
        }
        if shards.is_empty() {
            return Err(bad("`weight_map` is empty".into()));
        }
        let mut store = Self { files: Vec::new(), names: HashMap::new() };
        for (file, names) in &shards {
            let shard = dir.join(file);
            if !shard.is_file() {
                return Err(bad(format!("shard `{file}` does not exist next to the index")));
            }
            let idx = store.add_file(&shard)?;
            for name in names {
                if store.names.get(name) != Some(&idx) {
                    return Err(bad(format!("`{name}` is listed in `{file}` but that shard does not hold it")));
                }
            }
        }
        Ok(store)
    }

    fn add_file(&mut self, path: &Path) -> Result<usize> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; as with every mmap-based loader, the file must not be truncated
        // while the store is alive.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::Safetensors { path: path.into(), reason: e.to_string() })?;
        let idx = self.files.len();
        for name in metadata.tensors().keys() {
            if let Some(prev) = self.names.insert(name.clone(), idx) {
                return Err(Error::Safetensors {
                    path: path.into(),
                    reason: format!("tensor `{name}` also appears in {}", self.files[prev].path.display()),
                });
            }
        }
        self.files.push(MappedFile { path: path.into(), mmap, data_start: 8 + header_len, metadata });
        Ok(idx)
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// Whether `name` is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// The first file (for error messages about the checkpoint as a whole).
    pub fn path(&self) -> &Path {
        self.files.first().map(|f| f.path.as_path()).unwrap_or(Path::new("<empty>"))
    }

    /// Shape of a stored tensor.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let f = &self.files[*self.names.get(name)?];
        f.metadata.info(name).map(|i| i.shape.as_slice())
    }

    /// A stored tensor converted to `dtype` (F32, BF16 or F16), with its stored shape.
    pub fn load_data(&self, name: &str, dtype: DType) -> Result<TensorData> {
        let t = self.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path().into(),
            key: name.into(),
            stored: name.into(),
        })?;
        t.to_data(name, t.shape, dtype)
    }

    /// A stored tensor's raw view.
    pub fn get(&self, name: &str) -> Option<StoredTensor<'_>> {
        let f = &self.files[*self.names.get(name)?];
        let info = f.metadata.info(name)?;
        let (start, end) = info.data_offsets;
        let bytes = &f.mmap[f.data_start + start..f.data_start + end];
        Some(StoredTensor { path: &f.path, dtype: info.dtype, shape: &info.shape, bytes })
    }
}

impl StoredTensor<'_> {
    /// Converts the bytes to `target` (F32, BF16 or F16) as host data of shape `shape`
    /// (same element count as stored; the caller has checked the shape).
    pub fn to_data(&self, name: &str, shape: &[usize], target: DType) -> Result<TensorData> {
        let unsupported = || Error::UnsupportedDtype {
            path: self.path.into(),
            stored: name.into(),
            dtype: format!("{:?}", self.dtype),
        };
        let b = self.bytes;
        // Decode to f32 unless the stored dtype already is the target (then copy bits unchanged).
        let to_f32 = || -> Result<Vec<f32>> {
            Ok(match self.dtype {
                Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                Dtype::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                Dtype::F64 => b
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                    .collect(),
                _ => return Err(unsupported()),
            })
        };
        let shape = shape.to_vec();
        Ok(match (target, self.dtype) {
            (DType::F32, _) => TensorData::new(to_f32()?, shape),
            (DType::BF16, Dtype::BF16) => {
                TensorData::new(b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>(), shape)
            }
            (DType::F16, Dtype::F16) => {
                TensorData::new(b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>(), shape)
            }
            (DType::BF16, _) => {
                TensorData::new(to_f32()?.into_iter().map(bf16::from_f32).collect::<Vec<_>>(), shape)
            }
            (DType::F16, _) => TensorData::new(to_f32()?.into_iter().map(f16::from_f32).collect::<Vec<_>>(), shape),
            (other, _) => return Err(Error::ModelDtype(other)),
        })
    }
}
