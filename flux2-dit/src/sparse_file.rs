//! Checkpoint files with the real header and no data, for measuring the loaders' host memory at the real
//! size (issue 17: peak host RSS while loading stays under the memory-mapped file + 8 GiB). The 64.4 GB
//! bf16 FLUX.2 [dev] file does not fit the benchmark machine's disk; a file whose header lists every key,
//! dtype and shape the loader reads, followed by a hole ([`flux2_ops::write_safetensors_sparse`]), takes
//! no disk and reads back as zeros, and loading it costs the same memory (which does not depend on the
//! values).
//!
//! Two layouts: the BFL bf16 file (`flux2-dev.safetensors`: every key of
//! [`Flux2Transformer::checkpoint_layout`]), and the float8 file `flux2-train quantize` writes from it
//! ([`crate::float8_export`]: the block Linears as F8_E4M3 codes with their F32 `weight_scale`, the rest
//! bf16, the `_quantization_metadata` header). Keys are sorted, as both writers order them.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, TensorData, backend::Backend};
use flux2_ops::quant::float8_file::{self, Action};
use flux2_ops::{PendingTensor, write_safetensors_sparse};

use crate::config::Flux2Config;
use crate::error::Result;
use crate::float8_export;
use crate::model::Flux2Transformer;

/// Writes the sparse checkpoint of `config` to `path` (see the module docs): BFL keys without prefix,
/// bf16, or with `float8` the layout `flux2-train quantize` writes. `device` only hosts the builder's
/// zero-element placeholders. Returns the file's length.
pub fn write_sparse_file<B: Backend>(
    config: &Flux2Config,
    float8: bool,
    path: &Path,
    device: &B::Device,
) -> Result<u64> {
    let mut layout = Flux2Transformer::<B>::checkpoint_layout(config, device)?;
    layout.sort();
    let mut tensors = Vec::new();
    let mut float8_modules = Vec::new();
    for (key, shape) in layout {
        if float8 && float8_export::stored_action(&key, &shape) == Action::Float8 {
            let module = key.strip_suffix(".weight").unwrap_or(&key).to_string();
            let (codes, scale) = float8_file::linear_tensors(&module, [shape[0], shape[1]], Vec::new);
            tensors.extend([codes, scale]);
            float8_modules.push(module);
        } else {
            // The data is never produced: the file's data region is a hole.
            let data = Box::new(|| TensorData::new(Vec::<u8>::new(), [0]));
            tensors.push(PendingTensor { name: key, dtype: DType::BF16, shape, float8: false, data });
        }
    }
    let mut metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    if float8 {
        let (key, value) = float8_file::metadata(&float8_modules);
        metadata.insert(key, value);
    }
    Ok(write_safetensors_sparse(path, &tensors, &metadata)?)
}
