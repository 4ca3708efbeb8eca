//! The append-only log file: open (creating it durably), replay, append + fsync, dropping a
//! torn tail left by a crash, and replacing the whole file after a snapshot (compaction).
//!
//! The file is only ever appended to. The exceptions: cutting off a torn tail on open (those
//! bytes belong to a write whose `save` never returned, so nobody was told they exist), and
//! compaction, which never modifies the file either but atomically renames a complete new log
//! over it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::batch;
use super::error::{io_err, StorageError};
use super::record::{Format, Reader, Step, WalRecord};

/// Feeds every good record `reader` finds to `apply`, in order, until the end or a torn tail
/// (returned). Damage, or an `Err` from `apply` (the log contradicts itself), is
/// `StorageError::Corrupt` at that offset of `path`.
pub(crate) fn replay<R: std::io::Read + std::io::Seek>(
    reader: &mut Reader<R>,
    path: &Path,
    file_len: u64,
    mut apply: impl FnMut(u64, WalRecord) -> Result<(), String>,
) -> Result<Option<DroppedTail>, StorageError> {
    let corrupt = |offset, reason| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    loop {
        match reader.next_step().map_err(io_err(path, "read"))? {
            Step::Record { offset, record, .. } => {
                apply(offset, record).map_err(|reason| corrupt(offset, reason))?
            }
            Step::End => return Ok(None),
            Step::TornTail { offset, reason } => {
                return Ok(Some(DroppedTail {
                    offset,
                    bytes: file_len - offset,
                    reason,
                }))
            }
            Step::Damaged { offset, reason } => return Err(corrupt(offset, reason)),
        }
    }
}

/// File name of the log inside the data dir.
pub const WAL_FILE_NAME: &str = "raft.wal";

/// The remains of an unfinished last write that `open` cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedTail {
    /// Where the dropped bytes started (the end of the last good record, the new file length).
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes: u64,
    /// What was wrong with them.
    pub reason: String,
}

#[derive(Debug)]
pub(crate) struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
    /// Set while an append is in flight and left set if it fails. After a failed write or fsync
    /// we do not know what reached the disk (and on Linux a failed fsync may have thrown the
    /// dirty pages away while clearing the error), so appending more could put good records
    /// after garbage, which the next start would rightly call damage. Only a restart, which
    /// re-reads the file, gets back to a known state.
    failed: bool,
    /// The file is in the old format (records without batches): `Storage::open` rewrites it.
    legacy: bool,
    /// A rewrite being written and synced on another thread (`start_rewrite`).
    pending: Option<PendingRewrite>,
}

/// A new log being written on another thread while appends go on to the current one. The
/// current log stays valid throughout (a crash leaves it, and the start finishes what it
/// was for); what is appended meanwhile is kept, to be appended to the new file before it
/// takes the log's name.
#[derive(Debug)]
struct PendingRewrite {
    writer: std::thread::JoinHandle<Result<File, StorageError>>,
    len: u64,
    since: Vec<u8>,
    started: std::time::Instant,
}

impl Wal {
    /// Opens (or creates) the log at `path`, locks it, and feeds every good record (with its
    /// offset) to `apply` in order. An `Err` from `apply` is reported as damage at that record's offset. A torn
    /// tail is logged and cut off.
    pub(crate) fn open<F>(
        path: &Path,
        mut apply: F,
    ) -> Result<(Wal, Option<DroppedTail>), StorageError>
    where
        F: FnMut(u64, WalRecord) -> Result<(), String>,
    {
        let (file, created) = open_locked(path)?;
        if created {
            // A new file's name lives in the directory: without this fsync a crash could lose
            // the file, and with it records we later report as durable.
            sync_dir(parent_dir(path))?;
        }

        let file_len = file.metadata().map_err(io_err(path, "stat"))?.len();
        let mut reader = Reader::new(BufReader::with_capacity(1 << 20, &file), file_len);
        let dropped = replay(&mut reader, path, file_len, &mut apply)?;

        let legacy = reader.format() == Format::Legacy;
        drop(reader);
        let mut len = match &dropped {
            None => file_len,
            Some(tail) => {
                log::warn!(
                    "{}: dropping {} bytes at offset {} left by an unfinished write before a \
                     crash ({}); that write was never acknowledged",
                    path.display(),
                    tail.bytes,
                    tail.offset,
                    tail.reason
                );
                // Cut the tail so new records follow good data; otherwise the next start would
                // find good records after garbage and have to call it damage.
                file.set_len(tail.offset)
                    .map_err(io_err(path, "truncate the torn tail of"))?;
                tail.offset
            }
        };
        if len == 0 {
            // A new (or emptied) log starts with the file magic: every write after it is a
            // batch. Written before anything else, so a crash leaves at most a prefix of it.
            (&file)
                .write_all(&batch::FILE_MAGIC)
                .map_err(io_err(path, "write the header of"))?;
            len = batch::FILE_HEADER_LEN;
        }
        // What we just replayed may exist only in the page cache: the previous process can have
        // died after write() but before its fsync. Make it durable now, before the caller acts
        // on it (votes, acknowledges), or an OS crash could still take it back.
        file.sync_all().map_err(io_err(path, "fsync"))?;

        Ok((
            Wal {
                path: path.to_path_buf(),
                file,
                len,
                failed: false,
                legacy: legacy && len > batch::FILE_HEADER_LEN,
                pending: None,
            },
            dropped,
        ))
    }

