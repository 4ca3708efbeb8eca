//! Batch framing for the write-ahead log: one group commit (one `write` + one `fdatasync`) is
//! one batch, so recovery can tell a write that never finished from damage to one that did.
//!
//! ```text
//! file:  ["RAFTWAL2"] [batch] [batch] ...
//! batch: [magic FF 52 42 31][body length: u32 BE][crc32 of body: u32 BE][crc32 of bytes 0..12: u32 BE][body]
//! body:  records, framed as in `record.rs`
//! ```
//!
//! A batch is acknowledged only after the fsync of the whole batch returned, and the next
//! batch is written only after that. So at recovery:
//! * a batch whose header or body is bad and that has no complete batch anywhere after it is
//!   the last write, cut by a crash: its pages may have reached the disk in any order (zeros
//!   followed by data), and none of it was acknowledged. It is dropped;
//! * a bad batch followed by a complete one had been synced (its successor was written after
//!   its fsync returned): that is damage, and the node must not pretend it was never written.
//!
//! The magic starts with 0xFF, a byte no record header of the old format can start with (a
//! payload length is at most 256 MiB) and that never occurs in UTF-8, so JSON payloads cannot
//! contain a batch header.

use std::io::{self, Read, Seek, SeekFrom};

/// First bytes of a log file in the batched format.
pub const FILE_MAGIC: [u8; 8] = *b"RAFTWAL2";
pub const FILE_HEADER_LEN: u64 = FILE_MAGIC.len() as u64;

pub const BATCH_MAGIC: [u8; 4] = [0xFF, 0x52, 0x42, 0x31];
pub const BATCH_HEADER_LEN: usize = 16;

/// A buffer to encode one batch's records into: room for the header, filled by `seal`.
pub fn start() -> Vec<u8> {
    vec![0u8; BATCH_HEADER_LEN]
}

/// True if nothing was encoded after `start()`.
pub fn is_empty(buf: &[u8]) -> bool {
    buf.len() <= BATCH_HEADER_LEN
}

/// Why a batch could not be sealed.
#[derive(Debug, thiserror::Error)]
#[error("a batch of {0} bytes is larger than the 4 GiB a batch header can describe")]
pub struct TooLarge(pub usize);

/// Fills in the header of a buffer made by `start()` and encoded into.
pub fn seal(buf: &mut [u8]) -> Result<(), TooLarge> {
    let body_len = buf.len() - BATCH_HEADER_LEN;
    let len = u32::try_from(body_len).map_err(|_| TooLarge(body_len))?;
    let crc = crc32fast::hash(&buf[BATCH_HEADER_LEN..]);
    buf[0..4].copy_from_slice(&BATCH_MAGIC);
    buf[4..8].copy_from_slice(&len.to_be_bytes());
    buf[8..12].copy_from_slice(&crc.to_be_bytes());
    let header_crc = crc32fast::hash(&buf[0..12]);
    buf[12..16].copy_from_slice(&header_crc.to_be_bytes());
    Ok(())
}

/// A batch header that passed its own checksum: its length and body checksum can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub body_len: u64,
    pub body_crc: u32,
}

/// Parses a header; None if the magic or the header checksum is wrong.
pub fn parse_header(bytes: &[u8; BATCH_HEADER_LEN]) -> Option<Header> {
    if bytes[0..4] != BATCH_MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if crc32fast::hash(&bytes[0..12]) != crc {
        return None;
    }
    Some(Header {
        body_len: u64::from(u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]])),
        body_crc: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
    })
}

/// The offset of the first complete, valid batch (good header, all of its body in the file,
/// good body checksum) that starts after `from`, if any. Leaves `file`'s position anywhere.
pub fn find_complete_batch<R: Read + Seek>(
    file: &mut R,
    from: u64,
    file_len: u64,
) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = from + 1;
    while pos + BATCH_HEADER_LEN as u64 <= file_len {
        let want = CHUNK.min(usize::try_from(file_len - pos).unwrap_or(CHUNK));
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..want])?;
        let mut i = 0;
        while i + BATCH_MAGIC.len() <= want {
            if buf[i] == BATCH_MAGIC[0] && buf[i..i + 4] == BATCH_MAGIC {
                let at = pos + i as u64;
                if is_complete_batch_at(file, at, file_len)? {
                    return Ok(Some(at));
                }
            }
            i += 1;
        }
        // The next chunk overlaps this one by a magic's length less one byte, so a magic that
        // straddles the boundary is still seen.
        if want < BATCH_MAGIC.len() {
            break;
        }
        pos += (want - (BATCH_MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

fn is_complete_batch_at<R: Read + Seek>(file: &mut R, at: u64, file_len: u64) -> io::Result<bool> {
    if at + BATCH_HEADER_LEN as u64 > file_len {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(at))?;
    let mut header = [0u8; BATCH_HEADER_LEN];
    file.read_exact(&mut header)?;
    let Some(h) = parse_header(&header) else {
        return Ok(false);
    };
    if at + BATCH_HEADER_LEN as u64 + h.body_len > file_len {
        return Ok(false);
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut left = h.body_len;
    let mut chunk = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = chunk
            .len()
            .min(usize::try_from(left).unwrap_or(chunk.len()));
        file.read_exact(&mut chunk[..n])?;
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize() == h.body_crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn batch(body: &[u8]) -> Vec<u8> {
        let mut buf = start();
        buf.extend_from_slice(body);
        seal(&mut buf).unwrap();
        buf
    }

    #[test]
    fn a_sealed_header_parses_and_a_flipped_bit_does_not() {
        let b = batch(b"hello");
        let mut h = [0u8; BATCH_HEADER_LEN];
        h.copy_from_slice(&b[..BATCH_HEADER_LEN]);
        assert_eq!(
            parse_header(&h),
            Some(Header {
                body_len: 5,
                body_crc: crc32fast::hash(b"hello")
            })
        );
        for i in 0..BATCH_HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert_eq!(parse_header(&bad), None, "byte {i}");
        }
    }

    #[test]
    fn finds_only_complete_batches() {
        let mut file = vec![7u8; 100];
        let at = file.len() as u64;
        file.extend(batch(b"a body"));
        let len = file.len() as u64;
        let mut c = Cursor::new(file.clone());
        assert_eq!(find_complete_batch(&mut c, 0, len).unwrap(), Some(at));
        assert_eq!(find_complete_batch(&mut c, at, len).unwrap(), None);
        // Cut short, or with a bad body: not complete.
        let mut c = Cursor::new(file[..file.len() - 1].to_vec());
        assert_eq!(find_complete_batch(&mut c, 0, len - 1).unwrap(), None);
        let mut bad = file.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut c = Cursor::new(bad);
        assert_eq!(find_complete_batch(&mut c, 0, len).unwrap(), None);
    }

    #[test]
    fn a_batch_straddling_the_scan_chunk_boundary_is_found() {
        let mut file = vec![0u8; (1 << 20) - 2];
        let at = file.len() as u64;
        file.extend(batch(b"x"));
        let len = file.len() as u64;
        let mut c = Cursor::new(file);
        assert_eq!(find_complete_batch(&mut c, 0, len).unwrap(), Some(at));
    }
}
