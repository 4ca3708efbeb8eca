//! Outbound side: one task per peer that owns the connection to it, reconnects with backoff and
//! writes queued frames.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use log::{debug, warn};
use rustls::pki_types::ServerName;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::ConnectError;
use crate::event::PeerEvent;
use crate::framing::{self, HandshakeFrame, LENGTH_PREFIX_BYTES};
use crate::outbound::Queued;
use crate::security::{handshake, tls, Security};
use crate::stats::PeerCounters;
use crate::stream::Stream;

/// Upper bounds on frames, and on their bytes, written before one flush, so one busy peer
/// cannot starve the cancellation and EOF checks for long, nor hold many encoded megabytes.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 4 << 20;

type Sink = FramedWrite<WriteHalf<Stream>, LengthDelimitedCodec>;
type Source = FramedRead<ReadHalf<Stream>, LengthDelimitedCodec>;

/// Everything the outbound task for one peer needs.
pub(crate) struct OutboundPeer<M> {
    pub(crate) node_id: u64,
    pub(crate) peer_id: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) max_frame_bytes: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) security: Security,
    pub(crate) queue: mpsc::Receiver<Queued>,
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
        // The last authentication failure logged, so a peer that keeps refusing us is one
        // warning (and another when the reason changes), not one a second.
        let mut last_refusal: Option<String> = None;
        loop {
            let security = self.security.clone();
            let attempt = connect(
                self.addr,
                self.connect_timeout,
                self.node_id,
                self.peer_id,
                self.max_frame_bytes,
                security,
            );
            let (read, sink) = match self.while_disconnected(attempt).await {
                None => return,
                Some(Ok(conn)) => {
                    last_refusal = None;
                    conn
                }
                Some(Err(e)) => {
                    let refusal = match &e {
                        ConnectError::Auth(_) | ConnectError::Tls(_) => Some(e.to_string()),
                        ConnectError::Timeout(_) | ConnectError::Io(_) => None,
                    };
                    match refusal {
                        Some(reason) if last_refusal.as_ref() != Some(&reason) => {
                            warn!(
                                "node {}: peer {} at {}: {reason}",
                                self.node_id, self.peer_id, self.addr
                            );
                            last_refusal = Some(reason);
                        }
                        // Failed retries are routine while a peer is down: debug, not info.
                        _ => debug!(
                            "node {}: connecting to peer {} at {} failed: {e}",
                            self.node_id, self.peer_id, self.addr
                        ),
                    }
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
    async fn session(&mut self, mut read: Source, mut sink: Sink) -> SessionEnd {
        let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_BATCH);
        // The peer sends nothing on this connection after the handshake but, at most, why it
        // refused it; reading detects its close promptly.
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return SessionEnd::Stop,
                r = read.next() => match r {
                    None => return SessionEnd::Lost("connection closed by peer".to_string()),
                    Some(Ok(frame)) => {
                        if let Some(HandshakeFrame::HandshakeRefused { reason }) = HandshakeFrame::decode(&frame) {
                            warn!(
                                "node {}: peer {} at {} refused our connection: {reason}",
                                self.node_id, self.peer_id, self.addr
                            );
                            return SessionEnd::Lost(format!("refused: {reason}"));
                        }
                        warn!(
                            "node {}: peer {} at {} sent an unexpected {}-byte frame on our outbound connection; ignoring",
                            self.node_id, self.peer_id, self.addr, frame.len()
                        );
                    }
                    Some(Err(e)) => return SessionEnd::Lost(format!("read error: {e}")),
                },
                msg = self.queue.recv() => {
                    let Some(msg) = msg else { return SessionEnd::Stop };
                    let mut bytes = 0;
                    self.encode_into(msg, &mut batch, &mut bytes);
                    // Take everything already queued so it goes out with one flush (fewer syscalls).
                    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                        match self.queue.try_recv() {
                            Ok(msg) => self.encode_into(msg, &mut batch, &mut bytes),
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    let frames = batch.len() as u64;
                    let bytes = bytes as u64;
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

impl<M> OutboundPeer<M> {
    /// Encodes a queued message onto `batch`, or drops it with a warning: a frame the receiver
    /// would refuse (over `max_frame_bytes`) must not tear down the connection for the others.
    fn encode_into(&self, msg: Queued, batch: &mut Vec<Bytes>, bytes: &mut usize) {
        match msg.encode() {
            Ok(frame) if frame.len() <= self.max_frame_bytes => {
                *bytes += frame.len() + LENGTH_PREFIX_BYTES;
                batch.push(Bytes::from(frame));
            }
            Ok(frame) => {
                self.counters.add_dropped(1);
                warn!(
                    "node {}: dropped a {}-byte frame to peer {}: over the {}-byte frame limit",
                    self.node_id,
                    frame.len(),
                    self.peer_id,
                    self.max_frame_bytes
                );
            }
            Err(e) => {
                self.counters.add_dropped(1);
                warn!(
                    "node {}: dropped a message to peer {} that cannot be encoded: {e}",
                    self.node_id, self.peer_id
                );
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

/// Opens the TCP connection, does TLS if the node has it, and the peer handshake, so that the
/// peer treats it as node `node_id`'s connection.
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    node_id: u64,
    peer_id: u64,
    max_frame_bytes: usize,
    security: Security,
) -> Result<(Source, Sink), ConnectError> {
    let open = async {
        let tcp = TcpStream::connect(addr).await?;
        // Raft messages are small and latency-bound; Nagle would delay heartbeats.
        tcp.set_nodelay(true)?;
        let stream = match &security.tls {
            None => Stream::Plain(tcp),
            Some(t) => {
                // The peer must prove it is node `peer_id`: its certificate names it.
                let name = ServerName::try_from(tls::node_name(peer_id))
                    .map_err(|e| ConnectError::Auth(format!("bad server name: {e}")))?;
                let s = tokio_rustls::TlsConnector::from(t.peer_client.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(ConnectError::Tls)?;
                Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s)))
            }
        };
        let mut conn = Framed::new(stream, framing::codec(max_frame_bytes));
        handshake::connect(&security, node_id, peer_id, &mut conn)
            .await
            .map_err(ConnectError::Auth)?;
        // The acceptor sends nothing between its challenge and our first message, so no read
        // bytes are lost with the Framed's buffer.
        let (read, write) = tokio::io::split(conn.into_inner());
        Ok::<_, ConnectError>((
            FramedRead::new(read, framing::codec(max_frame_bytes)),
            FramedWrite::new(write, framing::codec(max_frame_bytes)),
        ))
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}