    /// Appends `buf` (made by `batch::start` and encoded into: whole, framed records) as one
    /// batch, with one write, and makes it durable with one fdatasync. fdatasync is enough: it
    /// flushes the data and the file size needed to read it back, skipping only timestamps,
    /// which saves a metadata journal commit per save.
    pub(crate) fn append(&mut self, buf: &mut [u8]) -> Result<(), StorageError> {
        self.check_usable()?;
        batch::seal(buf).map_err(|e| StorageError::Encode {
            reason: e.to_string(),
        })?;
        self.failed = true;
        if let Err(e) = (&self.file).write_all(buf) {
            let e = io_err(&self.path, "write")(e);
            if e.is_no_space() {
                // Part of the batch may have landed: cut it off, so the log ends at its last
                // whole batch again and the same batch can be written once there is space.
                // (Cutting frees space; if even that fails, the log stays refused.)
                self.file
                    .set_len(self.len)
                    .map_err(io_err(&self.path, "cut a refused write off"))?;
                self.failed = false;
            }
            return Err(e);
        }
        self.file.sync_data().map_err(io_err(&self.path, "fsync"))?;
        self.failed = false;
        self.len += buf.len() as u64;
        if let Some(p) = self.pending.as_mut() {
            p.since.extend_from_slice(buf);
        }
        Ok(())
    }

    /// Replaces the log by `buf` (a whole file: magic and batches) like `rewrite`, but writes
    /// and syncs the new file on another thread: appends go on to the current log meanwhile
    /// (and are copied to the new one when it takes over, in `finish_rewrite`). At a million
    /// keys the new log is the 20–45k entries written while a snapshot was encoded, and
    /// writing it in place held every append of the node for 0.4–1.0 s.
    pub(crate) fn start_rewrite(&mut self, buf: Vec<u8>) -> Result<(), StorageError> {
        self.finish_rewrite(true)?;
        self.check_usable()?;
        let tmp = tmp_path(&self.path);
        let file = create_tmp(&tmp)?;
        let len = buf.len() as u64;
        let writer = std::thread::Builder::new()
            .name("raftd-log-rewrite".to_string())
            .spawn(move || {
                (&file).write_all(&buf).map_err(io_err(&tmp, "write"))?;
                file.sync_all().map_err(io_err(&tmp, "fsync"))?;
                Ok(file)
            })
            .map_err(io_err(&self.path, "start a thread to rewrite"))?;
        self.pending = Some(PendingRewrite {
            writer,
            len,
            since: Vec::new(),
            started: std::time::Instant::now(),
        });
        Ok(())
    }

