//! The `Transport` handle: starts the tasks, queues outbound frames, shuts everything down.

use std::collections::HashMap;
use std::collections::HashSet;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use log::{debug, warn};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::ClientHandler;
use crate::config::TransportConfig;
use crate::error::SendError;
use crate::event::PeerEvent;
use crate::listener::{Inbound, LivePeers};
use crate::outbound::Queued;
use crate::peer::OutboundPeer;
use crate::stats::{PeerCounters, TransportStats};

/// How long `shutdown` waits for tasks to notice cancellation before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Sending half of one peer's outbound queue.
struct PeerHandle {
    addr: SocketAddr,
    queue: mpsc::Sender<Queued>,
    counters: Arc<PeerCounters>,
    /// Stops this peer's outbound task alone (it left the configuration).
    cancel: CancellationToken,
}

struct Inner {
    node_id: u64,
    local_addr: Option<SocketAddr>,
    peers: RwLock<HashMap<u64, PeerHandle>>,
    /// Who the listener accepts a Hello from (shared with it).
    allowed: Arc<RwLock<HashSet<u64>>>,
    live: Arc<LivePeers>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    spawn: Box<SpawnPeer>,
}

/// Starts the outbound task of a peer (None once the transport is shutting down).
type SpawnPeer = dyn Fn(u64, SocketAddr) -> Option<(PeerHandle, JoinHandle<()>)> + Send + Sync;

impl Drop for Inner {
    /// Dropping the last handle without `shutdown` still stops the tasks (without waiting for them).
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A node's TCP transport. Cheap to clone; all clones share the same connections.
pub struct Transport<M> {
    inner: Arc<Inner>,
    // `fn(&M)`: the transport only consumes `M`s, so its Send/Sync must not depend on `M`'s.
    _msg: PhantomData<fn(&M)>,
}

impl<M> Clone for Transport<M> {
    fn clone(&self) -> Self {
        Transport {
            inner: self.inner.clone(),
            _msg: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Transport<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.inner.node_id)
            .field("local_addr", &self.inner.local_addr)
            .field("peers", &self.peer_ids())
            .finish()
    }
}

impl<M: Serialize + DeserializeOwned + Send + 'static> Transport<M> {
    /// Starts the accept loop on an already-bound listener (the caller binds, so bind errors are reported
    /// by the caller) and one outbound task per peer. Returns the transport and the receiver of inbound
    /// events. Must be called from within a tokio runtime.
    ///
    /// Invalid settings are repaired rather than rejected: zero capacities become 1, our own id is
    /// removed from `peers`, and `connect_backoff_max` is raised to at least `connect_backoff_min`.
    pub fn start(
        cfg: TransportConfig,
        listener: TcpListener,
        client_handler: ClientHandler,
    ) -> (Transport<M>, mpsc::Receiver<PeerEvent<M>>) {
        let cfg = cfg.normalized();
        let cancel = CancellationToken::new();
        let (events_tx, events_rx) = mpsc::channel(cfg.event_queue_capacity);
        let local_addr = listener.local_addr().ok();
        let mut tasks = Vec::with_capacity(cfg.peers.len() + 1);

        let mut inbound = Inbound::new(
            cfg.node_id,
            cfg.peers.keys().copied().collect(),
            cfg.max_frame_bytes,
            cfg.handshake_timeout,
            events_tx.clone(),
            client_handler,
            cancel.clone(),
        );
        inbound.oversized_first_frame_reply = cfg.oversized_first_frame_reply.clone();
        inbound.plaintext_on_tls_reply = cfg.plaintext_on_tls_reply.clone();
        inbound.security = cfg.security.clone();
        let live = inbound.live.clone();
        let allowed = inbound.peers.clone();
        let inbound = Arc::new(inbound);
        tasks.push(tokio::spawn(
            inbound.accept_loop(listener, cfg.max_connections),
        ));

        // Outbound tasks for peers that join later hold a weak sender: the receiver still sees
        // `None` once the tasks have all ended, after `shutdown`.
        let weak_events = events_tx.downgrade();
        let spawn_cfg = cfg.clone();
        let spawn_cancel = cancel.clone();
        let spawn = move |peer_id: u64, addr: SocketAddr| {
            let events = weak_events.upgrade()?;
            let cfg = &spawn_cfg;
            let (queue_tx, queue_rx) = mpsc::channel(cfg.peer_queue_capacity);
            let counters = Arc::new(PeerCounters::default());
            let peer_cancel = spawn_cancel.child_token();
            let task = OutboundPeer {
                node_id: cfg.node_id,
                peer_id,
                addr,
                max_frame_bytes: cfg.max_frame_bytes,
                backoff_min: cfg.connect_backoff_min,
                backoff_max: cfg.connect_backoff_max,
                connect_timeout: cfg.connect_timeout,
                security: cfg.security.clone(),
                queue: queue_rx,
                counters: counters.clone(),
                events,
                cancel: peer_cancel.clone(),
            };
            let handle = tokio::spawn(task.run());
            Some((
                PeerHandle {
                    addr,
                    queue: queue_tx,
                    counters,
                    cancel: peer_cancel,
                },
                handle,
            ))
        };
        let mut peers = HashMap::with_capacity(cfg.peers.len());
        for (&peer_id, &addr) in &cfg.peers {
            if let Some((handle, task)) = spawn(peer_id, addr) {
                tasks.push(task);
                peers.insert(peer_id, handle);
            }
        }
        // Only the tasks hold senders now, so the receiver sees `None` once they have all ended.
        drop(events_tx);
        debug!(
            "node {}: transport started on {local_addr:?} with {} peers",
            cfg.node_id,
            peers.len()
        );

        let inner = Inner {
            node_id: cfg.node_id,
            local_addr,
            peers: RwLock::new(peers),
            allowed,
            live,
            cancel,
            tasks: Mutex::new(tasks),
            spawn: Box::new(spawn),
        };
        let transport = Transport {
            inner: Arc::new(inner),
            _msg: PhantomData,
        };
        (transport, events_rx)
    }

