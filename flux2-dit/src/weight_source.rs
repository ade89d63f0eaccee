//! Where the model's parameters come from while it is built: a checkpoint in either layout, or a
//! seeded random initialisation. The model builder asks for each parameter by its BFL name and shape.

use burn::tensor::{DType, TensorData};

use crate::error::{Error, Result};
use flux2_ops::quant::{HostQuantized, float8_file};
use flux2_ops::{Rng, TensorStore};

use crate::key_map::{Rows, diffusers_sources};

pub trait WeightSource {
    /// Host data for the parameter `name` (BFL naming, e.g. `double_blocks.0.img_attn.qkv.weight`) with
    /// exactly `shape`, converted to `dtype`.
    fn take(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<TensorData>;

    /// The Linear `module` ([out, in] = `shape`) when the checkpoint stores it as float8 codes with a
    /// scale (a ComfyUI-style fp8 file, [`flux2_ops::quant::float8_file`]); `None` for a dense weight.
    fn take_float8(&mut self, module: &str, shape: [usize; 2]) -> Result<Option<HostQuantized>> {
        let _ = (module, shape);
        Ok(None)
    }

    /// Where parameter `name` comes from, for errors (the checkpoint file).
    fn origin(&self, name: &str) -> String {
        let _ = name;
        "random initialisation".into()
    }

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
        return Err(Error::ShapeMismatch {
            key: key.into(),
            file,
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        });
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

    fn take_float8(&mut self, module: &str, shape: [usize; 2]) -> Result<Option<HostQuantized>> {
        let module = format!("{}{module}", self.prefix);
        if self.layout != Layout::Bfl {
            return Ok(None);
        }
        Ok(float8_file::read_if_float8(&self.store, &module, shape)?)
    }

    fn origin(&self, name: &str) -> String {
        let key = match self.layout {
            Layout::Bfl => format!("{}{name}", self.prefix),
            Layout::Diffusers => match diffusers_sources(name).and_then(|p| p.first().map(|p| p.key().to_string())) {
                Some(key) => key,
                None => name.to_string(),
            },
        };
        format!("`{key}` in {}", self.store.file_of(&key).display())
    }

    fn finish(&mut self) -> Result<()> {
        if !self.strict {
            return Ok(());
        }
        let unused: Vec<String> =
            self.store.unused_keys().into_iter().filter(|k| !float8_file::is_format_marker(k)).collect();
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
/// Draws come from [`flux2_ops::Rng`] in parameter order, filled in parallel.
pub struct RandomSource {
    rng: Rng,
}

impl RandomSource {
    pub fn new(seed: u64) -> Self {
        Self { rng: Rng::new(seed) }
    }
}

impl WeightSource for RandomSource {
    fn take(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<TensorData> {
        let n: usize = shape.iter().product();
        if name.ends_with(".scale") {
            return Ok(TensorData::new(vec![1.0f32; n], shape.to_vec()).convert_dtype(dtype));
        }
        let std = 1.0 / (*shape.last().unwrap_or(&1) as f32).sqrt();
        // Half types are rounded here, in parallel, as `convert_dtype` would round them.
        Ok(match dtype {
            DType::BF16 => TensorData::new(self.rng.normals(n, std, half::bf16::from_f32), shape.to_vec()),
            DType::F16 => TensorData::new(self.rng.normals(n, std, half::f16::from_f32), shape.to_vec()),
            _ => TensorData::new(self.rng.normals(n, std, |x| x), shape.to_vec()).convert_dtype(dtype),
        })
    }
}

#[cfg(test)]
mod random_source_tests {
    use super::{RandomSource, WeightSource};
    use burn::tensor::{DType, TensorData};
    use flux2_ops::Rng;

    /// The draws are the RNG's normals in parameter order, scaled by 1/sqrt(fan_in) and rounded as
    /// `convert_dtype` rounds.
    #[test]
    fn weights_are_the_rngs_normals_in_order() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let mut source = RandomSource::new(7);
            let mut rng = Rng::new(7);
            for (name, shape) in [("a.weight", [33usize, 17]), ("b.weight", [5, 64])] {
                let got = source.take(name, &shape, dtype).expect("random tensor");
                let std = 1.0 / (shape[1] as f32).sqrt();
                let values: Vec<f32> = (0..shape[0] * shape[1]).map(|_| rng.normal() as f32 * std).collect();
                let want = TensorData::new(values, shape.to_vec()).convert_dtype(dtype);
                assert_eq!(got.dtype, dtype);
                assert_eq!(got.as_bytes(), want.as_bytes(), "{name} {dtype:?}");
            }
        }
    }
}
