//! How a store is laid out in a snapshot's data (and so in backups).
//!
//! At a million keys a snapshot is some 300 MB, and every node writes one whenever its log has
//! grown by a quarter of that. Written as JSON, each value went through string escaping and
//! each number through formatting, and a load parsed it all back; that made a snapshot cost
//! seconds of CPU on every node at once. The binary image below is mostly the keys' and values'
//! own bytes copied through, with small integers as varints.
//!
//! ```text
//! magic      8 bytes  b"RDKVIMG\x01": not JSON, whose text starts with '{' or whitespace
//! head_len   varint   then `head_len` bytes of JSON: applied index, revisions, key count,
//!                     leases, sessions and membership (small: bounded by their limits)
//! keys       `key count` times, in strictly ascending key order:
//!   key        varint length, UTF-8 bytes
//!   versions   varint count (at least 1), then per version, oldest first:
//!     mod_revision, create_revision, version, lease   4 varints
//!     value    varint: 0 for a tombstone, else length + 1, then the UTF-8 bytes
//! end        8 bytes  b"RDKVEND\x01": a image cut short cannot pass for a smaller store
//! ```
//!
//! The snapshot file around it carries the CRC-32 of all of it. Reading still checks
//! everything a damaged or hostile image could get wrong (lengths past the end, keys out of
//! order, versions out of order, invalid UTF-8), so a bad image is an error, never a panic or
//! a store that breaks later. A store in JSON (what earlier versions wrote) still loads.

use std::io::{self, Write};
use std::sync::Arc;

use raftd_core::Membership;
use serde::{Deserialize, Serialize};

use super::{KvStore, Leases, Sessions};
use crate::kv::mvcc::{ordmap_from_sorted, Chain, Mvcc, Version};
use crate::varint::{self, VarintError};

const MAGIC: &[u8; 8] = b"RDKVIMG\x01";
const END: &[u8; 8] = b"RDKVEND\x01";
/// The encoder hands its output on in pieces this large, so whatever it writes to (a file
/// through a checksum) sees few, large writes.
const CHUNK: usize = 256 << 10;

/// Why a snapshot's data is not a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreImageError {
    #[error("not a key-value store in JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the store image ends early, at byte {at}, while reading {what}")]
    Truncated { at: usize, what: &'static str },
    #[error("the store image is damaged at byte {at}: {what}")]
    Invalid { at: usize, what: String },
}

/// The small parts of a store, as the image's head holds them.
#[derive(Serialize)]
struct HeadOut<'a> {
    applied: u64,
    revision: u64,
    compact_revision: u64,
    keys: u64,
    leases: &'a Leases,
    sessions: &'a Sessions,
    membership: &'a Membership,
}

#[derive(Deserialize)]
struct HeadIn {
    applied: u64,
    revision: u64,
    compact_revision: u64,
    keys: u64,
    leases: Leases,
    sessions: Sessions,
    membership: Membership,
}

