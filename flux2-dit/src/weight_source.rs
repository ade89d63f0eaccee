//! Where the model's parameters come from while it is built: a checkpoint in either layout, or a
//! seeded random initialisation. The model builder asks for each parameter by its BFL name and shape.

use burn::tensor::{DType, TensorData};

use crate::error::{Error, Result};
use crate::key_map::{diffusers_sources, Rows};
use crate::tensor_store::TensorStore;

pub trait WeightSource {
    /// Host data for the parameter `name` (BFL naming, e.g. `double_blocks.0.img_attn.qkv.weight`) with
    /// exactly `shape`, converted to `dtype`.
    fn take(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<TensorData>;

    /// Called once every parameter was taken: report anything left over.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Checkpoint layout of a [`TensorStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// diffusers `Flux2Transformer2DModel` names.
    Diffusers,
    /// BFL names, with an optional prefix such as `model.diffusion_model.`.
    Bfl,
}

/// Reads parameters from a checkpoint, translating names through [`crate::key_map`].
pub struct StoreSource {
    pub store: TensorStore,
    pub layout: Layout,
    pub prefix: String,
    /// Error on tensors the model did not use (a different architecture or a typo'd config).
    pub strict: bool,
}

fn check_shape(key: &str, file: std::path::PathBuf, actual: &[usize], expected: &[usize]) -> Result<()> {
    if actual != expected {
        return Err(Error::ShapeMismatch { key: key.into(), file, expected: expected.to_vec(), actual: actual.to_vec() });
    }
    Ok(())
}

impl WeightSource for StoreSource {
    fn take(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<TensorData> {
        match self.layout {
            Layout::Bfl => {
                let key = format!("{}{name}", self.prefix);
                let data = self.store.read(&key, dtype)?;
                check_shape(&key, self.store.file_of(&key), &data.shape, shape)?;
                Ok(data)
            }
            Layout::Diffusers => {
                let pieces = diffusers_sources(name)
                    .ok_or_else(|| Error::MissingKey { key: name.into(), files: "the diffusers key map".into() })?;
                let rows_total = shape[0];
                let row_len: usize = shape[1..].iter().product();
                let mut parts = Vec::with_capacity(pieces.len());
                for piece in &pieces {
                    let data = self.store.read(piece.key(), dtype)?;
                    let file = self.store.file_of(piece.key());
                    let expected_rows = match piece {
                        Rows::Whole(_) => rows_total / pieces.len(),
                        Rows::Half(..) => rows_total,
                    };
                    let mut expected = shape.to_vec();
                    expected[0] = expected_rows;
                    check_shape(piece.key(), file, &data.shape, &expected)?;
                    let bytes = data.as_bytes();
                    let piece_bytes = match piece {
                        Rows::Whole(_) => bytes.to_vec(),
                        Rows::Half(_, half) => {
                            let n = bytes.len() / 2;
                            bytes[half * n..(half + 1) * n].to_vec()
                        }
                    };
                    parts.push(piece_bytes);
                }
                let bytes = if parts.len() == 1 { parts.pop().unwrap_or_default() } else { parts.concat() };
                debug_assert_eq!(bytes.len(), rows_total * row_len * dtype.size());
                Ok(TensorData::from_bytes_vec(bytes, shape.to_vec(), dtype))
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        if !self.strict {
            return Ok(());
        }
        let unused = self.store.unused_keys();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(8).map(String::as_str).collect();
        let more = if unused.len() > 8 { format!(" (and {} more)", unused.len() - 8) } else { String::new() };
        Err(Error::UnexpectedKeys { file: self.store.file_of(&unused[0]), keys: format!("{}{more}", shown.join(", ")) })
    }
}

/// Deterministic host-side initialisation, identical on every backend: weights ~ N(0, std^2) with
/// std = 1/sqrt(fan_in) for matrices, RMSNorm scales 1. For tests, demos and pre-training from scratch.
pub struct RandomSource {
    state: u64,
}

impl RandomSource {
    pub fn new(seed: u64) -> Self {
        Self { state: seed ^ 0x9E37_79B9_7F4A_7C15 }
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform sample in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) / (1u64 << 24) as f32
    }

    /// Standard normal sample (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

impl WeightSource for RandomSource {
    fn take(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<TensorData> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with(".scale") {
            vec![1.0; n]
        } else {
            let std = 1.0 / (*shape.last().unwrap_or(&1) as f32).sqrt();
            (0..n).map(|_| self.normal() * std).collect()
        };
        Ok(TensorData::new(values, shape.to_vec()).convert_dtype(dtype))
    }
}
