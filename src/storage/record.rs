//! Record framing for the write-ahead log.
//!
//! A record is a 12-byte header followed by a payload:
//!
//! ```text
//! [payload length: u32 BE][crc32 of those 4 length bytes: u32 BE][crc32 of payload: u32 BE][payload]
//! ```
//!
//! The payload of an `Entries` record is binary (see [`encode_entries`]): the entries' command
//! bytes go in as they are, where JSON needed them in base64 (a third more bytes, and the
//! encoding on every write of every node). Other records, and entries written by earlier
//! versions, are the JSON of a [`WalRecord`]; a JSON payload starts with `{`, a binary one with
//! [`BINARY_ENTRIES`]. The length has its own checksum so that a damaged
//! length is recognised as damage instead of being trusted (a flipped high bit would otherwise
//! make every later record look like "the tail of one huge record that was cut short", and the
//! recovery would silently drop acknowledged data as a torn tail).
//!
//! [`Reader`] walks records from offset 0 and tells a *torn tail* (the last, never acknowledged
//! write was cut short by a crash: safe to drop) apart from *damage* (something no crash of our
//! own write pattern can produce: the node must not start).

use std::io::{self, Read, Seek, SeekFrom};

use super::batch;
use crate::varint::{self, VarintError};

use serde::{Deserialize, Serialize};

use crate::rpc::types::{Entry, EntryKind, NodeId};

/// Bytes in a record header.
pub const HEADER_LEN: u64 = 12;

/// Largest valid payload. Anything larger in a header (with a good header checksum) is damage.
pub const MAX_PAYLOAD: u32 = 256 * 1024 * 1024;

/// One record of the log, as read back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum WalRecord {
    /// Replaces the term and vote.
    HardState { term: u64, vote: NodeId },
    /// Appends entries; an entry at or below the current last index replaces the log from there.
    Entries { entries: Vec<Entry> },
    /// Drops every entry with index >= `from`.
    Truncate { from: u64 },
    /// Compaction marker: entries up to `index` (whose term was `term`) live in the snapshot
    /// file, and the log held by this file starts right after `index`. Only written as part
    /// of a freshly rewritten log, before any entries.
    Snapshot { index: u64, term: u64 },
}

/// The same records, borrowing their entries, for writing without copying the batch.
/// Serializes to exactly the JSON that [`WalRecord`] deserializes (tested below).
#[derive(Serialize, Clone, Copy, Debug)]
#[serde(tag = "type")]
pub enum RecordRef<'a> {
    HardState { term: u64, vote: NodeId },
    Entries { entries: &'a [Entry] },
    Truncate { from: u64 },
    Snapshot { index: u64, term: u64 },
}

/// Why a record could not be encoded. On error nothing was appended to the output buffer.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("record payload is {size} bytes, more than the limit of {MAX_PAYLOAD} bytes")]
    TooLarge { size: usize },
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// The first byte of a binary `Entries` payload (a JSON payload's is `{`).
pub const BINARY_ENTRIES: u8 = 0x01;

/// An `Entries` payload in binary, integers as LEB128 varints:
///
/// ```text
/// 0x01, count, then per entry: term, index, kind (0 noop, 1 command, 2 config: one byte),
/// data length, data bytes
/// ```
fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let data: usize = entries.iter().map(|e| e.data.len()).sum();
    let mut out = Vec::with_capacity(1 + 10 + entries.len() * 24 + data);
    out.push(BINARY_ENTRIES);
    varint::put(&mut out, entries.len() as u64);
    for e in entries {
        varint::put(&mut out, e.term);
        varint::put(&mut out, e.index);
        out.push(match e.kind {
            EntryKind::Noop => 0,
            EntryKind::Command => 1,
            EntryKind::Config => 2,
        });
        varint::put(&mut out, e.data.len() as u64);
        out.extend_from_slice(&e.data);
    }
    out
}

