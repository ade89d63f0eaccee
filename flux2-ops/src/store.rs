//! Memory-mapped safetensors checkpoints (one file, a folder, or a sharded `index.json` set) seen as one
//! key -> tensor map, with per-tensor reads and dtype conversion.
//!
//! Nothing is read eagerly: opening parses headers only, and a tensor's bytes are touched when it is
//! read, so loading a 64 GB checkpoint needs the page cache and one tensor of heap, never a second copy
//! of the model. Every error names the file and the key; a truncated download names the first tensor
//! that lies past the file's end (the safetensors crate only says "not fully covered").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// One safetensors file: its path, and (once opened) the mapping and the header's entries.
struct Shard {
    path: PathBuf,
    mapped: OnceLock<MappedFile>,
}

struct MappedFile {
    mmap: Mmap,
    data_start: usize,
    entries: HashMap<String, Entry>,
    /// `__metadata__` (string map in the safetensors header).
    metadata: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// A stored tensor's raw view: its file, stored dtype, shape and little-endian bytes.
pub struct StoredTensor<'a> {
    pub path: &'a Path,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

/// One logical checkpoint spread over one or more safetensors files.
///
/// Files given directly are opened (headers parsed) at once. The shards of an index are opened when
/// one of their keys is first asked for, so shards that hold only weights a model never reads (the
/// layers of Mistral Small that FLUX.2 does not run, its vision tower) may be absent.
pub struct TensorStore {
    /// The `index.json` the shards come from, if any (for errors).
    index: Option<PathBuf>,
    shards: Vec<Shard>,
    /// key -> index into `shards`.
    keys: HashMap<String, usize>,
    /// Keys read so far (for "unexpected key" errors and for tests that check unrun layers stay unread).
    used: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore").field("files", &self.file_list()).field("tensors", &self.keys.len()).finish()
    }
}

/// Burn's dtype for a stored one, for the dtypes a weight or fixture can have.
pub fn burn_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::BF16 => DType::BF16,
        Dtype::F16 => DType::F16,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        _ => return None,
    })
}

fn map_file(path: &Path) -> Result<MappedFile> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the mapping is read-only; a checkpoint modified by another process while we read it is
    // outside what any loader can guard against.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: match tensor_past_end(&mmap) {
            Some(detail) => format!("{e}: {detail} (a truncated download?)"),
            None => e.to_string(),
        },
    })?;
    let entries = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (begin, end) = info.data_offsets;
            (name, Entry { dtype: info.dtype, shape: info.shape.clone(), begin, end })
        })
        .collect();
    let metadata = meta.metadata().clone().unwrap_or_default();
    Ok(MappedFile { mmap, data_start: 8 + header_len, entries, metadata })
}

impl TensorStore {
    fn empty(index: Option<PathBuf>) -> Self {
        TensorStore { index, shards: Vec::new(), keys: HashMap::new(), used: Mutex::new(BTreeSet::new()) }
    }

