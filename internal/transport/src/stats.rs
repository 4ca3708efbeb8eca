//! Per-peer counters, readable without locking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters for one peer, shared between `Transport::send` and the peer's outbound task.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_dropped: AtomicU64,
}

impl PeerCounters {
    /// Relaxed ordering: these are statistics, nothing synchronizes on them.
    pub(crate) fn add_sent(&self, frames: u64, bytes: u64) {
        self.frames_sent.fetch_add(frames, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_dropped(&self, frames: u64) {
        self.frames_dropped.fetch_add(frames, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PeerStats {
        PeerStats {
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            bytes_received: 0,
        }
    }
}

/// Counters for one peer at one point in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Frames written and flushed to the peer's socket.
    pub frames_sent: u64,
    /// Bytes of those frames, length prefixes included.
    pub bytes_sent: u64,
    /// Frames dropped: queue full, peer not connected, or lost with a failed write.
    pub frames_dropped: u64,
    /// Bytes read from the peer (its frames with their length prefixes).
    pub bytes_received: u64,
}

/// Snapshot of all peers' counters, returned by [`crate::Transport::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Counters keyed by peer id.
    pub peers: HashMap<u64, PeerStats>,
}

impl TransportStats {
    /// Counters for one peer (all zero for an unknown id).
    pub fn peer(&self, id: u64) -> PeerStats {
        self.peers.get(&id).copied().unwrap_or_default()
    }

    /// Sum over all peers.
    pub fn total(&self) -> PeerStats {
        self.peers
            .values()
            .fold(PeerStats::default(), |acc, s| PeerStats {
                frames_sent: acc.frames_sent + s.frames_sent,
                bytes_sent: acc.bytes_sent + s.bytes_sent,
                frames_dropped: acc.frames_dropped + s.frames_dropped,
                bytes_received: acc.bytes_received + s.bytes_received,
            })
    }
}
