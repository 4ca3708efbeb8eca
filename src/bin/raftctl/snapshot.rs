//! `raftctl snapshot save FILE` (a backup streamed from the leader) and `raftctl snapshot
//! status FILE` (what a backup file holds, checked without a cluster).

use clap::Subcommand;
use raftd::client::{Client, ClientError};
use raftd::kv::KvStore;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stream a consistent copy of the whole store from the leader into FILE (written as
    /// FILE.part, checked, fsynced, then renamed). Restore it with `raftd restore FILE …`.
    Save { file: PathBuf },
    /// Check a backup file and show what it holds (no cluster needed).
    Status { file: PathBuf },
}

pub async fn save(
    client: &mut Client,
    file: &Path,
) -> Result<(serde_json::Value, String, u8), ClientError> {
    let info = client.save_snapshot(file).await?;
    let text = format!(
        "saved {}: index {} (term {}), revision {}, {} keys, {} bytes of data (crc32 {:08x}), from {}",
        file.display(),
        info.index,
        info.term,
        info.revision,
        info.keys,
        info.size,
        info.crc32,
        info.from
    );
    let value = json!({
        "file": file.display().to_string(),
        "index": info.index,
        "term": info.term,
        "revision": info.revision,
        "keys": info.keys,
        "size": info.size,
        "crc32": format!("{:08x}", info.crc32),
        "from": info.from.to_string(),
    });
    Ok((value, text, 0))
}

/// Reads and checks `file` (header and data checksums, and that the data is a store).
pub fn status(file: &Path) -> Result<(serde_json::Value, String), String> {
    let (meta, data, file_len) = raftd::storage::read_snapshot_file(file)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: no such file", file.display()))?;
    let store = KvStore::from_snapshot_bytes(&data)
        .map_err(|e| format!("{}: not a raftd store: {e}", file.display()))?;
    let members: Vec<u64> = store.membership().members.keys().copied().collect();
    let text = format!(
        "{}: index {} (term {}), revision {}, {} keys, {} bytes, members {:?} (replaced on restore); checksums good",
        file.display(),
        meta.index,
        meta.term,
        store.revision(),
        store.len(),
        file_len,
        members
    );
    let value = json!({
        "file": file.display().to_string(),
        "index": meta.index,
        "term": meta.term,
        "revision": store.revision(),
        "keys": store.len(),
        "bytes": file_len,
        "members": members,
    });
    Ok((value, text))
}