    /// The files `paths`, as one key space (a key in two files is an error).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut store = Self::empty(None);
        for path in paths {
            let mapped = map_file(path)?;
            let index = store.shards.len();
            for name in mapped.entries.keys() {
                if let Some(previous) = store.keys.insert(name.clone(), index) {
                    return Err(Error::Safetensors {
                        path: path.to_path_buf(),
                        message: format!("tensor `{name}` also appears in {}", store.shards[previous].path.display()),
                    });
                }
            }
            store.shards.push(Shard { path: path.to_path_buf(), mapped: OnceLock::from(mapped) });
        }
        Ok(store)
    }

    /// One `.safetensors` file.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(&[path.as_ref().to_path_buf()])
    }

    /// A sharded checkpoint: `<name>.safetensors.index.json` lists the shard of every key. Shard names
    /// must be plain file names next to the index; a shard is opened when one of its keys is first
    /// needed, and must hold the keys listed for it.
    pub fn open_index(index: &Path) -> Result<Self> {
        let bad = |message: String| Error::Safetensors { path: index.to_path_buf(), message };
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("bad index json: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("index has no `weight_map` object".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut store = Self::empty(Some(index.to_path_buf()));
        let mut shard_of_file: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, file) in map {
            let file = file.as_str().ok_or_else(|| bad(format!("weight_map[`{key}`] is not a file name")))?;
            if file.contains('/') || file.contains('\\') || file.contains("..") {
                return Err(bad(format!("shard name `{file}` is not a plain file name")));
            }
            let shard = *shard_of_file.entry(file).or_insert_with(|| {
                store.shards.push(Shard { path: dir.join(file), mapped: OnceLock::new() });
                store.shards.len() - 1
            });
            store.keys.insert(key.clone(), shard);
        }
        if store.shards.is_empty() {
            return Err(bad("`weight_map` is empty".into()));
        }
        Ok(store)
    }

    /// A checkpoint folder: its `*.safetensors.index.json` when there is one, otherwise every
    /// `*.safetensors` file in it.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        if let Some(index) = names.iter().find(|n| n.ends_with(".safetensors.index.json")) {
            return Self::open_index(&dir.join(index));
        }
        let files: Vec<PathBuf> = names.iter().filter(|n| n.ends_with(".safetensors")).map(|n| dir.join(n)).collect();
        if files.is_empty() {
            return Err(Error::NoFiles { dir: dir.to_path_buf() });
        }
        Self::open(&files)
    }

    /// Shard `i`, opened on first use.
    fn mapped(&self, i: usize) -> Result<&MappedFile> {
        let shard = &self.shards[i];
        if let Some(mapped) = shard.mapped.get() {
            return Ok(mapped);
        }
        if let Some(index) = self.index.as_ref().filter(|_| !shard.path.is_file()) {
            return Err(Error::Safetensors {
                path: index.clone(),
                message: format!("shard `{}` listed in the index does not exist", shard.path.display()),
            });
        }
        let mapped = map_file(&shard.path)?;
        Ok(shard.mapped.get_or_init(|| mapped))
    }

    fn entry(&self, key: &str) -> Result<(&Shard, &MappedFile, &Entry)> {
        let i =
            *self.keys.get(key).ok_or_else(|| Error::MissingKey { key: key.to_string(), files: self.file_list() })?;
        let mapped = self.mapped(i)?;
        let entry = mapped.entries.get(key).ok_or_else(|| Error::Safetensors {
            path: self.index.clone().unwrap_or_else(|| self.shards[i].path.clone()),
            message: format!(
                "`{key}` is listed in `{}` but that shard does not hold it",
                self.shards[i].path.display()
            ),
        })?;
        Ok((&self.shards[i], mapped, entry))
    }

    /// `__metadata__` of the first file (empty when it has none or cannot be opened).
    pub fn metadata(&self) -> HashMap<String, String> {
        self.mapped(0).map(|m| m.metadata.clone()).unwrap_or_default()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The stored shape of `key` (`None` when absent or its shard cannot be read; [`Self::get`] says why).
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entry(key).ok().map(|(_, _, e)| e.shape.as_slice())
    }

    /// The stored dtype of `key` (`None` as for [`Self::shape`]).
    pub fn dtype(&self, key: &str) -> Option<Dtype> {
        self.entry(key).ok().map(|(_, _, e)| e.dtype)
    }

    /// The first file (for messages about the checkpoint as a whole).
    pub fn path(&self) -> &Path {
        self.shards.first().map(|f| f.path.as_path()).unwrap_or(Path::new("<no file>"))
    }

    pub fn file_list(&self) -> String {
        self.shards.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// The file holding `key` (the first file for an unknown key).
    pub fn file_of(&self, key: &str) -> PathBuf {
        self.keys.get(key).map_or_else(|| self.path().to_path_buf(), |&i| self.shards[i].path.clone())
    }

    /// `key`'s raw view (no conversion); does not mark the key used.
    pub fn get(&self, key: &str) -> Result<StoredTensor<'_>> {
        let (shard, mapped, entry) = self.entry(key)?;
        let bytes =
            mapped.mmap.get(mapped.data_start + entry.begin..mapped.data_start + entry.end).ok_or_else(|| {
                Error::Safetensors {
                    path: shard.path.clone(),
                    message: format!("tensor `{key}` lies outside the file (a truncated download?)"),
                }
            })?;
        Ok(StoredTensor { path: &shard.path, dtype: entry.dtype, shape: &entry.shape, bytes })
    }

    /// Reads `key` as host data converted to `dtype`; marks the key used. An integer tensor where a
    /// float is asked for is an error (a wrong or damaged file, not a conversion).
    pub fn read(&self, key: &str, dtype: DType) -> Result<TensorData> {
        let stored = self.get(key)?;
        let unsupported = |what: String| Error::UnsupportedDtype {
            key: key.to_string(),
            file: stored.path.to_path_buf(),
            dtype: what,
        };
        let from = burn_dtype(stored.dtype).ok_or_else(|| unsupported(format!("{:?}", stored.dtype)))?;
        if dtype.is_float() && !from.is_float() {
            return Err(unsupported(format!("{from:?} (a float weight is expected here)")));
        }
        let data = TensorData::from_bytes_vec(stored.bytes.to_vec(), stored.shape.to_vec(), from);
        self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string());
        Ok(if from == dtype { data } else { data.convert_dtype(dtype) })
    }

    /// Reads `key` in its stored dtype (any dtype [`burn_dtype`] knows, integers included); marks it used.
    pub fn read_as_stored(&self, key: &str) -> Result<TensorData> {
        let stored = self.get(key)?;
        let dtype = burn_dtype(stored.dtype).ok_or_else(|| Error::UnsupportedDtype {
            key: key.to_string(),
            file: stored.path.to_path_buf(),
            dtype: format!("{:?}", stored.dtype),
        })?;
        self.read(key, dtype)
    }

    /// [`Self::read`] after checking the stored shape is `expected`.
    pub fn read_shaped(&self, key: &str, expected: &[usize], dtype: DType) -> Result<TensorData> {
        match self.shape(key) {
            Some(actual) if actual != expected => Err(Error::Shape {
                key: key.to_string(),
                file: self.file_of(key),
                expected: expected.to_vec(),
                actual: actual.to_vec(),
            }),
            _ => self.read(key, dtype),
        }
    }

    /// Reads `key` as an f32 tensor of rank `D` on `device` (fixture inputs, reference outputs).
    pub fn read_tensor<B: Backend, const D: usize>(&self, key: &str, device: &B::Device) -> Result<Tensor<B, D>> {
        let data = self.read(key, DType::F32)?;
        if data.shape.len() != D {
            return Err(Error::Safetensors {
                path: self.file_of(key),
                message: format!("`{key}` has shape {:?}, expected rank {D}", data.shape),
            });
        }
        Ok(Tensor::from_data(data, (device, DType::F32)))
    }

    /// Marks `key` used without reading it (a tensor consumed through [`Self::get`], or one a format
    /// defines and this project does not need); unknown keys are ignored.
    pub fn mark_used(&self, key: &str) {
        if self.keys.contains_key(key) {
            self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string());
        }
    }

    /// Keys read so far, sorted.
    pub fn used_keys(&self) -> Vec<String> {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// Keys never read, sorted, for "unexpected key" errors.
    pub fn unused_keys(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<String> = self.keys.keys().filter(|k| !used.contains(*k)).cloned().collect();
        keys.sort();
        keys
    }
}

/// For a file whose header points past its end: the first such tensor, its end offset and the bytes
/// there are.
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
