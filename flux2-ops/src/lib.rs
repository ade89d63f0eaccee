//! # flux2-ops
//!
//! The foundations the FLUX.2 crates share, each defined once:
//!
//! | module | what | needs Burn |
//! |---|---|---|
//! | [`rng`] | the seeded, counter-based generator (noise, timesteps, shuffles, weight init) | no |
//! | [`atomic_file`] | write-then-rename files; stale temporary files | no |
//! | [`host_memory`] | the process's peak and anonymous resident memory (Linux) | no |
//! | [`store`] | memory-mapped safetensors checkpoints (files, folders, sharded indexes) | yes |
//! | [`writer`] | the streaming, atomic safetensors writer | yes |
//! | [`compare`] | `relative_error`, the measure every parity check reports | slices: no |
//! | [`finite`] | the NaN/Inf check every loader runs | yes |
//! | [`linear`], [`low_rank`] | the [out, in] Linear with its LoRA hook | yes |
//! | [`offload`] | frozen base weights in host memory, uploaded per use (layer offloading) | yes |
//! | [`quant`] | float8 / int8 / uintN base weights (ai-toolkit's qtypes) | yes |
//! | [`matmul`], [`fused_attention`], [`attention`] | backend extensions with generic defaults | yes |
//! | [`fused_norm`], [`fused_gates`] | RMSNorm + RoPE, modulated LayerNorm, SwiGLU, gated residual as single ops | yes |
//! | `cuda` | their CUDA implementations (cuBLAS, NVRTC kernels), feature `cuda` | yes |
//!
//! Model crates (`flux2-dit`, `flux2-vae`, `mistral-encoder`) build on this crate; `dataset-buckets`
//! uses it with `default-features = false` (RNG and atomic files only), so it stays free of Burn.
//! Where a new kernel, model or file format goes: `docs/CONVENTIONS.md`.

pub mod atomic_file;
pub mod compare;
pub mod host_memory;
pub mod rng;

#[cfg(feature = "burn")]
pub mod attention;
#[cfg(feature = "burn")]
mod backend_registry;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "burn")]
pub mod error;
#[cfg(feature = "burn")]
pub mod finite;
#[cfg(feature = "burn")]
pub mod full_training;
#[cfg(feature = "burn")]
pub mod fused_attention;
#[cfg(feature = "burn")]
pub mod fused_gates;
#[cfg(feature = "burn")]
pub mod fused_norm;
#[cfg(feature = "burn")]
pub mod gemm_layout;
#[cfg(any(feature = "flex", feature = "ndarray"))]
mod host_tensor;
#[cfg(feature = "burn")]
pub mod linear;
#[cfg(feature = "burn")]
pub mod low_rank;
#[cfg(feature = "burn")]
pub mod matmul;
#[cfg(feature = "burn")]
pub mod offload;
#[cfg(feature = "burn")]
mod primitive;
#[cfg(feature = "burn")]
pub mod quant;
#[cfg(feature = "burn")]
pub mod store;
#[cfg(feature = "burn")]
pub mod writer;

pub use compare::relative_error_slices;
pub use rng::Rng;

#[cfg(feature = "burn")]
pub use compare::relative_error;
#[cfg(feature = "burn")]
pub use error::{Error, Result};
#[cfg(feature = "burn")]
pub use finite::all_finite;
#[cfg(feature = "burn")]
pub use linear::Linear;
#[cfg(feature = "burn")]
pub use low_rank::{AdapterSwitch, LowRankAdapter};
#[cfg(feature = "burn")]
pub use store::{StoredTensor, TensorStore};
#[cfg(feature = "burn")]
pub use writer::{PendingTensor, write_safetensors, write_safetensors_sparse};
