//! A simulated disk: what a node has fsynced. A crash keeps exactly this and nothing else.
//!
//! It mirrors `Storage`: the hard state, the latest snapshot (if any) and the log entries after
//! it. The simulation carries out each of the driver's disk jobs here when the simulated fsync
//! that covers it completes: `save` for an append, `save_snapshot` for a snapshot (saved or
//! installed), in the order they were queued, as the daemon's log writer does.

use raftd::rpc::types::{Entry, EntryKind, HardState, SnapshotMeta};
use raftd::storage::image::LogImage;
use raftd_core::{Membership, Snapshot};

#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    pub hard_state: HardState,
    /// The latest durable snapshot; `entries` start right after it.
    pub snapshot: Option<Snapshot>,
    /// `entries[i].index == snapshot_index() + 1 + i`.
    pub entries: Vec<Entry>,
    /// Number of syncs, for tests that count fsyncs.
    pub syncs: u64,
    /// Number of snapshots saved (taken here or installed from a leader).
    pub snapshot_saves: u64,
    /// The data dir's identity, as the daemon's `raftd.id` holds it: a lost disk comes back
    /// with another.
    pub incarnation: u64,
    /// The same log as the daemon's `raft.wal` would hold it, byte for byte (made by the
    /// daemon's own encoder): a crash can tear its last batch and rot can flip its bytes, and
    /// a restart recovers it with the daemon's own replay, which must give back exactly the
    /// state above (or report damage).
    pub image: LogImage,
}

impl MemDisk {
    /// An empty disk whose data dir has identity `incarnation`.
    pub fn fresh(incarnation: u64) -> MemDisk {
        MemDisk {
            incarnation,
            ..MemDisk::default()
        }
    }

    /// Index the durable snapshot covers (0 without one).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.as_ref().map(|s| s.meta).unwrap_or_default()
    }

    /// Index of the last durable entry (the snapshot's when the log after it is empty).
    pub fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// The configuration a node restarted from this disk would have in effect: the latest
    /// configuration entry of the log, else the snapshot's (empty: none yet).
    pub fn membership(&self) -> Membership {
        self.entries
            .iter()
            .rev()
            .find(|e| e.kind == EntryKind::Config)
            .and_then(|e| Membership::decode(&e.data).ok())
            .or_else(|| self.snapshot.as_ref().map(|s| s.membership.clone()))
            .unwrap_or_default()
    }

    /// Applies one `Ready`'s durable part, as `Storage::save` does: hard state, then entries
    /// (replacing the suffix from the first entry's index if it overlaps). Entries the snapshot
    /// covers are committed and can never be written again (`Storage` refuses them too).
    /// `new_sync` is false for a write that shared the previous write's fsync (group commit).
    pub fn save(&mut self, hard_state: Option<HardState>, entries: &[Entry], new_sync: bool) {
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        self.image
            .save([(hard_state, entries)])
            .expect("the daemon's encoder takes every save the sim makes");
        if let Some(first) = entries.first() {
            let snap = self.snapshot_index();
            let last = self.last_index();
            assert!(
                first.index > snap && first.index <= last + 1,
                "non-contiguous save: first {} with a snapshot at {snap} and last {last}",
                first.index
            );
            self.entries.truncate((first.index - snap - 1) as usize);
            self.entries.extend_from_slice(entries);
        }
        if new_sync {
            self.syncs += 1;
        }
    }

    /// As `Storage::save_snapshot`: durably stores `snapshot` and replaces the log with `tail`
    /// (the entries the node keeps after it, contiguous from `snapshot.meta.index + 1`), with
    /// `hard_state` as the term and vote. A snapshot never moves backwards.
    pub fn save_snapshot(&mut self, snapshot: Snapshot, tail: &[Entry], hard_state: HardState) {
        let meta = snapshot.meta;
        let current = self.snapshot_meta();
        assert!(
            meta.index > current.index
                || (meta.index == current.index && meta.term == current.term),
            "snapshot going backwards on disk: {}@{} after {}@{}",
            meta.index,
            meta.term,
            current.index,
            current.term
        );
        for (i, e) in tail.iter().enumerate() {
            assert_eq!(
                e.index,
                meta.index + 1 + i as u64,
                "the log kept after a snapshot must be contiguous from it"
            );
        }
        self.image
            .compact(hard_state, meta, tail)
            .expect("the daemon's encoder takes every compaction the sim makes");
        self.hard_state = hard_state;
        self.snapshot = Some(snapshot);
        self.entries = tail.to_vec();
        self.syncs += 1;
        self.snapshot_saves += 1;
    }
}
