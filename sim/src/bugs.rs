//! Deliberate, classic Raft bugs, to prove that the simulation's checks catch them (`raftsim
//! --bug NAME`, sim/tests/raftsim_bugs.rs).
//!
//! Each bug is a switch in the config of one node's core (`raftd_core::Bugs`), of its
//! key-value service (`raftd::kv::KvBugs`), or of the simulated shell around the driver
//! (`AckBeforeFsync`, which the simulation itself carries out), compiled in only with the `bugs` feature of those
//! crates (this crate turns it on; the daemon's own build never has it). A [`BugSet`] says
//! which to switch on for one simulated cluster: nothing is process-wide, so tests can run a
//! buggy cluster next to a correct one.

use raftd::kv::KvBugs;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bug {
    /// `maybe_commit` counts replicas of an entry from an earlier term (Figure 8).
    CommitOldTerm,
    /// A vote is granted and answered at once, and never reaches the persisted hard state.
    VoteWithoutPersist,
    /// A follower drops its log after `prev + entries.len()` on every AppendEntries, even
    /// without a conflict (a stale, shorter message cuts acknowledged entries).
    TruncateStaleAppend,
    /// A leader answers linearizable Gets from its store at once, without a ReadIndex round.
    StaleRead,
    /// The store applies a retried (client_id, seq) again instead of returning the first
    /// outcome.
    DoubleApply,
    /// The shell tells the driver a disk job is durable as soon as it is written, before its
    /// fsync returned (a log writer that acknowledges early): a crash then loses acknowledged
    /// entries and votes.
    AckBeforeFsync,
}

impl Bug {
    pub const ALL: [Bug; 6] = [
        Bug::CommitOldTerm,
        Bug::VoteWithoutPersist,
        Bug::TruncateStaleAppend,
        Bug::StaleRead,
        Bug::DoubleApply,
        Bug::AckBeforeFsync,
    ];

    /// The name used by `raftsim --bug`.
    pub fn name(self) -> &'static str {
        match self {
            Bug::CommitOldTerm => "commit-old-term",
            Bug::VoteWithoutPersist => "vote-without-persist",
            Bug::TruncateStaleAppend => "truncate-stale-append",
            Bug::StaleRead => "stale-read",
            Bug::DoubleApply => "double-apply",
            Bug::AckBeforeFsync => "ack-before-fsync",
        }
    }

    /// A bug by its name (a leading `bug-` is accepted too).
    pub fn from_name(name: &str) -> Option<Bug> {
        let name = name.strip_prefix("bug-").unwrap_or(name);
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The bugs switched on in one simulated cluster (every node alike); empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BugSet(Vec<Bug>);

impl BugSet {
    pub fn none() -> BugSet {
        BugSet::default()
    }

    pub fn of(bugs: &[Bug]) -> BugSet {
        let mut set = BugSet::default();
        for &b in bugs {
            set.insert(b);
        }
        set
    }

    pub fn insert(&mut self, bug: Bug) {
        if !self.0.contains(&bug) {
            self.0.push(bug);
        }
    }

    pub fn contains(&self, bug: Bug) -> bool {
        self.0.contains(&bug)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The core's switches.
    pub fn core(&self) -> raftd_core::Bugs {
        raftd_core::Bugs {
            commit_old_term: self.contains(Bug::CommitOldTerm),
            vote_without_persist: self.contains(Bug::VoteWithoutPersist),
            truncate_stale_append: self.contains(Bug::TruncateStaleAppend),
        }
    }

    /// The key-value service's switches.
    pub fn kv(&self) -> KvBugs {
        KvBugs {
            stale_read: self.contains(Bug::StaleRead),
            double_apply: self.contains(Bug::DoubleApply),
        }
    }
}
