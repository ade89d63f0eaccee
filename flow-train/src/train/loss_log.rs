//! The loss log: one JSON object per optimizer step in `loss_log.jsonl` (easy to read from any tool),
//! trimmed back to the resumed step on resume so a resumed run's log is the uninterrupted run's log.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One logged step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossRecord {
    /// Optimizer step (1-based: the update this loss led to).
    pub step: u32,
    /// Flow-matching loss, averaged over the accumulated batches.
    pub loss: f32,
    /// DOP preservation term, when on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preservation: Option<f32>,
    pub lr: f64,
    /// Gradient norm before clipping (f32: the f64 sum of per-tensor reductions can differ in its last
    /// bits between runs, the f32 value does not).
    pub grad_norm: f32,
    /// Seconds since the run (or resume) started.
    pub elapsed_s: f64,
}

/// Appends records to `<output>/loss_log.jsonl`.
pub struct LossLog {
    path: PathBuf,
    records: Vec<LossRecord>,
}

impl LossLog {
    /// Opens the log, keeping the records of steps `<= keep_until` (all of them when starting fresh
    /// with `keep_until = 0` nothing is kept).
    pub fn open(output: &Path, keep_until: u32) -> Result<Self> {
        let path = output.join("loss_log.jsonl");
        let mut records = Vec::new();
        if keep_until > 0 && path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let r: LossRecord = serde_json::from_str(line)
                    .map_err(|e| Error::Invalid(format!("{} line {}: {e}", path.display(), i + 1)))?;
                if r.step <= keep_until {
                    records.push(r);
                }
            }
        }
        let log = LossLog { path, records };
        log.rewrite()?;
        Ok(log)
    }

    fn rewrite(&self) -> Result<()> {
        let mut text = String::new();
        for r in &self.records {
            text.push_str(&serde_json::to_string(r).map_err(|e| Error::Invalid(e.to_string()))?);
            text.push('\n');
        }
        super::checkpoint::write_atomic(&self.path, text.as_bytes())
    }

    /// Adds a record (appended to the file at once, so a crash loses at most the current line).
    pub fn push(&mut self, record: LossRecord) -> Result<()> {
        let line = serde_json::to_string(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        writeln!(f, "{line}").map_err(|e| Error::io(&self.path, e))?;
        self.records.push(record);
        Ok(())
    }

    pub fn records(&self) -> &[LossRecord] {
        &self.records
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
