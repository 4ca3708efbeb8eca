//! Snapshots and InstallSnapshot (§7).
//!
//! The shell snapshots its state machine at some applied index and hands the bytes to
//! `Raft::compact`, which drops the log up to there. A follower that needs entries the leader
//! no longer holds gets the snapshot instead, in chunks of `snapshot_chunk_bytes`, one chunk in
//! flight at a time (the answer to each chunk says how many bytes the follower holds, so a lost
//! chunk or a dropped connection resumes where it stopped). The follower assembles the chunks
//! in memory and, with the last one, installs the snapshot: its log keeps the entries after the
//! snapshot if they match, and the shell persists the snapshot and restores its state machine
//! from it (`Ready::snapshot`) before the acknowledgement leaves.

use super::progress::ProgressState;
use super::Raft;
use crate::message::{ChunkPos, NodeId, RaftMessage, Role, Snapshot, SnapshotMeta};

/// A snapshot being received.
#[derive(Debug)]
pub(super) struct Incoming {
    /// The term of the leader sending it. Two leaders' snapshots at one index hold the same
    /// state but not necessarily the same bytes (the encoding of a hash map depends on the
    /// process), so chunks of one must never be appended to the other's.
    term: u64,
    meta: SnapshotMeta,
    total: u64,
    buf: Vec<u8>,
}

/// One InstallSnapshot chunk, as received.
pub(super) struct Chunk {
    pub meta: SnapshotMeta,
    pub pos: ChunkPos,
    pub data: Vec<u8>,
    /// The configuration at the snapshot's index (empty from leaders that predate them).
    pub membership: crate::Membership,
}

/// `compact` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("snapshot index {index} is past the applied index {applied}")]
    NotApplied { index: u64, applied: u64 },
    #[error("snapshot index {index} is not after the current snapshot at {current}")]
    Stale { index: u64, current: u64 },
    #[error("snapshot term {term} at index {index} disagrees with the log")]
    WrongTerm { index: u64, term: u64 },
}

impl Raft {
    /// The latest snapshot (taken here or installed from the leader).
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The same bytes as the current snapshot's, from another place (the daemon maps the
    /// snapshot file once it is durable, so the bytes need not stay in memory). Ignored unless
    /// `meta` is the current snapshot's and the length matches. Returns whether it was taken.
    pub fn replace_snapshot_data(&mut self, meta: SnapshotMeta, data: bytes::Bytes) -> bool {
        match self.snapshot.as_mut() {
            Some(s) if s.meta == meta && s.data.len() == data.len() => {
                s.data = data;
                true
            }
            _ => false,
        }
    }