fn decode_entries(payload: &[u8]) -> Result<WalRecord, String> {
    let mut at = 1;
    let count = varint(payload, &mut at, "the entry count")?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let term = varint(payload, &mut at, "a term")?;
        let index = varint(payload, &mut at, "an index")?;
        let kind = match payload.get(at) {
            Some(0) => EntryKind::Noop,
            Some(1) => EntryKind::Command,
            Some(2) => EntryKind::Config,
            Some(k) => return Err(format!("entry kind {k} at byte {at} is unknown")),
            None => return Err(format!("the entries end early, at byte {at}")),
        };
        at += 1;
        let len = varint(payload, &mut at, "a data length")?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|end| *end <= payload.len())
            .ok_or_else(|| format!("entry data of {len} bytes at byte {at} runs past the end"))?;
        entries.push(Entry {
            term,
            index,
            kind,
            data: bytes::Bytes::copy_from_slice(&payload[at..end]),
        });
        at = end;
    }
    if at != payload.len() {
        return Err(format!("{} bytes follow the entries", payload.len() - at));
    }
    Ok(WalRecord::Entries { entries })
}

fn varint(bytes: &[u8], at: &mut usize, what: &str) -> Result<u64, String> {
    let start = *at;
    varint::read(bytes, at).map_err(|e| match e {
        VarintError::Truncated => format!("the entries end early, at byte {start}, in {what}"),
        VarintError::TooLong => format!("{what} at byte {start} does not fit in 64 bits"),
    })
}

/// Appends the framed record to `out`.
pub fn encode(record: &RecordRef<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let payload = match record {
        RecordRef::Entries { entries } => encode_entries(entries),
        other => serde_json::to_vec(other)?,
    };
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n <= MAX_PAYLOAD)
        .ok_or(EncodeError::TooLarge {
            size: payload.len(),
        })?;
    let len_bytes = len.to_be_bytes();
    out.reserve(HEADER_LEN as usize + payload.len());
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc32fast::hash(&len_bytes).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// What the reader found at its current offset.
#[derive(Debug)]
pub enum Step {
    /// A good record starting at `offset`, `size` bytes including its header.
    Record {
        offset: u64,
        size: u64,
        record: WalRecord,
    },
    /// Clean end of file right after a good record.
    End,
    /// From `offset` to the end of the file lies the remains of an unfinished last write.
    TornTail { offset: u64, reason: String },
    /// The record at `offset` is damaged in a way a torn write cannot explain.
    Damaged { offset: u64, reason: String },
}

/// Which format a log file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Not known until the first step.
    Unknown,
    /// Records one after another (raftd before batches). Read, and converted on open.
    Legacy,
    /// `FILE_MAGIC` and then batches (`batch.rs`).
    Batched,
}

/// The body of the batch being read, already checked against its checksum.
struct Body {
    bytes: Vec<u8>,
    pos: usize,
    /// File offset of `bytes[0]`.
    at: u64,
}

/// Reads records one at a time from a file of known length, so replay never holds more than one
/// batch's bytes besides the state it builds. Stop at the first step that is not a `Record`.
pub struct Reader<R> {
    inner: R,
    offset: u64,
    file_len: u64,
    format: Format,
    body: Option<Body>,
}

impl<R: Read + Seek> Reader<R> {
    /// `inner` must be positioned at offset 0 of a file `file_len` bytes long.
    pub fn new(inner: R, file_len: u64) -> Self {
        Reader {
            inner,
            offset: 0,
            file_len,
            format: Format::Unknown,
            body: None,
        }
    }

    /// Offset of the next record (the end of the last good one).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file's format (known after the first step).
    pub fn format(&self) -> Format {
        self.format
    }

    /// Decodes the next record and classifies any problem.
    pub fn next_step(&mut self) -> io::Result<Step> {
        if self.format == Format::Unknown {
            if let Some(step) = self.detect_format()? {
                return Ok(step);
            }
        }
        match self.format {
            Format::Legacy => self.legacy_step(),
            _ => self.batched_step(),
        }
    }

