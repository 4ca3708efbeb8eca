//! What the driver asks its shell to do: the only way the daemon and the simulation learn of
//! the core's and the service's work.

use crate::kv::KvStore;
use crate::rpc::types::NodeId;
use crate::rpc::types::{ClientResponse, Entry, Envelope, HardState, Snapshot, SnapshotMeta};
use std::collections::BTreeMap;

/// One job for the disk, in the order it must be made durable. Each has a sequence number;
/// the shell reports back (with `Driver::durable`) the highest one durable so far. Jobs become
/// durable in the order of their numbers: a shell may sync several with one fsync, never
/// reorder them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskJob {
    /// Append `entries` (replacing the log from the first one's index, if it overlaps) after
    /// recording `hard_state`.
    Append {
        seq: u64,
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
    },
    /// This node's own snapshot of its state machine: store it, then replace the log with
    /// `tail` (the entries after the snapshot, all handed to the disk in earlier jobs).
    SaveSnapshot {
        seq: u64,
        snapshot: Snapshot,
        tail: Vec<Entry>,
    },
    /// A snapshot from the leader: record `hard_state` (if any), store the snapshot, then
    /// replace the log with `tail`, as `SaveSnapshot` does.
    InstallSnapshot {
        seq: u64,
        hard_state: Option<HardState>,
        snapshot: Snapshot,
        tail: Vec<Entry>,
    },
}

impl DiskJob {
    pub fn seq(&self) -> u64 {
        match self {
            DiskJob::Append { seq, .. }
            | DiskJob::SaveSnapshot { seq, .. }
            | DiskJob::InstallSnapshot { seq, .. } => *seq,
        }
    }
}

/// What the state machine did, in order (for logs, and for the simulation's checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied one committed entry.
    Entry(Entry),
    /// Replaced its state with the leader's snapshot: it now reflects everything up to it.
    Snapshot(SnapshotMeta),
}

/// A snapshot of the state machine to encode (and, in the daemon, write to a file) off the
/// node's thread: the store is a persistent map, so this copy cost O(1) and shares structure.
/// Report the result with `Driver::snapshot_prepared` or `Driver::snapshot_failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTask {
    pub store: KvStore,
    /// The term of the entry at the store's applied index.
    pub term: u64,
    /// The size of the previous snapshot, to size the buffer.
    pub size_hint: usize,
}

impl SnapshotTask {
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            index: self.store.applied(),
            term: self.term,
        }
    }

    /// Encodes the store (the slow part: the whole state is serialized).
    pub fn encode(&self) -> std::io::Result<Snapshot> {
        self.store.to_snapshot(self.term, self.size_hint)
    }
}

/// The state machine as of a check point of the consistency check (`index` a multiple of its
/// interval), to hash off the node's thread (an O(1) copy of a persistent map). Report the
/// result with `Driver::state_hashed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashTask {
    pub index: u64,
    pub store: KvStore,
}

impl HashTask {
    /// The hash (the slow part: the whole state is read).
    pub fn hash(&self) -> u64 {
        self.store.state_hash()
    }
}

/// A backup to stream to the client that asked for it (`Snapshot`): the store as of the
/// backup's index, with the configuration at that index, to encode off the node's thread
/// (an O(1) copy of a persistent map), sent as `SnapshotHeader`, `SnapshotChunk`s and
/// `SnapshotDone` with the request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTask<R> {
    pub reply: R,
    pub id: u64,
    pub store: KvStore,
    /// The term of the entry at the store's applied index.
    pub term: u64,
}

impl<R> BackupTask<R> {
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            index: self.store.applied(),
            term: self.term,
        }
    }

    /// The first answer of the stream.
    pub fn header(&self) -> ClientResponse {
        ClientResponse::SnapshotHeader {
            id: self.id,
            index: self.store.applied(),
            term: self.term,
            revision: self.store.revision(),
            keys: self.store.len() as u64,
        }
    }
}

/// Everything the driver produced since the last `Driver::take_output`. The shell does it all,
/// in any order except that `disk` jobs are queued in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output<R> {
    /// Messages to send now: everything they promise is durable already.
    pub messages: Vec<Envelope>,
    /// Jobs for the disk, in order.
    pub disk: Vec<DiskJob>,
    /// Answers, each with the reply token of the request it answers.
    pub answers: Vec<(R, ClientResponse)>,
    /// What the state machine applied, in order.
    pub applied: Vec<Applied>,
    /// Start encoding this snapshot in the background.
    pub prepare_snapshot: Option<SnapshotTask>,
    /// The core dropped its log up to this snapshot (its `SaveSnapshot` job is durable).
    pub compacted: Option<SnapshotMeta>,
    /// Whom to talk to changed: exactly these nodes (by id, with where they listen). The
    /// members of the configuration in effect and of the committed one: a node removed by a
    /// change not yet committed is still talked to, so that a leader removing itself hears
    /// that its removal is committed.
    pub peers: Option<BTreeMap<NodeId, String>>,
    /// Hash these states in the background (the consistency check).
    pub hash_states: Vec<HashTask>,
    /// What running watches stream (`Events`, and the error that ends a watch after its
    /// `Watching`): not answers to a request, so a connection does not count them against its
    /// requests in flight.
    pub watch_events: Vec<(R, ClientResponse)>,
    /// Backups to encode and stream.
    pub backups: Vec<BackupTask<R>>,
    /// Log entries a compaction dropped, to free: off the node's thread when there are many.
    /// Nothing to do but drop them, so `is_empty` does not count them.
    pub released: Vec<Entry>,
}

impl<R> Default for Output<R> {
    fn default() -> Self {
        Output {
            messages: Vec::new(),
            disk: Vec::new(),
            answers: Vec::new(),
            applied: Vec::new(),
            prepare_snapshot: None,
            compacted: None,
            peers: None,
            hash_states: Vec::new(),
            watch_events: Vec::new(),
            backups: Vec::new(),
            released: Vec::new(),
        }
    }
}

impl<R> Output<R> {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.disk.is_empty()
            && self.answers.is_empty()
            && self.applied.is_empty()
            && self.prepare_snapshot.is_none()
            && self.compacted.is_none()
            && self.peers.is_none()
            && self.hash_states.is_empty()
            && self.watch_events.is_empty()
            && self.backups.is_empty()
    }
}
