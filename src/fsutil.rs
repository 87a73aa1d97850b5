//! Crash-safe file operations: write to a temporary file, fsync, then publish it atomically.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::crypto::random_array;
use crate::error::{Error, Result};

/// A temporary path beside `path` (same directory, so a rename stays on one filesystem).
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let tag: String = random_array::<8>()?.iter().map(|b| format!("{b:02x}")).collect();
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    Ok(path.with_file_name(format!(".{name}.{tag}.tmp")))
}

/// Syncs a directory, so a rename or link inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = temp_path(path)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    Ok(tmp)
}

/// Publishes `bytes` at `path`, which must not exist: temp file, fsync, hard link (which fails if
/// `path` exists, so two writers never both win), unlink the temp, fsync the directory. Returns
/// `Ok(false)` if `path` already existed.
pub fn write_new_atomic(path: &Path, bytes: &[u8]) -> Result<bool> {
    let tmp = write_temp(path, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(format!("publishing {}", path.display()), e)),
    }
}

/// Replaces `path` atomically with `bytes` (temp file, fsync, rename, fsync the directory).
pub fn replace_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temp(path, bytes)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("publishing {}", path.display()), e)
    })?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Removes temporary files (`.<name>.<tag>.tmp`) older than `grace` left in `dir` by writers that
/// died before publishing them. Returns how many were removed.
pub fn remove_stale_temps(dir: &Path, grace: std::time::Duration) -> Result<usize> {
    remove_files_where(dir, grace, |name| name.starts_with('.') && name.ends_with(".tmp"))
}

/// Removes the files of `dir` that `doomed` selects by name and that were last modified at least
/// `grace` ago, then syncs the directory. Returns how many were removed.
pub fn remove_files_where(dir: &Path, grace: std::time::Duration, doomed: impl Fn(&str) -> bool) -> Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))? {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !doomed(&name) {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age >= grace {
            fs::remove_file(entry.path()).map_err(|e| Error::io(format!("removing {name}"), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}