    /// Reads the file magic. A file shorter than the magic that starts like it (or is empty)
    /// is a batched log whose creation a crash cut short.
    fn detect_format(&mut self) -> io::Result<Option<Step>> {
        let n = batch::FILE_HEADER_LEN.min(self.file_len) as usize;
        let mut head = [0u8; batch::FILE_HEADER_LEN as usize];
        self.inner.read_exact(&mut head[..n])?;
        if n == batch::FILE_MAGIC.len() && head == batch::FILE_MAGIC {
            self.format = Format::Batched;
            self.offset = batch::FILE_HEADER_LEN;
            return Ok(None);
        }
        if n < batch::FILE_MAGIC.len() && head[..n] == batch::FILE_MAGIC[..n] {
            self.format = Format::Batched;
            return Ok(Some(if n == 0 {
                Step::End
            } else {
                Step::TornTail {
                    offset: 0,
                    reason: format!("only {n} bytes of the file header"),
                }
            }));
        }
        self.format = Format::Legacy;
        self.inner.seek(SeekFrom::Start(0))?;
        Ok(None)
    }

    fn batched_step(&mut self) -> io::Result<Step> {
        if let Some(body) = &mut self.body {
            if body.pos < body.bytes.len() {
                let offset = body.at + body.pos as u64;
                return Ok(match decode(&body.bytes[body.pos..]) {
                    Ok((size, record)) => {
                        body.pos += size as usize;
                        Step::Record {
                            offset,
                            size,
                            record,
                        }
                    }
                    Err(reason) => Step::Damaged {
                        offset,
                        reason: format!("inside a batch whose checksum is good: {reason}"),
                    },
                });
            }
            self.body = None;
        }
        loop {
            let offset = self.offset;
            let remaining = self.file_len.saturating_sub(offset);
            if remaining == 0 {
                return Ok(Step::End);
            }
            if remaining < batch::BATCH_HEADER_LEN as u64 {
                return Ok(Step::TornTail {
                    offset,
                    reason: format!("only {remaining} bytes left, less than a batch header"),
                });
            }
            let mut header = [0u8; batch::BATCH_HEADER_LEN];
            self.inner.read_exact(&mut header)?;
            let Some(h) = batch::parse_header(&header) else {
                if header.iter().all(|&b| b == 0)
                    && self.rest_is_zero(remaining - batch::BATCH_HEADER_LEN as u64)?
                {
                    return Ok(Step::TornTail {
                        offset,
                        reason: format!(
                            "the last {remaining} bytes are all zero (the file grew but the \
                             data never reached the disk)"
                        ),
                    });
                }
                return self.bad_batch(offset, "the batch header is unreadable");
            };
            let size = batch::BATCH_HEADER_LEN as u64 + h.body_len;
            if size > remaining {
                return Ok(Step::TornTail {
                    offset,
                    reason: format!(
                        "the batch needs {size} bytes but only {remaining} are left in the file"
                    ),
                });
            }
            // `body_len < remaining`, so this allocation is bounded by the real file size.
            let mut bytes = vec![0u8; h.body_len as usize];
            self.inner.read_exact(&mut bytes)?;
            if crc32fast::hash(&bytes) != h.body_crc {
                return self.bad_batch(offset, "the batch checksum does not match its bytes");
            }
            self.offset = offset + size;
            if !bytes.is_empty() {
                self.body = Some(Body {
                    bytes,
                    pos: 0,
                    at: offset + batch::BATCH_HEADER_LEN as u64,
                });
                return self.batched_step();
            }
        }
    }

