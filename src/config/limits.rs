//! What the core's settings are for a daemon configuration, and what fits in one peer frame.

use super::{ConfigError, NodeConfig};

/// Builds the core's configuration from the daemon's.
pub fn raft_config(cfg: &NodeConfig) -> Result<raftd_core::Config, ConfigError> {
    let timing = cfg.timing()?;
    let mut rc = raftd_core::Config::new(cfg.id, cfg.members().keys().copied().collect());
    rc.heartbeat_ticks = timing.heartbeat_ticks;
    rc.election_ticks_min = timing.election_ticks_min;
    rc.election_ticks_max = timing.election_ticks_max;
    // Logged at start, so an election schedule can be told apart and replayed in a test.
    rc.seed = rand::random();
    // Every AppendEntries must fit in one peer frame, or it is dropped on every retransmission
    // and the follower never catches up.
    let limits = ReplicationLimits::for_frame(cfg.max_frame_bytes);
    rc.max_entries_per_message = rc.max_entries_per_message.min(limits.max_entries);
    rc.max_bytes_per_message = rc.max_bytes_per_message.min(limits.max_batch_bytes);
    rc.snapshot_chunk_bytes = rc.snapshot_chunk_bytes.min(limits.max_command_bytes.max(1));
    rc.log_behind_snapshot = cfg.snapshot_catchup_entries;
    Ok(rc)
}

/// What fits in one AppendEntries frame of `max_frame_bytes`. Entry data travels as base64
/// (4 bytes per 3) inside JSON, next to per-entry and per-message fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationLimits {
    /// Entries per message.
    pub max_entries: usize,
    /// Command bytes in a message of several entries.
    pub max_batch_bytes: usize,
    /// Bytes of one command (an entry that travels alone).
    pub max_command_bytes: usize,
}

impl ReplicationLimits {
    /// The envelope and AppendEntries fields, every number at its widest (20 digits).
    const MESSAGE_OVERHEAD: usize = 400;
    /// One entry's fields, comma and base64 padding, every number at its widest.
    const ENTRY_OVERHEAD: usize = 100;

    pub fn for_frame(max_frame_bytes: usize) -> ReplicationLimits {
        let avail = max_frame_bytes.saturating_sub(Self::MESSAGE_OVERHEAD);
        // A quarter of the frame for per-entry fields, three quarters for base64 data.
        ReplicationLimits {
            max_entries: (avail / 4 / Self::ENTRY_OVERHEAD).max(1),
            max_batch_bytes: (avail * 3 / 4 * 3 / 4).max(1),
            max_command_bytes: avail.saturating_sub(Self::ENTRY_OVERHEAD) * 3 / 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReplicationLimits;
    use crate::rpc::types::{Entry, Envelope, RaftMessage};

    fn append_entries(entries: Vec<Entry>) -> usize {
        let env = Envelope {
            incarnation: 0,
            from: u64::MAX,
            to: u64::MAX,
            msg: RaftMessage::AppendEntries {
                term: u64::MAX,
                leader_id: u64::MAX,
                prev_log_index: u64::MAX,
                prev_log_term: u64::MAX,
                entries,
                leader_commit: u64::MAX,
                read_round: u64::MAX,
            },
        };
        serde_json::to_vec(&env).unwrap().len()
    }

    #[test]
    fn the_largest_append_entries_fits_in_a_frame() {
        for frame in [1024, 4096, 65536, 1 << 20, 16 << 20] {
            let l = ReplicationLimits::for_frame(frame);
            // One entry of the largest command.
            let one = vec![Entry::command(
                u64::MAX,
                u64::MAX,
                vec![7; l.max_command_bytes],
            )];
            assert!(append_entries(one) <= frame, "{frame}: {l:?}");
            // A full batch, every entry with the worst base64 padding (len % 3 == 1).
            let n = l.max_entries.min(1024);
            let each = (l.max_batch_bytes / n).max(1);
            let each = each - (each + 2) % 3;
            let batch = (0..n)
                .map(|_| Entry::command(u64::MAX, u64::MAX, vec![7; each]))
                .collect();
            assert!(append_entries(batch) <= frame, "{frame}: {l:?}");
        }
        let default = ReplicationLimits::for_frame(16 << 20);
        assert!(default.max_entries >= 1024 && default.max_batch_bytes >= 1 << 20);
    }
}
