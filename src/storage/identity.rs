//! The node-id file `<data dir>/raftd.id`.
//!
//! A Raft node's log and vote are only meaningful for the node that wrote them: starting node 2
//! on node 1's data would let it vote twice in a term and claim entries it never received. The
//! identity file ties the dir to one node id and is checked on every open.
//!
//! It also holds the dir's *incarnation*: a random number drawn when the dir is created. A node
//! whose disk was lost comes back with a new one, which is how its peers tell it from the
//! member they admitted (see `raftd_core::Membership`). Files written before incarnations
//! existed get one on the next start.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{io_err, StorageError};
use super::snapshot::SNAPSHOT_FILE_NAME;
use super::wal::{sync_dir, WAL_FILE_NAME};
use crate::rpc::types::NodeId;

/// File name of the identity file inside the data dir.
pub const ID_FILE_NAME: &str = "raftd.id";
const TMP_FILE_NAME: &str = "raftd.id.tmp";
const FORMAT: u32 = 1;
/// A real identity file is ~30 bytes; anything much larger is not one.
const MAX_LEN: u64 = 4096;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    node_id: NodeId,
    format: u32,
    /// Absent in files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    incarnation: Option<u64>,
}

/// Checks that `dir` belongs to `node_id`, claiming it first if it is new. Returns the dir's
/// incarnation.
pub(crate) fn check_or_create(dir: &Path, node_id: NodeId) -> Result<u64, StorageError> {
    let path = dir.join(ID_FILE_NAME);
    match File::open(&path) {
        Ok(file) => {
            let mut text = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(file, MAX_LEN + 1), &mut text)
                .map_err(io_err(&path, "read identity file"))?;
            match check(&path, &text, node_id)? {
                Some(incarnation) => Ok(incarnation),
                // Written before incarnations: give the dir one now.
                None => create(dir, node_id),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The log and snapshot are created only after the identity file is durable, so
            // either without one means someone deleted it: we cannot know whose data this is.
            for (name, what) in [(WAL_FILE_NAME, "a log"), (SNAPSHOT_FILE_NAME, "a snapshot")] {
                let file = dir.join(name);
                if file.try_exists().map_err(io_err(&file, "look for"))? {
                    return Err(StorageError::Identity {
                        path,
                        reason: format!(
                            "missing, but the data dir already holds {what} ({name}), so it is \
                             unknown which node wrote it"
                        ),
                    });
                }
            }
            create(dir, node_id)
        }
        Err(e) => Err(io_err(&path, "open identity file")(e)),
    }
}

fn check(path: &Path, text: &[u8], node_id: NodeId) -> Result<Option<u64>, StorageError> {
    let garbled = |reason: String| StorageError::Identity {
        path: path.to_path_buf(),
        reason,
    };
    if text.len() as u64 > MAX_LEN {
        return Err(garbled(format!(
            "larger than {MAX_LEN} bytes, so not an identity file"
        )));
    }
    let id: IdentityFile = serde_json::from_slice(text)
        .map_err(|e| garbled(format!("not a valid identity file ({e})")))?;
    if id.format != FORMAT {
        return Err(garbled(format!(
            "format {} is not understood by this raftd (it knows format {FORMAT})",
            id.format
        )));
    }
    if id.node_id != node_id {
        return Err(StorageError::WrongNode {
            path: path.to_path_buf(),
            found: id.node_id,
            expected: node_id,
        });
    }
    if id.incarnation == Some(0) {
        return Err(garbled(
            "incarnation 0 is not a valid data dir identity".into(),
        ));
    }
    Ok(id.incarnation)
}

/// A fresh, non-zero incarnation.
fn fresh_incarnation() -> u64 {
    loop {
        let n: u64 = rand::random();
        if n != 0 {
            return n;
        }
    }
}

/// Writes the identity file atomically: a crash leaves either no file or the whole file, never
/// a partial one that the next start would reject as garbled.
fn create(dir: &Path, node_id: NodeId) -> Result<u64, StorageError> {
    let tmp = dir.join(TMP_FILE_NAME);
    let path = dir.join(ID_FILE_NAME);
    let incarnation = fresh_incarnation();
    let mut text = serde_json::to_vec(&IdentityFile {
        node_id,
        format: FORMAT,
        incarnation: Some(incarnation),
    })
    .map_err(|e| io_err(&tmp, "encode identity file")(io::Error::other(e)))?;
    text.push(b'\n');
    // A leftover temp file from an earlier crash is simply overwritten.
    let mut file = File::create(&tmp).map_err(io_err(&tmp, "create"))?;
    file.write_all(&text).map_err(io_err(&tmp, "write"))?;
    // Contents durable before the rename makes them visible under the real name.
    file.sync_all().map_err(io_err(&tmp, "fsync"))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err(&path, "rename the temporary file to"))?;
    // The rename itself is durable only once the directory is synced.
    sync_dir(dir)?;
    Ok(incarnation)
}
