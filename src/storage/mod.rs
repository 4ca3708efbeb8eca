//! Durable Raft state under `--data-dir`: the term and vote (`HardState`), the log, and the
//! latest snapshot.
//!
//! Layout:
//! - `raftd.id`: which node owns the dir (see [`identity`]).
//! - `raft.wal`: an append-only sequence of checksummed records (see [`record`]) holding hard
//!   states, entry batches, truncation markers and (first thing after a compaction) a marker
//!   saying which index the log starts after. Replaying it in order rebuilds the state.
//! - `snapshot`: the state machine's state up to some index (see [`snapshot`]). Entries up to
//!   that index are not needed any more, and [`Storage::save_snapshot`] drops them from the log
//!   by atomically replacing `raft.wal` with a new, short log.
//!
//! Durability contract: [`Storage::save`] returns only after everything it was given is on
//! disk, with one write and one fdatasync per call, so the caller may then answer votes and
//! acknowledge entries. The file is never rewritten in place: overwriting acknowledged bytes
//! is the one way a crash could destroy data that was already durable, so even replacing
//! conflicting entries is recorded by appending a `Truncate` record. Compaction does not
//! rewrite it in place either: it writes a complete new log under a temporary name and renames
//! it over the old one, so a crash leaves either the old log or the new one.

pub mod batch;
pub mod error;
mod identity;
pub mod image;
pub mod record;
mod snapshot;
mod wal;

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::rpc::types::{Entry, HardState, NodeId};
use record::{EncodeError, RecordRef, WalRecord};
use wal::Wal;

pub use crate::rpc::types::Snapshot;
pub use crate::rpc::types::SnapshotMeta;
pub use error::StorageError;
pub use identity::ID_FILE_NAME;
pub use snapshot::{
    prepare as prepare_snapshot, prepare_streamed as prepare_snapshot_streamed,
    read_file as read_snapshot_file, PreparedSnapshot, SnapshotFileWriter, StreamedError,
    SNAPSHOT_FILE_NAME, SNAPSHOT_PREPARED_FILE_NAME, SNAPSHOT_TMP_FILE_NAME,
};
pub use wal::{DroppedTail, WAL_FILE_NAME};

/// The smallest rewritten log the daemon writes in the background
/// (`set_background_compaction`): a smaller one takes tens of milliseconds in place, and in the
/// background the old log would keep growing next to it for as long (more disk at the peak for
/// nothing: measured on a saturated machine, data dirs of 6.4 MiB where 4.5 MiB was the peak).
pub const BACKGROUND_REWRITE_MIN: u64 = 4 << 20;

/// Where [`Storage::save_snapshot`] builds the compacted log before renaming it over
/// [`WAL_FILE_NAME`].
pub const WAL_TMP_FILE_NAME: &str = "raft.wal.tmp";

/// What `open` read back: the last saved hard state, the latest snapshot and the log after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// The latest snapshot, if one was ever saved.
    pub snapshot: Option<Snapshot>,
    /// Contiguous from the index after the snapshot's (from 1 without a snapshot):
    /// `entries[i].index == snapshot.meta.index + 1 + i`.
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
    /// The last run stopped after writing a snapshot but before compacting the log; `open`
    /// dropped the entries the snapshot covers and compacted the log itself.
    pub finished_compaction: bool,
    /// Leftover temporary files (of an interrupted snapshot or compaction) that were deleted.
    pub removed_tmp_files: Vec<PathBuf>,
}

/// The durable state of one node. Not shared between threads; one writer owns it.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    wal: Wal,
    hard_state: HardState,
    last_index: u64,
    /// What the snapshot file covers; the log holds only entries after `snapshot.index`.
    snapshot: Option<SnapshotMeta>,
    /// Length of the snapshot file (0 without one).
    snapshot_bytes: u64,
    recovery: RecoveryInfo,
    /// This data dir's identity (see `identity`).
    incarnation: u64,
    /// Rewrite the log after a snapshot on another thread when the new log is at least this
    /// large (`set_background_compaction`).
    background_compaction: Option<u64>,
}

