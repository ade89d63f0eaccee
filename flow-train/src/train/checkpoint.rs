//! Checkpoints: the LoRA file users load (`<name>_<step:09d>.safetensors`, layout and dtype from the
//! `save:` panel) plus the training state a resume needs (exact f32 factors, EMA, optimizer state,
//! step), written so that a crash at any moment leaves the previous checkpoint intact.
//!
//! Layout under the job's output folder:
//! ```text
//! <name>_000000100.safetensors          LoRA at step 100 (what ComfyUI / diffusers load)
//! <name>.safetensors                    final LoRA
//! training_state/step_000000100/
//!     adapter.safetensors               f32 factors (+ `ema.` copies), exactly as trained
//!     optimizer.safetensors             optimizer state (tensors + scalars)
//!     state.json                        step and run identity; written last = checkpoint complete
//! ```
//! Every per-step random draw is derived from (seed, step), so the step number is all the sampler
//! state a resume needs: a resumed run continues bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use flux2_dit::TensorStore;
use flux2_ops::writer::{PendingTensor, write_safetensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// Optimizer steps completed.
    pub step: u32,
    /// The run seed (`training_seed`, or the one drawn at the first start).
    pub seed: u64,
    pub optimizer: String,
    /// Trainable tensor keys in order (a resume checks it against the model).
    pub keys: Vec<String>,
    pub has_ema: bool,
}

/// The LoRA file name of a step checkpoint.
pub fn lora_file_name(name: &str, step: u32) -> String {
    format!("{name}_{step:09}.safetensors")
}

fn state_root(output: &Path) -> PathBuf {
    output.join("training_state")
}

fn state_dir(output: &Path, step: u32) -> PathBuf {
    state_root(output).join(format!("step_{step:09}"))
}

