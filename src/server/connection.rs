//! One client connection: requests are read and handed to the node loop as they arrive, and
//! answers are written back as they come, in any order (pipelining; each answer carries its
//! request's `id`).
//!
//! Memory per connection is bounded: at most `MAX_IN_FLIGHT` requests may await an answer. A
//! client that stops reading its answers stops having its requests read (TCP backpressure), so
//! a slow reader cannot make the node buffer without bound.
//!
//! Bad input is answered, never fatal to the node: a frame that is not a JSON object gets
//! `BadRequest` with `"id": null` and the connection is closed (the stream can no longer be
//! trusted); a well-formed object with an unknown type or a missing or mistyped field gets
//! `BadRequest` with its id and the connection stays open; an oversized frame gets `TooLarge`
//! and the connection is closed.

use crate::rpc::types::{ClientRequest, ClientResponse, ErrorCode};
use bytes::{Bytes, BytesMut};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use raftd_transport::ClientConn;
use raftd_transport::Stream;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// Inputs a connection task can give the node loop.
pub enum NodeRequest {
    /// A client request; its answer goes to `reply`.
    Client { req: ClientRequest, reply: Reply },
    /// The connection closed: its watches end.
    Closed { connection: u64 },
}

/// Requests one connection may have awaiting an answer.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Bytes of answers a connection may have queued but unwritten before its requests stop being
/// read.
const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Bytes a connection may have queued but unwritten when more watch events are for it: past
/// this, the watch being sent to is cancelled (`WatchCancelled`) rather than let the node's
/// memory grow.
pub const MAX_WATCH_BACKLOG_BYTES: usize = 4 << 20;

/// Bytes of watch events queued on all connections together. Past this, a watch whose
/// connection has more than `FAIR_WATCH_BACKLOG_BYTES` unwritten is cancelled too, so a
/// thousand slow readers cannot hold a thousand times the per-connection bound.
pub const MAX_TOTAL_WATCH_BACKLOG_BYTES: usize = 64 << 20;
pub const FAIR_WATCH_BACKLOG_BYTES: usize = 64 << 10;

static WATCH_BACKLOG: AtomicUsize = AtomicUsize::new(0);

/// Bytes of watch events queued on every connection and not written yet.
pub fn watch_backlog_total() -> usize {
    WATCH_BACKLOG.load(Ordering::Acquire)
}

/// Where a request's answer goes: the connection's writer, with a count of the bytes queued
/// for it. `send` never blocks. Answers are bounded by the requests a connection may have in
/// flight and by its byte budget; watch events by `MAX_WATCH_BACKLOG_BYTES`, which the node
/// loop checks before it queues more.
#[derive(Clone)]
pub struct Reply {
    tx: mpsc::UnboundedSender<(ClientResponse, Kind)>,
    budget: Arc<ByteBudget>,
    connection: u64,
}

/// What a queued message is to the connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// The (last) answer to a request: gives back the request's slot when written.
    Answer,
    /// A message of a running watch: counted in the node-wide watch backlog.
    Watch,
    /// A message of a streamed answer (a backup's chunks): neither; its sender waits for the
    /// connection's backlog to drain before it queues more.
    Stream,
}

impl Reply {
    /// Queues the answer to a request (it gives back the request's slot when written).
    pub fn send(&self, resp: ClientResponse) {
        self.queue(resp, Kind::Answer);
    }

    /// Queues a message of a running watch (not an answer to a request).
    pub fn send_stream(&self, resp: ClientResponse) {
        self.queue(resp, Kind::Watch);
    }

    /// Queues a part of a streamed answer (not its end). The caller bounds what it queues
    /// with `drained_below`.
    pub fn send_part(&self, resp: ClientResponse) {
        self.queue(resp, Kind::Stream);
    }

