//! What a leader knows about each follower's log (Figure 2's nextIndex and matchIndex), plus
//! the flow control that lets it pipeline AppendEntries without flooding a slow follower.

use crate::message::Snapshot;
use std::collections::VecDeque;

/// How the leader currently talks to one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the follower's log matches is unknown: one AppendEntries at a time, each one
    /// probing a smaller `next` until it is accepted.
    Probe,
    /// The follower's log matches up to `matched`: stream batches back to back, up to
    /// `max_inflight` unacknowledged messages.
    Replicate,
    /// The entries the follower needs were compacted away: send it the snapshot, one chunk at
    /// a time (each chunk waits for the previous one's answer: backpressure).
    Snapshot,
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to be replicated on the follower. Never decreases.
    pub matched: u64,
    /// Next index to send.
    pub next: u64,
    pub state: ProgressState,
    /// In `Probe`: a probe is outstanding; wait for its answer or the next heartbeat.
    pub probe_sent: bool,
    /// In `Replicate`: last index of each unacknowledged AppendEntries, oldest first.
    pub inflight: VecDeque<u64>,
    /// `matched` as of the previous heartbeat, to notice a stream that stopped moving (a lost
    /// message) and fall back to probing.
    pub matched_at_heartbeat: u64,
    /// Heartbeats in a row with messages in flight and no progress.
    pub stalled_heartbeats: u32,
    /// Highest ReadIndex round this follower has acknowledged in the current term.
    pub read_round: u64,
    /// In `Snapshot`: the snapshot being sent, how many of its bytes the follower holds, and
    /// whether a chunk is awaiting its answer.
    pub snapshot_index: u64,
    pub snapshot_offset: u64,
    pub snapshot_in_flight: bool,
    /// In `Snapshot`: the snapshot being sent (the leader may have taken a newer one since).
    pub snapshot: Option<Snapshot>,
    /// Heard from since the leader last checked its quorum.
    pub recent_active: bool,
    /// Ticks since the leader last heard from it.
    pub heard_ticks: u32,
    /// The data dir it last spoke from (see `crate::membership`).
    pub incarnation: u64,
}

impl Progress {
    pub fn new(next: u64) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            matched_at_heartbeat: 0,
            stalled_heartbeats: 0,
            read_round: 0,
            snapshot_index: 0,
            snapshot_offset: 0,
            snapshot_in_flight: false,
            snapshot: None,
            recent_active: true,
            // Not heard from yet.
            heard_ticks: u32::MAX,
            incarnation: 0,
        }
    }

    /// May another AppendEntries carrying entries go out now?
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
            ProgressState::Snapshot => !self.snapshot_in_flight,
        }
    }

    /// Records that entries up to `last` were sent.
    pub fn sent(&mut self, last: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next = last + 1;
                self.inflight.push_back(last);
            }
            ProgressState::Snapshot => self.snapshot_in_flight = true,
        }
    }

    /// The follower acknowledged a match up to `index`. Returns whether `matched` grew.
    /// Stale or duplicated acknowledgements are harmless: `matched` only moves forward.
    pub fn acknowledge(&mut self, index: u64) -> bool {
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        self.probe_sent = false;
        if index < self.matched {
            return false; // stale: an older request's answer
        }
        let grew = index > self.matched;
        if grew {
            self.matched = index;
            self.stalled_heartbeats = 0;
            self.next = self.next.max(index + 1);
        }
        // An accepted probe, even one that carried nothing new, proves the logs match where
        // the probe was anchored (`next - 1`): start streaming. A heartbeat anchored lower (at
        // what is known to match, sent next to the probe so a follower with a slow disk can
        // answer at once) proves nothing new: keep probing.
        if self.state == ProgressState::Probe && index + 1 >= self.next {
            self.become_replicate();
        }
        grew
    }

    /// Starts sending `snapshot` from its first byte.
    pub fn become_snapshot(&mut self, snapshot: Snapshot) {
        self.state = ProgressState::Snapshot;
        self.snapshot_index = snapshot.meta.index;
        self.snapshot = Some(snapshot);
        self.snapshot_offset = 0;
        self.snapshot_in_flight = false;
        self.inflight.clear();
    }

    pub fn become_probe(&mut self, next: u64) {
        self.state = ProgressState::Probe;
        self.snapshot = None;
        self.next = next.max(self.matched + 1);
        self.probe_sent = false;
        self.inflight.clear();
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.snapshot = None;
        self.next = self.matched + 1;
        self.inflight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(5);
        assert!(p.can_send(4));
        p.sent(7);
        assert!(!p.can_send(4), "probe outstanding");
        assert_eq!(p.next, 5, "probing does not advance next optimistically");
    }

    #[test]
    fn replicate_pipelines_up_to_window() {
        let mut p = Progress::new(1);
        p.acknowledge(3);
        assert_eq!(p.state, ProgressState::Replicate);
        for last in [5, 7] {
            assert!(p.can_send(2));
            p.sent(last);
        }
        assert!(!p.can_send(2), "window full");
        assert_eq!(p.next, 8);
        p.acknowledge(5);
        assert!(p.can_send(2));
    }

    #[test]
    fn matched_never_decreases() {
        let mut p = Progress::new(1);
        assert!(p.acknowledge(9));
        assert!(!p.acknowledge(4), "stale ack");
        assert_eq!(p.matched, 9);
        p.become_probe(2);
        assert_eq!(p.next, 10, "next never goes at or below matched");
    }
}
