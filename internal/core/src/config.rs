//! Settings of one Raft node, counted in ticks so the core never reads a clock.

use crate::message::NodeId;
use crate::message::SnapshotMeta;
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;

/// Checks a snapshot received from the leader before this node installs it: the application
/// says whether the bytes are a state it can load (at `meta`). Refused snapshots are not
/// installed and count as refused messages.
#[derive(Clone)]
pub struct SnapshotCheck(pub Arc<SnapshotCheckFn>);

/// Whether a snapshot's bytes load at its meta; `Err` says why not.
pub type SnapshotCheckFn = dyn Fn(&SnapshotMeta, &[u8]) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for SnapshotCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotCheck(..)")
    }
}

/// Terms and indexes above this are refused as impossible: at a million a second a cluster
/// would need over a hundred thousand years to reach it, and staying far below `u64::MAX`
/// keeps every `+ 1` in the core from overflowing.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 52;

/// How a node with an empty log (and no snapshot) learns the cluster's first configuration.
/// A node with any log ignores this: its configuration is in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Founding {
    /// `voters` are the configuration, at once, with no incarnations recorded (tests, and
    /// clusters that trust every empty disk).
    Given,
    /// The cluster is founded only when every member of `voters` answers that its data dir is
    /// empty too; their incarnations go into the first configuration. If any member already
    /// holds the cluster's data, this node is one that lost its disk (or is new): it waits,
    /// never votes, and is caught up by the leader (thesis §4.4, docs/MEMBERSHIP.md).
    Unanimous,
    /// Joining an existing cluster (`--join`): wait to be caught up by the leader.
    Join,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (positive).
    pub id: NodeId,
    /// The founding voters, this node included (see [`Founding`]); a node with a log uses the
    /// configuration in its log instead.
    pub voters: Vec<NodeId>,
    /// Where the founding voters listen, written into the first configuration.
    pub addrs: BTreeMap<NodeId, String>,
    pub founding: Founding,
    /// This node's data dir identity (0: none; see `crate::membership`).
    pub incarnation: u64,
    /// A learner counts as caught up (may be promoted) when its log is within this many entries
    /// of the leader's commit index.
    pub catch_up_entries: u64,
    /// A follower starts an election after a random number of ticks in
    /// `election_ticks_min..election_ticks_max` without hearing from a leader (§5.2).
    pub election_ticks_min: u32,
    pub election_ticks_max: u32,
    /// A leader sends AppendEntries (a heartbeat if empty) to every follower this often.
    pub heartbeat_ticks: u32,
    /// Largest number of entries in one AppendEntries.
    pub max_entries_per_message: usize,
    /// Command bytes in one AppendEntries (one larger entry still goes alone).
    pub max_bytes_per_message: usize,
    /// Unacknowledged AppendEntries per follower while streaming.
    pub max_inflight: usize,
    /// Bytes of snapshot per InstallSnapshot message.
    pub snapshot_chunk_bytes: usize,
    /// Entries a node keeps in memory behind its own snapshot when it compacts (at most
    /// `log_behind_snapshot_bytes` of commands): a follower that lags by less than this
    /// catches up from the log instead of receiving the whole state (etcd keeps 5,000).
    pub log_behind_snapshot: u64,
    pub log_behind_snapshot_bytes: u64,
    /// Committed entries handed to the state machine per `Ready`.
    pub max_apply_batch: usize,
    /// Ask for pre-votes before raising the term (thesis §9.6), so a node that was cut off
    /// cannot depose a working leader when it rejoins.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority for an election timeout steps down, and a
    /// follower that heard from its leader within the minimum election timeout ignores vote
    /// requests (thesis §6.2, §4.2.3).
    pub check_quorum: bool,
    /// Seed of the election-timeout randomness, so runs are reproducible.
    pub seed: u64,
    /// Largest snapshot a follower assembles from InstallSnapshot chunks (they are held in
    /// memory until complete); a transfer announcing more is refused.
    pub max_snapshot_bytes: u64,
    /// See [`SnapshotCheck`]; `None` installs whatever arrives.
    pub snapshot_check: Option<SnapshotCheck>,
    /// Injected bugs (only with the `bugs` feature; all off by default).
    #[cfg(feature = "bugs")]
    pub bugs: crate::Bugs,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node id must be positive (0 means \"none\")")]
    ZeroId,
    #[error("node {0} is not in its own voter list")]
    NotAVoter(NodeId),
    #[error("the log holds a configuration that does not decode (index {index}): {reason}")]
    BadConfig { index: u64, reason: String },
    #[error("duplicate node id {0} in the voter list")]
    DuplicateVoter(NodeId),
    #[error("heartbeat interval ({heartbeat} ticks) must be positive and below the minimum election timeout ({election_min} ticks)")]
    HeartbeatTooSlow { heartbeat: u32, election_min: u32 },
    #[error(
        "election timeout range {min}..{max} ticks is empty; give a maximum above the minimum"
    )]
    EmptyElectionRange { min: u32, max: u32 },
    #[error("{0} must be positive")]
    ZeroLimit(&'static str),
}

impl Config {
    /// Defaults for a 10 ms tick: heartbeats every 50 ms, elections after 150–300 ms.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            addrs: BTreeMap::new(),
            founding: Founding::Given,
            incarnation: 0,
            catch_up_entries: 64,
            election_ticks_min: 15,
            election_ticks_max: 30,
            heartbeat_ticks: 5,
            max_entries_per_message: 1024,
            max_bytes_per_message: 1 << 20,
            max_inflight: 64,
            max_apply_batch: 1024,
            snapshot_chunk_bytes: 1 << 20,
            log_behind_snapshot: 10_000,
            log_behind_snapshot_bytes: 64 << 20,
            pre_vote: true,
            check_quorum: true,
            seed: id,
            max_snapshot_bytes: 8 << 30,
            snapshot_check: None,
            #[cfg(feature = "bugs")]
            bugs: crate::Bugs::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.founding != Founding::Join && !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter(self.id));
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.voters {
            if *v == 0 {
                return Err(ConfigError::ZeroId);
            }
            if !seen.insert(*v) {
                return Err(ConfigError::DuplicateVoter(*v));
            }
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return Err(ConfigError::EmptyElectionRange {
                min: self.election_ticks_min,
                max: self.election_ticks_max,
            });
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks_min {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_ticks,
                election_min: self.election_ticks_min,
            });
        }
        for (name, value) in [
            ("max_entries_per_message", self.max_entries_per_message),
            ("max_bytes_per_message", self.max_bytes_per_message),
            ("max_inflight", self.max_inflight),
            ("max_apply_batch", self.max_apply_batch),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        Ok(())
    }
}
