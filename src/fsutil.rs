//! Local-directory helpers beneath [`crate::storage`]: syncing a directory, removing stale files.

use std::fs::{self, File};
use std::path::Path;

use crate::error::{Error, Result};

/// Syncs a directory, so a rename or link inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
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
