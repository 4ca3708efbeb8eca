//! Helpers shared by the simulated-cluster scenario tests (`sim/tests/sim_*.rs`).
//!
//! Every helper that asserts names the cluster's seed in its message, so a failure can be
//! replayed exactly: `SimConfig::new(n, seed)` with the printed seed gives the same run.

use crate::{Cluster, Micros, SimConfig, MS, SEC};
use raftd::rpc::types::NodeId;
use rand::Rng;

/// A cluster of `n` nodes on a reliable network, with the default core timing.
pub fn cluster(n: usize, seed: u64) -> Cluster {
    Cluster::new(SimConfig::new(n, seed))
}

/// Waits until exactly one node of `among` believes it leads and returns it. Nodes outside
/// `among` (cut off, say) may still think they lead; this is the MIT lab's `checkOneLeader`
/// for the connected part of the cluster.
pub fn check_one_leader(c: &mut Cluster, among: &[NodeId], timeout: Micros) -> NodeId {
    let ok = c.run_until(timeout, |c| c.leaders_among(among).len() == 1);
    let leaders = c.leaders_among(among);
    assert!(
        ok,
        "[seed {}] expected exactly one leader among {among:?} within {} ms, found {leaders:?} (all leaders: {:?})",
        c.seed(),
        timeout / MS,
        c.leaders()
    );
    leaders[0]
}

/// Asserts that no node of `among` believes it leads.
pub fn check_no_leader(c: &Cluster, among: &[NodeId]) {
    let leaders = c.leaders_among(among);
    assert!(
        leaders.is_empty(),
        "[seed {}] expected no leader among {among:?}, found {leaders:?} (terms {:?})",
        c.seed(),
        c.leaders()
    );
}

/// The term of an up node.
pub fn term_of(c: &Cluster, id: NodeId) -> u64 {
    c.raft(id)
        .unwrap_or_else(|| panic!("[seed {}] node {id} is down", c.seed()))
        .term()
}

/// The leader node `id` follows (0 if none).
pub fn leader_seen_by(c: &Cluster, id: NodeId) -> NodeId {
    c.raft(id)
        .unwrap_or_else(|| panic!("[seed {}] node {id} is down", c.seed()))
        .leader()
}

/// `n` random bytes from the cluster's seeded generator.
pub fn random_bytes(c: &mut Cluster, n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    c.rng().fill(&mut data[..]);
    data
}

/// A distinct, printable command.
pub fn cmd(tag: &str, i: u64) -> Vec<u8> {
    format!("{tag}-{i}").into_bytes()
}

/// Asserts that nothing at or after `index` is committed on any up node, nor applied anywhere.
pub fn assert_not_committed(c: &Cluster, index: u64, why: &str) {
    assert_eq!(
        c.committed_on(index),
        0,
        "[seed {}] index {index} committed on some node although {why}",
        c.seed()
    );
    assert!(
        c.applied_anywhere().range(index..).next().is_none(),
        "[seed {}] index {index} applied although {why}",
        c.seed()
    );
}

/// Restarts every crashed node and reconnects every link.
pub fn heal_all(c: &mut Cluster) {
    c.heal();
    for id in c.ids() {
        if !c.node(id).is_up() {
            c.restart(id);
        }
    }
}

/// Every entry ever applied by any node is in every node's log at the same index (or covered by
/// its snapshot) and every node applied it (or restored a snapshot covering it) after
/// convergence: committed entries stay committed.
pub fn assert_everything_applied_stays(c: &Cluster) {
    let seed = c.seed();
    for id in c.ids() {
        let raft = c
            .raft(id)
            .unwrap_or_else(|| panic!("[seed {seed}] node {id} is down"));
        let node = c.node(id);
        let snapshot = raft.log().snapshot().index;
        for (index, entry) in c.applied_anywhere() {
            // Entries a snapshot covers are gone from the log (committed, so they match) and
            // reflected in the state machine without being applied one by one.
            if *index > snapshot {
                assert_eq!(
                    raft.log().get(*index),
                    Some(entry),
                    "[seed {seed}] node {id}: entry applied at index {index} somewhere is not in its log"
                );
            }
            assert!(
                node.applied_index() >= *index,
                "[seed {seed}] node {id} did not apply the committed entry at index {index}"
            );
            if *index > node.applied_base {
                assert_eq!(
                    node.applied_entry(*index),
                    Some(entry),
                    "[seed {seed}] node {id} applied another entry at index {index}"
                );
            }
        }
    }
}

/// The usual generous bound for an election after a disturbance: a few election timeouts.
pub const ELECTION: Micros = 3 * SEC;
