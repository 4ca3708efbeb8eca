//! Linearizable reads without writing to the log: ReadIndex (Raft thesis §6.4).
//!
//! A read asks the leader for a *read index*: the commit index at the time the read arrived.
//! The leader must then prove it was still the leader after that moment, by a round of
//! heartbeats answered by a majority in its term; only then is the read index handed out, and
//! the caller serves the read once its state machine has applied that index.
//!
//! Rounds are numbered. Every AppendEntries carries the leader's latest round number and every
//! reply echoes it, so any reply of the current term with round ≥ R shows the follower still
//! accepted this leader after round R began. All reads that arrive between two rounds share
//! the next one, so many reads cost one heartbeat round. A new leader hands out read indexes
//! only once an entry of its own term is committed: before that, its commit index may lag
//! behind entries committed by earlier leaders.

use super::quorum::committed_index;
use super::Raft;
use crate::message::Role;

/// A read the leader has confirmed: serve it once `index` is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's context, as given to `read_index`.
    pub ctx: u64,
    pub index: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PendingRead {
    ctx: u64,
    /// Commit index when the read arrived.
    index: u64,
    /// The round whose majority acknowledgement releases it.
    round: u64,
}

#[derive(Debug, Default)]
pub(super) struct ReadOnly {
    /// Reads waiting for the leader's first commit in its term.
    waiting_for_commit: Vec<u64>,
    /// Reads waiting for their round to be acknowledged, oldest first.
    pending: Vec<PendingRead>,
    /// The latest round begun (its heartbeats sent or about to be).
    pub(super) round: u64,
    /// A round is owed to reads that arrived since `round` began.
    round_wanted: bool,
    /// Confirmed reads for the next `Ready`.
    pub(super) ready: Vec<ReadState>,
}

impl ReadOnly {
    pub(super) fn round_wanted(&self) -> bool {
        self.round_wanted
    }

    /// Forgets every pending read (on losing leadership: they will never be confirmed).
    pub(super) fn clear(&mut self) {
        self.waiting_for_commit.clear();
        self.pending.clear();
        self.round_wanted = false;
    }
}

impl Raft {
    /// Asks for a read index for the read(s) named `ctx`. The answer comes in a later
    /// `Ready::read_states`, or never if this node loses leadership first (the caller then
    /// sees the role change in `Ready::soft_state`).
    pub fn read_index(&mut self, ctx: u64) -> Result<(), super::NotLeader> {
        if self.role != Role::Leader {
            return Err(super::NotLeader {
                leader: self.leader,
            });
        }
        if self.log.term(self.log.committed()) != Some(self.term) {
            self.read_only.waiting_for_commit.push(ctx);
            return Ok(());
        }
        self.queue_read(ctx);
        Ok(())
    }

    fn queue_read(&mut self, ctx: u64) {
        let round = self.read_only.round + 1;
        self.read_only.pending.push(PendingRead {
            ctx,
            index: self.log.committed(),
            round,
        });
        self.read_only.round_wanted = true;
    }

    /// Called when the commit index advances on a leader: reads that waited for the first
    /// commit of this term may now take a read index.
    pub(super) fn release_reads_waiting_for_commit(&mut self) {
        if self.read_only.waiting_for_commit.is_empty()
            || self.log.term(self.log.committed()) != Some(self.term)
        {
            return;
        }
        for ctx in std::mem::take(&mut self.read_only.waiting_for_commit) {
            self.queue_read(ctx);
        }
    }

    /// Starts the round owed to new reads: heartbeats to every follower, carrying it.
    pub(super) fn start_read_round(&mut self) {
        if !self.read_only.round_wanted {
            return;
        }
        self.read_only.round_wanted = false;
        self.read_only.round += 1;
        self.send_heartbeats();
        // A single-node cluster is its own majority.
        self.release_confirmed_reads();
    }

    /// Releases every read whose round a majority has acknowledged.
    pub(super) fn release_confirmed_reads(&mut self) {
        if self.read_only.pending.is_empty() {
            return;
        }
        // A majority of the voters in effect, as for commits.
        let mut acked: Vec<u64> = self
            .membership
            .voters()
            .map(|v| {
                if v == self.id {
                    self.read_only.round
                } else if self.counts_progress(v) {
                    self.progress.get(&v).map_or(0, |pr| pr.read_round)
                } else {
                    0
                }
            })
            .collect();
        let confirmed = committed_index(&mut acked);
        let (done, waiting): (Vec<PendingRead>, Vec<PendingRead>) = self
            .read_only
            .pending
            .iter()
            .partition(|r| r.round <= confirmed);
        self.read_only.pending = waiting;
        self.read_only
            .ready
            .extend(done.into_iter().map(|r| ReadState {
                ctx: r.ctx,
                index: r.index,
            }));
    }
}