    /// A batch at `offset` is bad: the unfinished last write if no complete batch follows it,
    /// damage to a synced one if one does.
    fn bad_batch(&mut self, offset: u64, problem: &str) -> io::Result<Step> {
        Ok(
            match batch::find_complete_batch(&mut self.inner, offset, self.file_len)? {
                Some(next) => Step::Damaged {
                    offset,
                    reason: format!(
                        "{problem}, and a complete batch follows at offset {next}, so this one \
                         had been synced"
                    ),
                },
                None => Step::TornTail {
                    offset,
                    reason: format!(
                        "{problem}, and no complete batch follows: the unfinished last write"
                    ),
                },
            },
        )
    }

    /// A log in the old format: decodes the record at the current offset and classifies any
    /// problem by record (a bad record followed by anything but zeros is damage).
    fn legacy_step(&mut self) -> io::Result<Step> {
        let offset = self.offset;
        let remaining = self.file_len.saturating_sub(offset);
        if remaining == 0 {
            return Ok(Step::End);
        }
        // (a) Not even a header: only a cut-short append leaves this.
        if remaining < HEADER_LEN {
            return Ok(Step::TornTail {
                offset,
                reason: format!("only {remaining} bytes left, less than a record header"),
            });
        }
        let mut header = [0u8; HEADER_LEN as usize];
        self.inner.read_exact(&mut header)?;
        // (b) Everything left is zeros: the file size reached the disk but the data did not.
        if header.iter().all(|&b| b == 0) && self.rest_is_zero(remaining - HEADER_LEN)? {
            return Ok(Step::TornTail {
                offset,
                reason: format!(
                    "the last {remaining} bytes are all zero (the file grew but the data never \
                     reached the disk)"
                ),
            });
        }
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u32::from_be_bytes(len_bytes);
        let header_crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let payload_crc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        // (c) A bad header checksum: the length cannot be trusted, so nothing after it can be
        // located. Never guess: that could drop acknowledged records.
        if crc32fast::hash(&len_bytes) != header_crc {
            return Ok(Step::Damaged {
                offset,
                reason: "record header checksum mismatch".to_string(),
            });
        }
        if len == 0 || len > MAX_PAYLOAD {
            return Ok(Step::Damaged {
                offset,
                reason: format!("record length {len} is outside 1..={MAX_PAYLOAD}"),
            });
        }
        let size = HEADER_LEN + u64::from(len);
        // (d) A trustworthy header promising more bytes than the file has: a cut-short append.
        if size > remaining {
            return Ok(Step::TornTail {
                offset,
                reason: format!(
                    "the record needs {size} bytes but only {remaining} are left in the file"
                ),
            });
        }
        // `len <= remaining`, so this allocation is bounded by the real file size.
        let mut payload = vec![0u8; len as usize];
        self.inner.read_exact(&mut payload)?;
        let problem = if crc32fast::hash(&payload) != payload_crc {
            "record payload checksum mismatch".to_string()
        } else {
            match decode_payload(&payload) {
                Ok(record) => {
                    self.offset += size;
                    return Ok(Step::Record {
                        offset,
                        size,
                        record,
                    });
                }
                Err(e) => e,
            }
        };
        // (e) A bad payload is torn only if it belongs to the last write: it ends exactly at the
        // end of the file, or only zeros follow it (the rest of that same write, whose data never
        // reached the disk). Anything else means good data follows bad data: damage.
        let after = remaining - size;
        if after == 0 {
            return Ok(Step::TornTail {
                offset,
                reason: format!("the last record is incomplete: {problem}"),
            });
        }
        if self.rest_is_zero(after)? {
            return Ok(Step::TornTail {
                offset,
                reason: format!(
                    "the last record is incomplete ({problem}) and only zero bytes follow it"
                ),
            });
        }
        Ok(Step::Damaged {
            offset,
            reason: problem,
        })
    }

    /// Reads the next `n` bytes; true if they are all zero. Stops reading at the first non-zero.
    fn rest_is_zero(&mut self, mut n: u64) -> io::Result<bool> {
        let mut chunk = [0u8; 8192];
        while n > 0 {
            let want = chunk.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            self.inner.read_exact(&mut chunk[..want])?;
            if chunk[..want].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            n -= want as u64;
        }
        Ok(true)
    }
}

