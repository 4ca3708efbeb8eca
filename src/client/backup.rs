//! Taking a backup: `Snapshot` streamed from the leader into a snapshot file.

use super::{Client, ClientError};
use crate::rpc::types::{ClientRequest, ClientResponse, ErrorCode, SnapshotMeta};
use crate::storage::{SnapshotFileWriter, StorageError};
use std::net::SocketAddr;
use std::path::Path;

/// What a saved backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The last log index it reflects, and that entry's term.
    pub index: u64,
    pub term: u64,
    /// The store revision at `index`.
    pub revision: u64,
    /// Live keys.
    pub keys: u64,
    /// Bytes of data (the file is 44 bytes more: its header).
    pub size: u64,
    pub crc32: u32,
    /// The node that streamed it (the leader then).
    pub from: SocketAddr,
}

/// Whole backups tried before giving up, when a stream breaks off (the leader changed or
/// stopped): each starts over, since a new leader's copy is of another index.
const ATTEMPTS: usize = 3;

/// How a streamed attempt ended.
enum Streamed {
    Done(BackupInfo),
    /// Broke off; worth starting over.
    Broken(String),
}

impl Client {
    /// Streams a consistent copy of the whole store from the leader into the snapshot file
    /// `path` (docs/OPERATIONS.md, "Backups"): every write acknowledged before this call is in
    /// it. The file appears under `path` only once complete, checked and durable.
    pub async fn save_snapshot(&mut self, path: &Path) -> Result<BackupInfo, ClientError> {
        let mut broken = Vec::new();
        for _ in 0..ATTEMPTS {
            match self.stream_snapshot(path).await? {
                Streamed::Done(info) => return Ok(info),
                Streamed::Broken(why) => {
                    // Start over at whichever node leads now.
                    self.conn = None;
                    broken.push(why);
                }
            }
        }
        Err(ClientError::Unavailable(
            self.opts.deadline,
            format!(
                "the backup broke off {ATTEMPTS} times: {}",
                broken.join("; ")
            ),
        ))
    }

    async fn stream_snapshot(&mut self, path: &Path) -> Result<Streamed, ClientError> {
        let file_error = |e: StorageError| ClientError::BackupFile(e.to_string());
        let first = self.call_raw(|id| ClientRequest::Snapshot { id }).await?;
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Streamed::Broken("the connection closed".into()));
        };
        let from = conn.addr();
        let ClientResponse::SnapshotHeader {
            id,
            index,
            term,
            revision,
            keys,
        } = first
        else {
            return Err(ClientError::Protocol {
                addr: from,
                what: format!("an answer of another kind to Snapshot: {first:?}"),
            });
        };
        let mut file = SnapshotFileWriter::create(path).map_err(file_error)?;
        let silence = self.opts.attempt_timeout;
        loop {
            let next = match tokio::time::timeout(silence, conn.recv()).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    file.abandon();
                    return Ok(Streamed::Broken(format!("{from}: {e}")));
                }
                Err(_) => {
                    file.abandon();
                    return Ok(Streamed::Broken(format!(
                        "{from}: nothing received for {silence:?}"
                    )));
                }
            };
            match next {
                ClientResponse::SnapshotChunk {
                    id: cid,
                    offset,
                    data,
                } if cid == id => {
                    if offset != file.len() {
                        let what =
                            format!("a backup chunk at offset {offset}, expected {}", file.len());
                        file.abandon();
                        return Err(ClientError::Protocol { addr: from, what });
                    }
                    if let Err(e) = file.write(&data) {
                        file.abandon();
                        return Err(file_error(e));
                    }
                }
                ClientResponse::SnapshotDone {
                    id: cid,
                    size,
                    crc32,
                } if cid == id => {
                    if size != file.len() || crc32 != file.crc32() {
                        let what = format!(
                            "the backup's data is {size} bytes with CRC {crc32:08x} at the node, \
                             but {} bytes with CRC {:08x} arrived",
                            file.len(),
                            file.crc32()
                        );
                        file.abandon();
                        return Err(ClientError::Protocol { addr: from, what });
                    }
                    file.finish(SnapshotMeta { index, term })
                        .map_err(file_error)?;
                    return Ok(Streamed::Done(BackupInfo {
                        index,
                        term,
                        revision,
                        keys,
                        size,
                        crc32,
                        from,
                    }));
                }
                ClientResponse::Error(e) if e.id == Some(id) || e.id.is_none() => {
                    file.abandon();
                    return match e.code {
                        ErrorCode::Timeout | ErrorCode::ShuttingDown | ErrorCode::NotLeader => {
                            Ok(Streamed::Broken(format!("{from}: {}", e.message)))
                        }
                        _ => Err(ClientError::BadRequest(e.message)),
                    };
                }
                // Answers to earlier, abandoned requests on this connection.
                _ => {}
            }
        }
    }
}
