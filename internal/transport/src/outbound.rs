//! What the outbound queues hold: messages not yet encoded. The peer's task encodes them, so a
//! node's own loop never spends its turn turning a catching-up follower's megabytes of entries
//! into JSON (130–225 ms a turn at a million keys, enough to starve its heartbeats).

use serde::Serialize;

/// A message waiting in a peer's queue.
pub(crate) type Queued = Box<dyn Encode>;

/// Anything the transport can put in a frame.
pub(crate) trait Encode: Send {
    fn encode(&self) -> serde_json::Result<Vec<u8>>;
}

impl<T: Serialize + Send> Encode for T {
    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}
