//! Typed errors returned by the transport.

use thiserror::Error;

/// Why [`crate::Transport::send`] did not queue a frame.
#[derive(Debug, Error)]
pub enum SendError {
    /// The destination is not one of the configured peers (or is this node itself).
    #[error("unknown peer")]
    UnknownPeer,
    /// The peer's outbound queue is full; the frame was dropped (Raft retransmits).
    #[error("outbound queue for peer is full; frame dropped")]
    QueueFull,
    /// The transport has been shut down.
    #[error("transport is shut down")]
    Shutdown,
}

/// Why an outbound connection attempt failed. Only used for logging and event reasons.
#[derive(Debug, Error)]
pub(crate) enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed: the peer's certificate is not from our CA, has expired, or
    /// does not name the node we dialled (or it refused ours).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The peer handshake failed (a wrong or missing cluster secret, the wrong node).
    #[error("{0}")]
    Auth(String),
}