    /// Whether a rewrite started by `start_rewrite` is still to take over.
    pub(crate) fn rewrite_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Lets the new log from `start_rewrite` take over once it is written (at once if `wait`,
    /// else only if its thread is done): appends the records written since, syncs, and renames
    /// it over the log. Returns whether it took over. A new log the disk had no room for is
    /// dropped, and the current one goes on (it is valid; the next compaction tries again).
    pub(crate) fn finish_rewrite(&mut self, wait: bool) -> Result<bool, StorageError> {
        let Some(p) = self.pending.take() else {
            return Ok(false);
        };
        if !wait && !p.writer.is_finished() {
            self.pending = Some(p);
            return Ok(false);
        }
        let tmp = tmp_path(&self.path);
        if let Err(e) = self.check_usable() {
            // The current log failed meanwhile: what it holds is unknown, so nothing of it may
            // be copied, and the new log must not hide that (only a restart gets past it).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let written = p.writer.join().unwrap_or_else(|_| {
            Err(io_err(&tmp, "write")(io::Error::other(
                "the thread writing it panicked",
            )))
        });
        let file = match written {
            Ok(file) => file,
            Err(e) if e.is_no_space() => {
                let _ = fs::remove_file(&tmp);
                log::warn!(
                    "{}: no space to rewrite the log after a snapshot ({e}); it keeps its \
                     entries until the next snapshot",
                    self.path.display()
                );
                return Ok(false);
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                self.failed = true;
                return Err(e);
            }
        };
        let took_over = std::time::Instant::now();
        self.failed = true;
        if let Err(e) = (&file).write_all(&p.since) {
            let e = io_err(&tmp, "write")(e);
            if e.is_no_space() {
                // The current log is untouched: go on with it.
                drop(file);
                let _ = fs::remove_file(&tmp);
                self.failed = false;
                log::warn!(
                    "{}: no space to finish rewriting the log after a snapshot ({e}); it keeps \
                     its entries until the next snapshot",
                    self.path.display()
                );
                return Ok(false);
            }
            return Err(e);
        }
        file.sync_all().map_err(io_err(&tmp, "fsync"))?;
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path, "rename the rewritten log to"))?;
        sync_dir(parent_dir(&self.path))?;
        self.file = file;
        self.len = p.len + p.since.len() as u64;
        self.failed = false;
        self.legacy = false;
        log::info!(
            "{}: the rewritten log took over after {:.1} ms in the background; {} bytes \
             appended meanwhile were copied in {:.1} ms",
            self.path.display(),
            p.started.elapsed().as_secs_f64() * 1e3,
            p.since.len(),
            took_over.elapsed().as_secs_f64() * 1e3
        );
        Ok(true)
    }

    /// Errors if an earlier write failed (see `failed`).
    pub(crate) fn check_usable(&self) -> Result<(), StorageError> {
        if self.failed {
            return Err(io_err(&self.path, "append to")(io::Error::other(
                "an earlier write or fsync of this file failed, so what is on disk is unknown; \
                 restart the node so it re-reads the log",
            )));
        }
        Ok(())
    }

    /// Refuses further writes: something this log depends on (the snapshot file) is in an
    /// unknown state on disk.
    pub(crate) fn poison(&mut self) {
        self.failed = true;
    }

    /// Replaces the whole log with `buf` (whole, framed records) atomically: `raft.wal.tmp` is
    /// created and locked, written, fsynced, renamed over the log, the dir fsynced, and the new
    /// file becomes the one appended to. A crash at any point leaves either the old log or the
    /// new one under the real name (plus, maybe, a stale temp file that `open` deletes).
    ///
    /// The lock moves with the file: the temp file is locked before the rename, so the name
    /// always refers to a locked file while we own the dir, and the old file's lock is released
    /// only when it is no longer reachable by name.
    ///
    /// On error the log refuses further appends (restart the node).
    pub(crate) fn rewrite(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        self.finish_rewrite(true)?;
        self.check_usable()?;
        self.failed = true;
        let tmp = tmp_path(&self.path);
        let file = create_tmp(&tmp)?;
        if let Err(e) = (&file).write_all(buf) {
            let e = io_err(&tmp, "write")(e);
            if e.is_no_space() {
                // The old log is untouched: drop the new one and go on with the old.
                drop(file);
                fs::remove_file(&tmp).map_err(io_err(&tmp, "remove"))?;
                self.failed = false;
            }
            return Err(e);
        }
        // sync_all, not sync_data: the new file's size and the rest of its metadata must be
        // durable before its name replaces the old log.
        file.sync_all().map_err(io_err(&tmp, "fsync"))?;
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path, "rename the rewritten log to"))?;
        sync_dir(parent_dir(&self.path))?;
        // Dropping the old handle releases the lock on the now unlinked old file.
        self.file = file;
        self.len = buf.len() as u64;
        self.failed = false;
        self.legacy = false;
        Ok(())
    }

    /// The file was in the old format when opened (and has not been rewritten since).
    pub(crate) fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Bytes of good records in the file.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Where [`Wal::rewrite`] builds the new log: `<log>.tmp`.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Creates (anew) and locks the file a rewritten log is built in.
fn create_tmp(tmp: &Path) -> Result<File, StorageError> {
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(tmp, "remove stale")(e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(tmp)
        .map_err(io_err(tmp, "create"))?;
    lock(&file, tmp)?;
    Ok(file)
}

/// Two processes appending to one log would interleave records and break every durability
/// promise; the lock is released when the file is closed.
fn lock(file: &File, path: &Path) -> Result<(), StorageError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(StorageError::InUse {
            path: path.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(io_err(path, "lock")(e)),
    }
}

/// Opens (or creates) the log and locks it. Returns whether it was created.
///
/// The owner of the dir may replace the log by renaming a new file over it ([`Wal::rewrite`]).
/// If that happened between our open and our lock, we would hold the lock of an unlinked file
/// while the owner writes the new one, so after locking check that the name still refers to
/// the file we locked, and start over if not.
fn open_locked(path: &Path) -> Result<(File, bool), StorageError> {
    loop {
        // O_APPEND: every write lands at the current end, whatever the file position.
        let mut options = OpenOptions::new();
        options.read(true).append(true);
        let (file, created) = match options.open(path) {
            Ok(file) => (file, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = options
                    .clone()
                    .create_new(true)
                    .open(path)
                    .map_err(io_err(path, "create"))?;
                (file, true)
            }
            Err(e) => return Err(io_err(path, "open")(e)),
        };
        lock(&file, path)?;
        let ours = file.metadata().map_err(io_err(path, "stat"))?;
        match fs::metadata(path) {
            Ok(named) if named.dev() == ours.dev() && named.ino() == ours.ino() => {
                return Ok((file, created))
            }
            // Replaced (or removed) under us: the file we locked is no longer the log.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path, "stat")(e)),
        }
    }
}

/// The directory holding `path` ("." for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, making the names created or renamed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}
