//! Streaming, atomic safetensors writer: the header is computed from shapes alone, then tensors are
//! written one at a time, so saving never holds a second copy of the model. The file appears under its
//! final name only when complete ([`crate::atomic_file`]), so a crash never leaves a half-written checkpoint.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use burn::tensor::{DType, TensorData};

use crate::atomic_file::write_atomic_with;
use crate::error::{Error, Result};

/// One tensor to write: name, dtype, shape, and a closure producing its data on demand.
pub struct PendingTensor<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// `U8` data written as `F8_E4M3` (float8 e4m3fn codes, see [`crate::quant::float8_file`]): Burn has
    /// no float8 dtype, so the codes travel as bytes.
    pub float8: bool,
    pub data: Box<dyn FnOnce() -> TensorData + 'a>,
}

impl PendingTensor<'static> {
    /// A tensor whose host data is already at hand, written as `dtype`.
    pub fn ready(name: impl Into<String>, data: TensorData, dtype: DType) -> Self {
        Self { name: name.into(), dtype, shape: data.shape.to_vec(), float8: false, data: Box::new(move || data) }
    }
}

fn dtype_name(dtype: DType, tensor: &str, path: &Path) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "F32",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        DType::F64 => "F64",
        DType::I64 => "I64",
        DType::I32 => "I32",
        DType::U8 => "U8",
        DType::I8 => "I8",
        other => {
            return Err(Error::UnsupportedDtype {
                key: tensor.to_string(),
                file: path.to_path_buf(),
                dtype: format!("{other:?} (cannot be saved)"),
            });
        }
    })
}

fn file_dtype(t: &PendingTensor<'_>, path: &Path) -> Result<&'static str> {
    match (t.float8, t.dtype) {
        (false, dtype) => dtype_name(dtype, &t.name, path),
        (true, DType::U8) => Ok("F8_E4M3"),
        (true, other) => Err(Error::UnsupportedDtype {
            key: t.name.clone(),
            file: path.to_path_buf(),
            dtype: format!("{other:?} (float8 codes are written from U8 data)"),
        }),
    }
}

/// The header (length prefix excluded, padded to 8 bytes) of a file holding `tensors` in order, and the
/// length of their data.
fn header(tensors: &[PendingTensor<'_>], metadata: &BTreeMap<String, String>, path: &Path) -> Result<(Vec<u8>, u64)> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("string map serializes"));
    }
    let mut offset = 0usize;
    for t in tensors {
        let len = t.shape.iter().product::<usize>() * t.dtype.size();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": file_dtype(t, path)?, "shape": t.shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut header_bytes = serde_json::to_vec(&serde_json::Value::Object(header)).expect("header serializes");
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    Ok((header_bytes, offset as u64))
}

/// Writes `tensors` (in the given order) and `metadata` (the header's `__metadata__`) to `path`.
pub fn write_safetensors(
    path: &Path,
    tensors: Vec<PendingTensor<'_>>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let (header_bytes, _) = header(&tensors, metadata, path)?;

    write_atomic_with(path, |out| {
        out.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
        out.write_all(&header_bytes)?;
        for t in tensors {
            let (dtype, expected) = (t.dtype, t.shape.iter().product::<usize>() * t.dtype.size());
            let data = (t.data)().convert_dtype(dtype);
            let bytes = data.as_bytes();
            if bytes.len() != expected {
                return Err(std::io::Error::other(format!(
                    "tensor `{}`: {} bytes, header says {expected}",
                    t.name,
                    bytes.len()
                )));
            }
            out.write_all(bytes)?;
        }
        Ok(())
    })
    .map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// Writes the header [`write_safetensors`] would write for `tensors` and extends the file to its full
/// length without writing any data (the tensors' data closures are never called): the data region is a
/// hole, which reads back as zeros and takes no disk on file systems with sparse files (ext4, xfs,
/// overlayfs; on tmpfs a read hole still takes memory). For measuring loaders at the real size on a
/// machine whose disk cannot hold the real file (`examples/sparse_checkpoint`); returns the file length.
pub fn write_safetensors_sparse(
    path: &Path,
    tensors: &[PendingTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<u64> {
    let (header_bytes, data_len) = header(tensors, metadata, path)?;
    let len = 8 + header_bytes.len() as u64 + data_len;
    write_atomic_with(path, |out| {
        out.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
        out.write_all(&header_bytes)?;
        out.flush()?;
        out.get_ref().set_len(len)
    })
    .map_err(|source| Error::Write { path: path.to_path_buf(), source })?;
    Ok(len)
}
