//! TCP transport for raftd: owns the sockets, TLS, peer authentication, framing, reconnects and
//! backpressure of one cluster node.
//!
//! Wire format: every frame is a 4-byte big-endian length `N` followed by `N` bytes of UTF-8 JSON,
//! inside TLS when the node has it. Clients and peers use the same port. A node connecting to a
//! peer first sends `{"type":"Hello","node_id":N}` (with a nonce, and a challenge–response after
//! it, when the cluster has a secret: [`security`]) and then only the JSON of messages `M`; any
//! connection whose first frame is not a Hello is handed to the [`ClientHandler`].
//!
//! Each node keeps one outbound connection per peer for its own messages and receives the peers' messages
//! on their outbound connections, so connections are one-directional.
//!
//! The event receiver returned by [`Transport::start`] must be drained: when it is full, inbound peer
//! connections stop reading (TCP backpressure) and outbound tasks wait to report state changes.
//!
//! Module map: [`config`] settings, [`framing`] codec and Hello, `listener` accept loop and inbound
//! connections, `peer` outbound per-peer task, `transport` the handle tying them together.

mod backoff;
mod client;
pub mod config;
mod error;
mod event;
pub mod framing;
mod listener;
mod outbound;
mod peer;
pub mod security;
mod stats;
mod stream;
mod transport;

pub use client::{client_handler, reject_clients, ClientConn, ClientHandler};
pub use config::TransportConfig;
pub use error::SendError;
pub use event::PeerEvent;
pub use security::{ClusterSecret, NodeTls, Security, TlsFiles};
pub use stats::{PeerStats, TransportStats};
pub use stream::Stream;
pub use transport::Transport;