/// Writes `store`'s image to `out`.
pub(super) fn encode(store: &KvStore, out: &mut dyn Write) -> io::Result<()> {
    let chains = store.mvcc.chains();
    let head = serde_json::to_vec(&HeadOut {
        applied: store.applied,
        revision: store.mvcc.revision(),
        compact_revision: store.mvcc.compact_revision(),
        keys: chains.len() as u64,
        leases: &store.leases,
        sessions: &store.sessions,
        membership: &store.membership,
    })
    .map_err(io::Error::other)?;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    buf.extend_from_slice(MAGIC);
    varint::put(&mut buf, head.len() as u64);
    buf.extend_from_slice(&head);
    for (key, chain) in chains {
        varint::put(&mut buf, key.len() as u64);
        buf.extend_from_slice(key.as_bytes());
        varint::put(&mut buf, chain.len() as u64);
        for v in chain {
            varint::put(&mut buf, v.mod_revision);
            varint::put(&mut buf, v.create_revision);
            varint::put(&mut buf, v.version);
            varint::put(&mut buf, v.lease);
            match &v.value {
                None => varint::put(&mut buf, 0),
                Some(value) => {
                    varint::put(&mut buf, value.len() as u64 + 1);
                    buf.extend_from_slice(value.as_bytes());
                }
            }
        }
        if buf.len() >= CHUNK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    buf.extend_from_slice(END);
    out.write_all(&buf)
}

/// Reads a store from a snapshot's data: the binary image, or JSON from earlier versions.
pub(super) fn decode(data: &[u8]) -> Result<KvStore, StoreImageError> {
    if !data.starts_with(MAGIC) {
        return Ok(serde_json::from_slice(data)?);
    }
    let mut r = Reader {
        data,
        at: MAGIC.len(),
    };
    let head_len = r.len("the head's length")?;
    let head: HeadIn = serde_json::from_slice(r.bytes(head_len, "the head")?)?;
    if head.compact_revision > head.revision {
        return Err(r.invalid(format!(
            "compacted at revision {} after its revision {}",
            head.compact_revision, head.revision
        )));
    }
    // Collected first, then built into the map with its leaves full (`ordmap_from_sorted`).
    let mut keys: Vec<(String, Chain)> = Vec::new();
    let mut last_key: Option<&str> = None;
    for _ in 0..head.keys {
        let len = r.len("a key's length")?;
        let key = r.text(len, "a key")?;
        if last_key.is_some_and(|last| last >= key) {
            return Err(r.invalid(format!("key {key:?} is not after the key before it")));
        }
        last_key = Some(key);
        let count = r.len("a key's version count")?;
        if count == 0 {
            return Err(r.invalid(format!("key {key:?} has no versions")));
        }
        let mut chain = Chain::new();
        for _ in 0..count {
            let mod_revision = r.varint("a revision")?;
            let create_revision = r.varint("a revision")?;
            let version = r.varint("a version")?;
            let lease = r.varint("a lease")?;
            let value = match r.varint("a value's length")? {
                0 => None,
                n => {
                    let len = usize::try_from(n - 1).unwrap_or(usize::MAX);
                    Some(Arc::from(r.text(len, "a value")?))
                }
            };
            let newer = chain.last().is_none_or(|v| v.mod_revision < mod_revision);
            if !newer || mod_revision > head.revision {
                return Err(r.invalid(format!(
                    "key {key:?} has a version at revision {mod_revision} out of order"
                )));
            }
            chain.push(Version {
                mod_revision,
                create_revision,
                version,
                value,
                lease,
            });
        }
        keys.push((key.to_string(), chain));
    }
    if r.bytes(END.len(), "the end mark")? != END {
        return Err(r.invalid("the end mark is missing".to_string()));
    }
    if r.at != data.len() {
        return Err(r.invalid(format!("{} bytes follow the end", data.len() - r.at)));
    }
    Ok(KvStore {
        mvcc: Mvcc::from_chains(
            head.revision,
            head.compact_revision,
            ordmap_from_sorted(keys),
        ),
        leases: head.leases,
        sessions: head.sessions,
        applied: head.applied,
        membership: head.membership,
        events: Vec::new(),
        record_events: false,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self, what: &'static str) -> Result<u64, StoreImageError> {
        let start = self.at;
        varint::read(self.data, &mut self.at).map_err(|e| match e {
            VarintError::Truncated => StoreImageError::Truncated { at: start, what },
            VarintError::TooLong => self.invalid(format!("{what} does not fit in 64 bits")),
        })
    }

    /// A length, which cannot be more than what is left.
    fn len(&mut self, what: &'static str) -> Result<usize, StoreImageError> {
        let n = self.varint(what)?;
        let left = self.data.len() - self.at;
        match usize::try_from(n) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(StoreImageError::Truncated { at: self.at, what }),
        }
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], StoreImageError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or(StoreImageError::Truncated { at: self.at, what })?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn text(&mut self, n: usize, what: &'static str) -> Result<&'a str, StoreImageError> {
        let at = self.at;
        let bytes = self.bytes(n, what)?;
        std::str::from_utf8(bytes).map_err(|_| StoreImageError::Invalid {
            at,
            what: format!("{what} is not UTF-8"),
        })
    }

    fn invalid(&self, what: String) -> StoreImageError {
        StoreImageError::Invalid { at: self.at, what }
    }
}

#[cfg(test)]
#[path = "store_image_tests.rs"]
mod tests;