    fn queue(&self, resp: ClientResponse, kind: Kind) {
        let w = weight(&resp);
        self.budget.queued.fetch_add(w, Ordering::AcqRel);
        if kind == Kind::Watch {
            WATCH_BACKLOG.fetch_add(w, Ordering::AcqRel);
        }
        if self.tx.send((resp, kind)).is_err() {
            // The connection is gone; nothing will be written.
            self.budget.release(w);
            if kind == Kind::Watch {
                WATCH_BACKLOG.fetch_sub(w, Ordering::AcqRel);
            }
        }
    }

    /// Bytes queued for this connection and not written yet.
    pub fn backlog(&self) -> usize {
        self.budget.queued.load(Ordering::Acquire)
    }

    /// Waits until no more than `limit` bytes are queued for this connection. Returns false if
    /// the connection is gone (nothing more will be written).
    pub async fn drained_below(&self, limit: usize) -> bool {
        tokio::select! {
            _ = self.budget.wait_below(limit) => !self.tx.is_closed(),
            _ = self.tx.closed() => false,
        }
    }
}

impl crate::driver::ReplyTo for Reply {
    fn connection(&self) -> u64 {
        self.connection
    }
}

/// Numbers client connections, so a watch is named by (connection, id).
static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Default)]
struct ByteBudget {
    queued: AtomicUsize,
    drained: Notify,
    /// Frames written: a connection whose watches are streaming is not idle.
    written: std::sync::atomic::AtomicU64,
}

impl ByteBudget {
    fn release(&self, w: usize) {
        self.queued.fetch_sub(w, Ordering::AcqRel);
        self.drained.notify_one();
    }

    async fn wait_below(&self, limit: usize) {
        loop {
            let notified = self.drained.notified();
            if self.queued.load(Ordering::Acquire) <= limit {
                return;
            }
            notified.await;
        }
    }
}

/// Roughly the bytes an answer takes in memory and on the wire.
fn weight(resp: &ClientResponse) -> usize {
    64 + match resp {
        ClientResponse::Ok(ok) => {
            let kv_bytes = |kvs: &[crate::kv::mvcc::KeyValue]| -> usize {
                kvs.iter()
                    .map(|kv| 96 + kv.key.len() + kv.value.as_ref().map_or(0, String::len))
                    .sum()
            };
            let responses = ok.responses.as_ref().map_or(0, |rs| {
                rs.iter()
                    .map(|r| match r {
                        crate::kv::txn::TxnResponse::Range(r) => 64 + kv_bytes(&r.kvs),
                        crate::kv::txn::TxnResponse::Get { value, .. } => {
                            96 + value.as_ref().map_or(0, String::len)
                        }
                        _ => 32,
                    })
                    .sum()
            });
            ok.value
                .as_ref()
                .and_then(|v| v.as_ref())
                .map_or(0, String::len)
                + ok.kvs.as_deref().map_or(0, kv_bytes)
                + responses
        }
        ClientResponse::Error(e) => e.message.len(),
        ClientResponse::Status(s) => 256 + 48 * s.members.len(),
        ClientResponse::Watching { .. } => 0,
        ClientResponse::Events { events, .. } => events
            .iter()
            .map(|e| 96 + e.key.len() + e.value.as_ref().map_or(0, String::len))
            .sum(),
        // Base64 on the wire.
        ClientResponse::SnapshotChunk { data, .. } => data.len() / 3 * 4 + 4,
        ClientResponse::SnapshotHeader { .. } | ClientResponse::SnapshotDone { .. } => 0,
    }
}

/// The writer's queue. Whatever is still in it when the writer stops (the connection broke,
/// or the node is stopping) is taken off the node-wide watch backlog.
struct Outbox(mpsc::UnboundedReceiver<(ClientResponse, Kind)>);

impl Drop for Outbox {
    fn drop(&mut self) {
        self.0.close();
        while let Ok((resp, kind)) = self.0.try_recv() {
            if kind == Kind::Watch {
                WATCH_BACKLOG.fetch_sub(weight(&resp), Ordering::AcqRel);
            }
        }
    }
}

/// A connection with no request for this long, and no answer owed, is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a closing connection waits for answers still owed to it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

