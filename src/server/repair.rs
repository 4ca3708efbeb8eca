//! `--repair`: a data dir the node refuses (damage found at start) is moved aside, never
//! deleted, so the node can start empty and be repaired from the cluster through the safe
//! path for a lost disk (a new data dir identity, caught up as a learner, re-admitted).

use super::ServerError;
use crate::storage::StorageError;
use std::path::{Path, PathBuf};

/// Renames `dir` to `dir.damaged-<unix seconds>` (with a counter if that exists) and fsyncs
/// the parent, so the move survives a crash. Returns the new name.
pub fn move_aside(dir: &Path, why: &StorageError) -> Result<PathBuf, ServerError> {
    ::log::error!("{why}");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let parent = dir.parent().unwrap_or_else(|| Path::new("."));
    let mut aside = parent.join(format!("{name}.damaged-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = parent.join(format!("{name}.damaged-{secs}-{n}"));
        n += 1;
    }
    let fail = |source: std::io::Error| ServerError::Repair {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::rename(dir, &aside).map_err(fail)?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(fail)?;
    Ok(aside)
}
