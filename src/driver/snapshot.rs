//! When the driver snapshots its state machine, and where that snapshot is on its way to disk.

use crate::rpc::types::Snapshot;

/// When to snapshot the state machine and compact the log.
///
/// A snapshot costs about its own size (the whole state is encoded and written), so taking
/// one every fixed number of entries makes the work per write grow with the state: at a
/// million keys, a snapshot every 10,000 writes re-encodes hundreds of megabytes for a few
/// megabytes of new log. So a snapshot also waits until the log since the last one is a set
/// share (`log_percent`) of that snapshot's size: the snapshot work per byte written stays
/// about 100 / `log_percent` whatever the state's size, and the log (on disk and in memory)
/// stays within that share of the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Entries applied since the last snapshot.
    pub entries: u64,
    /// ... or command bytes held in the log.
    pub bytes: u64,
    /// ... and, either way, the log's command bytes are at least this percentage of the last
    /// snapshot's size (0: no such condition).
    pub log_percent: u64,
}

impl SnapshotPolicy {
    /// Never snapshot (the log grows forever).
    pub fn never() -> SnapshotPolicy {
        SnapshotPolicy {
            entries: u64::MAX,
            bytes: u64::MAX,
            log_percent: 0,
        }
    }

    /// Whether a snapshot is due, with `applied` entries applied, the last snapshot at
    /// `snapshot_index` and `snapshot_bytes` long, `log_bytes` of commands in the log, and the
    /// last failed attempt (if any) at `failed_at`: after a failure the next attempt waits for
    /// another `entries` entries, so a disk that refuses snapshots is not asked again on every
    /// turn.
    pub fn wants(
        &self,
        applied: u64,
        snapshot_index: u64,
        log_bytes: u64,
        snapshot_bytes: u64,
        failed_at: Option<u64>,
    ) -> bool {
        let since = applied.saturating_sub(snapshot_index);
        if since == 0 {
            return false;
        }
        if let Some(failed) = failed_at {
            if applied.saturating_sub(failed) < self.entries.min(since) {
                return false;
            }
        }
        let grown = u128::from(log_bytes) * 100
            >= u128::from(snapshot_bytes) * u128::from(self.log_percent);
        grown && (since >= self.entries || log_bytes >= self.bytes)
    }
}

/// Where the snapshot in progress is. One at a time: the daemon prepares its file under one
/// temporary name, which a second snapshot would overwrite before the first is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SnapshotState {
    /// None in progress; the last attempt failed at this applied index, if it did.
    Idle { failed_at: Option<u64> },
    /// The shell is encoding the state machine at `index`.
    Preparing { index: u64 },
    /// Queued as the disk job `seq`; the core compacts its log once that is durable.
    Saving { seq: u64, snapshot: Snapshot },
}

impl Default for SnapshotState {
    fn default() -> Self {
        SnapshotState::Idle { failed_at: None }
    }
}

impl SnapshotState {
    pub(super) fn can_start(&self) -> bool {
        matches!(self, SnapshotState::Idle { .. })
    }

    pub(super) fn failed_at(&self) -> Option<u64> {
        match self {
            SnapshotState::Idle { failed_at } => *failed_at,
            _ => None,
        }
    }

    pub(super) fn is_preparing(&self, at: u64) -> bool {
        matches!(self, SnapshotState::Preparing { index } if *index == at)
    }

    /// The disk made job `durable` durable: the snapshot saved by it (or by an earlier job),
    /// if one was waiting. The state is idle afterwards.
    pub(super) fn saved(&mut self, durable: u64) -> Option<Snapshot> {
        match self {
            SnapshotState::Saving { seq, .. } if *seq <= durable => match std::mem::take(self) {
                SnapshotState::Saving { snapshot, .. } => Some(snapshot),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    #[test]
    fn a_snapshot_is_due_by_entries_or_by_bytes() {
        let p = SnapshotPolicy {
            entries: 100,
            bytes: 1000,
            log_percent: 0,
        };
        assert!(!p.wants(0, 0, 0, 0, None), "nothing applied");
        assert!(!p.wants(99, 0, 999, 0, None));
        assert!(
            p.wants(100, 0, 0, 0, None),
            "100 entries since the snapshot"
        );
        assert!(p.wants(1, 0, 1000, 0, None), "1000 bytes in the log");
        assert!(
            !p.wants(150, 100, 0, 0, None),
            "50 since the snapshot at 100"
        );
        assert!(!SnapshotPolicy::never().wants(u64::MAX - 1, 0, u64::MAX - 1, 0, None));
    }

    #[test]
    fn a_large_state_waits_for_a_log_in_proportion_to_it() {
        let p = SnapshotPolicy {
            entries: 100,
            bytes: 1000,
            log_percent: 25,
        };
        // A small state: the entry count decides, as without the ratio.
        assert!(p.wants(100, 0, 300, 1000, None));
        // A state of 1 MB: 100 entries of 3 bytes are not worth re-encoding it.
        assert!(!p.wants(100, 0, 300, 1_000_000, None));
        assert!(!p.wants(80_000, 0, 249_999, 1_000_000, None));
        assert!(
            p.wants(80_000, 0, 250_000, 1_000_000, None),
            "a quarter of the state"
        );
        // The byte threshold alone does not override the ratio either.
        assert!(!p.wants(10, 0, 200_000, 1_000_000, None));
        // The work per byte written stays the same as the state grows: 4 bytes of snapshot
        // per byte of log at 25%, at any size.
        for state in [1_000_000u64, 100_000_000, 10_000_000_000] {
            let log = state / 4;
            assert!(p.wants(u64::MAX / 2, 0, log, state, None));
            assert!(!p.wants(u64::MAX / 2, 0, log - 1, state, None));
        }
    }

    #[test]
    fn after_a_failure_the_next_attempt_waits_for_more_entries() {
        let p = SnapshotPolicy {
            entries: 100,
            bytes: u64::MAX,
            log_percent: 0,
        };
        assert!(
            !p.wants(150, 0, 0, 0, Some(120)),
            "only 30 since the failure"
        );
        assert!(p.wants(220, 0, 0, 0, Some(120)), "100 since the failure");
    }
}
