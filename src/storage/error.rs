//! Typed storage errors. Every message names the file involved, says what is wrong, and says
//! what the operator (or, for caller bugs, the developer) should do about it.

use std::io;
use std::path::{Path, PathBuf};

use crate::rpc::types::{NodeId, SnapshotMeta};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The log writer thread ended unexpectedly (it panicked); what it last wrote is unknown.
    #[error("the log writer thread stopped unexpectedly; restart the node so it re-reads its log")]
    WriterGone,

    /// The operating system refused a file operation.
    #[error(
        "cannot {op} {}: {source}; check that the data dir exists, is writable by this user and \
         the disk is not full, then restart the node",
        .path.display()
    )]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The disk is full: a write was refused and nothing of it is left in the file. Not fatal:
    /// the log writer tries again until there is space.
    #[error(
        "cannot {op} {}: the disk is full (nothing of this write was kept); free space on that \
         filesystem: the node refuses writes with NoSpace meanwhile and resumes by itself",
        .path.display()
    )]
    NoSpace { path: PathBuf, op: &'static str },

    /// An fsync failed. The kernel may already have dropped the dirty pages it could not
    /// write (and cleared the error), so a second fsync could "succeed" on data that is gone:
    /// nothing this process wrote can be trusted any more.
    #[error(
        "fsync of {} failed: {source}. The page cache can no longer be trusted to hold what this \
         node wrote, so it stops rather than acknowledge anything else; check the disk (dmesg), \
         then restart the node: it recovers from what is on disk",
        .path.display()
    )]
    SyncFailed {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The log holds damage that a crash during an unacknowledged write cannot explain.
    #[error(
        "{}: damaged at byte offset {offset}: {reason}. The node refuses to start, because \
         skipping damaged records could lose data it already acknowledged to the cluster; \
         start it with --repair to have the data dir moved aside and the node repaired from the \
         cluster (a healthy majority must be up), or restore the data dir from a backup",
        .path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The data dir belongs to another node.
    #[error(
        "{} shows this data dir was written by node {found}, but this is node {expected}; refusing \
         to use another node's log and vote. Start node {expected} with another --data-dir",
        .path.display()
    )]
    WrongNode {
        path: PathBuf,
        found: NodeId,
        expected: NodeId,
    },

    /// The identity file exists but cannot be understood (or is missing next to an existing log).
    #[error(
        "{}: {reason}. This file records which node owns the data dir; if the dir really belongs \
         to this node, rewrite it as {{\"node_id\":<id>,\"format\":1}}, otherwise start this node \
         with another --data-dir",
        .path.display()
    )]
    Identity { path: PathBuf, reason: String },

    /// Another process (or another `Storage` in this one) has the log open.
    #[error(
        "{} is locked: another raftd process is already using this data dir; stop it or start \
         this node with another --data-dir",
        .path.display()
    )]
    InUse { path: PathBuf },

    /// `save` was handed entries that would leave a gap in the log. Nothing was written.
    #[error(
        "save was given non-contiguous log entries: expected index {expected}, got {got}; nothing \
         was written. This is a bug in the caller: entries must follow the log without gaps"
    )]
    NonContiguous { expected: u64, got: u64 },

    /// `save` was handed entries at or below the snapshot's index. Nothing was written.
    #[error(
        "save was given log entry {index}, but the log is compacted up to index {snapshot_index} \
         (those entries are committed and live in the snapshot); nothing was written. This is a \
         bug in the caller: entries must follow the snapshot"
    )]
    CompactedIndex { index: u64, snapshot_index: u64 },

    /// `save_snapshot` was handed a snapshot older than (or conflicting with) the one on disk.
    /// Nothing was written.
    #[error(
        "save_snapshot was given a snapshot up to index {} term {}, but the stored snapshot \
         already covers index {} term {}; nothing was written. This is a bug in the caller: a \
         snapshot may never go backwards",
        .requested.index, .requested.term, .current.index, .current.term
    )]
    SnapshotBackwards {
        current: SnapshotMeta,
        requested: SnapshotMeta,
    },

    /// A record could not be encoded (a single entry over the record size limit). Nothing was
    /// written.
    #[error("cannot encode a log record: {reason}; nothing was written. Use smaller commands")]
    Encode { reason: String },
}

/// Builds a `map_err` adapter for an I/O failure of `op` on `path`.
pub(crate) fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| {
        if op.starts_with("fsync") {
            StorageError::SyncFailed { path, source }
        } else if source.kind() == io::ErrorKind::StorageFull {
            StorageError::NoSpace { path, op }
        } else {
            StorageError::Io { path, op, source }
        }
    }
}

impl StorageError {
    /// The disk was full and nothing was changed: the same write may be tried again.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::NoSpace { .. })
    }
}
