//! Transport configuration and its defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::security::Security;

/// Default upper bound on one frame's payload (16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Default number of outbound frames queued per peer.
pub const DEFAULT_PEER_QUEUE_CAPACITY: usize = 4096;
/// Default cap on concurrently open inbound connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default capacity of the inbound event channel.
pub const DEFAULT_EVENT_QUEUE_CAPACITY: usize = 8192;

/// The Hello frame is about 40 bytes; a smaller frame limit could never complete a handshake.
const MIN_FRAME_BYTES: usize = 64;

/// Settings for one node's transport. Build with [`TransportConfig::new`] and adjust fields as needed.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id, sent in the Hello frame of every outbound peer connection.
    pub node_id: u64,
    /// The other cluster members and where they listen. Never contains `node_id`.
    pub peers: HashMap<u64, SocketAddr>,
    /// Largest accepted frame payload, in both directions.
    pub max_frame_bytes: usize,
    /// Outbound frames queued per peer before `send` starts returning `QueueFull`.
    pub peer_queue_capacity: usize,
    /// Inbound connection cap (peers and clients together).
    pub max_connections: usize,
    /// First delay between failed connection attempts to a peer.
    pub connect_backoff_min: Duration,
    /// Largest delay between failed connection attempts to a peer.
    pub connect_backoff_max: Duration,
    /// How long an inbound connection may stay silent before its first frame arrives.
    pub handshake_timeout: Duration,
    /// Upper bound on one outbound TCP connect (a blackholed peer would otherwise hang for minutes).
    pub connect_timeout: Duration,
    /// Capacity of the channel carrying [`crate::PeerEvent`]s to the caller.
    pub event_queue_capacity: usize,
    /// Written (as one frame) to a connection whose very first frame is over
    /// `max_frame_bytes`, before closing it, so a client learns why. Later oversized frames are
    /// the client handler's to answer.
    pub oversized_first_frame_reply: Option<bytes::Bytes>,
    /// With TLS on, written (as one plaintext frame) to a connection that starts like a
    /// plaintext frame rather than a TLS handshake, before closing it, so a client learns why.
    pub plaintext_on_tls_reply: Option<bytes::Bytes>,
    /// Who may speak as a peer (TLS, cluster secret). Empty means anyone who says Hello.
    pub security: Security,
}

impl TransportConfig {
    /// A configuration with every tunable at its default.
    pub fn new(node_id: u64, peers: HashMap<u64, SocketAddr>) -> Self {
        TransportConfig {
            node_id,
            peers,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            peer_queue_capacity: DEFAULT_PEER_QUEUE_CAPACITY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_backoff_min: Duration::from_millis(20),
            connect_backoff_max: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(3),
            oversized_first_frame_reply: None,
            plaintext_on_tls_reply: None,
            security: Security::default(),
            connect_timeout: Duration::from_secs(3),
            event_queue_capacity: DEFAULT_EVENT_QUEUE_CAPACITY,
        }
    }

    /// Repairs values that would make the transport misbehave instead of rejecting them:
    /// tokio channels panic on capacity 0 and a zero-permit semaphore would stall the accept loop.
    pub(crate) fn normalized(mut self) -> Self {
        if self.peers.remove(&self.node_id).is_some() {
            log::warn!(
                "node {}: peer list contained our own id; ignoring it",
                self.node_id
            );
        }
        self.max_frame_bytes = self.max_frame_bytes.max(MIN_FRAME_BYTES);
        self.peer_queue_capacity = self.peer_queue_capacity.max(1);
        self.max_connections = self.max_connections.max(1);
        self.event_queue_capacity = self.event_queue_capacity.max(1);
        self.connect_backoff_min = self.connect_backoff_min.max(Duration::from_millis(1));
        self.connect_backoff_max = self.connect_backoff_max.max(self.connect_backoff_min);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_documentation() {
        let cfg = TransportConfig::new(1, HashMap::new());
        assert_eq!(cfg.max_frame_bytes, 16 * 1024 * 1024);
        assert_eq!(cfg.peer_queue_capacity, 4096);
        assert_eq!(cfg.max_connections, 4096);
        assert_eq!(cfg.connect_backoff_min, Duration::from_millis(20));
        assert_eq!(cfg.connect_backoff_max, Duration::from_secs(1));
        assert_eq!(cfg.handshake_timeout, Duration::from_secs(3));
    }

    #[test]
    fn normalized_repairs_bad_values() {
        let mut peers = HashMap::new();
        peers.insert(1, "127.0.0.1:1".parse().unwrap());
        peers.insert(2, "127.0.0.1:2".parse().unwrap());
        let mut cfg = TransportConfig::new(1, peers);
        cfg.peer_queue_capacity = 0;
        cfg.max_connections = 0;
        cfg.event_queue_capacity = 0;
        cfg.max_frame_bytes = 0;
        cfg.connect_backoff_min = Duration::from_secs(5);
        cfg.connect_backoff_max = Duration::from_secs(1);
        let cfg = cfg.normalized();
        assert!(!cfg.peers.contains_key(&1));
        assert!(cfg.peers.contains_key(&2));
        assert_eq!(cfg.peer_queue_capacity, 1);
        assert_eq!(cfg.max_connections, 1);
        assert_eq!(cfg.event_queue_capacity, 1);
        assert!(cfg.max_frame_bytes >= MIN_FRAME_BYTES);
        assert_eq!(cfg.connect_backoff_max, Duration::from_secs(5));
    }
}
