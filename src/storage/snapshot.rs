//! The snapshot file `<data dir>/snapshot`: the state machine's state after applying every entry
//! up to some index, which lets the log drop those entries.
//!
//! Format (all integers big-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic b"RAFTSNAP"
//!      8     4  format version (1)
//!     12     8  index: last log index the snapshot covers
//!     20     8  term of that entry
//!     28     8  data length in bytes
//!     36     4  crc32 of the data
//!     40     4  crc32 of bytes 0..40 (the header above)
//!     44     -  data
//! ```
//!
//! The file is only ever installed whole: written to `snapshot.tmp`, fsynced, renamed over
//! `snapshot`, and the dir fsynced. So unlike the log it has no "torn tail": any mismatch in a
//! file named `snapshot` is damage, and the node refuses to start.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use super::error::{io_err, StorageError};
use super::wal::sync_dir;
use crate::rpc::types::{Snapshot, SnapshotMeta};

/// File name of the snapshot inside the data dir.
pub const SNAPSHOT_FILE_NAME: &str = "snapshot";
/// Where a new snapshot is written before it is renamed over [`SNAPSHOT_FILE_NAME`].
pub const SNAPSHOT_TMP_FILE_NAME: &str = "snapshot.tmp";
/// Where a snapshot prepared in the background ([`prepare`]) is written, so that it never
/// collides with a snapshot the node loop installs meanwhile.
pub const SNAPSHOT_PREPARED_FILE_NAME: &str = "snapshot.prepared.tmp";

const MAGIC: &[u8; 8] = b"RAFTSNAP";
const VERSION: u32 = 1;
/// Bytes before the data.
pub const SNAPSHOT_HEADER_LEN: u64 = 44;

fn header(meta: SnapshotMeta, data: &[u8]) -> [u8; SNAPSHOT_HEADER_LEN as usize] {
    header_of(meta, data.len() as u64, crc32fast::hash(data))
}

/// The header of a snapshot whose data is `len` bytes with CRC-32 `crc`.
fn header_of(meta: SnapshotMeta, len: u64, crc: u32) -> [u8; SNAPSHOT_HEADER_LEN as usize] {
    let mut h = [0u8; SNAPSHOT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_be_bytes());
    h[12..20].copy_from_slice(&meta.index.to_be_bytes());
    h[20..28].copy_from_slice(&meta.term.to_be_bytes());
    h[28..36].copy_from_slice(&len.to_be_bytes());
    h[36..40].copy_from_slice(&crc.to_be_bytes());
    let header_crc = crc32fast::hash(&h[0..40]);
    h[40..44].copy_from_slice(&header_crc.to_be_bytes());
    h
}

