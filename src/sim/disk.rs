//! A simulated disk: what a node has fsynced. A crash keeps exactly this and nothing else.

use crate::rpc::types::{Entry, HardState};

#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
    /// Number of syncs, for tests that count fsyncs.
    pub syncs: u64,
}

impl MemDisk {
    /// Applies one `Ready`'s durable part, as `Storage::save` does: hard state, then entries
    /// (replacing the suffix from the first entry's index if it overlaps).
    pub fn save(&mut self, hard_state: Option<HardState>, entries: &[Entry]) {
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        if let Some(first) = entries.first() {
            let last = self.entries.len() as u64;
            assert!(
                first.index >= 1 && first.index <= last + 1,
                "non-contiguous save: first {} after last {last}",
                first.index
            );
            self.entries.truncate((first.index - 1) as usize);
            self.entries.extend_from_slice(entries);
        }
        self.syncs += 1;
    }
}