    /// Queues `msg` for `to`; the peer's task encodes it (so the caller's thread does not).
    /// Never blocks, never awaits: if the peer's queue is full the message is dropped (Raft
    /// retransmits) and `Err(SendError::QueueFull)` is returned; `Err(SendError::UnknownPeer)`
    /// for an id not in peers. A message that cannot be encoded, or whose frame would exceed
    /// `max_frame_bytes` (the receiver would refuse it), is dropped by the peer's task with a
    /// warning and counted in the peer's `frames_dropped`; the connection stays up.
    pub fn send(&self, to: u64, msg: M) -> Result<(), SendError> {
        let peers = self
            .inner
            .peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let peer = peers.get(&to).ok_or(SendError::UnknownPeer)?;
        if self.inner.cancel.is_cancelled() {
            return Err(SendError::Shutdown);
        }
        match peer.queue.try_send(Box::new(msg)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                peer.counters.add_dropped(1);
                Err(SendError::QueueFull)
            }
            Err(TrySendError::Closed(_)) => Err(SendError::Shutdown),
        }
    }
}

impl<M> Transport<M> {
    /// The cluster's configuration changed: connect to new members, stop talking to (and
    /// accepting Hellos from) those that left, and reconnect to a member whose address
    /// changed. Our own id is ignored.
    pub fn set_peers(&self, next: HashMap<u64, SocketAddr>) {
        let mut peers = self
            .inner
            .peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut allowed = self
            .inner
            .allowed
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let gone: Vec<u64> = peers
            .iter()
            .filter(|(id, p)| next.get(id) != Some(&p.addr))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(p) = peers.remove(&id) {
                p.cancel.cancel();
            }
            if !next.contains_key(&id) {
                allowed.remove(&id);
                self.inner.live.close(id);
                debug!(
                    "node {}: peer {id} left the configuration",
                    self.inner.node_id
                );
            }
        }
        for (&id, &addr) in &next {
            if id == self.inner.node_id || peers.contains_key(&id) {
                continue;
            }
            if let Some((handle, task)) = (self.inner.spawn)(id, addr) {
                peers.insert(id, handle);
                allowed.insert(id);
                self.inner
                    .tasks
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(task);
                debug!(
                    "node {}: peer {id} at {addr} joined the configuration",
                    self.inner.node_id
                );
            }
        }
    }

    /// Counters for tests and benchmarks: frames and bytes sent per peer, frames dropped per peer.
    pub fn stats(&self) -> TransportStats {
        let mut peers: std::collections::HashMap<u64, crate::PeerStats> = self
            .inner
            .peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(&id, p)| (id, p.counters.snapshot()))
            .collect();
        for (id, bytes) in self.inner.live.received() {
            peers.entry(id).or_default().bytes_received = bytes;
        }
        TransportStats { peers }
    }

    /// Closes the connection on which `peer`'s messages arrive (the node refused one that a
    /// correct member could not have sent). The peer, if it is one, reconnects. Returns whether
    /// such a connection was open.
    pub fn close_inbound(&self, peer: u64) -> bool {
        self.inner.live.close(peer)
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// Address the listener was bound to (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// Ids of the configured peers, sorted.
    pub fn peer_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .inner
            .peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Stops accepting, closes every connection, waits for the tasks to end (at most about 2 s, after
    /// which stragglers are aborted), returns. Other clones of this transport then fail every `send`
    /// with `SendError::Shutdown`, and the event receiver yields `None` once drained.
    pub async fn shutdown(self) {
        self.inner.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            warn!(
                "node {}: transport tasks did not stop within {SHUTDOWN_GRACE:?}; aborting them",
                self.inner.node_id
            );
            for a in &aborts {
                a.abort();
            }
        }
        debug!("node {}: transport shut down", self.inner.node_id);
    }
}