impl Storage {
    /// This data dir's incarnation: drawn at random when the dir was created, so a node that
    /// lost its disk comes back as a different one.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Opens or creates the data dir for node `node_id` (creating the dir if missing). Refuses a
    /// dir whose identity file names another node id. Loads the snapshot, if any, and replays
    /// the log; a torn tail from a crash is dropped with a warning, any other damage (in the
    /// log or the snapshot) is an error.
    ///
    /// If the last run stopped between writing a snapshot and compacting the log, the log's
    /// entries covered by the snapshot are dropped and the compaction is finished here.
    pub fn open(dir: &Path, node_id: NodeId) -> Result<(Storage, RecoveredState), StorageError> {
        let existed = dir.is_dir();
        std::fs::create_dir_all(dir).map_err(error::io_err(dir, "create data dir"))?;
        if !existed {
            // Make the new dir's own name durable, or a crash could lose the whole dir.
            wal::sync_dir(wal::parent_dir(dir))?;
        }
        let incarnation = identity::check_or_create(dir, node_id)?;

        let wal_path = dir.join(WAL_FILE_NAME);
        let snapshot_path = dir.join(SNAPSHOT_FILE_NAME);
        let exists = |path: &Path| path.try_exists().map_err(error::io_err(path, "look for"));
        if exists(&snapshot_path)? && !exists(&wal_path)? {
            // Every snapshot is written into a dir whose log already exists, and the log is
            // only ever replaced by rename. Without it the term and vote are gone, and starting
            // with a blank vote could let this node vote twice in one term.
            return Err(StorageError::Corrupt {
                path: wal_path,
                offset: 0,
                reason: format!(
                    "the log is missing, but the data dir holds a snapshot ({SNAPSHOT_FILE_NAME}), \
                     so the log was deleted and the node's term and vote are lost"
                ),
            });
        }

        let mut replay = Replay::default();
        let mut records = 0u64;
        let (mut wal, dropped_tail) = Wal::open(&wal_path, |offset, record| {
            records += 1;
            replay.apply(offset, record)
        })?;
        // Only now, holding the lock, look at the snapshot and the temporary files: before it,
        // another process owning the dir could be replacing them (and our cleanup would delete
        // its temporary files from under it).
        let (snapshot, snapshot_bytes) = match snapshot::load(dir)? {
            Some((snapshot, len)) => (Some(snapshot), len),
            None => (None, 0),
        };
        let snapshot_meta = snapshot.as_ref().map(|s| s.meta);
        let mut removed_tmp_files = Vec::new();
        for name in [
            SNAPSHOT_TMP_FILE_NAME,
            SNAPSHOT_PREPARED_FILE_NAME,
            WAL_TMP_FILE_NAME,
        ] {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    log::warn!(
                        "{}: deleted a temporary file left by a snapshot or compaction that a \
                         crash interrupted; it was never in use",
                        path.display()
                    );
                    removed_tmp_files.push(path);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(error::io_err(&path, "remove stale temporary file")(e)),
            }
        }
        let (hard_state, entries, finished_compaction) =
            replay.finish(snapshot_meta, &wal_path, &snapshot_path)?;
        let converted_from_legacy = wal.is_legacy();
        if finished_compaction || converted_from_legacy {
            // Finish the compaction, or write a log of the old format (records without batch
            // framing) in the batched one: from now on every write is a batch.
            let buf = log_image(&hard_state, snapshot_meta, &entries)?;
            wal.rewrite(&buf)?;
            if converted_from_legacy {
                log::info!(
                    "{}: rewrote the log in the batched format",
                    wal.path().display()
                );
            }
        }

        // Covers names created, renamed or removed by an earlier run that crashed before
        // syncing them, and by the cleanup above.
        wal::sync_dir(dir)?;

