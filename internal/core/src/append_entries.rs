//! Log replication (§5.3) and the commit rule (§5.4.2).

use super::progress::ProgressState;
use super::quorum::committed_index;
use super::Raft;
use crate::message::{ConflictHint, Entry, NodeId, RaftMessage, Role};

impl Raft {
    /// Does any follower have entries waiting that flow control lets us send now?
    pub(super) fn has_appends_to_send(&self) -> bool {
        let last = self.log.last_index();
        self.progress.values().any(|pr| {
            pr.can_send(self.cfg.max_inflight)
                && (pr.next <= last || pr.state != ProgressState::Replicate)
        })
    }

    /// Sends every follower what it is missing, as far as its flow control allows. Called once
    /// per `Ready`, so everything proposed since the previous one travels together.
    pub(super) fn send_appends(&mut self) {
        for peer in self.peers.clone() {
            self.send_append(peer);
        }
    }

    /// In `Replicate`, streams batches until the window is full; in `Probe`, sends one probe.
    fn send_append(&mut self, peer: NodeId) {
        loop {
            let last = self.log.last_index();
            let Some(pr) = self.progress.get(&peer) else {
                return;
            };
            if pr.state == ProgressState::Snapshot {
                self.send_snapshot_chunk(peer);
                return;
            }
            if !pr.can_send(self.cfg.max_inflight) {
                return;
            }
            if pr.state == ProgressState::Replicate && pr.next > last {
                return; // up to date
            }
            let prev = pr.next - 1;
            let Some(prev_term) = self.log.term(prev) else {
                // The entries it needs were compacted away: it gets the snapshot instead.
                self.send_snapshot_chunk(peer);
                return;
            };
            let entries = self.log.slice(
                pr.next,
                self.cfg.max_entries_per_message,
                self.cfg.max_bytes_per_message,
            );
            let last_sent = prev + entries.len() as u64;
            let replicate = pr.state == ProgressState::Replicate;
            if let Some(pr) = self.progress.get_mut(&peer) {
                pr.sent(last_sent);
            }
            self.send_append_message(peer, prev, prev_term, entries);
            if !replicate {
                return;
            }
        }
    }

    fn send_append_message(
        &mut self,
        peer: NodeId,
        prev: u64,
        prev_term: u64,
        entries: Vec<Entry>,
    ) {
        let msg = RaftMessage::AppendEntries {
            term: self.term,
            leader_id: self.id,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.committed(),
            read_round: self.read_only.round,
        };
        self.send(peer, msg);
    }

    /// Every heartbeat interval: an empty AppendEntries to each follower that is streaming
    /// (anchored at what it is known to hold, so it can never be rejected or truncate
    /// anything), a fresh probe to each follower still being probed, and a retransmission to a
    /// stream that has not moved for two heartbeats (a message was lost).
    pub(super) fn broadcast_heartbeat(&mut self) {
        for peer in self.peers.clone() {
            let Some(pr) = self.progress.get_mut(&peer) else {
                continue;
            };
            match pr.state {
                ProgressState::Probe => {
                    // The last probe is still unanswered a heartbeat later: it carries entries,
                    // and its answer waits for the follower's disk. An empty heartbeat next to
                    // the new probe is answered at once, so a follower whose fsync stalls still
                    // shows it is there (check-quorum, ReadIndex).
                    let unanswered = pr.probe_sent;
                    pr.probe_sent = false;
                    if unanswered {
                        self.send_heartbeat(peer);
                    }
                    self.send_append(peer);
                }
                ProgressState::Snapshot => {
                    // Keep the follower's election timer quiet during a long transfer, and
                    // resend a chunk whose answer has not come for two heartbeats.
                    if pr.snapshot_in_flight {
                        pr.stalled_heartbeats += 1;
                        if pr.stalled_heartbeats >= 2 {
                            pr.snapshot_in_flight = false;
                            pr.stalled_heartbeats = 0;
                        }
                    }
                    let at = self.log.snapshot();
                    self.send_append_message(peer, at.index, at.term, Vec::new());
                    self.send_snapshot_chunk(peer);
                }
                ProgressState::Replicate => {
                    if !pr.inflight.is_empty() && pr.matched == pr.matched_at_heartbeat {
                        pr.stalled_heartbeats += 1;
                    } else {
                        pr.stalled_heartbeats = 0;
                    }
                    pr.matched_at_heartbeat = pr.matched;
                    if pr.stalled_heartbeats >= 2 {
                        ::log::debug!(
                            "node {}: replication to node {peer} stalled at {}; probing again",
                            self.id,
                            pr.matched
                        );
                        let next = pr.matched + 1;
                        pr.become_probe(next);
                        self.send_heartbeat(peer);
                        self.send_append(peer);
                    } else {
                        self.send_heartbeat(peer);
                    }
                }
            }
        }
    }

