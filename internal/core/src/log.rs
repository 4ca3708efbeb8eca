//! The in-memory Raft log and its four watermarks.
//!
//! ```text
//!   snapshot_index   applied  <=  committed         stable            last
//!        |--------------|---------------|--------------|-----------------|
//!                                                      \__ not yet on disk __/
//! ```
//! * `stable`: the last index the shell has told us is durably written.
//! * `handed`: the last index handed to the shell for writing (`stable <= handed <= last`).
//!   Entries after it are handed out once, in a `Ready`, so appends never copy the whole log;
//!   the shell may still be writing those between `handed` and `stable` (asynchronous
//!   persistence: the node keeps working while its disk syncs).
//! * `committed`: known to be replicated on a majority (only ever grows).
//! * `applied`: handed to the state machine (only ever grows, never passes `committed`).
//!
//! Entries before the first one held here belong to a snapshot (`snapshot_index`/`term`);
//! without one that is the empty prefix (index 0, term 0), which matches every log.

use crate::message::{Entry, SnapshotMeta};

#[derive(Debug, Clone)]
pub struct RaftLog {
    snapshot_index: u64,
    snapshot_term: u64,
    /// `entries[i].index == snapshot_index + 1 + i`.
    entries: Vec<Entry>,
    /// Sum of the command bytes of `entries`.
    bytes: u64,
    stable: u64,
    handed: u64,
    committed: u64,
    applied: u64,
    /// Entries a compaction or an installed snapshot dropped, until the shell takes them
    /// (`take_released`): freeing a quarter of a large state's log, one allocation an entry,
    /// takes tens of milliseconds, which the daemon spends on another thread.
    released: Vec<Entry>,
}

impl RaftLog {
    /// A log restored from storage: everything given is already durable.
    pub fn restore(entries: Vec<Entry>) -> RaftLog {
        RaftLog::restore_with_snapshot(SnapshotMeta::default(), entries)
    }

