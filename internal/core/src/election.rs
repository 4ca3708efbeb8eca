//! Leader election (§5.2), the election restriction (§5.4.1), pre-vote (thesis §9.6) and the
//! leader's quorum check (thesis §6.2).

use super::quorum::{vote_result, VoteResult};
use super::{Progress, Raft};
use crate::message::{Entry, Envelope, NodeId, RaftMessage, Role};

impl Raft {
    /// Followers and candidates: start an election when no leader was heard from for a whole
    /// randomized timeout. Randomizing per term keeps split votes rare (§5.2).
    pub(super) fn tick_election(&mut self) {
        self.tick_bootstrap();
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.randomized_election_ticks {
            if !self.can_vote() {
                // A learner, a removed node, or one that lost its disk: it never campaigns.
                // Its timer keeps running, so it stops deferring to a leader it no longer
                // hears from (the lease in `in_leader_lease`) and answers vote requests.
                return;
            }
            self.election_elapsed = 0;
            ::log::info!(
                "node {}: election timeout in term {} as {} (no leader heard for {} ticks)",
                self.id,
                self.term,
                self.role,
                self.randomized_election_ticks
            );
            self.campaign();
        }
    }

    /// Leaders: heartbeats, and stepping down when a majority has gone quiet, so a leader cut
    /// off in a minority stops claiming leadership instead of stranding its clients.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        for pr in self.progress.values_mut() {
            pr.heard_ticks = pr.heard_ticks.saturating_add(1);
        }
        self.tick_transfer();
        if self.cfg.check_quorum && self.election_elapsed >= self.cfg.election_ticks_min {
            self.election_elapsed = 0;
            let active = usize::from(self.membership.is_voter(self.id))
                + self
                    .voter_peers()
                    .into_iter()
                    .filter(|v| {
                        self.counts_progress(*v)
                            && self.progress.get(v).is_some_and(|p| p.recent_active)
                    })
                    .count();
            for pr in self.progress.values_mut() {
                pr.recent_active = false;
            }
            if active < self.quorum() {
                let why = format!(
                    "heard from only {active} of {} voters in an election timeout",
                    self.membership.voter_count()
                );
                self.become_follower(self.term, 0, &why);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
            self.maybe_reconfigure();
        }
    }

    pub(super) fn campaign(&mut self) {
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// Asks "would you vote for me in term+1?" without changing any term. Only if a majority
    /// would, does the node raise its term for a real election.
    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = 0;
        self.votes.clear();
        self.progress.clear();
        self.election_elapsed = 0;
        self.reset_election_timer();
        self.votes.insert(self.id, true);
        let voters = self.voter_peers();
        ::log::info!(
            "node {}: pre-candidate in term {}, asking {} voters for pre-votes for term {}",
            self.id,
            self.term,
            voters.len(),
            self.term + 1
        );
        if self.tally() == VoteResult::Won {
            self.become_candidate(false);
            return;
        }
        let msg = self.vote_request(self.term + 1, true, false);
        for peer in voters {
            // Nothing to persist: a pre-vote changes no durable state.
            self.send(peer, msg.clone());
        }
    }

    /// `transfer`: the leader handed over (TimeoutNow), so voters must answer even though they
    /// heard from that leader within the election timeout.
    pub(super) fn become_candidate(&mut self, transfer: bool) {
        let term = self.term + 1;
        self.reset(term);
        self.role = Role::Candidate;
        self.vote = self.id;
        self.votes.insert(self.id, true);
        let voters = self.voter_peers();
        ::log::info!(
            "node {}: candidate in term {}, requesting votes from {} voters",
            self.id,
            self.term,
            voters.len()
        );
        if self.tally() == VoteResult::Won {
            self.become_leader();
            return;
        }
        let msg = self.vote_request(self.term, false, transfer);
        for peer in voters {
            // The new term and the vote for ourselves must be durable first: a node that
            // forgot it voted for itself could vote again in the same term after a crash.
            self.send_after_persist(peer, msg.clone());
        }
    }

    fn become_leader(&mut self) {
        let granted = self.votes.values().filter(|g| **g).count();
        let voters = self.membership.voter_count();
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        let next = self.log.last_index() + 1;
        for peer in &self.peers {
            self.progress.insert(*peer, Progress::new(next));
        }
        ::log::info!(
            "node {}: won the election for term {} with {granted} of {voters} votes; now leader",
            self.id,
            self.term
        );
        // A no-op of the new term (§5.4.2, §8): earlier terms' entries can only be committed
        // by committing an entry of the leader's own term, so the leader appends one at once.
        self.log.append(Entry::noop(self.term, next));
    }

    fn vote_request(&self, term: u64, pre_vote: bool, transfer: bool) -> RaftMessage {
        RaftMessage::RequestVote {
            term,
            candidate_id: self.id,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            transfer,
        }
    }

    /// Counts only voters of the configuration in effect (`votes` holds no one else).
    fn tally(&self) -> VoteResult {
        let granted = self.votes.values().filter(|g| **g).count();
        let rejected = self.votes.len() - granted;
        vote_result(self.membership.voter_count(), granted, rejected)
    }

    /// Brings our term in line with the message's (§5.1: a higher term always wins; a lower
    /// one is stale). Returns whether the message should be processed further.
    pub(super) fn handle_term(&mut self, env: &Envelope) -> bool {
        let mterm = env.msg.term();
        if mterm > self.term {
            match &env.msg {
                RaftMessage::RequestVote {
                    pre_vote, transfer, ..
                } => {
                    if self.in_leader_lease() && !transfer {
                        // We heard from a live leader less than an election timeout ago: this
                        // candidate is probably a node that was cut off. Ignoring it (without
                        // raising our term) keeps it from deposing a working leader.
                        ::log::debug!(
                            "node {}: ignoring {} from node {} for term {mterm}: leader {} is alive",
                            self.id,
                            env.msg.kind(),
                            env.from,
                            self.leader
                        );
                        return false;
                    }
                    if !pre_vote {
                        let why = format!("vote request from node {} for term {mterm}", env.from);
                        self.become_follower(mterm, 0, &why);
                    }
                }
                RaftMessage::RequestVoteReply {
                    pre_vote: true,
                    vote_granted,
                    ..
                } if *vote_granted || mterm == self.term + 1 => {
                    // A pre-vote answer carries the term we asked about, not a term anyone is
                    // in; it changes nothing.
                }
                RaftMessage::AppendEntries { .. } | RaftMessage::InstallSnapshot { .. } => {
                    let why = format!("{} from node {} in term {mterm}", env.msg.kind(), env.from);
                    self.become_follower(mterm, env.from, &why);
                }
                _ => {
                    let why = format!("{} from node {} in term {mterm}", env.msg.kind(), env.from);
                    self.become_follower(mterm, 0, &why);
                }
            }
            return true;
        }
        if mterm < self.term {
            match &env.msg {
                RaftMessage::AppendEntries { .. } => {
                    // A deposed leader: tell it our term so it steps down.
                    let reply = RaftMessage::AppendEntriesReply {
                        term: self.term,
                        success: false,
                        match_index: 0,
                        conflict: None,
                        read_round: 0,
                    };
                    self.send_after_persist(env.from, reply);
                }
                RaftMessage::InstallSnapshot { snapshot, .. } => {
                    let reply = RaftMessage::InstallSnapshotReply {
                        term: self.term,
                        snapshot: *snapshot,
                        received: 0,
                        done: false,
                    };
                    self.send_after_persist(env.from, reply);
                }
                RaftMessage::RequestVote { pre_vote, .. } => {
                    let reply = RaftMessage::RequestVoteReply {
                        term: self.term,
                        vote_granted: false,
                        pre_vote: *pre_vote,
                    };
                    self.send_after_persist(env.from, reply);
                }
                _ => {} // a reply from an older term answers nothing we are waiting for
            }
            return false;
        }
        true
    }

    fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader != 0
            && self.election_elapsed < self.cfg.election_ticks_min
    }

    pub(super) fn handle_request_vote(
        &mut self,
        from: NodeId,
        term: u64,
        last_log_index: u64,
        last_log_term: u64,
        pre_vote: bool,
    ) {
        // §5.4.1: never vote for a candidate whose log is behind ours, so only a node holding
        // every committed entry can win.
        // And never vote with a data dir that forgot what it promised (lost, or empty and
        // waiting): its vote could elect a leader without entries it acknowledged.
        let up_to_date =
            self.may_grant_votes() && self.log.is_up_to_date(last_log_index, last_log_term);
        // One vote per term (§5.2): free to vote only if we have not voted (and know no leader)
        // in this term, or already voted for this very candidate (a retried request).
        let free = self.vote == from || (self.vote == 0 && self.leader == 0);
        if pre_vote {
            // A pre-vote is not a vote (thesis §9.6): it asks whether the log is up to date
            // and no leader is known, so a vote already cast in `term` does not refuse it.
            // Refusing it could stall the cluster for good: nodes that voted in term T with
            // logs too short to win, and a node one term behind with the longest log, whose
            // pre-vote for T they refuse while its refusals never show it term T.
            let grant = up_to_date && (term > self.term || self.vote == from || self.leader == 0);
            ::log::debug!(
                "node {}: pre-vote for node {from} (term {term}): granted={grant}",
                self.id
            );
            self.send(
                from,
                RaftMessage::RequestVoteReply {
                    term: term.max(self.term),
                    vote_granted: grant,
                    pre_vote: true,
                },
            );
            return;
        }
        let grant = free && up_to_date;
        if grant {
            self.vote = from;
            // Granting a vote resets the election timer (Figure 2), so we do not compete with
            // the candidate we just helped.
            self.election_elapsed = 0;
            ::log::info!(
                "node {}: voted for node {from} in term {}",
                self.id,
                self.term
            );
        } else {
            ::log::info!(
                "node {}: rejected vote for node {from} in term {} ({})",
                self.id,
                self.term,
                if !self.may_grant_votes() {
                    "this node lost its data or knows no configuration yet"
                } else if up_to_date {
                    "already voted or following a leader"
                } else {
                    "its log is behind ours"
                }
            );
        }
        let reply = RaftMessage::RequestVoteReply {
            term: self.term,
            vote_granted: grant,
            pre_vote: false,
        };
        // BUG (vote_without_persist, `bugs` feature only): answer before the vote is durable (and
        // `ready()` leaves the vote out of the hard state it hands over for writing).
        if bug!(self, vote_without_persist) {
            self.send(from, reply);
            return;
        }
        self.send_after_persist(from, reply);
    }

    pub(super) fn handle_vote_reply(
        &mut self,
        from: NodeId,
        incarnation: u64,
        term: u64,
        granted: bool,
        pre_vote: bool,
    ) {
        if !self.membership.counts(from, incarnation) {
            // A vote from a node that lost its disk (or is no voter) proves nothing.
            return;
        }
        let current = match (self.role, pre_vote) {
            (Role::PreCandidate, true) => term == self.term + 1,
            (Role::Candidate, false) => term == self.term,
            _ => false,
        };
        if !current {
            return;
        }
        // The first answer from each peer counts; a duplicate cannot add a vote.
        self.votes.entry(from).or_insert(granted);
        let granted_n = self.votes.values().filter(|g| **g).count();
        let rejected_n = self.votes.len() - granted_n;
        match self.tally() {
            VoteResult::Won if pre_vote => {
                ::log::info!(
                    "node {}: won the pre-vote for term {} with {granted_n} of {} votes",
                    self.id,
                    self.term + 1,
                    self.membership.voter_count()
                );
                self.become_candidate(false);
            }
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => {
                let why = format!(
                    "lost the {} for term {}: {granted_n} granted, {rejected_n} rejected of {}",
                    if pre_vote { "pre-vote" } else { "election" },
                    if pre_vote { self.term + 1 } else { self.term },
                    self.membership.voter_count()
                );
                self.become_follower(self.term, 0, &why);
            }
            VoteResult::Pending => {}
        }
    }
}