    /// An empty AppendEntries anchored at what `peer` is known to hold: it cannot be refused
    /// (short of lost data) and cannot truncate anything.
    fn send_heartbeat(&mut self, peer: NodeId) {
        let Some(matched) = self.progress.get(&peer).map(|pr| pr.matched) else {
            return;
        };
        let term = self.log.term(matched).unwrap_or(0);
        self.send_append_message(peer, matched, term, Vec::new());
    }

    /// A heartbeat to every follower (a ReadIndex round).
    pub(super) fn send_heartbeats(&mut self) {
        for peer in self.peers.clone() {
            self.send_heartbeat(peer);
        }
    }

    /// A message from `from` as leader of `term` (our term): follow it and reset the election
    /// timer.
    pub(super) fn follow(&mut self, from: NodeId, term: u64) {
        match self.role {
            // `invalid` (validate.rs) refuses such a message before it gets here.
            Role::Leader => panic!(
                "node {}: node {from} acts as leader in my own term {term}, and the check that refuses this was bypassed",
                self.id
            ),
            Role::Candidate | Role::PreCandidate => {
                let why = format!("node {from} is leader of term {term}");
                self.become_follower(term, from, &why);
            }
            Role::Follower => {}
        }
        if self.leader != from {
            ::log::info!("node {}: new leader node {from} in term {term}", self.id);
            self.leader = from;
        }
        self.election_elapsed = 0;
    }

    /// Follower side of AppendEntries (§5.3). `term` equals ours here (`handle_term` ran).
    pub(super) fn handle_append_entries(&mut self, from: NodeId, req: AppendArgs<'_>) {
        let AppendArgs {
            term,
            prev,
            prev_term,
            entries,
            leader_commit,
            read_round,
        } = req;
        self.follow(from, term);

        // Entries at or before our snapshot are committed, so they match the leader's: skip
        // them and check the rest against the snapshot's last entry.
        let snap = self.log.snapshot();
        let (prev, prev_term, entries) = if prev < snap.index {
            let skip = (snap.index - prev) as usize;
            if entries.len() <= skip {
                let msg = RaftMessage::AppendEntriesReply {
                    term,
                    success: true,
                    match_index: prev + entries.len() as u64,
                    conflict: None,
                    read_round,
                };
                self.send_after_persist(from, msg);
                return;
            }
            (snap.index, snap.term, &entries[skip..])
        } else {
            (prev, prev_term, entries)
        };

        let last = self.log.last_index();
        let reject = |hint: ConflictHint| RaftMessage::AppendEntriesReply {
            term,
            success: false,
            match_index: prev,
            conflict: Some(hint),
            read_round,
        };
        if prev > last {
            // Our log is too short: tell the leader where it ends.
            let msg = reject(ConflictHint {
                xterm: 0,
                xindex: 0,
                xlen: last + 1,
            });
            self.send_after_persist(from, msg);
            return;
        }
        if !self.log.matches(prev, prev_term) {
            // Name the conflicting term and where it starts, so the leader skips it at once.
            let xterm = self.log.term(prev).unwrap_or(0);
            let msg = reject(ConflictHint {
                xterm,
                xindex: self.log.first_index_of_term_at(prev),
                xlen: last + 1,
            });
            self.send_after_persist(from, msg);
            return;
        }
        let cut = self.log.merge(entries);
        if let Some(at) = cut {
            ::log::info!(
                "node {}: dropped conflicting log entries from index {at} in term {term}",
                self.id
            );
        }
        // BUG (truncate_stale_append, `bugs` feature only): cut the log after this message's entries,
        // conflict or not, so a stale, shorter AppendEntries drops acknowledged entries.
        #[cfg(feature = "bugs")]
        if bug!(self, truncate_stale_append) {
            self.log.bug_truncate_after(prev + entries.len() as u64);
        }
        // A configuration takes effect when appended, and the previous one again when a
        // conflict cuts it away (thesis §4.1).
        self.note_log_changed(cut, entries);
        // Only what the leader just verified matches may be marked committed: entries past
        // `prev + entries.len()` could still be a divergent suffix of ours.
        let verified = prev + entries.len() as u64;
        if self.log.commit_to(leader_commit.min(verified)) {
            ::log::debug!(
                "node {}: commit index now {} in term {term}",
                self.id,
                self.log.committed()
            );
        }
        if entries.is_empty() {
            // A heartbeat. Its answer vouches only for what is durable already (the log up to
            // `prev` matches the leader's, and up to `stable` it is on disk), so it leaves at
            // once instead of waiting behind an unrelated write in flight: a follower whose
            // disk stalls for a second must not cost the leader its check-quorum or hold up
            // its ReadIndex rounds.
            let msg = RaftMessage::AppendEntriesReply {
                term,
                success: true,
                match_index: verified.min(self.log.stable()),
                conflict: None,
                read_round,
            };
            self.send(from, msg);
            return;
        }
        let msg = RaftMessage::AppendEntriesReply {
            term,
            success: true,
            match_index: verified,
            conflict: None,
            read_round,
        };
        self.send_after_persist(from, msg);
    }

