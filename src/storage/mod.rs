//! Durable Raft state under `--data-dir`: the term and vote (`HardState`) and the log.
//!
//! Layout:
//! - `raftd.id`: which node owns the dir (see [`identity`]).
//! - `raft.wal`: an append-only sequence of checksummed records (see [`record`]) holding hard
//!   states, entry batches and truncation markers. Replaying it in order rebuilds the state.
//!
//! Durability contract: [`Storage::save`] returns only after everything it was given is on
//! disk, with one write and one fdatasync per call, so the caller may then answer votes and
//! acknowledge entries. The file is never rewritten in place: overwriting acknowledged bytes
//! is the one way a crash could destroy data that was already durable, so even replacing
//! conflicting entries is recorded by appending a `Truncate` record.

pub mod error;
mod identity;
pub mod record;
mod wal;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::rpc::types::{Entry, HardState, NodeId};
use record::{EncodeError, RecordRef, WalRecord};
use wal::Wal;

pub use error::StorageError;
pub use identity::ID_FILE_NAME;
pub use wal::{DroppedTail, WAL_FILE_NAME};

/// What `open` read back: the last saved hard state and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// Contiguous from index 1 (`entries[i].index == i + 1`).
    pub entries: Vec<Entry>,
}

/// Facts about the last `open`, for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryInfo {
    /// Good records replayed.
    pub records: u64,
    /// Bytes of good records (the log's length after recovery).
    pub bytes: u64,
    /// The torn tail that was cut off, if the last run crashed mid-write.
    pub dropped_tail: Option<DroppedTail>,
}

/// The durable state of one node. Not shared between threads; one writer owns it.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    wal: Wal,
    hard_state: HardState,
    last_index: u64,
    recovery: RecoveryInfo,
}

impl Storage {
    /// Opens or creates the data dir for node `node_id` (creating the dir if missing). Refuses a
    /// dir whose identity file names another node id. Replays the log; a torn tail from a crash
    /// is dropped with a warning, any other damage is an error.
    pub fn open(dir: &Path, node_id: NodeId) -> Result<(Storage, RecoveredState), StorageError> {
        let existed = dir.is_dir();
        std::fs::create_dir_all(dir).map_err(error::io_err(dir, "create data dir"))?;
        if !existed {
            // Make the new dir's own name durable, or a crash could lose the whole dir.
            wal::sync_dir(wal::parent_dir(dir))?;
        }
        identity::check_or_create(dir, node_id)?;

        let mut state = RecoveredState::default();
        let mut records = 0u64;
        let (wal, dropped_tail) = Wal::open(&dir.join(WAL_FILE_NAME), |record| {
            records += 1;
            apply(&mut state, record)
        })?;
        // Covers names created or renamed by an earlier run that crashed before syncing them.
        wal::sync_dir(dir)?;

        let recovery = RecoveryInfo {
            records,
            bytes: wal.len(),
            dropped_tail,
        };
        log::info!(
            "{}: recovered term {} vote {} and {} log entries from {} records ({} bytes)",
            wal.path().display(),
            state.hard_state.term,
            state.hard_state.vote,
            state.entries.len(),
            recovery.records,
            recovery.bytes
        );
        let storage = Storage {
            dir: dir.to_path_buf(),
            wal,
            hard_state: state.hard_state,
            last_index: state.entries.len() as u64,
            recovery,
        };
        Ok((storage, state))
    }

    /// Durably records `hard_state` (if Some) and `entries` (if non-empty) with ONE write and ONE
    /// fdatasync covering all of them, and returns only after they are on disk.
    ///
    /// `entries` must be contiguous and start at an index in `1..=last_index() + 1`, otherwise
    /// `StorageError::NonContiguous` is returned and nothing is written. Starting at or below
    /// `last_index()` replaces the log from that index on (a follower resolving a conflict).
    ///
    /// After an I/O error the storage refuses further saves: restart the node.
    pub fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        check_contiguous(self.last_index, entries)?;
        // An unchanged hard state is already durable; writing it again would only cost bytes.
        let hard_state = hard_state.filter(|hs| **hs != self.hard_state).copied();
        if hard_state.is_none() && entries.is_empty() {
            return Ok(());
        }

