//! Finding the images of a dataset folder.
//!
//! Rules (ai-toolkit's, plus the cache-folder rule of this crate):
//! - recursive; `.jpg .jpeg .png .webp` in any letter case;
//! - files and folders whose name starts with `.` are hidden and skipped (ai-toolkit prunes hidden
//!   folders such as `.thumbs` so their contents never train);
//! - folders whose name starts with `_` are skipped: they hold caches (`_latent_cache`, `_t_e_cache`)
//!   or ai-toolkit's generated `_controls`;
//! - symbolic links to folders are not followed (no cycles), links to files are;
//! - control folders that sit inside the dataset folder are skipped, so edit sources never train as
//!   targets;
//! - the result is sorted, so loading is deterministic whatever order the file system lists in.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Image file extensions, lower case, in the order control images are looked up.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Whether a file name is a (non-hidden) image by its extension.
pub fn is_image_name(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)),
        _ => false,
    }
}

/// Every image below `root` under the rules above, sorted. `exclude` lists folders to leave out.
pub fn scan_images(root: &Path, exclude: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let exclude: Vec<PathBuf> = exclude.iter().filter_map(|p| fs::canonicalize(p).ok()).collect();
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if !exclude.is_empty()
            && let Ok(canonical) = fs::canonicalize(&dir)
            && exclude.contains(&canonical)
        {
            continue;
        }
        let entries = fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let file_type = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            let path = entry.path();
            if file_type.is_dir() {
                if !name.starts_with('_') {
                    pending.push(path);
                }
            } else if is_image_name(&name) {
                // Only regular files (a symlink when it resolves to one): reading a named pipe or a
                // device would block or never end.
                if !path.is_file() {
                    continue;
                }
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The images directly inside one control folder (not recursive, as ai-toolkit looks up
/// `<control_path>/<stem><ext>`), sorted.
pub fn list_control_folder(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(folder).map_err(|e| Error::io(folder, e))? {
        let entry = entry.map_err(|e| Error::io(folder, e))?;
        let name = entry.file_name();
        if is_image_name(&name.to_string_lossy()) && entry.path().is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// The file name without its last extension (`a.b.png` -> `a.b`), as matched against controls.
pub fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}
