//! Inbound side: the accept loop, first-frame classification, and reading peer connections.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use log::{debug, warn};
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientConn, ClientHandler};
use crate::event::PeerEvent;
use crate::framing::{self, Hello};
use crate::security::handshake::{self, Conn};
use crate::security::Security;
use crate::stream::Stream;

/// First pause after a failed accept (EMFILE and friends usually clear up once connections close).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The first byte of every TLS connection (a handshake record). A plaintext frame starts with
/// its length's high byte, which is 0 for any frame under 16 MiB.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Initial read buffer of an inbound connection, in bytes.
const INITIAL_READ_BUFFER: usize = 2048;

/// State shared by the accept loop and every inbound connection task.
pub(crate) struct Inbound<M> {
    pub(crate) node_id: u64,
    /// Who may say Hello: the current members (the owner changes them with the configuration).
    pub(crate) peers: Arc<RwLock<HashSet<u64>>>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) oversized_first_frame_reply: Option<bytes::Bytes>,
    pub(crate) plaintext_on_tls_reply: Option<bytes::Bytes>,
    pub(crate) security: Security,
    pub(crate) events: mpsc::Sender<PeerEvent<M>>,
    pub(crate) client_handler: ClientHandler,
    pub(crate) cancel: CancellationToken,
    pub(crate) live: Arc<LivePeers>,
}

/// The current inbound connection per peer id, so a newer one can close an older (probably
/// half-open) one, and the owner can close one whose messages it refused.
#[derive(Default)]
pub(crate) struct LivePeers {
    conns: Mutex<HashMap<u64, (u64, CancellationToken)>>,
    next_conn_id: AtomicU64,
    /// Bytes read from each peer (frames with their length prefixes), over all its
    /// connections.
    received: Mutex<HashMap<u64, Arc<AtomicU64>>>,
}

impl LivePeers {
    /// The received-bytes counter of `peer` (made on first use).
    fn received_counter(&self, peer: u64) -> Arc<AtomicU64> {
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(peer)
            .or_default()
            .clone()
    }