/// Writes `<dir>/snapshot.tmp` and makes it durable. Nothing under the real name changes, so on
/// error the caller may simply go on (the temp file is removed best-effort).
fn write_tmp(dir: &Path, name: &str, meta: SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
    let tmp = dir.join(name);
    let result = (|| {
        // Truncates a leftover from an earlier crash.
        let mut file = File::create(&tmp).map_err(io_err(&tmp, "create"))?;
        file.write_all(&header(meta, data))
            .and_then(|()| file.write_all(data))
            .map_err(io_err(&tmp, "write"))?;
        // The contents must be durable before the rename makes them the snapshot.
        file.sync_all().map_err(io_err(&tmp, "fsync"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames the durable temp file over `<dir>/snapshot` and fsyncs the dir. After an error here
/// it is unknown which snapshot the next start will see.
pub(crate) fn install_tmp(dir: &Path, name: &str) -> Result<(), StorageError> {
    let path = dir.join(SNAPSHOT_FILE_NAME);
    fs::rename(dir.join(name), &path).map_err(io_err(&path, "rename the temporary snapshot to"))?;
    sync_dir(dir)
}

/// Which step of [`write`] failed.
pub(crate) enum WriteError {
    /// Before the rename: the old snapshot (if any) is still the one on disk.
    NothingChanged(StorageError),
    /// During or after the rename: the new snapshot may or may not be the one on disk.
    Unknown(StorageError),
}

/// Atomically replaces `<dir>/snapshot`: temp file, write, fsync, rename, fsync of the dir.
/// Returns the new file's length.
pub(crate) fn write(dir: &Path, meta: SnapshotMeta, data: &[u8]) -> Result<u64, WriteError> {
    write_tmp(dir, SNAPSHOT_TMP_FILE_NAME, meta, data).map_err(WriteError::NothingChanged)?;
    install_tmp(dir, SNAPSHOT_TMP_FILE_NAME).map_err(WriteError::Unknown)?;
    Ok(SNAPSHOT_HEADER_LEN + data.len() as u64)
}

/// A snapshot file written and fsynced under a temporary name, ready to be installed by
/// `Storage::save_prepared_snapshot`.
#[derive(Debug)]
pub struct PreparedSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) len: u64,
}

impl PreparedSnapshot {
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }
}

/// Writes the snapshot file of `data` under a temporary name and fsyncs it, touching nothing
/// the node uses: safe to run on another thread while the node keeps appending to its log. The
/// slow part of saving a snapshot (writing and syncing its bytes) happens here.
pub fn prepare(
    dir: &Path,
    meta: SnapshotMeta,
    data: &[u8],
) -> Result<PreparedSnapshot, StorageError> {
    write_tmp(dir, SNAPSHOT_PREPARED_FILE_NAME, meta, data)?;
    Ok(PreparedSnapshot {
        meta,
        len: SNAPSHOT_HEADER_LEN + data.len() as u64,
    })
}

/// Why [`prepare_streamed`] failed.
#[derive(Debug)]
pub enum StreamedError {
    /// The encoder refused the state (nothing about the disk).
    Encode(String),
    /// Creating, writing, syncing or mapping the file failed.
    Storage(StorageError),
}

/// Writes what `encode` writes as a snapshot file under the prepared name, as it comes: the
/// data never exists whole in memory (at a million keys it is 300 MB, on top of the state it
/// encodes). The header, with the length and CRC counted on the way, goes in last, and the
/// file is fsynced. Returns the prepared file and its data, mapped from it (see `map_file`).
pub fn prepare_streamed<E: std::fmt::Display>(
    dir: &Path,
    meta: SnapshotMeta,
    encode: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(PreparedSnapshot, bytes::Bytes), StreamedError> {
    use std::os::unix::fs::FileExt;
    let tmp = dir.join(SNAPSHOT_PREPARED_FILE_NAME);
    let storage = |e| StreamedError::Storage(e);
    let result = (|| {
        // A new file, not the old one truncated: a leftover (from a save that failed) may
        // still be mapped by someone.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(storage(io_err(&tmp, "remove")(e))),
        }
        let file = File::create(&tmp).map_err(|e| storage(io_err(&tmp, "create")(e)))?;
        let mut out = Counted {
            inner: io::BufWriter::with_capacity(1 << 20, &file),
            crc: crc32fast::Hasher::new(),
            len: 0,
            failed: None,
        };
        out.inner
            .write_all(&[0; SNAPSHOT_HEADER_LEN as usize])
            .map_err(|e| storage(io_err(&tmp, "write")(e)))?;
        let encoded = encode(&mut out);
        if let Some(e) = out.failed.take() {
            return Err(storage(io_err(&tmp, "write")(e)));
        }
        encoded.map_err(|e| StreamedError::Encode(e.to_string()))?;
        out.inner
            .flush()
            .map_err(|e| storage(io_err(&tmp, "write")(e)))?;
        let (len, crc) = (out.len, out.crc.clone().finalize());
        drop(out);
        file.write_all_at(&header_of(meta, len, crc), 0)
            .map_err(|e| storage(io_err(&tmp, "write")(e)))?;
        // The contents must be durable before the rename makes them the snapshot.
        file.sync_all()
            .map_err(|e| storage(io_err(&tmp, "fsync")(e)))?;
        let (_, data, file_len) = map_file(&tmp, false)
            .map_err(storage)?
            .ok_or_else(|| storage(io_err(&tmp, "map")(io::ErrorKind::NotFound.into())))?;
        Ok((
            PreparedSnapshot {
                meta,
                len: file_len,
            },
            data,
        ))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A writer that counts and checksums what passes through it, and keeps the first I/O error
/// (an encoder reports its own error type, which may not carry it).
struct Counted<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
    failed: Option<io::Error>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => {
                self.crc.update(&buf[..n]);
                self.len += n as u64;
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                self.failed.get_or_insert(e);
                Err(kind.into())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads and verifies a snapshot file (a node's `snapshot`, or a backup: they are the same
/// format), header and data checksums both. `Ok(None)` if there is none. Returns its meta, its
/// data (mapped, see `map_file`, not copied into the heap) and the file's length.
pub fn read_file(path: &Path) -> Result<Option<(SnapshotMeta, bytes::Bytes, u64)>, StorageError> {
    map_file(path, true)
}

/// Maps the snapshot file at `path` into memory (after checking its header, and its data's
/// CRC when `check_data`): its bytes are read from the file when used, and the kernel may drop
/// them again under memory pressure, instead of the whole snapshot sitting in the heap.
///
/// Safe because raftd never changes a snapshot file in place: a new one is written under
/// another name and renamed over it, and a mapping keeps the old file alive. (Something else
/// truncating the file while it is mapped would make reading it fail hard; nothing should
/// touch a data dir but its node.)
pub fn map_file(
    path: &Path,
    check_data: bool,
) -> Result<Option<(SnapshotMeta, bytes::Bytes, u64)>, StorageError> {
    open_checked(path, check_data)
}

fn open_checked(
    path: &Path,
    check_data: bool,
) -> Result<Option<(SnapshotMeta, bytes::Bytes, u64)>, StorageError> {
    let path = path.to_path_buf();
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, "open snapshot")(e)),
    };
    let file_len = file.metadata().map_err(io_err(&path, "stat"))?.len();
    let damaged = |offset: u64, reason: String| StorageError::Corrupt {
        path: path.clone(),
        offset,
        reason: format!("snapshot file: {reason}"),
    };
    if file_len < SNAPSHOT_HEADER_LEN {
        return Err(damaged(
            0,
            format!("only {file_len} bytes, shorter than the {SNAPSHOT_HEADER_LEN}-byte header"),
        ));
    }
    let mut h = [0u8; SNAPSHOT_HEADER_LEN as usize];
    (&file).read_exact(&mut h).map_err(io_err(&path, "read"))?;
    if &h[0..8] != MAGIC {
        return Err(damaged(0, "bad magic, not a raftd snapshot".to_string()));
    }
    let u32_at = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    if crc32fast::hash(&h[0..40]) != u32_at(40) {
        return Err(damaged(40, "header checksum mismatch".to_string()));
    }
    let version = u32_at(8);
    if version != VERSION {
        return Err(damaged(
            8,
            format!(
                "format version {version} is not understood by this raftd (it reads {VERSION})"
            ),
        ));
    }
    let meta = SnapshotMeta {
        index: u64_at(12),
        term: u64_at(20),
    };
    let data_len = u64_at(28);
    let held = file_len - SNAPSHOT_HEADER_LEN;
    if data_len != held {
        return Err(damaged(
            28,
            format!("the header promises {data_len} data bytes but the file holds {held}"),
        ));
    }
    let data = if data_len == 0 {
        bytes::Bytes::new()
    } else {
        // SAFETY: see `map_file`: the file is never modified in place while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(&path, "map"))?;
        bytes::Bytes::from_owner(map).slice(SNAPSHOT_HEADER_LEN as usize..)
    };
    if check_data && crc32fast::hash(&data) != u32_at(36) {
        return Err(damaged(
            SNAPSHOT_HEADER_LEN,
            "data checksum mismatch".to_string(),
        ));
    }
    Ok(Some((meta, data, file_len)))
}

/// Reads and verifies `<dir>/snapshot`. `Ok(None)` if there is none. Returns the snapshot and
/// the file's length.
pub(crate) fn load(dir: &Path) -> Result<Option<(Snapshot, u64)>, StorageError> {
    let Some((meta, data, file_len)) = map_file(&dir.join(SNAPSHOT_FILE_NAME), true)? else {
        return Ok(None);
    };
    Ok(Some((
        Snapshot {
            // The configuration is inside the state machine's bytes; whoever decodes them
            // (`KvStore::from_snapshot`) fills it in.
            membership: Default::default(),
            meta,
            data,
        },
        file_len,
    )))
}

/// Writes a snapshot file (a backup) whose data arrives in pieces: to `<path>.part` first,
/// the header last (once the data's length and CRC are known), fsynced, then renamed to
/// `path`. A file under `path` is therefore always whole; a `.part` left by a crash or an
/// abandoned backup is overwritten by the next attempt.
pub struct SnapshotFileWriter {
    path: std::path::PathBuf,
    part: std::path::PathBuf,
    file: File,
    crc: crc32fast::Hasher,
    len: u64,
}

impl SnapshotFileWriter {
    pub fn create(path: &Path) -> Result<SnapshotFileWriter, StorageError> {
        let mut name = path.as_os_str().to_os_string();
        name.push(".part");
        let part = std::path::PathBuf::from(name);
        let mut file = File::create(&part).map_err(io_err(&part, "create"))?;
        // Room for the header, written once the data is complete.
        file.write_all(&[0u8; SNAPSHOT_HEADER_LEN as usize])
            .map_err(io_err(&part, "write"))?;
        Ok(SnapshotFileWriter {
            path: path.to_path_buf(),
            part,
            file,
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    /// Appends the next data bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.file
            .write_all(data)
            .map_err(io_err(&self.part, "write"))?;
        self.crc.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Data bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CRC-32 of the data written so far.
    pub fn crc32(&self) -> u32 {
        self.crc.clone().finalize()
    }

    /// Writes the header for `meta`, makes the file durable and gives it its name. Returns
    /// the file's length.
    pub fn finish(mut self, meta: SnapshotMeta) -> Result<u64, StorageError> {
        use std::io::{Seek, SeekFrom};
        let h = header_of(meta, self.len, self.crc32());
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&h))
            .map_err(io_err(&self.part, "write the header of"))?;
        self.file.sync_all().map_err(io_err(&self.part, "fsync"))?;
        fs::rename(&self.part, &self.path)
            .map_err(io_err(&self.path, "rename the finished backup to"))?;
        sync_dir(super::wal::parent_dir(&self.path))?;
        Ok(SNAPSHOT_HEADER_LEN + self.len)
    }

    /// Gives up: the partial file is removed.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.part);
    }
}
