//! Leadership transfer (thesis §3.10): the leader brings the target's log up to date, accepts no
//! new writes meanwhile (for at most an election timeout), then sends it TimeoutNow; the target
//! starts an election at once, which it wins because its log is as up to date as any. Used to
//! hand over before a planned restart, so a rolling restart costs no election timeout.

use super::Raft;
use crate::membership::ChangeError;
use crate::message::{NodeId, RaftMessage, Role};

#[derive(Debug, Clone, Copy)]
pub(super) struct Transfer {
    pub(super) target: NodeId,
    /// Ticks since it began: it is abandoned after an election timeout.
    elapsed: u32,
    /// TimeoutNow went out (once: a second would start a second election).
    sent: bool,
}

impl Raft {
    /// Hands leadership to `target` (default: the voter whose log is most up to date). Returns
    /// the target; the transfer is done when the target leads (`Ready::soft_state` shows it).
    pub fn transfer_leader(&mut self, target: Option<NodeId>) -> Result<NodeId, ChangeError> {
        if self.role != Role::Leader {
            return Err(ChangeError::NotLeader {
                leader: self.leader,
            });
        }
        let target = match target {
            Some(t) if t == self.id => {
                return Err(ChangeError::Invalid(format!("node {t} already leads")))
            }
            Some(t) => {
                if !self.counts_progress(t) {
                    return Err(ChangeError::Invalid(format!(
                        "node {t} is not a voter (or speaks from a data dir not yet re-admitted)"
                    )));
                }
                t
            }
            None => self
                .voter_peers()
                .into_iter()
                .filter(|v| self.counts_progress(*v))
                .max_by_key(|v| {
                    (
                        self.progress.get(v).map_or(0, |pr| pr.matched),
                        std::cmp::Reverse(
                            self.progress.get(v).map_or(u32::MAX, |pr| pr.heard_ticks),
                        ),
                    )
                })
                .ok_or_else(|| {
                    if self.voter_peers().is_empty() {
                        ChangeError::Invalid("there is no other voter to lead".into())
                    } else {
                        // Voters this leader has not heard from (since it leads), or that
                        // speak from a data dir not yet re-admitted: none could take over now.
                        ChangeError::Unsafe(
                            "no other voter has answered this leader with the data dir it was admitted with; try again once one has".into(),
                        )
                    }
                })?,
        };
        ::log::info!(
            "node {}: transferring leadership to node {target} in term {}",
            self.id,
            self.term
        );
        self.transfer = Some(Transfer {
            target,
            elapsed: 0,
            sent: false,
        });
        self.maybe_send_timeout_now();
        Ok(target)
    }

    /// The node leadership is being handed to, while a transfer is in progress.
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.target)
    }

    /// Sends TimeoutNow once the target holds the whole log.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(t) = self.transfer else { return };
        if t.sent {
            return;
        }
        let caught_up = self
            .progress
            .get(&t.target)
            .is_some_and(|pr| pr.matched == self.log.last_index());
        if caught_up {
            self.send(t.target, RaftMessage::TimeoutNow { term: self.term });
            self.transfer = Some(Transfer { sent: true, ..t });
        }
    }

    /// Leader, each tick: give up a transfer that took an election timeout (the target is slow
    /// or gone) and accept writes again.
    pub(super) fn tick_transfer(&mut self) {
        let Some(mut t) = self.transfer else { return };
        t.elapsed += 1;
        if t.elapsed >= self.cfg.election_ticks_min {
            ::log::warn!(
                "node {}: leadership transfer to node {} did not finish within an election timeout; still leading in term {}",
                self.id,
                t.target,
                self.term
            );
            self.transfer = None;
        } else {
            self.transfer = Some(t);
        }
    }

    /// Follower: the leader asks us to take over now.
    pub(super) fn handle_timeout_now(&mut self, from: NodeId, term: u64) {
        if self.role != Role::Follower || from != self.leader || term != self.term {
            return;
        }
        if !self.can_vote() {
            return;
        }
        ::log::info!(
            "node {}: node {from} hands leadership over in term {term}; starting an election now",
            self.id
        );
        self.become_candidate(true);
    }
}