    /// Bytes read from each peer so far.
    pub(crate) fn received(&self) -> HashMap<u64, u64> {
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(peer, n)| (*peer, n.load(Ordering::Relaxed)))
            .collect()
    }

    fn register(&self, peer: u64, parent: &CancellationToken) -> (u64, CancellationToken) {
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let token = parent.child_token();
        let previous = self
            .conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(peer, (conn_id, token.clone()));
        if let Some((_, old)) = previous {
            // The peer only keeps one outbound connection, so an older one is stale (or half-open).
            old.cancel();
        }
        (conn_id, token)
    }

    fn unregister(&self, peer: u64, conn_id: u64) {
        let mut live = self
            .conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if live.get(&peer).is_some_and(|(id, _)| *id == conn_id) {
            live.remove(&peer);
        }
    }

    /// Closes the inbound connection of `peer`, if there is one. Returns whether there was.
    pub(crate) fn close(&self, peer: u64) -> bool {
        let conn = self
            .conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&peer);
        match conn {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

impl<M: DeserializeOwned + Send + 'static> Inbound<M> {
    pub(crate) fn new(
        node_id: u64,
        peers: HashSet<u64>,
        max_frame_bytes: usize,
        handshake_timeout: Duration,
        events: mpsc::Sender<PeerEvent<M>>,
        client_handler: ClientHandler,
        cancel: CancellationToken,
    ) -> Self {
        Inbound {
            node_id,
            peers: Arc::new(RwLock::new(peers)),
            max_frame_bytes,
            handshake_timeout,
            oversized_first_frame_reply: None,
            plaintext_on_tls_reply: None,
            security: Security::default(),
            events,
            client_handler,
            cancel,
            live: Arc::new(LivePeers::default()),
        }
    }

    /// Accepts connections until cancelled, then waits for the connection tasks to finish.
    pub(crate) async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        max_connections: usize,
    ) {
        let permits = Arc::new(Semaphore::new(max_connections));
        let mut conns = JoinSet::new();
        let mut accept_backoff = ACCEPT_BACKOFF_MIN;
        loop {
            // Waiting for a permit before accepting leaves excess connections in the kernel backlog
            // instead of accepting and dropping them.
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                // Reap finished connection tasks so the set only holds live ones.
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // the semaphore is never closed; be defensive anyway
                },
            };
            let accepted = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, addr)) => {
                    accept_backoff = ACCEPT_BACKOFF_MIN;
                    conns.spawn(self.clone().serve(stream, addr, permit));
                }
                Err(e) => {
                    drop(permit);
                    warn!(
                        "node {}: accept failed: {e}; retrying in {accept_backoff:?}",
                        self.node_id
                    );
                    // Without a pause a persistent error (EMFILE) would spin a core.
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep(accept_backoff) => {}
                    }
                    accept_backoff = (accept_backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
        // Release the port before waiting, so a restarted node can rebind it at once.
        drop(listener);
        debug!(
            "node {}: listener closed; waiting for {} connections",
            self.node_id,
            conns.len()
        );
        while conns.join_next().await.is_some() {}
    }

    /// Reads the first frame and routes the connection to the peer or the client path.
    /// `_permit` is held for the connection's whole life, which is what caps concurrent connections.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        if let Err(e) = stream.set_nodelay(true) {
            debug!("node {}: set_nodelay for {addr} failed: {e}", self.node_id);
        }
        let stream = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return,
            s = self.secure(stream, addr) => match s {
                Some(s) => s,
                None => return,
            },
        };
        // A small read buffer to start with (it grows for bigger frames): a node may hold
        // thousands of client connections, most of them sending small requests.
        let mut conn = Framed::with_capacity(
            stream,
            framing::codec(self.max_frame_bytes),
            INITIAL_READ_BUFFER,
        );
        let first = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return,
            r = tokio::time::timeout(self.handshake_timeout, conn.next()) => r,
        };
        let first = match first {
            Err(_) => {
                debug!(
                    "node {}: no frame from {addr} within {:?}; closing",
                    self.node_id, self.handshake_timeout
                );
                return;
            }
            Ok(None) => {
                debug!(
                    "node {}: {addr} closed before sending a frame",
                    self.node_id
                );
                return;
            }
            Ok(Some(Err(e))) => {
                self.log_read_error(addr, "first frame", &e);
                if e.kind() == io::ErrorKind::InvalidData {
                    if let Some(reply) = self.oversized_first_frame_reply.clone() {
                        let _ =
                            tokio::time::timeout(self.handshake_timeout, conn.send(reply)).await;
                    }
                }
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        match framing::parse_hello(&first) {
            Some(hello) => self.serve_peer(conn, addr, hello).await,
            None => self.serve_client(conn, addr, first).await,
        }
    }

    /// With TLS on, does the server side of the handshake (plaintext is answered with
    /// `plaintext_on_tls_reply` and closed); without, hands the socket on as it is. `None`: the
    /// connection is closed.
    async fn secure(&self, stream: TcpStream, addr: SocketAddr) -> Option<Stream> {
        let Some(tls) = &self.security.tls else {
            return Some(Stream::Plain(stream));
        };
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.handshake_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) => {}
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                debug!(
                    "node {}: {addr} sent nothing within {:?} (or closed); closing",
                    self.node_id, self.handshake_timeout
                );
                return None;
            }
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            warn!(
                "node {}: plaintext connection from {addr} to a TLS port; closing",
                self.node_id
            );
            if let Some(reply) = self.plaintext_on_tls_reply.clone() {
                let mut conn = Framed::new(stream, framing::codec(self.max_frame_bytes));
                let _ = tokio::time::timeout(self.handshake_timeout, conn.send(reply)).await;
            }
            return None;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Some(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s)))),
            Ok(Err(e)) => {
                // Another CA, an expired certificate, no certificate under --client-cert-auth.
                warn!(
                    "node {}: TLS handshake with {addr} failed: {e}; closing",
                    self.node_id
                );
                None
            }
            Err(_) => {
                debug!(
                    "node {}: TLS handshake with {addr} took over {:?}; closing",
                    self.node_id, self.handshake_timeout
                );
                None
            }
        }
    }

    async fn serve_client(&self, framed: Conn, peer_addr: SocketAddr, first_frame: BytesMut) {
        debug!("node {}: client connection from {peer_addr}", self.node_id);
        let handler = (self.client_handler)(ClientConn {
            peer_addr,
            first_frame,
            framed,
        });
        // Dropping the handler's future on shutdown drops `framed`, which closes the connection.
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => {}
            _ = handler => {}
        }
    }

    async fn serve_peer(&self, mut conn: Conn, addr: SocketAddr, hello: Hello) {
        let peer = hello.node_id;
        let known = self
            .peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&peer);
        if !known {
            warn!(
                "node {}: Hello from unknown node {peer} at {addr}; closing",
                self.node_id
            );
            return;
        }
        // Nothing after the Hello is read as a peer message until the handshake has passed.
        if let Err(reason) = handshake::accept(
            &self.security,
            self.node_id,
            &mut conn,
            peer,
            hello.nonce.as_deref(),
            self.handshake_timeout,
        )
        .await
        {
            warn!(
                "node {}: refused a peer connection from {addr} claiming to be node {peer}: {reason}",
                self.node_id
            );
            return;
        }
        let (conn_id, token) = self.live.register(peer, &self.cancel);
        debug!(
            "node {}: accepted connection from peer {peer} at {addr}",
            self.node_id
        );
        let reason = self.read_peer(&mut conn, addr, peer, &token).await;
        self.live.unregister(peer, conn_id);
        debug!(
            "node {}: connection from peer {peer} at {addr} closed: {reason}",
            self.node_id
        );
    }

    /// Delivers the peer's frames as events until the connection ends; returns why it ended.
    async fn read_peer(
        &self,
        conn: &mut Conn,
        addr: SocketAddr,
        peer: u64,
        token: &CancellationToken,
    ) -> String {
        let received = self.live.received_counter(peer);
        loop {
            let next = tokio::select! {
                biased;
                _ = token.cancelled() => return "replaced by a newer connection, refused, or shutting down".into(),
                next = conn.next() => next,
            };
            let frame = match next {
                None => return "closed by peer".into(),
                Some(Err(e)) => {
                    self.log_read_error(addr, "frame", &e);
                    return format!("read error: {e}");
                }
                Some(Ok(frame)) => frame,
            };
            received.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
            let msg: M = match serde_json::from_slice(&frame) {
                Ok(msg) => msg,
                Err(e) => {
                    warn!(
                        "node {}: undecodable frame ({} bytes) from peer {peer} at {addr}: {e}; closing",
                        self.node_id,
                        frame.len()
                    );
                    return format!("undecodable frame: {e}");
                }
            };
            // Awaiting here when the channel is full stops reading this socket, so TCP flow control
            // pushes back on the sender instead of us buffering without bound.
            let sent = tokio::select! {
                biased;
                _ = token.cancelled() => return "replaced by a newer connection, refused, or shutting down".into(),
                r = self.events.send(PeerEvent::Message { from: peer, msg }) => r,
            };
            if sent.is_err() {
                return "event receiver dropped".into();
            }
        }
    }

    /// Resets are normal when a peer dies; anything else (oversized or truncated frames) is bad input.
    fn log_read_error(&self, addr: SocketAddr, what: &str, e: &io::Error) {
        match e.kind() {
            // A killed TLS peer ends without close_notify: UnexpectedEof, as normal as a reset.
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof => {
                debug!("node {}: reading {what} from {addr}: {e}", self.node_id)
            }
            _ => warn!(
                "node {}: bad {what} from {addr}: {e}; closing",
                self.node_id
            ),
        }
    }
}