/// Decodes one framed record at the start of `bytes` (inside a batch): its size and record.
fn decode(bytes: &[u8]) -> Result<(u64, WalRecord), String> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(format!("{} bytes, less than a record header", bytes.len()));
    }
    let len_bytes = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let len = u32::from_be_bytes(len_bytes);
    let header_crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let payload_crc = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if crc32fast::hash(&len_bytes) != header_crc {
        return Err("record header checksum mismatch".into());
    }
    let size = HEADER_LEN + u64::from(len);
    if len == 0 || len > MAX_PAYLOAD || size > bytes.len() as u64 {
        return Err(format!("record length {len} does not fit the batch"));
    }
    let payload = &bytes[HEADER_LEN as usize..size as usize];
    if crc32fast::hash(payload) != payload_crc {
        return Err("record payload checksum mismatch".into());
    }
    decode_payload(payload).map(|record| (size, record))
}

/// A record's payload: binary entries, or JSON.
fn decode_payload(payload: &[u8]) -> Result<WalRecord, String> {
    if payload.first() == Some(&BINARY_ENTRIES) {
        return decode_entries(payload)
            .map_err(|e| format!("record payload is not a valid list of entries ({e})"));
    }
    serde_json::from_slice(payload)
        .map_err(|e| format!("record payload is not a valid log record ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn steps(bytes: &[u8]) -> Vec<Step> {
        let mut reader = Reader::new(Cursor::new(bytes), bytes.len() as u64);
        let mut out = Vec::new();
        loop {
            let step = reader.next_step().expect("reading from memory");
            let stop = !matches!(step, Step::Record { .. });
            out.push(step);
            if stop {
                return out;
            }
        }
    }

    /// The good records at the start of `bytes`.
    fn records(bytes: &[u8]) -> Vec<WalRecord> {
        steps(bytes)
            .into_iter()
            .filter_map(|s| match s {
                Step::Record { record, .. } => Some(record),
                _ => None,
            })
            .collect()
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut out = len.to_vec();
        out.extend_from_slice(&crc32fast::hash(&len).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn borrowed_and_owned_records_share_one_format() {
        let entries = vec![Entry::noop(2, 1), Entry::command(2, 2, b"x".to_vec())];
        let mut buf = Vec::new();
        encode(&RecordRef::HardState { term: 3, vote: 2 }, &mut buf).unwrap();
        encode(&RecordRef::Entries { entries: &entries }, &mut buf).unwrap();
        encode(&RecordRef::Truncate { from: 2 }, &mut buf).unwrap();
        encode(&RecordRef::Snapshot { index: 9, term: 4 }, &mut buf).unwrap();
        let got = records(&buf);
        assert_eq!(
            got,
            vec![
                WalRecord::HardState { term: 3, vote: 2 },
                WalRecord::Entries { entries },
                WalRecord::Truncate { from: 2 },
                WalRecord::Snapshot { index: 9, term: 4 },
            ]
        );
        assert!(matches!(steps(&buf).last(), Some(Step::End)));
    }

    #[test]
    fn header_is_length_and_two_checksums_big_endian() {
        let mut buf = Vec::new();
        encode(&RecordRef::Truncate { from: 7 }, &mut buf).unwrap();
        let payload = br#"{"type":"Truncate","from":7}"#;
        assert_eq!(buf, frame(payload));
    }

    #[test]
    fn zero_length_and_oversized_lengths_are_damage() {
        for len in [0u32, MAX_PAYLOAD + 1, u32::MAX] {
            let len_bytes = len.to_be_bytes();
            let mut buf = len_bytes.to_vec();
            buf.extend_from_slice(&crc32fast::hash(&len_bytes).to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, 0]);
            buf.extend_from_slice(&[1u8; 64]);
            assert!(
                matches!(steps(&buf)[0], Step::Damaged { offset: 0, .. }),
                "len {len}"
            );
        }
    }

    #[test]
    fn valid_checksum_but_not_a_record_is_classified_by_position() {
        let bad = frame(b"{\"type\":\"Nope\"}");
        // Last in the file: the unfinished last write.
        assert!(matches!(steps(&bad)[0], Step::TornTail { offset: 0, .. }));
        // Followed by a good record: damage.
        let mut buf = bad.clone();
        encode(&RecordRef::Truncate { from: 1 }, &mut buf).unwrap();
        assert!(matches!(steps(&buf)[0], Step::Damaged { offset: 0, .. }));
        // Followed only by zeros: still the last write.
        let mut buf = bad;
        buf.extend_from_slice(&[0u8; 100]);
        assert!(matches!(steps(&buf)[0], Step::TornTail { offset: 0, .. }));
    }

    #[test]
    fn short_or_zero_tails_are_torn_and_zero_header_before_data_is_damage() {
        let mut good = Vec::new();
        encode(&RecordRef::Truncate { from: 1 }, &mut good).unwrap();
        let n = good.len() as u64;
        for tail in [vec![7u8; 5], vec![0u8; 11], vec![0u8; 12], vec![0u8; 5000]] {
            let mut buf = good.clone();
            buf.extend_from_slice(&tail);
            let s = steps(&buf);
            assert!(matches!(s[1], Step::TornTail { offset, .. } if offset == n));
        }
        let mut buf = good.clone();
        buf.extend_from_slice(&[0u8; 20]);
        buf.extend_from_slice(&good);
        assert!(matches!(steps(&buf)[1], Step::Damaged { offset, .. } if offset == n));
    }

    #[test]
    fn entries_are_written_in_binary_and_json_entries_still_read() {
        let entries = vec![
            Entry::noop(2, 1),
            Entry::command(2, 2, b"{\"op\":\"x\"}".to_vec()),
            Entry::command(3, 3, (0..=255u8).collect()),
            Entry::command(u64::MAX, u64::MAX - 1, Vec::new()),
        ];
        let mut buf = Vec::new();
        encode(&RecordRef::Entries { entries: &entries }, &mut buf).unwrap();
        assert_eq!(buf[HEADER_LEN as usize], BINARY_ENTRIES);
        // The data's own bytes, not base64: the payload is about their size.
        let data: usize = entries.iter().map(|e| e.data.len()).sum();
        assert!(
            buf.len() < HEADER_LEN as usize + data + 64,
            "{} bytes",
            buf.len()
        );
        // A record of entries as earlier versions wrote it, in JSON.
        let old = serde_json::to_vec(&RecordRef::Entries { entries: &entries }).unwrap();
        buf.extend_from_slice(&frame(&old));
        let got = records(&buf);
        let want = WalRecord::Entries { entries };
        assert_eq!(got, vec![want.clone(), want]);
    }

    #[test]
    fn a_binary_entries_payload_that_does_not_hold_together_is_damage() {
        let entries = vec![Entry::command(1, 1, b"abc".to_vec()), Entry::noop(1, 2)];
        let good = super::encode_entries(&entries);
        assert!(super::decode_entries(&good).is_ok());
        // Cut anywhere, or with bytes after the entries, or an unknown kind: an error, with
        // the checksums good (the payload is framed as it is).
        for len in 1..good.len() {
            assert!(super::decode(&frame(&good[..len])).is_err(), "cut at {len}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(super::decode(&frame(&longer)).is_err());
        let mut kind = good.clone();
        kind[4] = 7; // count, term, index, then the first entry's kind
        let err = super::decode_entries(&kind).unwrap_err();
        assert!(err.contains("kind 7"), "{err}");
        let huge = [
            BINARY_ENTRIES,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x7f,
        ];
        assert!(super::decode_entries(&huge).is_err());
    }
}
