//! Deliberate, classic Raft bugs, switched on per node in [`Config::bugs`](crate::Config), to
//! prove that the simulation's checks catch them (`raftsim --bug NAME`, the raftd-sim crate).
//!
//! This module, and the `bugs` field of the config, exist only with the `bugs` cargo feature;
//! a build without it contains no bug code at all. Each switch is a field of one node's
//! config, not a process-wide flag, so tests can run a buggy cluster next to a correct one in
//! the same process.

/// The core's bug switches; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// `maybe_commit` counts replicas of an entry from an earlier term (Figure 8).
    pub commit_old_term: bool,
    /// A vote is granted and answered at once, and never reaches the persisted hard state.
    pub vote_without_persist: bool,
    /// A follower drops its log after `prev + entries.len()` on every AppendEntries, even
    /// without a conflict (a stale, shorter message cuts acknowledged entries).
    pub truncate_stale_append: bool,
}