/// Writes a file atomically ([`flux2_ops::atomic_file`]), so a crash never leaves a half-written one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    flux2_ops::atomic_file::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// Removes what a run stopped mid-write leaves behind: the temporary files of the atomic writer
/// (`.<name>.<pid>.<n>.tmp`) of dead processes, in the output folder and its training states. Called
/// while the run lock is held, so no other run is writing there.
pub fn remove_partial_files(output: &Path) -> Result<()> {
    let mut dirs = vec![output.to_path_buf()];
    if let Ok(states) = std::fs::read_dir(state_root(output)) {
        dirs.extend(states.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for dir in dirs {
        flux2_ops::atomic_file::remove_stale_temp_files(&dir);
    }
    Ok(())
}

/// Writes a tensor map (f32) atomically.
pub fn write_tensors(
    path: &Path,
    tensors: Vec<(String, TensorData)>,
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let pending = tensors.into_iter().map(|(k, d)| PendingTensor::ready(k, d, DType::F32)).collect();
    Ok(write_safetensors(path, pending, &metadata)?)
}

/// Reads every tensor of a file written by [`write_tensors`].
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, TensorData>> {
    let store = TensorStore::open(&[path.to_path_buf()])?;
    let keys: Vec<String> = store.keys().map(String::from).collect();
    let mut out = BTreeMap::new();
    for key in keys {
        let data = store.read(&key, DType::F32)?;
        out.insert(key, data);
    }
    Ok(out)
}

/// The training state of one step, on the host.
#[derive(Clone, Debug)]
pub struct TrainingState {
    pub file: StateFile,
    /// Factors in key order.
    pub adapter: Vec<TensorData>,
    /// EMA factors in key order, when EMA is on.
    pub ema: Option<Vec<TensorData>>,
}

/// Saves the training state of `state.file.step`; `write_optimizer` writes the optimizer file at the
/// path it is given. `state.json` goes last, so a partial directory is never taken for a checkpoint.
pub fn save_state(
    output: &Path,
    state: &TrainingState,
    write_optimizer: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = state_dir(output, state.file.step);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut tensors: Vec<(String, TensorData)> =
        state.file.keys.iter().cloned().zip(state.adapter.iter().cloned()).collect();
    if let Some(ema) = &state.ema {
        tensors.extend(state.file.keys.iter().map(|k| format!("ema.{k}")).zip(ema.iter().cloned()));
    }
    write_tensors(&dir.join("adapter.safetensors"), tensors, BTreeMap::new())?;
    write_optimizer(&dir.join("optimizer.safetensors"))?;
    let json = serde_json::to_vec_pretty(&state.file).map_err(|e| Error::Invalid(format!("state.json: {e}")))?;
    write_atomic(&dir.join("state.json"), &json)?;
    Ok(dir)
}

/// Complete state directories, oldest first, with their step.
pub fn list_states(output: &Path) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(state_root(output))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step_")?.parse().ok()?;
            e.path().join("state.json").is_file().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Loads the state in `dir` (written by [`save_state`]); the optimizer file is returned as a path.
pub fn load_state(dir: &Path) -> Result<(TrainingState, PathBuf)> {
    let json_path = dir.join("state.json");
    let text = std::fs::read(&json_path).map_err(|e| Error::io(&json_path, e))?;
    let file: StateFile =
        serde_json::from_slice(&text).map_err(|e| Error::Invalid(format!("{}: {e}", json_path.display())))?;
    let adapter_path = dir.join("adapter.safetensors");
    let mut tensors = read_tensors(&adapter_path)?;
    let mut take = |key: &str| {
        tensors
            .remove(key)
            .ok_or_else(|| Error::Invalid(format!("{}: tensor `{key}` is missing", adapter_path.display())))
    };
    let adapter = file.keys.iter().map(|k| take(k)).collect::<Result<Vec<_>>>()?;
    let ema = if file.has_ema {
        Some(file.keys.iter().map(|k| take(&format!("ema.{k}"))).collect::<Result<Vec<_>>>()?)
    } else {
        None
    };
    Ok((TrainingState { file, adapter, ema }, dir.join("optimizer.safetensors")))
}

/// Deletes every training state (a fresh start in an existing folder); LoRA files stay.
pub fn clear_states(output: &Path) -> Result<()> {
    let root = state_root(output);
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    }
    Ok(())
}

/// Deletes all but the newest `keep` step checkpoints (LoRA files and state directories; `keep = 0`
/// keeps everything). The final `<name>.safetensors` is never touched.
pub fn prune(output: &Path, name: &str, keep: u32) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let states = list_states(output);
    let excess = states.len().saturating_sub(keep as usize);
    for (step, dir) in states.into_iter().take(excess) {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lora = output.join(lora_file_name(name, step));
        if lora.exists() {
            std::fs::remove_file(&lora).map_err(|e| Error::io(&lora, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u32) -> TrainingState {
        TrainingState {
            file: StateFile { step, seed: 3, optimizer: "adamw".into(), keys: vec!["a.lora_A".into()], has_ema: true },
            adapter: vec![TensorData::new(vec![1.0f32, -2.5], [1, 2])],
            ema: Some(vec![TensorData::new(vec![0.5f32, 0.25], [1, 2])]),
        }
    }

    #[test]
    fn save_load_list_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        for step in [10, 20, 30] {
            save_state(dir.path(), &state(step), |p| write_tensors(p, vec![], BTreeMap::new())).unwrap();
            std::fs::write(dir.path().join(lora_file_name("run", step)), b"x").unwrap();
        }
        // An interrupted save (no state.json) is not a checkpoint.
        std::fs::create_dir_all(dir.path().join("training_state/step_000000040")).unwrap();
        assert_eq!(list_states(dir.path()).iter().map(|s| s.0).collect::<Vec<_>>(), vec![10, 20, 30]);
        let (loaded, _) = load_state(&list_states(dir.path())[2].1).unwrap();
        assert_eq!(loaded.file, state(30).file);
        assert_eq!(loaded.adapter, state(30).adapter);
        assert_eq!(loaded.ema, state(30).ema);
        prune(dir.path(), "run", 2).unwrap();
        assert_eq!(list_states(dir.path()).iter().map(|s| s.0).collect::<Vec<_>>(), vec![20, 30]);
        assert!(!dir.path().join(lora_file_name("run", 10)).exists());
        assert!(dir.path().join(lora_file_name("run", 20)).exists());
    }
}
