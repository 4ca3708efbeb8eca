//! Outbound side: one task per peer that owns the connection to it, reconnects with backoff and
//! writes queued frames.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use log::{debug, warn};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::ConnectError;
use crate::event::PeerEvent;
use crate::framing::{self, LENGTH_PREFIX_BYTES};
use crate::stats::PeerCounters;

/// Upper bound on frames written before one flush, so one busy peer cannot starve the
/// cancellation and EOF checks for long.
const MAX_BATCH: usize = 256;

type Sink = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

/// Everything the outbound task for one peer needs.
pub(crate) struct OutboundPeer<M> {
    pub(crate) node_id: u64,
    pub(crate) peer_id: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) max_frame_bytes: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) queue: mpsc::Receiver<Bytes>,
    pub(crate) counters: Arc<PeerCounters>,
    pub(crate) events: mpsc::Sender<PeerEvent<M>>,
    pub(crate) cancel: CancellationToken,
}

/// How a connected session ended.
enum SessionEnd {
    /// Shutdown requested (or every `Transport` handle dropped): the task must exit.
    Stop,
    /// The connection failed; reconnect.
    Lost(String),
}

impl<M: Send + 'static> OutboundPeer<M> {
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(self.backoff_min, self.backoff_max);
        loop {
            let attempt = connect(
                self.addr,
                self.connect_timeout,
                self.node_id,
                self.max_frame_bytes,
            );
            let (read, sink) = match self.while_disconnected(attempt).await {
                None => return,
                Some(Ok(conn)) => conn,
                Some(Err(e)) => {
                    // Failed retries are routine while a peer is down: debug, not info.
                    debug!(
                        "node {}: connecting to peer {} at {} failed: {e}",
                        self.node_id, self.peer_id, self.addr
                    );
                    if self
                        .while_disconnected(tokio::time::sleep(backoff.next_delay()))
                        .await
                        .is_none()
                    {
                        return;
                    }
                    continue;
                }
            };

            debug!(
                "node {}: connected to peer {} at {}",
                self.node_id, self.peer_id, self.addr
            );
            if !self.emit(PeerEvent::Connected { peer: self.peer_id }).await {
                return;
            }
            let connected_at = Instant::now();
            let reason = match self.session(read, sink).await {
                SessionEnd::Stop => return,
                SessionEnd::Lost(reason) => reason,
            };
            debug!(
                "node {}: disconnected from peer {} at {}: {reason}",
                self.node_id, self.peer_id, self.addr
            );
            let event = PeerEvent::Disconnected {
                peer: self.peer_id,
                reason,
            };
            if !self.emit(event).await {
                return;
            }
            // A peer that accepts and immediately drops us (e.g. it does not know our id) must not make
            // us reconnect at full speed, so only a connection that lived a while resets the backoff.
            if connected_at.elapsed() >= self.backoff_max {
                backoff.reset();
            }
            if self
                .while_disconnected(tokio::time::sleep(backoff.next_delay()))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// Drives `fut` while discarding frames queued in the meantime: with no connection they would only
    /// go stale (old heartbeats, superseded appends), and Raft retransmits anyway.
    /// Returns `None` when the task must stop.
    async fn while_disconnected<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return None,
                out = &mut fut => return Some(out),
                frame = self.queue.recv() => match frame {
                    Some(_) => self.counters.add_dropped(1),
                    None => return None,
                },
            }
        }
    }

    /// Delivers a state-change event; waits if the channel is full. Returns `false` when the task must stop.
    async fn emit(&self, event: PeerEvent<M>) -> bool {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => false,
            // A dropped receiver only means nobody listens for events; keep carrying frames.
            _ = self.events.send(event) => true,
        }
    }

    /// Writes queued frames until the connection fails or the task is told to stop.
    async fn session(&mut self, mut read: OwnedReadHalf, mut sink: Sink) -> SessionEnd {
        let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_BATCH);
        // The peer never sends on this connection; reading only detects its close promptly.
        let mut scratch = [0u8; 256];
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return SessionEnd::Stop,
                r = read.read(&mut scratch) => match r {
                    Ok(0) => return SessionEnd::Lost("connection closed by peer".to_string()),
                    Ok(n) => {
                        warn!(
                            "node {}: peer {} at {} sent {n} unexpected bytes on our outbound connection; ignoring",
                            self.node_id, self.peer_id, self.addr
                        );
                    }
                    Err(e) => return SessionEnd::Lost(format!("read error: {e}")),
                },
                frame = self.queue.recv() => {
                    let Some(frame) = frame else { return SessionEnd::Stop };
                    batch.push(frame);
                    // Take everything already queued so it goes out with one flush (fewer syscalls).
                    while batch.len() < MAX_BATCH {
                        match self.queue.try_recv() {
                            Ok(frame) => batch.push(frame),
                            Err(_) => break,
                        }
                    }
                    let frames = batch.len() as u64;
                    let bytes: u64 = batch
                        .iter()
                        .map(|f| (f.len() + LENGTH_PREFIX_BYTES) as u64)
                        .sum();
                    let written = tokio::select! {
                        biased;
                        // A peer that stopped reading blocks the flush; shutdown must still win.
                        _ = self.cancel.cancelled() => return SessionEnd::Stop,
                        r = write_batch(&mut sink, &mut batch) => r,
                    };
                    batch.clear();
                    match written {
                        Ok(()) => self.counters.add_sent(frames, bytes),
                        Err(e) => {
                            self.counters.add_dropped(frames);
                            return SessionEnd::Lost(format!("write error: {e}"));
                        }
                    }
                }
            }
        }
    }
}

/// Feeds every frame, then flushes once.
async fn write_batch(sink: &mut Sink, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
    for frame in batch.drain(..) {
        sink.feed(frame).await?;
    }
    SinkExt::<Bytes>::flush(sink).await
}

/// Opens the TCP connection and sends Hello, so that the peer treats it as a peer connection.
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    node_id: u64,
    max_frame_bytes: usize,
) -> Result<(OwnedReadHalf, Sink), ConnectError> {
    let open = async {
        let stream = TcpStream::connect(addr).await?;
        // Raft messages are small and latency-bound; Nagle would delay heartbeats.
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut sink = FramedWrite::new(write, framing::codec(max_frame_bytes));
        sink.send(framing::encode_hello(node_id)).await?;
        Ok::<_, std::io::Error>((read, sink))
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(r) => r.map_err(ConnectError::from),
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}
