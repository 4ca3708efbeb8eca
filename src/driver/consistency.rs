//! The consistency check (as etcd's corruption check): every node hashes its applied state at
//! the same log indexes (multiples of an interval), tells every peer, and compares what the
//! peers tell it. Replicas that applied the same log must hold the same state; a mismatch
//! means a replica's state was damaged behind the log's back (memory, disk or a bug), and
//! raises the `Corrupt` alarm on every node that sees it.
//!
//! Hashing reads the whole state, so the shell does it off the node's thread (`HashTask`);
//! only the comparison happens here.

use crate::rpc::types::NodeId;
use std::collections::BTreeMap;

/// Hashes kept per node (own and each peer's), newest first out of the window.
const KEEP: usize = 8;

#[derive(Debug, Default)]
pub struct Consistency {
    /// index -> our hash.
    own: BTreeMap<u64, u64>,
    /// index -> peer -> its hash, for indexes we have not hashed yet (or just did).
    peers: BTreeMap<u64, BTreeMap<NodeId, u64>>,
    /// The first mismatch seen, for the alarm.
    mismatch: Option<String>,
}

impl Consistency {
    /// Our hash at `index` is known; returns the mismatches it reveals.
    pub fn own_hash(&mut self, id: NodeId, index: u64, hash: u64) {
        self.own.insert(index, hash);
        while self.own.len() > KEEP {
            self.own.pop_first();
        }
        if let Some(theirs) = self.peers.get(&index).cloned() {
            for (peer, h) in theirs {
                self.compare(id, peer, index, hash, h);
            }
        }
    }

    /// A peer's hash at `index`.
    pub fn peer_hash(&mut self, id: NodeId, peer: NodeId, index: u64, hash: u64) {
        if let Some(&ours) = self.own.get(&index) {
            self.compare(id, peer, index, ours, hash);
            return;
        }
        // Not applied that far yet (or the hash is still being computed): keep it a while.
        self.peers.entry(index).or_default().insert(peer, hash);
        while self.peers.len() > KEEP {
            self.peers.pop_first();
        }
    }

    fn compare(&mut self, id: NodeId, peer: NodeId, index: u64, ours: u64, theirs: u64) {
        if ours == theirs {
            ::log::debug!("node {id}: state at index {index} matches node {peer}'s ({ours:016x})");
            return;
        }
        let what = format!(
            "the state at index {index} hashes to {ours:016x} here but to {theirs:016x} on node {peer}"
        );
        ::log::error!(
            "node {id}: ALARM Corrupt: {what}: one of the replicas was damaged behind the log's \
             back; compare with the other members to find which, then replace its data dir"
        );
        if self.mismatch.is_none() {
            self.mismatch = Some(what);
        }
    }

    /// The first mismatch seen, if any (the `Corrupt` alarm).
    pub fn mismatch(&self) -> Option<&str> {
        self.mismatch.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_compared_whichever_arrives_first() {
        let mut c = Consistency::default();
        c.peer_hash(1, 2, 100, 7);
        c.own_hash(1, 100, 7);
        c.own_hash(1, 200, 9);
        c.peer_hash(1, 3, 200, 9);
        assert_eq!(c.mismatch(), None);
        c.peer_hash(1, 3, 300, 1);
        c.own_hash(1, 300, 2);
        assert!(c.mismatch().is_some_and(|m| m.contains("node 3")));
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = Consistency::default();
        for i in 0..100 {
            c.peer_hash(1, 2, i, i);
        }
        assert!(c.peers.len() <= KEEP);
    }
}
