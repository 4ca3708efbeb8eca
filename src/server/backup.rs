//! Streaming a backup (`Snapshot`) to the client that asked for it.
//!
//! The driver hands over the store as of the backup's index (an O(1) copy of a persistent
//! map). Encoding it reads the whole state, so it runs on a background thread, which writes the
//! encoding in chunks into a small bounded channel; a task forwards each chunk to the
//! connection once what is queued there has drained. So a backup holds a few chunks in memory
//! at a time, however large the store, a slow reader slows the encoder instead of growing the
//! node's memory, and a client that goes away stops the encoding.

use super::connection::Reply;
use super::metrics::{Metrics, SnapshotLabels};
use crate::driver::BackupTask;
use crate::rpc::types::{ClientResponse, ErrorCode};
use std::io::{self, Write};
use std::time::Instant;
use tokio::sync::mpsc;

/// Data bytes per `SnapshotChunk` (about a third more on the wire, as base64).
pub const CHUNK_BYTES: usize = 256 << 10;

/// Chunks encoded ahead of what the connection has taken.
const CHUNKS_AHEAD: usize = 4;

/// Bytes queued on the connection before the next chunk waits.
const MAX_QUEUED_BYTES: usize = 1 << 20;

/// Starts streaming `task`: a `SnapshotHeader` now, then chunks, then `SnapshotDone` (or an
/// error, if the encoding failed).
pub fn spawn(node: u64, task: BackupTask<Reply>, metrics: &Metrics) {
    let started = Instant::now();
    let BackupTask {
        reply,
        id,
        store,
        term,
    } = task;
    ::log::info!(
        "node {node}: streaming a backup at index {} (term {term}, revision {}, {} keys) to a client",
        store.applied(),
        store.revision(),
        store.len()
    );
    reply.send_part(ClientResponse::SnapshotHeader {
        id,
        index: store.applied(),
        term,
        revision: store.revision(),
        keys: store.len() as u64,
    });
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CHUNKS_AHEAD);
    let (done_tx, encoder) = tokio::sync::oneshot::channel();
    super::background::spawn("backup", move || {
        let mut out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
            crc: crc32fast::Hasher::new(),
            size: 0,
        };
        let result = store
            .write_snapshot(&mut out)
            .and_then(|()| out.flush())
            .map(|()| (out.size, out.crc.finalize()));
        let _ = done_tx.send(result);
    });
    let labels = SnapshotLabels { event: "backup" };
    let counter = metrics.snapshots.get_or_create(&labels).clone();
    let duration = metrics.snapshot_seconds.get_or_create(&labels).clone();
    tokio::spawn(async move {
        let mut offset = 0u64;
        while let Some(data) = rx.recv().await {
            if !reply.drained_below(MAX_QUEUED_BYTES).await {
                // The client went away; dropping the receiver stops the encoder.
                ::log::info!("node {node}: backup abandoned by its client at byte {offset}");
                return;
            }
            let len = data.len() as u64;
            reply.send_part(ClientResponse::SnapshotChunk { id, offset, data });
            offset += len;
        }
        let answer = match encoder.await {
            Ok(Ok((size, crc32))) => {
                counter.inc();
                duration.observe(started.elapsed().as_secs_f64());
                ::log::info!(
                    "node {node}: backup streamed: {size} bytes in {:.3} s",
                    started.elapsed().as_secs_f64()
                );
                ClientResponse::SnapshotDone { id, size, crc32 }
            }
            Ok(Err(e)) => failed(node, id, &e.to_string()),
            Err(_) => failed(node, id, "the encoding thread could not be started"),
        };
        reply.send(answer);
    });
}

fn failed(node: u64, id: u64, why: &str) -> ClientResponse {
    ::log::warn!("node {node}: backup failed: {why}");
    // Nothing was changed; the client may simply ask again.
    ClientResponse::error(
        Some(id),
        ErrorCode::Timeout,
        format!("the backup could not be encoded ({why}); ask again"),
    )
}

/// Cuts what is written into `CHUNK_BYTES` chunks for the channel, counting size and CRC.
struct ChunkWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buf.len();
        let n = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK_BYTES {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.crc.update(&chunk);
        self.size += chunk.len() as u64;
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client stopped reading"))
    }
}