    /// The index of the latest snapshot (taken here or installed), 0 without one. The log may
    /// start before it (`Config::log_behind_snapshot`): `log().snapshot()` is where the log
    /// starts.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot
            .as_ref()
            .map_or(self.log.snapshot().index, |s| s.meta.index)
    }

    /// Command bytes of the log's entries after the latest snapshot: what the next snapshot
    /// would cover.
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        self.log.bytes().saturating_sub(self.kept_behind_bytes)
    }

    /// The shell took `snapshot` of its state machine (at an applied index) and made it
    /// durable: drop the log up to it, but for the entries kept behind it
    /// (`Config::log_behind_snapshot`) for followers that lag a little.
    pub fn compact(&mut self, mut snapshot: Snapshot) -> Result<(), CompactError> {
        let SnapshotMeta { index, term } = snapshot.meta;
        if index > self.log.applied() {
            return Err(CompactError::NotApplied {
                index,
                applied: self.log.applied(),
            });
        }
        let current = self.snapshot_index();
        if index <= current {
            return Err(CompactError::Stale { index, current });
        }
        if self.log.term(index) != Some(term) {
            return Err(CompactError::WrongTerm { index, term });
        }
        // The configuration is the core's to know: whatever the shell put there, the snapshot
        // carries the one in effect at its index (what followers that install it will use).
        snapshot.membership = self.membership_at(index);
        let start = self.kept_start(index);
        if start > self.log.snapshot().index {
            let at = SnapshotMeta {
                index: start,
                term: self.log.term(start).unwrap_or_default(),
            };
            let membership = self.membership_at(start);
            self.log.compact(at);
            self.note_compacted(start, Some(membership));
        }
        self.kept_behind_bytes = self.log.bytes_through(index);
        ::log::info!(
            "node {}: took a snapshot at index {index} (term {term}, {} bytes) in term {}; log compacted, keeping {} entries behind it",
            self.id,
            snapshot.data.len(),
            self.term,
            index - self.log.snapshot().index
        );
        self.snapshot = Some(snapshot);
        Ok(())
    }

    /// Where the log starts once compacted for a snapshot at `index`: up to
    /// `log_behind_snapshot` entries and `log_behind_snapshot_bytes` bytes of commands before
    /// it stay (never fewer than the log already starts at).
    fn kept_start(&self, index: u64) -> u64 {
        let first = self.log.snapshot().index;
        let mut start = index;
        let mut bytes = 0u64;
        while start > first && index - start < self.cfg.log_behind_snapshot {
            let Some(e) = self.log.get(start) else { break };
            bytes += e.data.len() as u64;
            if bytes > self.cfg.log_behind_snapshot_bytes {
                break;
            }
            start -= 1;
        }
        start
    }

    /// Sends `peer` the next chunk of the snapshot, if none is awaiting an answer.
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let Some(latest) = self.snapshot.clone() else {
            ::log::error!(
                "node {}: node {peer} needs a snapshot but none exists",
                self.id
            );
            return;
        };
        let chunk = self.cfg.snapshot_chunk_bytes as u64;
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        // A transfer under way goes on with the snapshot it started with, even if we took a
        // newer one since: restarting it at every compaction never finishes a transfer that
        // takes longer than the time between two snapshots (a slow link under steady writes).
        // Once the follower installed it, it gets the newer one if it still needs it.
        let under_way = pr.state == ProgressState::Snapshot
            && (pr.snapshot_offset > 0 || pr.snapshot_in_flight);
        let snapshot = match &pr.snapshot {
            Some(sending) if under_way => sending.clone(),
            _ => latest,
        };
        if pr.state != ProgressState::Snapshot || pr.snapshot_index != snapshot.meta.index {
            ::log::info!(
                "node {}: sending snapshot at index {} ({} bytes) to node {peer} in term {}",
                self.id,
                snapshot.meta.index,
                snapshot.data.len(),
                self.term
            );
            pr.become_snapshot(snapshot.clone());
        }
        if pr.snapshot_in_flight {
            return;
        }
        let total = snapshot.data.len() as u64;
        let offset = pr.snapshot_offset.min(total);
        let end = (offset + chunk).min(total);
        pr.sent(end);
        let msg = RaftMessage::InstallSnapshot {
            term: self.term,
            leader_id: self.id,
            snapshot: snapshot.meta,
            pos: ChunkPos { offset, total },
            data: snapshot.data[offset as usize..end as usize].to_vec(),
            membership: (!snapshot.membership.is_empty()).then(|| snapshot.membership.clone()),
        };
        self.send(peer, msg);
    }

    /// Leader side: a follower's answer to a chunk, in our term.
    pub(super) fn handle_snapshot_reply(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        received: u64,
        done: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if done {
            // The follower's state now covers `meta.index`; continue with entries after it.
            if meta.index > pr.matched {
                pr.matched = meta.index;
            }
            if pr.state == ProgressState::Snapshot {
                ::log::info!(
                    "node {}: node {from} installed the snapshot at index {} in term {}",
                    self.id,
                    meta.index,
                    self.term
                );
                let next = pr.matched + 1;
                pr.become_probe(next);
            }
            self.maybe_commit();
            return;
        }
        if pr.state != ProgressState::Snapshot || pr.snapshot_index != meta.index {
            return; // an answer about a transfer we are no longer doing
        }
        if pr.snapshot_in_flight && received == pr.snapshot_offset {
            // Nothing new: the duplicate of the answer that sent the chunk now in flight, or an
            // answer to a duplicated chunk. Sending on each of them would put one more chunk in
            // flight per duplicate, and their answers more again (a storm on a network that
            // duplicates). A lost chunk is resent after two heartbeats.
            return;
        }
        // Resume from what the follower holds (it may have lost its buffer by restarting).
        pr.snapshot_offset = received;
        pr.snapshot_in_flight = false;
        pr.stalled_heartbeats = 0;
    }

    /// Follower side: one chunk. `term` equals ours here (`handle_term` ran).
    pub(super) fn handle_install_snapshot(&mut self, from: NodeId, term: u64, chunk: Chunk) {
        let Chunk {
            meta,
            pos,
            data,
            membership,
        } = chunk;
        self.follow(from, term);
        let reply = |received: u64, done: bool| RaftMessage::InstallSnapshotReply {
            term,
            snapshot: meta,
            received,
            done,
        };
        if meta.index <= self.log.committed() {
            // We already hold that state (a late or repeated snapshot). Installing it could only
            // move us backwards or cut a longer matching log: say we have it.
            self.incoming = None;
            let msg = reply(pos.total, true);
            self.send_after_persist(from, msg);
            return;
        }
        let fresh = self
            .incoming
            .as_ref()
            .is_none_or(|inc| inc.term != term || inc.meta != meta || inc.total != pos.total);
        if fresh {
            if pos.offset != 0 {
                // A chunk from the middle of a transfer we have no start of: restart it.
                self.send(from, reply(0, false));
                return;
            }
            self.incoming = Some(Incoming {
                term,
                meta,
                total: pos.total,
                buf: Vec::new(),
            });
        }
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        let have = incoming.buf.len() as u64;
        if pos.offset != have {
            // Out of order (a duplicate or a retransmission): say where we are.
            self.send(from, reply(have, false));
            return;
        }
        incoming.buf.extend_from_slice(&data);
        let have = incoming.buf.len() as u64;
        if have < incoming.total {
            self.send(from, reply(have, false));
            return;
        }
        let Some(incoming) = self.incoming.take() else {
            return;
        };
        if have > incoming.total {
            ::log::warn!(
                "node {}: snapshot from node {from} is longer than announced; discarding it",
                self.id
            );
            self.send(from, reply(0, false));
            return;
        }
        if let Some(check) = self.cfg.snapshot_check.clone() {
            if let Err(why) = (check.0)(&meta, &incoming.buf) {
                self.refuse_from(
                    from,
                    "InstallSnapshot",
                    term,
                    &format!("its snapshot at index {} does not load: {why}", meta.index),
                );
                // Start over: the leader may have a good copy (a transfer garbled in memory).
                self.send(from, reply(0, false));
                return;
            }
        }
        self.log.install_snapshot(meta);
        self.kept_behind_bytes = 0;
        let membership = if membership.is_empty() {
            self.membership_at(meta.index)
        } else {
            membership
        };
        self.note_compacted(meta.index, Some(membership.clone()));
        let snapshot = Snapshot {
            meta,
            data: bytes::Bytes::from(incoming.buf),
            membership,
        };
        ::log::info!(
            "node {}: installed a snapshot at index {} (term {}, {} bytes) from node {from} in term {term}",
            self.id,
            meta.index,
            meta.term,
            snapshot.data.len()
        );
        self.snapshot = Some(snapshot.clone());
        self.pending_snapshot = Some(snapshot);
        let msg = reply(have, true);
        self.send_after_persist(from, msg);
    }
}
