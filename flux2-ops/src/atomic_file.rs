//! Writing files so that a crash, a full disk or Ctrl-C never leaves a half-written one under the final
//! name: the bytes go to a temporary file in the same folder, are synced, and the file is renamed over
//! the target (rename is atomic within a file system). Readers see the old complete file or the new one.
//!
//! Temporary names are `.{file name}.{pid}.{n}.tmp`: unique per process and write, so two runs sharing
//! a dataset cache never write into each other's temporary file, and [`remove_stale_temp_files`] can
//! tell a dead writer's leftovers from a live writer's file.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary file [`write_atomic_with`] writes `path` through.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Writes `path` atomically with `fill` writing the content (buffered); creates the parent folder. On
/// any error the temporary file is removed and the previous file at `path`, if any, is untouched.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let temp = temp_path(path);
    let result = (|| {
        let mut out = BufWriter::new(fs::File::create(&temp)?);
        fill(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |out| out.write_all(bytes))
}

/// Whether `name` is a temporary file of [`write_atomic_with`] whose writer is gone: its process no
/// longer exists (where `/proc` tells), or the file is a day old (a write takes seconds). A live
/// writer's file (another run sharing the folder) stays.
pub fn is_stale_temp(name: &str, modified: Option<std::time::SystemTime>) -> bool {
    let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else { return false };
    let mut parts = stem.rsplitn(3, '.');
    let (Some(counter), Some(pid), Some(_target)) = (parts.next(), parts.next(), parts.next()) else { return false };
    let (Ok(_), Ok(pid)) = (counter.parse::<u64>(), pid.parse::<u32>()) else { return false };
    if pid == std::process::id() {
        return false;
    }
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        return !proc.join(pid.to_string()).exists();
    }
    modified.and_then(|m| m.elapsed().ok()).is_some_and(|age| age.as_secs() > 24 * 3600)
}

/// Removes the stale temporary files (see [`is_stale_temp`]) in `dir`; returns how many. Errors are
/// ignored (a file a concurrent cleaner removed first, a read-only folder).
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let modified = entry.metadata().ok().and_then(|m| m.modified().ok());
        if entry.path().is_file() && is_stale_temp(&name, modified) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_cleans_up_after_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/a.bin");
        write_atomic(&path, b"first").expect("write");
        write_atomic(&path, b"second").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let failed = write_atomic_with(&path, |out| {
            out.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).expect("read"), b"second", "the old file survives a failed write");
        let names: Vec<String> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.bin"], "no temporary file left");
    }

    #[test]
    fn only_dead_writers_files_are_stale() {
        assert!(is_stale_temp(".a.safetensors.999999999.0.tmp", None));
        assert!(!is_stale_temp(&format!(".a.safetensors.{}.0.tmp", std::process::id()), None));
        assert!(!is_stale_temp("a.safetensors", None));
        assert!(!is_stale_temp(".a.x.tmp", None));
    }
}
