//! Hand-off of non-peer connections to the embedding application.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::stream::Stream;

/// A client connection, handed over after its first frame was read (and found not to be a Hello).
///
/// `framed` still holds any bytes received after the first frame, so the handler just keeps reading it.
pub struct ClientConn {
    /// Remote address of the client.
    pub peer_addr: SocketAddr,
    /// Payload of the first frame (length prefix stripped).
    pub first_frame: BytesMut,
    /// The connection, framed with the same codec and frame limit as peer connections.
    pub framed: Framed<Stream, LengthDelimitedCodec>,
}

/// Called once per client connection; the returned future serves it. The future is dropped (closing the
/// connection) when the transport shuts down.
pub type ClientHandler =
    Arc<dyn Fn(ClientConn) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Wraps an async closure as a [`ClientHandler`], sparing callers the boxing.
pub fn client_handler<F, Fut>(f: F) -> ClientHandler
where
    F: Fn(ClientConn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |conn| Box::pin(f(conn)))
}

/// A handler that closes client connections immediately, for nodes that serve only peers.
pub fn reject_clients() -> ClientHandler {
    client_handler(|conn: ClientConn| async move {
        log::debug!(
            "rejecting client connection from {} (no client handler)",
            conn.peer_addr
        );
    })
}