    /// A log restored from a snapshot and the entries after it. The snapshot's state is
    /// applied (the caller restored its state machine from it), so it counts as committed.
    pub fn restore_with_snapshot(snapshot: SnapshotMeta, entries: Vec<Entry>) -> RaftLog {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snapshot.index + 1 + i as u64,
                "restored log must be contiguous after the snapshot"
            );
        }
        let bytes = entries.iter().map(|e| e.data.len() as u64).sum();
        let stable = snapshot.index + entries.len() as u64;
        RaftLog {
            snapshot_index: snapshot.index,
            snapshot_term: snapshot.term,
            entries,
            bytes,
            stable,
            handed: stable,
            committed: snapshot.index,
            released: Vec::new(),
            applied: snapshot.index,
        }
    }

    pub fn snapshot(&self) -> SnapshotMeta {
        SnapshotMeta {
            index: self.snapshot_index,
            term: self.snapshot_term,
        }
    }

    /// Command bytes held in memory (entries after the snapshot).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries held in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every entry up to `meta.index`, which a snapshot of the applied state now covers.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        assert!(
            meta.index <= self.applied,
            "compacting past what was applied"
        );
        assert_eq!(
            self.term(meta.index),
            Some(meta.term),
            "snapshot term disagrees with the log"
        );
        self.drop_through(meta);
    }

    /// Installs a snapshot received from the leader (§7). If our log holds the snapshot's last
    /// entry, the entries after it are kept (they match the leader's); otherwise the whole log
    /// is replaced. Either way the snapshot's state counts as committed and applied.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta) {
        if meta.index >= self.snapshot_index && self.matches(meta.index, meta.term) {
            self.drop_through(meta);
        } else {
            let dropped = std::mem::take(&mut self.entries);
            self.release(dropped);
            self.bytes = 0;
            self.snapshot_index = meta.index;
            self.snapshot_term = meta.term;
            self.stable = meta.index;
            self.handed = meta.index;
        }
        self.stable = self.stable.max(meta.index);
        self.handed = self.handed.max(meta.index);
        self.committed = self.committed.max(meta.index);
        self.applied = self.applied.max(meta.index);
    }

    fn drop_through(&mut self, meta: SnapshotMeta) {
        if meta.index <= self.snapshot_index {
            return;
        }
        let n = ((meta.index - self.snapshot_index) as usize).min(self.entries.len());
        // The kept tail moves to a new vector (it is short: a compaction is at the applied
        // index), and the dropped entries stay where they are until released.
        let kept = self.entries.split_off(n);
        let dropped = std::mem::replace(&mut self.entries, kept);
        self.bytes -= dropped.iter().map(|e| e.data.len() as u64).sum::<u64>();
        self.release(dropped);
        self.snapshot_index = meta.index;
        self.snapshot_term = meta.term;
    }

    fn release(&mut self, dropped: Vec<Entry>) {
        if self.released.is_empty() {
            self.released = dropped;
        } else {
            self.released.extend(dropped);
        }
    }

    /// The entries compactions and installed snapshots dropped since the last call, to be
    /// freed wherever it costs least.
    pub(crate) fn take_released(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.released)
    }

    /// Command bytes of the entries held at or below `index`.
    pub fn bytes_through(&self, index: u64) -> u64 {
        let n = (index.saturating_sub(self.snapshot_index) as usize).min(self.entries.len());
        self.entries[..n].iter().map(|e| e.data.len() as u64).sum()
    }

    /// Durable entries after the snapshot: what storage keeps when it compacts.
    pub fn stable_entries(&self) -> &[Entry] {
        let n = (self.stable.saturating_sub(self.snapshot_index) as usize).min(self.entries.len());
        &self.entries[..n]
    }

    /// Clones of the entries with index in `after + 1..=upto` that this log holds (those at
    /// or below the snapshot are not held).
    pub fn entries_between(&self, after: u64, upto: u64) -> Vec<Entry> {
        let from = after.max(self.snapshot_index) + 1;
        let upto = upto.min(self.last_index());
        if from > upto {
            return Vec::new();
        }
        self.slice(from, (upto - from + 1) as usize, usize::MAX)
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_term, |entry| entry.term)
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn stable(&self) -> u64 {
        self.stable
    }

    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// Term of the entry at `index`; `None` if the log does not hold it (past the end, or
    /// compacted away).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|entry| entry.term)
    }

    pub fn get(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Is a log ending at (`last_index`, `last_term`) at least as up to date as ours (§5.4.1)?
    /// Compare last terms first; with equal terms, the longer log wins.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Does our entry at `index` have `term`? Index 0 (the empty prefix) always matches.
    pub fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// First index of the run of entries with `term` that contains `index`. Used to build the
    /// conflict hint, so the leader can skip the whole run in one round trip.
    pub fn first_index_of_term_at(&self, index: u64) -> u64 {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut first = index;
        while first > self.first_index() && self.term(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index at or before `upto` whose entry has `term`, if the log has one.
    /// Terms are non-decreasing along a log, so the scan stops as soon as it sees a smaller term.
    pub fn last_index_of_term(&self, term: u64, upto: u64) -> Option<u64> {
        let mut index = upto.min(self.last_index());
        while index >= self.first_index() {
            match self.term(index) {
                Some(t) if t == term => return Some(index),
                Some(t) if t < term => return None,
                _ => {}
            }
            index -= 1;
        }
        None
    }

    /// Appends a new entry at the end (leader path).
    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.bytes += entry.data.len() as u64;
        self.entries.push(entry);
    }

    /// Follower path (§5.3): merges `entries` sent after a matching `prev`. An entry that is
    /// already present with the same term is skipped; at the first real conflict the log is
    /// cut there and the rest appended. A message that holds nothing new changes nothing, which
    /// is what keeps a late, duplicated AppendEntries from truncating newer entries.
    /// Returns the index of the first conflict, if the log was cut.
    pub fn merge(&mut self, entries: &[Entry]) -> Option<u64> {
        let mut cut = None;
        for (i, entry) in entries.iter().enumerate() {
            match self.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    assert!(
                        entry.index > self.committed,
                        "conflict at committed index {} (committed {}): Raft safety broken",
                        entry.index,
                        self.committed
                    );
                    self.truncate_from(entry.index);
                    cut = Some(entry.index);
                    self.extend(&entries[i..]);
                    return cut;
                }
                None => {
                    if entry.index <= self.snapshot_index {
                        continue; // covered by the snapshot: committed, so it matches
                    }
                    debug_assert_eq!(entry.index, self.last_index() + 1);
                    self.extend(&entries[i..]);
                    return cut;
                }
            }
        }
        cut
    }

    /// For the `truncate_stale_append` bug only: drops the entries after `index` (never a committed
    /// one, so the core's own invariants hold and the simulation's checks must find the harm).
    #[cfg(feature = "bugs")]
    pub(crate) fn bug_truncate_after(&mut self, index: u64) {
        let index = index.max(self.committed).max(self.snapshot_index);
        if index < self.last_index() {
            self.truncate_from(index + 1);
        }
    }

    fn extend(&mut self, entries: &[Entry]) {
        self.bytes += entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
        self.entries.extend_from_slice(entries);
    }

    fn truncate_from(&mut self, index: u64) {
        let keep = (index - self.snapshot_index - 1) as usize;
        let dropped: u64 = self.entries[keep.min(self.entries.len())..]
            .iter()
            .map(|e| e.data.len() as u64)
            .sum();
        self.bytes -= dropped;
        self.entries.truncate(keep);
        // Whatever was cut off must be written again, so it is no longer "stable", nor handed
        // out (a write of the old entries still in flight is superseded by the next one).
        self.stable = self.stable.min(index - 1);
        self.handed = self.handed.min(index - 1);
    }

    /// Up to `max_entries` entries starting at `from`, and no more than `max_bytes` of command
    /// data (at least one entry if any exists, so a huge entry still moves).
    pub fn slice(&self, from: u64, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        if from <= self.snapshot_index || from > self.last_index() {
            return Vec::new();
        }
        let start = (from - self.snapshot_index - 1) as usize;
        let mut bytes = 0usize;
        let mut out = Vec::new();
        for entry in self.entries[start..].iter().take(max_entries) {
            bytes += entry.data.len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Entries not yet handed to the storage writer, cloned for it; from now on they count
    /// as handed out.
    pub fn take_unhanded(&mut self) -> Vec<Entry> {
        let out = self.slice(self.handed + 1, usize::MAX, usize::MAX);
        self.handed = self.last_index().max(self.handed);
        out
    }

    /// Entries not yet handed to the storage writer (a peek, for tests).
    #[cfg(test)]
    pub fn unstable_entries(&self) -> Vec<Entry> {
        self.slice(self.handed + 1, usize::MAX, usize::MAX)
    }

    /// The shell wrote entries up to (`index`, `term`). Ignored if the log changed underneath
    /// (the entry at `index` now has another term), so a stale acknowledgement never marks new
    /// data as durable.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if index > self.stable && index <= self.handed && self.matches(index, term) {
            self.stable = index;
        }
    }

    /// Raises the commit index. It never moves backwards, and never past the log's end.
    pub fn commit_to(&mut self, index: u64) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Committed entries not yet applied, at most `max_entries` of them.
    pub fn next_committed(&self, max_entries: usize) -> Vec<Entry> {
        self.slice(
            self.applied + 1,
            max_entries.min((self.committed - self.applied) as usize),
            usize::MAX,
        )
    }

    pub fn has_next_committed(&self) -> bool {
        self.committed > self.applied
    }

    pub fn applied_to(&mut self, index: u64) {
        assert!(
            index <= self.committed,
            "applied {index} past committed {}",
            self.committed
        );
        if index > self.applied {
            self.applied = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(terms: &[u64]) -> RaftLog {
        RaftLog::restore(
            terms
                .iter()
                .enumerate()
                .map(|(i, t)| Entry::noop(*t, i as u64 + 1))
                .collect(),
        )
    }

    #[test]
    fn up_to_date_compares_term_then_length() {
        let log = log_of(&[1, 1, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(
            log.is_up_to_date(1, 3),
            "higher last term wins even if shorter"
        );
        assert!(
            !log.is_up_to_date(5, 1),
            "lower last term loses even if longer"
        );
        assert!(!log.is_up_to_date(2, 2), "same term, shorter loses");
    }

    #[test]
    fn merge_skips_matching_entries_and_never_truncates_without_conflict() {
        let mut log = log_of(&[1, 1, 1, 1]);
        // A stale message carrying only entries 2..=3, which we already hold.
        let cut = log.merge(&[Entry::noop(1, 2), Entry::noop(1, 3)]);
        assert_eq!(cut, None);
        assert_eq!(log.last_index(), 4, "suffix kept");
    }

    #[test]
    fn merge_cuts_at_first_conflict_and_unstables_it() {
        let mut log = log_of(&[1, 1, 1, 1]);
        let cut = log.merge(&[Entry::noop(1, 2), Entry::noop(2, 3)]);
        assert_eq!(cut, Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.stable(), 2);
        assert_eq!(log.unstable_entries(), vec![Entry::noop(2, 3)]);
    }

    #[test]
    fn conflict_hint_helpers() {
        let log = log_of(&[1, 2, 2, 2, 4, 4]);
        assert_eq!(log.first_index_of_term_at(4), 2);
        assert_eq!(log.first_index_of_term_at(6), 5);
        assert_eq!(log.last_index_of_term(2, 6), Some(4));
        assert_eq!(log.last_index_of_term(3, 6), None);
        assert_eq!(log.last_index_of_term(4, 3), None);
    }

    #[test]
    fn commit_never_moves_back_and_slice_respects_bytes() {
        let mut log = log_of(&[1, 1, 1]);
        assert!(log.commit_to(2));
        assert!(!log.commit_to(1));
        assert_eq!(log.committed(), 2);
        let mut big = log_of(&[]);
        for i in 1..=4 {
            big.append(Entry::command(1, i, vec![0; 100]));
        }
        assert_eq!(big.slice(1, 10, 250).len(), 2);
        assert_eq!(
            big.slice(1, 10, 10).len(),
            1,
            "one oversized entry still goes"
        );
    }
}
