//! When the driver snapshots its state machine, and where that snapshot is on its way to disk.

use crate::rpc::types::Snapshot;

/// When to snapshot the state machine and compact the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Entries applied since the last snapshot.
    pub entries: u64,
    /// Command bytes held in the log.
    pub bytes: u64,
}

impl SnapshotPolicy {
    /// Never snapshot (the log grows forever).
    pub fn never() -> SnapshotPolicy {
        SnapshotPolicy {
            entries: u64::MAX,
            bytes: u64::MAX,
        }
    }

    /// Whether a snapshot is due, with `applied` entries applied, the last snapshot at
    /// `snapshot_index`, `log_bytes` of commands in the log, and the last failed attempt (if
    /// any) at `failed_at`: after a failure the next attempt waits for another `entries`
    /// entries, so a disk that refuses snapshots is not asked again on every turn.
    pub fn wants(
        &self,
        applied: u64,
        snapshot_index: u64,
        log_bytes: u64,
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
        since >= self.entries || log_bytes >= self.bytes
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
        };
        assert!(!p.wants(0, 0, 0, None), "nothing applied");
        assert!(!p.wants(99, 0, 999, None));
        assert!(p.wants(100, 0, 0, None), "100 entries since the snapshot");
        assert!(p.wants(1, 0, 1000, None), "1000 bytes in the log");
        assert!(!p.wants(150, 100, 0, None), "50 since the snapshot at 100");
        assert!(!SnapshotPolicy::never().wants(u64::MAX - 1, 0, u64::MAX - 1, None));
    }

    #[test]
    fn after_a_failure_the_next_attempt_waits_for_more_entries() {
        let p = SnapshotPolicy {
            entries: 100,
            bytes: u64::MAX,
        };
        assert!(!p.wants(150, 0, 0, Some(120)), "only 30 since the failure");
        assert!(p.wants(220, 0, 0, Some(120)), "100 since the failure");
    }
}