        let recovery = RecoveryInfo {
            records,
            bytes: wal.len(),
            dropped_tail,
            finished_compaction,
            removed_tmp_files,
        };
        let snapshot_index = snapshot_meta.map_or(0, |m| m.index);
        log::info!(
            "{}: recovered term {} vote {}, a snapshot up to index {} ({} bytes) and {} log \
             entries after it from {} records ({} bytes)",
            wal.path().display(),
            hard_state.term,
            hard_state.vote,
            snapshot_index,
            snapshot_bytes,
            entries.len(),
            recovery.records,
            recovery.bytes
        );
        let storage = Storage {
            dir: dir.to_path_buf(),
            wal,
            hard_state,
            last_index: snapshot_index + entries.len() as u64,
            snapshot: snapshot_meta,
            snapshot_bytes,
            recovery,
            incarnation,
            background_compaction: None,
        };
        let state = RecoveredState {
            hard_state,
            snapshot,
            entries,
        };
        Ok((storage, state))
    }

    /// Durably records `hard_state` (if Some) and `entries` (if non-empty) with ONE write and ONE
    /// fdatasync covering all of them, and returns only after they are on disk.
    ///
    /// `entries` must be contiguous and start at an index in `1..=last_index() + 1`, otherwise
    /// `StorageError::NonContiguous` is returned and nothing is written. Starting at or below
    /// `last_index()` replaces the log from that index on (a follower resolving a conflict).
    /// Entries at or below the snapshot's index are committed and cannot be replaced:
    /// `StorageError::CompactedIndex`, nothing written.
    ///
    /// After an I/O error the storage refuses further saves: restart the node.
    pub fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        self.save_batch([(hard_state.copied(), entries)])
    }

    /// Group commit: several `save`s (in order, each as `save` would check it) with ONE write
    /// and ONE fdatasync for all of them. If any of them is refused, nothing is written.
    pub fn save_batch<'a>(
        &mut self,
        writes: impl IntoIterator<Item = (Option<HardState>, &'a [Entry])>,
    ) -> Result<(), StorageError> {
        let snapshot_index = self.snapshot.map_or(0, |m| m.index);
        let (mut buf, hard_state, last_index) =
            encode_saves(self.hard_state, self.last_index, snapshot_index, writes)?;
        if batch::is_empty(&buf) {
            return Ok(());
        }
        self.wal.append(&mut buf)?;
        self.hard_state = hard_state;
        self.last_index = last_index;
        Ok(())
    }

    /// Durably stores a snapshot covering the log up to `meta.index` and compacts the log, and
    /// returns only after both are on disk.
    ///
    /// `tail` is the log the caller keeps after the snapshot: contiguous from `meta.index + 1`
    /// (may be empty), otherwise `StorageError::NonContiguous`. `hard_state` is the current
    /// term and vote. Afterwards `last_index() == meta.index + tail.len()` and `save` appends
    /// after that. Works both for compacting the own log (`meta.index <= last_index()`) and for
    /// installing a leader's snapshot that replaces the log.
    ///
    /// `meta.index` may not be lower than the current snapshot's (nor equal with another term):
    /// `StorageError::SnapshotBackwards`, nothing written.
    ///
    /// Steps: (0) a changed hard state is appended to the current log first, (a) the snapshot
    /// file is replaced atomically (`snapshot.tmp`, fsync, rename, fsync of the dir), (b) the log
    /// is replaced by `[HardState, Snapshot marker, Entries(tail)]` the same way. A crash
    /// between (a) and (b) is finished by the next `open`. An I/O error while writing
    /// `snapshot.tmp` leaves everything as it was; any later I/O error makes the storage refuse
    /// further writes (restart the node).
    pub fn save_snapshot(
        &mut self,
        meta: SnapshotMeta,
        data: &[u8],
        tail: &[Entry],
        hard_state: HardState,
    ) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        self.install_snapshot_with(meta, tail, hard_state, || snapshot::write(&dir, meta, data))
    }

    /// `save_snapshot` for a snapshot file already written by [`prepare_snapshot`] (on another
    /// thread): only the rename and the log compaction are left, both quick.
    ///
    /// If the disk is full (`StorageError::NoSpace`) the snapshot file may already be in place
    /// with the log not yet compacted: then `snapshot_meta()` is the prepared one, and
    /// [`Storage::finish_compaction`] does the rest once there is space.
    pub fn save_prepared_snapshot(
        &mut self,
        prepared: &PreparedSnapshot,
        tail: &[Entry],
        hard_state: HardState,
    ) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        let (meta, len) = (prepared.meta, prepared.len);
        self.install_snapshot_with(meta, tail, hard_state, || {
            snapshot::install_tmp(&dir, SNAPSHOT_PREPARED_FILE_NAME)
                .map(|()| len)
                .map_err(snapshot::WriteError::Unknown)
        })
    }

    /// The last step of a snapshot whose file is in place but whose log rewrite was refused
    /// because the disk was full: replaces the log by the hard state, the marker and `tail`
    /// (contiguous from the snapshot's index + 1).
    pub fn finish_compaction(&mut self, tail: &[Entry]) -> Result<(), StorageError> {
        let Some(meta) = self.snapshot else {
            return Ok(());
        };
        check_tail(meta, tail)?;
        let image = log_image(&self.hard_state, Some(meta), tail)?;
        self.wal.rewrite(&image)?;
        self.last_index = meta.index + tail.len() as u64;
        Ok(())
    }

    /// From now on, the log's rewrite after a snapshot (its entries up to the snapshot
    /// dropped), when it is at least `min_bytes` (None: never), is written and synced on
    /// another thread while appends go on, and takes over in `finish_background_compaction`.
    /// Off by default: the rewrite is done in place.
    pub fn set_background_compaction(&mut self, min_bytes: Option<u64>) {
        self.background_compaction = min_bytes;
    }

    /// Whether a log rewrite is being written in the background.
    pub fn background_compaction_pending(&self) -> bool {
        self.wal.rewrite_pending()
    }

    /// Lets a log rewritten in the background take over: if it is written (or at once, waiting
    /// for it, if `wait`). Returns whether it took over.
    pub fn finish_background_compaction(&mut self, wait: bool) -> Result<bool, StorageError> {
        self.wal.finish_rewrite(wait)
    }

    /// Drops a prepared snapshot that will not be used.
    pub fn discard_prepared_snapshot(&self, _prepared: PreparedSnapshot) {
        let _ = std::fs::remove_file(self.dir.join(SNAPSHOT_PREPARED_FILE_NAME));
    }

    fn install_snapshot_with(
        &mut self,
        meta: SnapshotMeta,
        tail: &[Entry],
        hard_state: HardState,
        write: impl FnOnce() -> Result<u64, snapshot::WriteError>,
    ) -> Result<(), StorageError> {
        self.wal.check_usable()?;
        if let Some(current) = self.snapshot {
            if meta.index < current.index
                || (meta.index == current.index && meta.term != current.term)
            {
                return Err(StorageError::SnapshotBackwards {
                    current,
                    requested: meta,
                });
            }
        }
        check_tail(meta, tail)?;
        // Encode first: an entry too large to encode must fail before anything is written.
        let compacted = log_image(&hard_state, Some(meta), tail)?;

        // (0) Never let a snapshot reach the disk ahead of the term it was taken or received
        // in: a crash between (a) and (b) recovers the hard state from the old log.
        self.save(Some(&hard_state), &[])?;

        // (a)
        self.snapshot_bytes = match write() {
            Ok(len) => len,
            Err(snapshot::WriteError::NothingChanged(e)) => return Err(e),
            Err(snapshot::WriteError::Unknown(e)) => {
                self.wal.poison();
                return Err(e);
            }
        };
        self.snapshot = Some(meta);

        // (b) On error the log poisons itself. In the background, the current log (valid, if
        // older than the snapshot: a start after a crash finishes its compaction) takes the
        // appends until the new one takes over.
        if self
            .background_compaction
            .is_some_and(|min| compacted.len() as u64 >= min)
        {
            self.wal.start_rewrite(compacted)?;
        } else {
            self.wal.rewrite(&compacted)?;
        }
        self.last_index = meta.index + tail.len() as u64;
        log::info!(
            "{}: saved a snapshot up to index {} term {} ({} bytes); the log now holds {} \
             entries after it ({} bytes)",
            self.dir.join(SNAPSHOT_FILE_NAME).display(),
            meta.index,
            meta.term,
            self.snapshot_bytes,
            tail.len(),
            self.wal.len()
        );
        Ok(())
    }

    /// Index of the last durable entry (0 for an empty log; the snapshot's index if the log
    /// holds nothing after the snapshot).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The last durable term and vote.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// What the durable snapshot covers, if there is one.
    /// The stored snapshot's data, mapped from its file (see `snapshot::map_file`), for the
    /// node to hold instead of a copy in memory. Not checked again: it was checked when written
    /// or loaded.
    pub fn map_snapshot(&self) -> Result<Option<(SnapshotMeta, bytes::Bytes)>, StorageError> {
        Ok(
            snapshot::map_file(&self.dir.join(SNAPSHOT_FILE_NAME), false)?
                .map(|(meta, data, _)| (meta, data)),
        )
    }

    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot
    }

    /// Bytes on disk of the snapshot file plus the log.
    pub fn disk_usage(&self) -> u64 {
        self.snapshot_bytes + self.wal.len()
    }

    /// Bytes of the log.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.len()
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