    /// Leader side: a follower's answer, of our current term (`handle_term` ran).
    pub(super) fn handle_append_reply(
        &mut self,
        from: NodeId,
        success: bool,
        index: u64,
        conflict: Option<ConflictHint>,
        read_round: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        // Any answer in our term, success or not, shows the follower still accepted us as
        // leader after `read_round` began.
        if read_round > pr.read_round {
            pr.read_round = read_round;
            self.release_confirmed_reads();
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if success {
            // `validate.rs` refused a match past our log before this point.
            debug_assert!(index <= last, "a match past the log got through validation");
            if pr.state == ProgressState::Snapshot && index >= pr.snapshot_index {
                // It holds everything the snapshot covers after all: no transfer needed.
                pr.become_probe(index + 1);
            }
            if pr.acknowledge(index) {
                self.maybe_commit();
            }
            self.maybe_send_timeout_now();
            return;
        }
        // A rejection. Ignore it if it answers a request we have already moved past:
        // reordered or duplicated replies must not move `next` around.
        let stale = match pr.state {
            ProgressState::Replicate => index <= pr.matched,
            ProgressState::Probe => index + 1 != pr.next,
            // Heartbeats during a transfer may be refused; the transfer decides.
            ProgressState::Snapshot => true,
        };
        if stale {
            return;
        }
        let hint = conflict.unwrap_or(ConflictHint {
            xterm: 0,
            xindex: 0,
            xlen: index,
        });
        let candidate = if hint.xterm == 0 {
            hint.xlen
        } else {
            match self.log.last_index_of_term(hint.xterm, index) {
                Some(i) => i + 1,
                None => hint.xindex,
            }
        };
        // Always below the rejected prev (so the probe makes progress) and above what is known
        // to match.
        let next = candidate.min(index).max(1);
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.become_probe(next);
        ::log::debug!(
            "node {}: node {from} rejected prev {index}; probing from {}",
            self.id,
            pr.next
        );
    }

    /// Commits the highest index a majority holds, but only if that entry is from the current
    /// term (§5.4.2, Figure 8). The leader's own copy counts only once it is durable.
    pub(super) fn maybe_commit(&mut self) {
        // Only voters of the configuration in effect count, each with the data dir it was
        // admitted with; the leader's own copy counts if it is one of them (a leader removing
        // itself manages a cluster it is not part of, thesis §4.2.2).
        let mut matches: Vec<u64> = self
            .membership
            .voters()
            .map(|v| {
                if v == self.id {
                    self.log.stable()
                } else if self.counts_progress(v) {
                    self.progress.get(&v).map_or(0, |pr| pr.matched)
                } else {
                    0
                }
            })
            .collect();
        let index = committed_index(&mut matches);
        // BUG (commit_old_term, `bugs` feature only): count replicas of an earlier term's entry too.
        let old_term_bug = bug!(self, commit_old_term);
        if index > self.log.committed() && (self.log.term(index) == Some(self.term) || old_term_bug)
        {
            self.log.commit_to(index);
            self.release_reads_waiting_for_commit();
            ::log::debug!(
                "node {}: commit index now {index} in term {}",
                self.id,
                self.term
            );
            self.step_down_if_removed();
        }
    }
}

/// The fields of an AppendEntries request.
pub(super) struct AppendArgs<'a> {
    pub term: u64,
    pub prev: u64,
    pub prev_term: u64,
    pub entries: &'a [Entry],
    pub leader_commit: u64,
    pub read_round: u64,
}
