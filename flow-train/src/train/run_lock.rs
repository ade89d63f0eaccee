//! One training run per output folder: an exclusive advisory lock on `<output>/.lock`.
//!
//! Two `train` runs of the same job would interleave their loss logs and overwrite each other's
//! checkpoints. The lock is the operating system's (`flock` on Unix, `LockFileEx` on Windows, through
//! `std::fs::File::try_lock`): it is released when the owning process exits for any reason, `kill -9`
//! included, so a stale lock cannot block a later run; the file itself stays behind and is reused. It
//! holds the owner's pid, host and start time, which the second run's error quotes. Network file
//! systems that do not implement advisory locks give no protection.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Held for the whole run; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "unknown host".into())
}

/// Takes the lock of `output` (which must exist), or fails naming the run that holds it.
pub fn acquire(output: &Path) -> Result<RunLock> {
    let path = output.join(".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = owner.trim();
            return Err(Error::Invalid(format!(
                "{} is in use by another training run ({}); wait for it to finish or stop it (Ctrl-C saves a checkpoint), \
                 or give this job another `name` or `training_folder`",
                output.display(),
                if owner.is_empty() { "owner unknown" } else { owner }
            )));
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let owner = format!("pid {} on {}, started at unix time {since}", std::process::id(), host());
    let write = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(owner.as_bytes())?;
        file.flush()
    };
    write(&mut file).map_err(|e| Error::io(&path, e))?;
    Ok(RunLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_naming_the_first_and_the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let err = acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("in use by another training run"),
            "{err}"
        );
        drop(first);
        acquire(dir.path()).expect("released when the holder is gone");
    }
}
