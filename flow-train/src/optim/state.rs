//! Optimizer state as plain host data, for checkpoints: named tensors (exact f32 moments, 8-bit codes as
//! u8, block scales) plus JSON scalars (step counts, Prodigy's D, ...). One safetensors file holds both,
//! the scalars as JSON in the header's `__metadata__`, so a checkpoint is self-describing and any
//! safetensors reader can inspect it. Values round-trip bit for bit (f64 scalars through JSON's shortest
//! round-trip form), which is what a bit-exact resume needs.
//!
//! Tensor keys are `<parameter index>.<state name>`, e.g. `3.exp_avg`: the trainer passes parameters in
//! the same order every step and run, so the index identifies the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, TensorData};
use flux2_ops::{PendingTensor, TensorStore, write_safetensors};

use crate::error::{Error, Result};

/// `__metadata__` key holding the scalars' JSON.
const SCALARS_KEY: &str = "optimizer_scalars";

/// Complete optimizer state: what [`super::Optimizer::state`] returns and
/// [`super::Optimizer::load_state`] takes.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// Named state tensors (host copies).
    pub tensors: BTreeMap<String, TensorData>,
    /// Scalars: always `optimizer` (the name) and `step`; more per optimizer.
    pub scalars: serde_json::Value,
}

impl OptimizerState {
    /// Writes the state as one safetensors file with the workspace's atomic writer, so an interrupted
    /// save never leaves a truncated state under `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = self
            .tensors
            .iter()
            .map(|(name, data)| PendingTensor::ready(name.clone(), data.clone(), data.dtype))
            .collect();
        let metadata = BTreeMap::from([(SCALARS_KEY.to_string(), self.scalars.to_string())]);
        write_safetensors(path, tensors, &metadata).map_err(|e| match e {
            flux2_ops::Error::UnsupportedDtype { key, dtype, .. } => {
                Error::OptimizerState { key, reason: format!("{dtype} tensors cannot be saved") }
            }
            other => Error::from(other),
        })
    }

    /// Reads a file written by [`OptimizerState::save`].
    pub fn load(path: &Path) -> Result<OptimizerState> {
        let bad = |message: String| Error::Io { path: path.to_path_buf(), message };
        let store = TensorStore::open_file(path).map_err(|e| bad(e.to_string()))?;
        let metadata = store.metadata();
        let scalars = metadata
            .get(SCALARS_KEY)
            .ok_or_else(|| bad(format!("no `{SCALARS_KEY}` in the header: not an optimizer state file")))?;
        let scalars: serde_json::Value =
            serde_json::from_str(scalars).map_err(|e| bad(format!("`{SCALARS_KEY}` is not JSON: {e}")))?;
        let mut tensors = BTreeMap::new();
        for name in store.keys() {
            let data = store.read_as_stored(name).map_err(|e| bad(format!("{e} (not optimizer state)")))?;
            tensors.insert(name.to_string(), data);
        }
        Ok(OptimizerState { tensors, scalars })
    }

    /// Checks that the state was written by optimizer `name`.
    pub(crate) fn expect_optimizer(&self, name: &str) -> Result<()> {
        match self.scalars.get("optimizer").and_then(|v| v.as_str()) {
            Some(found) if found == name => Ok(()),
            Some(found) => Err(Error::OptimizerState {
                key: "optimizer".into(),
                reason: format!(
                    "the state is {found}'s, the job's optimizer is {name} (start without the state, or switch back)"
                ),
            }),
            None => Err(Error::OptimizerState { key: "optimizer".into(), reason: "missing".into() }),
        }
    }

    /// The JSON scalar `key`.
    fn scalar(&self, key: &str) -> Result<&serde_json::Value> {
        self.scalars.get(key).ok_or_else(|| Error::OptimizerState { key: key.into(), reason: "missing scalar".into() })
    }

    /// A float scalar (stored as a JSON number).
    pub(crate) fn f64(&self, key: &str) -> Result<f64> {
        self.scalar(key)?.as_f64().ok_or_else(|| Error::OptimizerState {
            key: key.into(),
            reason: format!("expected a number, got {}", self.scalars[key]),
        })
    }

    /// A non-negative integer scalar.
    pub(crate) fn u64(&self, key: &str) -> Result<u64> {
        self.scalar(key)?.as_u64().ok_or_else(|| Error::OptimizerState {
            key: key.into(),
            reason: format!("expected a non-negative integer, got {}", self.scalars[key]),
        })
    }

    /// Checks that a setting recorded in the state equals the optimizer's (a state made with another
    /// block size or slicing cannot be continued exactly).
    pub(crate) fn expect_setting(&self, key: &str, expected: u64) -> Result<()> {
        let found = self.u64(key)?;
        if found == expected {
            Ok(())
        } else {
            Err(Error::OptimizerState {
                key: key.into(),
                reason: format!("the state was made with {key} {found}, the job sets {expected}"),
            })
        }
    }

    /// Removes and returns tensor `key`, checking its shape and dtype.
    pub(crate) fn take(&mut self, key: &str, shape: &[usize], dtype: DType) -> Result<TensorData> {
        let data = self
            .tensors
            .remove(key)
            .ok_or_else(|| Error::OptimizerState { key: key.into(), reason: "missing tensor".into() })?;
        if data.shape.to_vec() != shape {
            return Err(Error::OptimizerState {
                key: key.into(),
                reason: format!(
                    "shape {:?} does not match the trainable tensor's state shape {shape:?} (another adapter rank \
                     or layer set?)",
                    data.shape.to_vec()
                ),
            });
        }
        if data.dtype != dtype {
            return Err(Error::OptimizerState {
                key: key.into(),
                reason: format!("dtype {:?}, expected {dtype:?}", data.dtype),
            });
        }
        Ok(data)
    }

    /// Fails when tensors are left over after every expected one was taken (a state for more parameters
    /// than the adapter has).
    pub(crate) fn expect_consumed(&self) -> Result<()> {
        match self.tensors.keys().next() {
            None => Ok(()),
            Some(key) => Err(Error::OptimizerState {
                key: key.clone(),
                reason: format!(
                    "not a state of this optimizer's parameters ({} unexpected tensors; another adapter?)",
                    self.tensors.len()
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trips_bits_and_scalars() {
        let dir = std::env::temp_dir().join(format!("flow_train_optim_state_{}", std::process::id()));
        let path = dir.join("optimizer.safetensors");
        let f = TensorData::new(vec![1.5f32, -0.0, f32::MIN_POSITIVE, 3.0e-39], [2, 2]);
        let u = TensorData::new(vec![0u8, 255, 7], [3]);
        let scalars = serde_json::json!({"optimizer": "prodigy", "step": 3, "d": 1.2345678901234567e-5});
        let state = OptimizerState {
            tensors: BTreeMap::from([("0.exp_avg".to_string(), f), ("0.state1".to_string(), u)]),
            scalars,
        };
        state.save(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["optimizer.safetensors"], "no temporary file left");
        let mut back = OptimizerState::load(&path).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.f64("d").unwrap().to_bits(), 1.2345678901234567e-5f64.to_bits());
        back.expect_optimizer("prodigy").unwrap();
        let err = back.expect_optimizer("lion").unwrap_err().to_string();
        assert!(err.contains("the state is prodigy's, the job's optimizer is lion"), "{err}");
        let err = back.take("0.exp_avg", &[4], DType::F32).unwrap_err().to_string();
        assert!(err.starts_with("optimizer state: 0.exp_avg: shape [2, 2] does not match"), "{err}");
        let err = back.take("1.exp_avg", &[4], DType::F32).unwrap_err().to_string();
        assert_eq!(err, "optimizer state: 1.exp_avg: missing tensor");
        assert!(back.expect_consumed().unwrap_err().to_string().contains("0.state1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
