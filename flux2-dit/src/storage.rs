//! How the frozen base weights are held while the model is built and used: quantized
//! ([`flux2_ops::quant`]) and/or, for a share of the blocks, in host memory ([`flux2_ops::offload`]),
//! ai-toolkit's `model.quantize` + `qtype` and `layer_offloading` +
//! `layer_offloading_transformer_percent`.
//!
//! Which blocks are offloaded is fixed, not sampled: the first `round(offload × blocks)` blocks in
//! execution order (the 8 double blocks, then the 48 single ones). Embedders, modulation and the final
//! layer stay on the device: they are 3% of the weights and run once per forward. Each Linear is
//! quantized and then offloaded as soon as it is read, so neither the dense model nor the offloaded
//! share is ever on the device at once (a 24 GB card builds a 32 GB float8 model).

use flux2_ops::quant::QType;

use crate::config::Flux2Config;

/// Storage of the base weights (see the module docs). The default is dense and resident.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BaseStorage {
    /// Every Linear stored as this type.
    pub quantize: Option<QType>,
    /// Share of the blocks (0..=1) whose Linears live in host memory.
    pub offload: f64,
}

impl BaseStorage {
    /// Quantized, resident.
    pub fn quantized(quantize: Option<QType>) -> Self {
        Self { quantize, offload: 0.0 }
    }

    /// How many blocks (from the first in execution order) are offloaded for `config`.
    pub fn offloaded_blocks(&self, config: &Flux2Config) -> usize {
        let blocks = config.num_layers + config.num_single_layers;
        ((self.offload.clamp(0.0, 1.0) * blocks as f64).round() as usize).min(blocks)
    }

    /// Whether the Linear `module` (BFL path) is offloaded for `config`.
    pub fn offloads(&self, config: &Flux2Config, module: &str) -> bool {
        let index = if let Some(rest) = module.strip_prefix("double_blocks.") {
            rest.split('.').next().and_then(|i| i.parse::<usize>().ok())
        } else if let Some(rest) = module.strip_prefix("single_blocks.") {
            rest.split('.').next().and_then(|i| i.parse::<usize>().ok()).map(|j| config.num_layers + j)
        } else {
            None
        };
        index.is_some_and(|i| i < self.offloaded_blocks(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_blocks_in_execution_order_are_offloaded() {
        let c = Flux2Config { num_layers: 8, num_single_layers: 48, ..Flux2Config::default() };
        let half = BaseStorage { quantize: None, offload: 0.5 };
        assert_eq!(half.offloaded_blocks(&c), 28);
        assert!(half.offloads(&c, "double_blocks.7.img_attn.qkv"));
        assert!(half.offloads(&c, "single_blocks.19.linear1"));
        assert!(!half.offloads(&c, "single_blocks.20.linear1"));
        assert!(!half.offloads(&c, "img_in"));
        assert!(!half.offloads(&c, "double_stream_modulation_img.lin"));
        assert_eq!(BaseStorage { quantize: None, offload: 1.0 }.offloaded_blocks(&c), 56);
        assert_eq!(BaseStorage::default().offloaded_blocks(&c), 0);
    }
}

/// Where a built model's base weights are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageReport {
    /// Blocks whose Linears are in host memory, of all blocks.
    pub offloaded_blocks: usize,
    pub blocks: usize,
    /// Bytes of Linear weights (in their stored form) on the device / in host memory.
    pub device_bytes: u64,
    pub host_bytes: u64,
    /// Whether the host copies are page-locked with asynchronous uploads (CUDA).
    pub pinned: bool,
}

impl StorageReport {
    /// Bytes uploaded per training step with block checkpointing (each offloaded block runs twice:
    /// the forward, then the recompute whose graph serves its backward).
    pub fn upload_bytes_per_step(&self) -> u64 {
        2 * self.host_bytes
    }
}

impl<B: burn::tensor::backend::Backend> crate::Flux2Transformer<B> {
    /// Where the base weights are (see [`StorageReport`]).
    pub fn storage_report(&self) -> StorageReport {
        let mut report = StorageReport {
            blocks: self.double_blocks.len() + self.single_blocks.len(),
            pinned: true,
            ..StorageReport::default()
        };
        for (_, linear) in self.linears() {
            match (&linear.offloaded, &linear.quantized) {
                (Some(o), _) => {
                    report.host_bytes += o.host_bytes() as u64;
                    report.pinned &= o.is_pinned();
                }
                (None, Some(q)) => {
                    let bytes = |n: usize, d: burn::tensor::DType| (n * d.size()) as u64;
                    report.device_bytes += bytes(q.codes.shape().num_elements(), q.codes.dtype())
                        + bytes(q.scales.shape().num_elements(), q.scales.dtype())
                        + q.zero_points.as_ref().map_or(0, |z| bytes(z.shape().num_elements(), z.dtype()));
                }
                (None, None) => {
                    let w = linear.weight.val();
                    report.device_bytes += (w.shape().num_elements() * w.dtype().size()) as u64;
                }
            }
        }
        let offloaded = |linears: &[&flux2_ops::Linear<B>]| linears.iter().all(|l| l.offloaded.is_some());
        report.offloaded_blocks = self.double_blocks.iter().filter(|b| offloaded(&b.linears())).count()
            + self.single_blocks.iter().filter(|b| offloaded(&b.linears())).count();
        report.pinned &= report.host_bytes > 0;
        report
    }
}