        // Any prefix of these records is a safe state to recover (nothing in this call has been
        // acknowledged until the fsync below returns), so their order within the write only
        // has to make each prefix meaningful on its own.
        let mut buf = Vec::new();
        if let Some(hs) = &hard_state {
            encode(
                &RecordRef::HardState {
                    term: hs.term,
                    vote: hs.vote,
                },
                &mut buf,
            )?;
        }
        if let Some(first) = entries.first() {
            if first.index <= self.last_index {
                // Replacing a suffix: say so by appending, rather than truncating the file or
                // rewriting it. Cutting the file would make the recovery depend on a metadata
                // update reaching the disk in the right order relative to the new records, and
                // rewriting could lose durable data if we crash midway.
                encode(&RecordRef::Truncate { from: first.index }, &mut buf)?;
            }
            encode_entries(entries, &mut buf)?;
        }

        self.wal.append(&buf)?;

        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        if let Some(last) = entries.last() {
            self.last_index = last.index;
        }
        Ok(())
    }

    /// Index of the last durable entry (0 for an empty log).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The last durable term and vote.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the last `open` found (records replayed, any torn tail dropped).
    pub fn recovery(&self) -> &RecoveryInfo {
        &self.recovery
    }
}

/// Checks that `entries` can follow a log ending at `last_index`.
fn check_contiguous(last_index: u64, entries: &[Entry]) -> Result<(), StorageError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if first.index == 0 || first.index > last_index + 1 {
        return Err(StorageError::NonContiguous {
            expected: last_index + 1,
            got: first.index,
        });
    }
    for pair in entries.windows(2) {
        if pair[1].index != pair[0].index + 1 {
            return Err(StorageError::NonContiguous {
                expected: pair[0].index + 1,
                got: pair[1].index,
            });
        }
    }
    Ok(())
}

fn encode(record: &RecordRef<'_>, buf: &mut Vec<u8>) -> Result<(), StorageError> {
    record::encode(record, buf).map_err(|e| StorageError::Encode {
        reason: e.to_string(),
    })
}

/// Encodes a batch as one record, or, if that would exceed the record size limit, as several
/// records in order (still in the same single write).
fn encode_entries(entries: &[Entry], buf: &mut Vec<u8>) -> Result<(), StorageError> {
    match record::encode(&RecordRef::Entries { entries }, buf) {
        Ok(()) => Ok(()),
        Err(EncodeError::TooLarge { .. }) if entries.len() > 1 => {
            let (head, tail) = entries.split_at(entries.len() / 2);
            encode_entries(head, buf)?;
            encode_entries(tail, buf)
        }
        Err(e) => Err(StorageError::Encode {
            reason: format!(
                "entry {}: {e}",
                entries.first().map_or(0, |entry| entry.index)
            ),
        }),
    }
}

/// Applies one replayed record. An `Err` means the log contradicts itself: damage.
fn apply(state: &mut RecoveredState, record: WalRecord) -> Result<(), String> {
    let last = state.entries.len() as u64;
    match record {
        WalRecord::HardState { term, vote } => state.hard_state = HardState { term, vote },
        WalRecord::Truncate { from } => {
            // The writer only records a truncation inside the log.
            if from == 0 || from > last + 1 {
                return Err(format!(
                    "truncation from index {from} but the log holds entries 1..={last}"
                ));
            }
            state.entries.truncate((from - 1) as usize);
        }
        WalRecord::Entries { entries } => {
            let Some(first) = entries.first() else {
                return Ok(());
            };
            if first.index == 0 || first.index > last + 1 {
                return Err(format!(
                    "entries start at index {} but the log holds entries 1..={last} (a gap)",
                    first.index
                ));
            }
            if let Some(pair) = entries.windows(2).find(|p| p[1].index != p[0].index + 1) {
                return Err(format!(
                    "entry {} is followed by entry {} (a gap)",
                    pair[0].index, pair[1].index
                ));
            }
            // An entry at or below the current end replaces the log from there.
            state.entries.truncate((first.index - 1) as usize);
            state.entries.extend(entries);
        }
    }
    Ok(())
}
