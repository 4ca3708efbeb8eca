//! The log file as bytes in memory, made and read by the same code as the real file: the
//! simulation keeps each node's log this way, tears its last batch and rots its bytes the way
//! a disk would, and recovers it with the daemon's own replay, so what the simulation shows
//! about torn writes and damage is what the daemon does with them.

use super::record::Reader;
use super::wal::DroppedTail;
use super::{batch, encode_saves, log_image, Replay, StorageError};
use crate::rpc::types::{Entry, HardState, SnapshotMeta};
use std::io::Cursor;
use std::path::Path;

/// A log file's bytes and what appending to it needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogImage {
    bytes: Vec<u8>,
    /// Where each batch starts, oldest first.
    batches: Vec<usize>,
    hard_state: HardState,
    last_index: u64,
    snapshot: Option<SnapshotMeta>,
}

impl Default for LogImage {
    fn default() -> Self {
        LogImage {
            bytes: batch::FILE_MAGIC.to_vec(),
            batches: Vec::new(),
            hard_state: HardState::default(),
            last_index: 0,
            snapshot: None,
        }
    }
}

/// What replaying an image gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub hard_state: HardState,
    /// Contiguous from the snapshot's index + 1.
    pub entries: Vec<Entry>,
    pub dropped_tail: Option<DroppedTail>,
}

impl LogImage {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where each batch starts.
    pub fn batch_offsets(&self) -> &[usize] {
        &self.batches
    }

    /// The batch `Storage::save_batch` would append for these saves (sealed), with the hard
    /// state and last index after it; None if there is nothing to write.
    fn batch<'a>(
        &self,
        writes: impl IntoIterator<Item = (Option<HardState>, &'a [Entry])>,
    ) -> Result<Option<(Vec<u8>, HardState, u64)>, StorageError> {
        let snapshot_index = self.snapshot.map_or(0, |m| m.index);
        let (mut buf, hard_state, last_index) =
            encode_saves(self.hard_state, self.last_index, snapshot_index, writes)?;
        if batch::is_empty(&buf) {
            return Ok(None);
        }
        batch::seal(&mut buf).map_err(|e| StorageError::Encode {
            reason: e.to_string(),
        })?;
        Ok(Some((buf, hard_state, last_index)))
    }

    /// The batch `Storage::save_batch` would append for these saves (sealed), without
    /// appending it. Empty if there is nothing to write.
    pub fn encode<'a>(
        &self,
        writes: impl IntoIterator<Item = (Option<HardState>, &'a [Entry])>,
    ) -> Result<Vec<u8>, StorageError> {
        Ok(self
            .batch(writes)?
            .map(|(buf, _, _)| buf)
            .unwrap_or_default())
    }

    /// Appends saves as one batch, as `Storage::save_batch` does.
    pub fn save<'a>(
        &mut self,
        writes: impl IntoIterator<Item = (Option<HardState>, &'a [Entry])>,
    ) -> Result<(), StorageError> {
        if let Some((buf, hard_state, last_index)) = self.batch(writes)? {
            self.batches.push(self.bytes.len());
            self.bytes.extend_from_slice(&buf);
            self.hard_state = hard_state;
            self.last_index = last_index;
        }
        Ok(())
    }

    /// Replaces the log by a compacted one after a snapshot at `meta`, as `save_snapshot` does.
    pub fn compact(
        &mut self,
        hard_state: HardState,
        meta: SnapshotMeta,
        tail: &[Entry],
    ) -> Result<(), StorageError> {
        self.bytes = log_image(&hard_state, Some(meta), tail)?;
        self.batches = vec![batch::FILE_HEADER_LEN as usize];
        self.hard_state = hard_state;
        self.snapshot = Some(meta);
        self.last_index = meta.index + tail.len() as u64;
        Ok(())
    }

    /// Appends raw bytes (the remains of a write a crash cut short).
    pub fn append_raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Flips bits of the byte at `offset` (rot).
    pub fn flip(&mut self, offset: usize, mask: u8) {
        if let Some(b) = self.bytes.get_mut(offset) {
            *b ^= mask;
        }
    }

    /// Replays the bytes as `Storage::open` replays `raft.wal` (with the snapshot file holding
    /// `snapshot`), and on success cuts off a torn tail as it does. Damage is an error.
    pub fn recover(&mut self, snapshot: Option<SnapshotMeta>) -> Result<Replayed, StorageError> {
        let path = Path::new("raft.wal");
        let len = self.bytes.len() as u64;
        let mut reader = Reader::new(Cursor::new(&self.bytes[..]), len);
        let mut replay = Replay::default();
        let dropped_tail = super::wal::replay(&mut reader, path, len, |offset, record| {
            replay.apply(offset, record)
        })?;
        let (hard_state, entries, _) = replay.finish(snapshot, path, Path::new("snapshot"))?;
        if let Some(tail) = &dropped_tail {
            self.bytes.truncate(tail.offset as usize);
            self.batches.retain(|&b| b < tail.offset as usize);
        }
        self.hard_state = hard_state;
        self.snapshot = snapshot;
        self.last_index = snapshot.map_or(0, |m| m.index) + entries.len() as u64;
        Ok(Replayed {
            hard_state,
            entries,
            dropped_tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_saves_and_recovers_like_the_file() {
        let mut img = LogImage::default();
        let e: Vec<Entry> = (1..=3)
            .map(|i| Entry::command(1, i, vec![b'x'; 10]))
            .collect();
        img.save([(Some(HardState { term: 1, vote: 2 }), &e[..])])
            .unwrap();
        let tail = img.encode([(None, &e[..0])]).unwrap();
        assert!(tail.is_empty());
        let more = [Entry::command(1, 4, b"y".to_vec())];
        let torn = img.encode([(None, &more[..])]).unwrap();
        // A torn second batch: its first half zeros, its second half there.
        let mut bytes = torn.clone();
        bytes[..torn.len() / 2].fill(0);
        img.append_raw(&bytes);
        let r = img.recover(None).unwrap();
        assert_eq!(r.entries, e);
        assert_eq!(r.hard_state, HardState { term: 1, vote: 2 });
        assert!(r.dropped_tail.is_some());
        // A flipped byte in the first batch followed by a good one: damage.
        img.save([(None, &more[..])]).unwrap();
        img.flip(img.batch_offsets()[0] + 30, 0x20);
        assert!(matches!(
            img.recover(None),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
