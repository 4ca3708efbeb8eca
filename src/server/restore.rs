//! `raftd restore`: seeds the data dir of a member of a new cluster from a backup.
//!
//! A backup is a snapshot file (`raftctl snapshot save`). Restoring writes it as the snapshot
//! of a fresh data dir, with the configuration replaced by the new cluster's members (all
//! voters, data dirs not yet recorded), and a log that starts right after it. Every member of
//! the new cluster is restored from the same file with the same member list, so they all start
//! with the same snapshot at the same index and term: their logs agree, any of them can be
//! elected, and the leader records each member's data dir as it would after founding.
//!
//! The backup's own configuration is dropped on purpose: its members (and their data dirs)
//! belong to the old cluster, which may still be running; a restored node must never count
//! them, or be counted by them.

use crate::kv::KvStore;
use crate::rpc::types::{HardState, NodeId, SnapshotMeta};
use crate::storage::{read_snapshot_file, Storage, StorageError};
use raftd_core::Membership;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("{0}: no such backup file")]
    NoFile(PathBuf),
    #[error("the backup is not usable: {0}")]
    BadBackup(StorageError),
    #[error(
        "{path}: the backup's data does not decode as a raftd store ({reason}); was it made by \
         `raftctl snapshot save`?"
    )]
    NotAStore { path: PathBuf, reason: String },
    #[error(
        "{0} is not empty: restore only into a new data dir (move the old one aside first; a \
         node's existing data is never overwritten)"
    )]
    NotEmpty(PathBuf),
    #[error("node {0} is not among the members given: list every member of the new cluster, this node included (--peers ID=HOST:PORT,...)")]
    NotAMember(NodeId),
    #[error("cannot encode the restored store: {0}")]
    Encode(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub meta: SnapshotMeta,
    pub revision: u64,
    pub keys: usize,
    pub members: Vec<NodeId>,
    pub incarnation: u64,
}

/// Writes the backup `file` into the new data dir `data_dir` of node `id`, whose cluster is
/// `members` (every member, `id` included, with where it listens).
pub fn restore(
    file: &Path,
    data_dir: &Path,
    id: NodeId,
    members: &BTreeMap<NodeId, SocketAddr>,
) -> Result<Restored, RestoreError> {
    if !members.contains_key(&id) {
        return Err(RestoreError::NotAMember(id));
    }
    let (meta, data, _) = read_snapshot_file(file)
        .map_err(RestoreError::BadBackup)?
        .ok_or_else(|| RestoreError::NoFile(file.to_path_buf()))?;
    let mut store = KvStore::from_snapshot_bytes(&data).map_err(|e| RestoreError::NotAStore {
        path: file.to_path_buf(),
        reason: e.to_string(),
    })?;
    if store.applied() != meta.index {
        return Err(RestoreError::NotAStore {
            path: file.to_path_buf(),
            reason: format!(
                "the header says index {} but the store was applied up to {}",
                meta.index,
                store.applied()
            ),
        });
    }
    if !is_empty_dir(data_dir)? {
        return Err(RestoreError::NotEmpty(data_dir.to_path_buf()));
    }
    let ids: Vec<NodeId> = members.keys().copied().collect();
    let addrs = members.iter().map(|(id, a)| (*id, a.to_string())).collect();
    store.set_membership(Membership::of_voters(&ids, &addrs, &BTreeMap::new()));
    let data = store
        .to_snapshot_bytes(data.len())
        .map_err(|e| RestoreError::Encode(e.to_string()))?;
    let (mut storage, _) = Storage::open(data_dir, id)?;
    // The term of the snapshot's last entry: no member of the new cluster has voted in it,
    // and the first election is for the term after it.
    let hard_state = HardState {
        term: meta.term,
        vote: 0,
    };
    storage.save_snapshot(meta, &data, &[], hard_state)?;
    Ok(Restored {
        meta,
        revision: store.revision(),
        keys: store.len(),
        members: ids,
        incarnation: storage.incarnation(),
    })
}