/// Encodes several saves (as `save_batch` takes them) into one batch buffer (made by
/// `batch::start`, not sealed yet), for a log whose hard state is `hard_state`, whose last
/// index is `last_index` and whose snapshot covers `snapshot_index`. Returns the buffer and
/// the hard state and last index after it. Checks each save as `save` would; if one is
/// refused, nothing is returned.
fn encode_saves<'a>(
    mut hard_state: HardState,
    mut last_index: u64,
    snapshot_index: u64,
    writes: impl IntoIterator<Item = (Option<HardState>, &'a [Entry])>,
) -> Result<(Vec<u8>, HardState, u64), StorageError> {
    // Any prefix of these records is a safe state to recover (nothing in this call has been
    // acknowledged until the fsync returns), so their order within the write only has to make
    // each prefix meaningful on its own.
    let mut buf = batch::start();
    for (hs, entries) in writes {
        check_contiguous(last_index, entries)?;
        if let Some(first) = entries.first().filter(|e| e.index <= snapshot_index) {
            return Err(StorageError::CompactedIndex {
                index: first.index,
                snapshot_index,
            });
        }
        // An unchanged hard state is already durable; writing it again would only cost bytes.
        if let Some(hs) = hs.filter(|hs| *hs != hard_state) {
            encode(
                &RecordRef::HardState {
                    term: hs.term,
                    vote: hs.vote,
                },
                &mut buf,
            )?;
            hard_state = hs;
        }
        if let Some(first) = entries.first() {
            if first.index <= last_index {
                // Replacing a suffix: say so by appending, rather than truncating the file or
                // rewriting it. Cutting the file would make the recovery depend on a metadata
                // update reaching the disk in the right order relative to the new records, and
                // rewriting could lose durable data if we crash midway.
                encode(&RecordRef::Truncate { from: first.index }, &mut buf)?;
            }
            encode_entries(entries, &mut buf)?;
        }
        if let Some(last) = entries.last() {
            last_index = last.index;
        }
    }
    Ok((buf, hard_state, last_index))
}