type Reader = SplitStream<Framed<Stream, LengthDelimitedCodec>>;

pub async fn serve(conn: ClientConn, node: mpsc::Sender<NodeRequest>, shutdown: CancellationToken) {
    let ClientConn {
        peer_addr,
        first_frame,
        framed,
    } = conn;
    let (mut sink, stream) = framed.split();
    // Unbounded in messages, bounded in bytes: see `Reply`.
    let (tx, rx) = mpsc::unbounded_channel::<(ClientResponse, Kind)>();
    let budget = Arc::new(ByteBudget::default());
    let connection = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let tx = Reply {
        tx,
        budget: budget.clone(),
        connection,
    };
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));

    let writer_permits = permits.clone();
    let mut rx = Outbox(rx);
    let writer = async move {
        while let Some((resp, kind)) = rx.0.recv().await {
            let written = sink.send(encode(&resp)).await;
            let w = weight(&resp);
            budget.release(w);
            if kind == Kind::Watch {
                WATCH_BACKLOG.fetch_sub(w, Ordering::AcqRel);
            }
            budget.written.fetch_add(1, Ordering::Relaxed);
            if written.is_err() {
                return;
            }
            if kind == Kind::Answer {
                writer_permits.add_permits(1);
            }
        }
    };
    let closed_tx = node.clone();
    let reader = read_requests(peer_addr, first_frame, stream, tx, node, permits);
    tokio::pin!(writer);
    tokio::pin!(reader);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = &mut writer => {}
        _ = &mut reader => {
            // The client is done sending (or sent garbage): deliver what is still owed, then
            // close.
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::timeout(DRAIN_TIMEOUT, &mut writer) => {}
            }
        }
    }
    // The node ends this connection's watches (if it is still running). Waited for, not
    // tried once: a close lost to a full queue would leave its watches behind for good.
    let closed = closed_tx.send(NodeRequest::Closed { connection });
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, closed).await;
}

async fn read_requests(
    peer_addr: SocketAddr,
    first_frame: BytesMut,
    mut stream: Reader,
    tx: Reply,
    node: mpsc::Sender<NodeRequest>,
    permits: Arc<Semaphore>,
) {
    let mut pending = Some(first_frame);
    loop {
        // Answers not yet written (the client reads slowly) hold memory: stop reading requests
        // until they drain below the budget.
        tx.budget.wait_below(MAX_QUEUED_BYTES).await;
        // One permit per request; the writer returns it when the answer is written.
        let Ok(permit) = permits.acquire().await else {
            return;
        };
        permit.forget();
        let frame = match pending.take() {
            Some(frame) => frame,
            None => match next_frame(&mut stream, &permits, &tx.budget).await {
                None => return,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    // The codec refuses frames over the limit before buffering them.
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        let resp = ClientResponse::error(
                            None,
                            ErrorCode::TooLarge,
                            format!("frame rejected: {e}"),
                        );
                        tx.send(resp);
                    }
                    ::log::debug!("client {peer_addr}: closing after a framing error: {e}");
                    return;
                }
            },
        };
        match parse(&frame) {
            Ok(req) => {
                let id = req.id();
                if node
                    .send(NodeRequest::Client {
                        req,
                        reply: tx.clone(),
                    })
                    .await
                    .is_err()
                {
                    let resp = ClientResponse::error(
                        Some(id),
                        ErrorCode::ShuttingDown,
                        "node is stopping; use another node",
                    );
                    tx.send(resp);
                    return;
                }
            }
            Err(refused) => {
                let (resp, close) = *refused;
                tx.send(resp);
                if close {
                    ::log::debug!(
                        "client {peer_addr}: closing after a frame that is not a JSON object"
                    );
                    return;
                }
            }
        }
    }
}