/// Missing, or a dir with nothing in it.
fn is_empty_dir(dir: &Path) -> Result<bool, StorageError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(crate::storage::error::io_err(dir, "read the data dir")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Op};
    use crate::rpc::types::Entry;
    use crate::storage::SnapshotFileWriter;

    fn members(ids: &[NodeId]) -> BTreeMap<NodeId, SocketAddr> {
        ids.iter()
            .map(|id| (*id, format!("127.0.0.1:{}", 9100 + id).parse().unwrap()))
            .collect()
    }

    /// A backup file of a store with `n` keys, applied up to index `n + 1` (a configuration
    /// of the old cluster {7, 8, 9} first).
    fn backup(dir: &Path, n: u64) -> PathBuf {
        let mut store = KvStore::default();
        let old = Membership::of_voters(&[7, 8, 9], &BTreeMap::new(), &BTreeMap::new());
        store.apply(&Entry::config(1, 1, &old));
        for i in 0..n {
            let cmd = Command {
                client_id: None,
                seq: 0,
                op: Op::Put {
                    key: format!("k{i}"),
                    value: format!("v{i}"),
                    lease: 0,
                },
                at_ms: 0,
            };
            store.apply(&Entry::command(2, i + 2, cmd.encode().unwrap()));
        }
        let data = store.to_snapshot_bytes(0).unwrap();
        let path = dir.join("backup.snap");
        let mut w = SnapshotFileWriter::create(&path).unwrap();
        for chunk in data.chunks(100) {
            w.write(chunk).unwrap();
        }
        w.finish(SnapshotMeta {
            index: n + 1,
            term: 2,
        })
        .unwrap();
        path
    }

    #[test]
    fn a_restored_dir_holds_the_data_with_the_new_members_and_opens_as_a_node() {
        let tmp = tempfile::tempdir().unwrap();
        let file = backup(tmp.path(), 50);
        let dirs: Vec<PathBuf> = (1..=3).map(|i| tmp.path().join(format!("n{i}"))).collect();
        let mut incarnations = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let r = restore(&file, dir, i as u64 + 1, &members(&[1, 2, 3])).unwrap();
            assert_eq!(r.meta, SnapshotMeta { index: 51, term: 2 });
            assert_eq!((r.keys, r.members.clone()), (50, vec![1, 2, 3]));
            incarnations.push(r.incarnation);
        }
        assert!(incarnations[0] != incarnations[1], "each dir is its own");
        for (i, dir) in dirs.iter().enumerate() {
            let (storage, recovered) = Storage::open(dir, i as u64 + 1).unwrap();
            let snap = recovered.snapshot.expect("a snapshot");
            assert_eq!(snap.meta, SnapshotMeta { index: 51, term: 2 });
            assert!(recovered.entries.is_empty());
            assert_eq!(recovered.hard_state, HardState { term: 2, vote: 0 });
            let store = KvStore::from_snapshot(&snap).unwrap();
            assert_eq!(
                store.mvcc().get("k49").unwrap().value.as_deref(),
                Some("v49")
            );
            let m = store.membership();
            assert_eq!(m.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
            assert!(m.members.values().all(|m| m.incarnation == 0));
            assert_eq!(m.members[&2].addr, "127.0.0.1:9102");
            assert_eq!(storage.incarnation(), incarnations[i]);
        }
    }

    #[test]
    fn refuses_a_used_dir_a_damaged_file_and_a_node_not_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let file = backup(tmp.path(), 5);
        let used = tmp.path().join("used");
        std::fs::create_dir(&used).unwrap();
        std::fs::write(used.join("raft.wal"), b"x").unwrap();
        let e = restore(&file, &used, 1, &members(&[1])).unwrap_err();
        assert!(matches!(e, RestoreError::NotEmpty(_)), "{e}");
        assert_eq!(std::fs::read(used.join("raft.wal")).unwrap(), b"x");

        let e = restore(&file, &tmp.path().join("n4"), 4, &members(&[1, 2])).unwrap_err();
        assert!(matches!(e, RestoreError::NotAMember(4)), "{e}");
        assert!(!tmp.path().join("n4").exists(), "nothing written");

        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        let bad = tmp.path().join("bad.snap");
        std::fs::write(&bad, &bytes).unwrap();
        let e = restore(&bad, &tmp.path().join("n1"), 1, &members(&[1])).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(!tmp.path().join("n1").exists(), "nothing written");

        let missing = restore(
            &tmp.path().join("nope"),
            &tmp.path().join("n1"),
            1,
            &members(&[1]),
        );
        assert!(matches!(missing, Err(RestoreError::NoFile(_))));

        // A snapshot file whose data is not a store.
        let other = tmp.path().join("other.snap");
        let mut w = SnapshotFileWriter::create(&other).unwrap();
        w.write(b"{\"hello\":1}").unwrap();
        w.finish(SnapshotMeta { index: 3, term: 1 }).unwrap();
        let e = restore(&other, &tmp.path().join("n1"), 1, &members(&[1])).unwrap_err();
        assert!(matches!(e, RestoreError::NotAStore { .. }), "{e}");
    }

    #[test]
    fn an_abandoned_backup_leaves_no_file_under_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("b.snap");
        let mut w = SnapshotFileWriter::create(&path).unwrap();
        w.write(b"partial").unwrap();
        w.abandon();
        assert!(!path.exists());
        assert!(!tmp.path().join("b.snap.part").exists());
    }
}
