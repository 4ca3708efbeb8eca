//! Events delivered to the owner of a transport.

/// Something that happened on the transport, in arrival order per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent<M> {
    /// A message received on an inbound peer connection.
    Message {
        /// Sender's node id, as announced in its Hello frame.
        from: u64,
        /// The decoded message.
        msg: M,
    },
    /// Our outbound connection to `peer` is up; frames sent from now on can reach it.
    Connected {
        /// The peer's node id.
        peer: u64,
    },
    /// Our outbound connection to `peer` went down. Emitted once per lost connection,
    /// not for every failed reconnection attempt.
    Disconnected {
        /// The peer's node id.
        peer: u64,
        /// Human-readable cause, for logs.
        reason: String,
    },
}