/// The next frame, or None at end of stream or after `IDLE_TIMEOUT` with nothing sent and
/// nothing owed: an idle connection gives its slot back (connections are capped).
async fn next_frame(
    stream: &mut Reader,
    permits: &Semaphore,
    budget: &ByteBudget,
) -> Option<std::io::Result<BytesMut>> {
    loop {
        let written = budget.written.load(Ordering::Relaxed);
        match tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await {
            Ok(next) => return next,
            // One permit is held for the frame being awaited; all others free, and nothing
            // written (a watch sends progress every second), means idle.
            Err(_)
                if permits.available_permits() + 1 >= MAX_IN_FLIGHT
                    && budget.written.load(Ordering::Relaxed) == written =>
            {
                return None
            }
            Err(_) => continue,
        }
    }
}

/// Parses a frame. On failure: the answer, and whether the connection must be closed.
fn parse(frame: &[u8]) -> Result<ClientRequest, Box<(ClientResponse, bool)>> {
    let value: serde_json::Value = match serde_json::from_slice(frame) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            let resp = ClientResponse::error(
                None,
                ErrorCode::BadRequest,
                "a request must be a JSON object",
            );
            return Err(Box::new((resp, true)));
        }
        Err(e) => {
            let resp = ClientResponse::error(
                None,
                ErrorCode::BadRequest,
                format!("not valid UTF-8 JSON: {e}"),
            );
            return Err(Box::new((resp, true)));
        }
    };
    let id = value.get("id").and_then(|v| v.as_u64());
    serde_json::from_value(value).map_err(|e| {
        let resp = ClientResponse::error(id, ErrorCode::BadRequest, format!("bad request: {e}"));
        Box::new((resp, false))
    })
}

/// What a connection whose first frame is over the limit gets before it is closed.
pub fn too_large_reply() -> Bytes {
    encode(&ClientResponse::error(
        None,
        ErrorCode::TooLarge,
        "frame over the size limit; the connection is closed",
    ))
}

/// Sent in plaintext to a connection that speaks plaintext to a node with TLS on.
pub fn tls_required_reply() -> Bytes {
    encode(&ClientResponse::error(
        None,
        ErrorCode::BadRequest,
        "this node requires TLS (connect with TLS, e.g. raftctl --cacert FILE); the connection is closed",
    ))
}

fn encode(resp: &ClientResponse) -> Bytes {
    // Serializing our own response types cannot fail (string keys only, no floats); fall back
    // to a fixed error rather than panic if it ever did.
    match serde_json::to_vec(resp) {
        Ok(v) => Bytes::from(v),
        Err(_) => Bytes::from_static(br#"{"type":"Error","id":null,"code":"BadRequest","message":"internal encoding error"}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_distinguishes_garbage_from_bad_fields() {
        assert!(matches!(parse(b"[1,2]").map_err(|e| *e), Err((_, true))));
        assert!(matches!(parse(b"\xff\xfe").map_err(|e| *e), Err((_, true))));
        assert!(
            matches!(parse(br#"{"type":"Nope","id":3}"#).map_err(|e| *e), Err((ClientResponse::Error(e), false)) if e.id == Some(3))
        );
        assert!(
            matches!(parse(br#"{"type":"Put","id":4,"key":"k"}"#).map_err(|e| *e), Err((ClientResponse::Error(e), false)) if e.id == Some(4))
        );
        assert!(matches!(
            parse(br#"{"type":"Put","id":5,"key":"k","value":7}"#).map_err(|e| *e),
            Err((_, false))
        ));
        assert!(
            matches!(
                parse(br#"{"type":"Cas","id":6,"key":"k","value":"v"}"#).map_err(|e| *e),
                Err((_, false))
            ),
            "Cas needs expected"
        );
        assert!(parse(br#"{"type":"Cas","id":6,"key":"k","expected":null,"value":"v"}"#).is_ok());
        assert!(parse(br#"{"type":"Get","id":7,"key":"k","consistency":"stale"}"#).is_ok());
        assert!(parse(br#"{"type":"Get","id":7,"key":"k","consistency":"eventual"}"#).is_err());
    }
}