/// A whole log file (the file magic and one batch): the hard state, the marker saying the log
/// starts after the snapshot's index (if there is a snapshot), and the entries after it.
fn log_image(
    hard_state: &HardState,
    snapshot: Option<SnapshotMeta>,
    tail: &[Entry],
) -> Result<Vec<u8>, StorageError> {
    let mut buf = batch::start();
    encode(
        &RecordRef::HardState {
            term: hard_state.term,
            vote: hard_state.vote,
        },
        &mut buf,
    )?;
    if let Some(meta) = snapshot {
        encode(
            &RecordRef::Snapshot {
                index: meta.index,
                term: meta.term,
            },
            &mut buf,
        )?;
    }
    if !tail.is_empty() {
        encode_entries(tail, &mut buf)?;
    }
    batch::seal(&mut buf).map_err(|e| StorageError::Encode {
        reason: e.to_string(),
    })?;
    let mut file = Vec::with_capacity(batch::FILE_MAGIC.len() + buf.len());
    file.extend_from_slice(&batch::FILE_MAGIC);
    file.extend_from_slice(&buf);
    Ok(file)
}

/// Checks that `tail` is contiguous from the snapshot at `meta` (the log kept after it).
fn check_tail(meta: SnapshotMeta, tail: &[Entry]) -> Result<(), StorageError> {
    if let Some(first) = tail.first() {
        if first.index != meta.index + 1 {
            return Err(StorageError::NonContiguous {
                expected: meta.index + 1,
                got: first.index,
            });
        }
    }
    check_contiguous(meta.index, tail)
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

/// Log replay: the state the records build up. Checked against the snapshot file afterwards
/// (in `finish`), once the log is locked and the snapshot can no longer change under us.
#[derive(Default)]
struct Replay {
    hard_state: HardState,
    /// The compaction marker and its offset, if the log has one.
    marker: Option<(u64, SnapshotMeta)>,
    /// Whether an entry or truncation record was seen: a marker may only come before them.
    log_records: bool,
    /// Contiguous from `base() + 1`.
    entries: Vec<Entry>,
}

impl Replay {
    /// The index this log starts after: its marker's, or 0.
    fn base(&self) -> u64 {
        self.marker.map_or(0, |(_, m)| m.index)
    }

    /// Applies one replayed record. An `Err` means the log contradicts itself: damage.
    fn apply(&mut self, offset: u64, record: WalRecord) -> Result<(), String> {
        let base = self.base();
        let last = base + self.entries.len() as u64;
        match record {
            WalRecord::HardState { term, vote } => self.hard_state = HardState { term, vote },
            WalRecord::Snapshot { index, term } => {
                if self.marker.is_some() || self.log_records {
                    return Err(format!(
                        "compaction marker (index {index}) after other log records; a compacted \
                         log holds one, before any entries"
                    ));
                }
                self.marker = Some((offset, SnapshotMeta { index, term }));
            }
            WalRecord::Truncate { from } => {
                self.log_records = true;
                // The writer only records a truncation inside the log.
                if from == 0 || from > last + 1 {
                    return Err(format!(
                        "truncation from index {from} but the log holds entries {}..={last}",
                        base + 1
                    ));
                }
                // A truncation reaching into the compacted part (never written, but harmless)
                // leaves the compacted part alone and empties the rest.
                self.entries
                    .truncate(from.saturating_sub(base + 1) as usize);
            }
            WalRecord::Entries { entries } => {
                self.log_records = true;
                let Some(first) = entries.first() else {
                    return Ok(());
                };
                if first.index == 0 || first.index > last + 1 {
                    return Err(format!(
                        "entries start at index {} but the log holds entries {}..={last} (a gap)",
                        first.index,
                        base + 1
                    ));
                }
                if let Some(pair) = entries.windows(2).find(|p| p[1].index != p[0].index + 1) {
                    return Err(format!(
                        "entry {} is followed by entry {} (a gap)",
                        pair[0].index, pair[1].index
                    ));
                }
                // An entry at or below the current end replaces the log from there; the part
                // already compacted (never written, but harmless) is skipped.
                self.entries
                    .truncate(first.index.saturating_sub(base + 1) as usize);
                let covered = (base + 1).saturating_sub(first.index) as usize;
                self.entries.extend(entries.into_iter().skip(covered));
            }
        }
        Ok(())
    }

    /// Checks the log against the snapshot file (`snapshot`, what it covers) and returns the
    /// recovered hard state, the entries after the snapshot, and whether the log still has to
    /// be compacted (the last run stopped between writing a snapshot and compacting).
    fn finish(
        self,
        snapshot: Option<SnapshotMeta>,
        wal_path: &Path,
        snapshot_path: &Path,
    ) -> Result<(HardState, Vec<Entry>, bool), StorageError> {
        let base = self.base();
        if let Some((offset, marker)) = self.marker {
            let (index, term) = (marker.index, marker.term);
            let problem = match snapshot {
                None => Some(format!(
                    "the log starts after index {index} (term {term}), so the entries up to it \
                     are in a snapshot, but there is no snapshot file ({})",
                    snapshot_path.display()
                )),
                Some(s) if index > s.index => Some(format!(
                    "the log starts after index {index}, but the snapshot file ({}) covers only \
                     up to index {}, so entries {}..={index} are lost",
                    snapshot_path.display(),
                    s.index,
                    s.index + 1
                )),
                Some(s) if index == s.index && term != s.term => Some(format!(
                    "the log starts after index {index} term {term}, but the snapshot file ({}) \
                     says index {index} has term {}",
                    snapshot_path.display(),
                    s.term
                )),
                Some(_) => None,
            };
            if let Some(reason) = problem {
                return Err(StorageError::Corrupt {
                    path: wal_path.to_path_buf(),
                    offset,
                    reason,
                });
            }
        }
        let Some(snap) = snapshot.filter(|s| s.index > base) else {
            // No snapshot, or the log was compacted up to it.
            return Ok((self.hard_state, self.entries, false));
        };
        // An older log: what it holds up to the snapshot is covered by the snapshot. What follows
        // belongs after the snapshot only if the log agrees with the snapshot on the entry at
        // its index (the Raft rule for installing a snapshot, §7): a leader's snapshot that
        // replaced a conflicting log must not get that log's suffix back.
        let last = base + self.entries.len() as u64;
        let mut entries = self.entries;
        let kept = if last < snap.index {
            Vec::new()
        } else {
            let at = (snap.index - base - 1) as usize;
            if entries[at].term == snap.term {
                entries.split_off(at + 1)
            } else {
                log::warn!(
                    "{}: the entry at index {} has term {}, but the snapshot {} covering it says \
                     term {}: the snapshot replaced this log, dropping entries after it",
                    wal_path.display(),
                    snap.index,
                    entries[at].term,
                    snapshot_path.display(),
                    snap.term
                );
                Vec::new()
            }
        };
        log::info!(
            "{}: the snapshot {} covers entries up to index {}, but the log still holds entries \
             {}..={last} (the last run stopped before compacting it); keeping the {} entries \
             after the snapshot and compacting the log now",
            wal_path.display(),
            snapshot_path.display(),
            snap.index,
            base + 1,
            kept.len()
        );
        Ok((self.hard_state, kept, true))
    }
}
