//! Deliberate, classic Raft bugs, to prove that the simulation's checks catch them (`raftsim
//! --bug NAME`, tests/raftsim_bugs.rs).
//!
//! Each bug's code is compiled in only with its cargo feature (`bug-commit-old-term`, …, or
//! `bugs` for all five) and is active only once switched on at run time with [`enable`], so one
//! build can demonstrate each bug separately. In a build without the features, [`on`] is a
//! constant `false` and no bug code exists at all.

use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Bug {
    pub const ALL: [Bug; 5] = [
        Bug::CommitOldTerm,
        Bug::VoteWithoutPersist,
        Bug::TruncateStaleAppend,
        Bug::StaleRead,
        Bug::DoubleApply,
    ];

    /// The name used by `raftsim --bug` (the feature name without `bug-`).
    pub fn name(self) -> &'static str {
        match self {
            Bug::CommitOldTerm => "commit-old-term",
            Bug::VoteWithoutPersist => "vote-without-persist",
            Bug::TruncateStaleAppend => "truncate-stale-append",
            Bug::StaleRead => "stale-read",
            Bug::DoubleApply => "double-apply",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        let name = name.strip_prefix("bug-").unwrap_or(name);
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this build contains the bug's code (its feature is enabled).
    pub fn compiled(self) -> bool {
        match self {
            Bug::CommitOldTerm => cfg!(feature = "bug-commit-old-term"),
            Bug::VoteWithoutPersist => cfg!(feature = "bug-vote-without-persist"),
            Bug::TruncateStaleAppend => cfg!(feature = "bug-truncate-stale-append"),
            Bug::StaleRead => cfg!(feature = "bug-stale-read"),
            Bug::DoubleApply => cfg!(feature = "bug-double-apply"),
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

static ENABLED: AtomicU32 = AtomicU32::new(0);

/// Switches `bug` on for the whole process. Returns false (and does nothing) if this build
/// does not contain it.
pub fn enable(bug: Bug) -> bool {
    if !bug.compiled() {
        return false;
    }
    ENABLED.fetch_or(bug.bit(), Ordering::Relaxed);
    true
}

/// Switches every bug off.
pub fn disable_all() {
    ENABLED.store(0, Ordering::Relaxed);
}

/// Is `bug` compiled in and switched on?
#[inline]
pub fn on(bug: Bug) -> bool {
    bug.compiled() && ENABLED.load(Ordering::Relaxed) & bug.bit() != 0
}
