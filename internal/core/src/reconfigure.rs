//! Membership changes (thesis chapter 4): the configuration in effect, kept in step with the
//! log; the changes a leader makes (asked for, or on its own: promoting a learner that caught
//! up, re-admitting a member that lost its disk); and the rules about who may vote.

use super::progress::Progress;
use super::quorum::majority;
use super::{ConfigError, Raft};
use crate::membership::{ChangeError, Member, MemberRole, Membership, MembershipChange};
use crate::message::{Entry, EntryKind, Envelope, NodeId, RaftMessage, Role};

/// The `Config` entries of a restored log.
pub(super) fn configs_in(entries: &[Entry]) -> Result<Vec<(u64, Membership)>, ConfigError> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Config)
        .map(|e| {
            Membership::decode(&e.data)
                .map(|m| (e.index, m))
                .map_err(|reason| ConfigError::BadConfig {
                    index: e.index,
                    reason,
                })
        })
        .collect()
}

impl Raft {
    /// The configuration in effect (the latest in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The configuration in effect at `index` (for a snapshot taken there).
    pub fn membership_at(&self, index: u64) -> Membership {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(|| self.base_membership.clone(), |(_, m)| m.clone())
    }

    /// Index of the latest configuration entry at or before `index` (0: the snapshot's).
    pub fn membership_index_at(&self, index: u64) -> u64 {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(0, |c| c.0)
    }

    /// Index of the latest configuration entry in the log (0 if it comes from the snapshot).
    pub fn membership_index(&self) -> u64 {
        self.configs.last().map_or(0, |c| c.0)
    }

    /// May this node campaign: is it a voter, admitted with its own data dir?
    pub fn can_vote(&self) -> bool {
        self.membership.counts(self.id, self.cfg.incarnation)
    }

    /// May this node grant a vote: does it remember what it promised? Not when it knows no
    /// configuration at all (an empty data dir waiting to be founded or caught up), nor when
    /// its configuration names it with another data dir (it lost its disk). A learner, or a
    /// node whose log is too far behind to know it was promoted, does grant: it remembers its
    /// votes and its log, and a candidate counts the vote only if its own configuration makes
    /// this node a voter with this data dir. Refusing would let a lagging new voter block
    /// every election it is needed for, with no leader to catch it up.
    pub(super) fn may_grant_votes(&self) -> bool {
        if self.membership.is_empty() {
            return false;
        }
        self.membership
            .get(self.id)
            .is_none_or(|me| me.incarnation == 0 || me.incarnation == self.cfg.incarnation)
    }

    pub(super) fn describe_membership(&self) -> String {
        if self.membership.is_empty() {
            return "no configuration yet: waits to be founded or caught up".into();
        }
        let voters: Vec<String> = self.membership.voters().map(|v| v.to_string()).collect();
        let learners: Vec<String> = self.membership.learners().map(|v| v.to_string()).collect();
        let me = if self.can_vote() {
            "a voter"
        } else if self.membership.is_voter(self.id) {
            "a voter admitted with another data dir, so not counted until re-admitted"
        } else if self.membership.contains(self.id) {
            "a learner"
        } else {
            "not a member"
        };
        format!(
            "voters [{}], learners [{}]; this node is {me}",
            voters.join(","),
            learners.join(",")
        )
    }

    /// Recomputes the configuration in effect after the log or snapshot changed, and does what
    /// a change requires of this node's role.
    pub(super) fn refresh_membership(&mut self) {
        // Called for every AppendEntries a follower takes: compare first, clone on change only.
        let next = self
            .configs
            .last()
            .map_or(&self.base_membership, |(_, m)| m);
        if *next == self.membership {
            return;
        }
        self.membership = next.clone();
        self.membership_changed = true;
        self.peers = self
            .membership
            .members
            .keys()
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        if !self.membership.is_empty() {
            self.bootstrap = None;
        }
        ::log::info!(
            "node {}: configuration now {} (term {})",
            self.id,
            self.describe_membership(),
            self.term
        );
        match self.role {
            Role::Leader => {
                let next = self.log.last_index() + 1;
                self.progress.retain(|id, _| self.peers.contains(id));
                for peer in &self.peers {
                    self.progress
                        .entry(*peer)
                        .or_insert_with(|| Progress::new(next));
                }
                if let Some(t) = self.transferring_to() {
                    if !self.membership.is_voter(t) {
                        self.transfer = None;
                    }
                }
            }
            Role::Candidate | Role::PreCandidate if !self.can_vote() => {
                let term = self.term;
                self.become_follower(term, 0, "no longer a voter");
            }
            _ => {}
        }
    }

    /// The log changed on a follower: `cut` is where a conflict truncated it (if it did) and
    /// `entries` are what the leader sent. Configurations cut away no longer apply (§4.1: the
    /// previous one is in effect again); new ones apply at once.
    pub(super) fn note_log_changed(&mut self, cut: Option<u64>, entries: &[Entry]) {
        let last = self.log.last_index();
        self.configs
            .retain(|(i, _)| *i <= last && cut.is_none_or(|at| *i < at));
        let after = self
            .configs
            .last()
            .map_or(self.log.snapshot().index, |c| c.0);
        for e in entries {
            if e.kind != EntryKind::Config || e.index <= after || self.log.get(e.index) != Some(e) {
                continue;
            }
            // `validate.rs` refused a message carrying a configuration that does not decode.
            if let Ok(m) = Membership::decode(&e.data) {
                self.configs.push((e.index, m));
            }
        }
        self.refresh_membership();
    }

    /// The log now starts after a snapshot at `index` taken with `membership`.
    pub(super) fn note_compacted(&mut self, index: u64, membership: Option<Membership>) {
        let mut base = None;
        self.configs.retain(|(i, m)| {
            if *i <= index {
                base = Some(m.clone());
                false
            } else {
                true
            }
        });
        if let Some(m) = membership.filter(|m| !m.is_empty()).or(base) {
            self.base_membership = m;
        }
        let last = self.log.last_index();
        self.configs.retain(|(i, _)| *i <= last);
        self.refresh_membership();
    }

    /// A vote request from a node that is not a member of our configuration (a removed node
    /// that never heard of its removal) or that speaks from another data dir than the one it
    /// was admitted with (it lost its disk) is ignored whole: it must not even raise our term,
    /// or a removed node could depose leader after leader. A learner of ours that campaigns is
    /// heard: it only campaigns if its log (ahead of ours) made it a voter.
    pub(super) fn not_from_a_voter(&self, env: &Envelope) -> Option<String> {
        let RaftMessage::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } = env.msg
        else {
            return None;
        };
        if self.membership.is_empty() {
            return None;
        }
        match self.membership.get(env.from) {
            // Not a member of *our* configuration, but with a log at least as up to date as
            // ours: probably added by a configuration we have not received yet (refusing it
            // could leave a cluster whose new voter is needed without a leader). A removed
            // node stops receiving the log, falls behind, and is ignored from then on.
            None if self.log.is_up_to_date(last_log_index, last_log_term) => None,
            None => Some(format!("node {} is not a member", env.from)),
            Some(m) if m.incarnation != 0 && m.incarnation != env.incarnation => Some(format!(
                "node {} speaks with data dir {:x}, not the one it was admitted with",
                env.from, env.incarnation
            )),
            Some(_) => None,
        }
    }

    /// The voters other than this node: whom an election asks.
    pub(super) fn voter_peers(&self) -> Vec<NodeId> {
        self.membership.voters().filter(|v| *v != self.id).collect()
    }

    /// Does `peer`'s progress speak for a voter (right incarnation)?
    pub(super) fn counts_progress(&self, peer: NodeId) -> bool {
        self.progress
            .get(&peer)
            .is_some_and(|pr| self.membership.counts(peer, pr.incarnation))
    }

    /// Why a change cannot start now, if it cannot: one at a time, and only once this leader
    /// has committed an entry of its own term (the single-server fix).
    fn change_busy(&self) -> Option<String> {
        if self.log.term(self.log.committed()) != Some(self.term) {
            return Some(format!(
                "the leader has not yet committed an entry of its term {}; try again shortly",
                self.term
            ));
        }
        let pending = self.membership_index();
        if pending > self.log.committed() {
            return Some(format!(
                "the configuration change at index {pending} is not committed yet"
            ));
        }
        if let Some(t) = self.transferring_to() {
            return Some(format!("leadership is being transferred to node {t}"));
        }
        None
    }

    /// Heard from within an election timeout.
    fn live(&self, peer: NodeId) -> bool {
        self.progress
            .get(&peer)
            .is_some_and(|pr| pr.heard_ticks < self.cfg.election_ticks_max)
    }

    /// Answered this leader within two heartbeat intervals (this node itself: always). What
    /// the `Unsafe` check of a change counts as a live voter: a voter that was just killed is
    /// judged down two heartbeats later rather than an election timeout later, which narrows
    /// the window in which a change that needs it could be accepted (a node can always die
    /// right after the check: then the change waits for it, as any entry would).
    pub fn reachable(&self, peer: NodeId) -> bool {
        peer == self.id
            || self
                .progress
                .get(&peer)
                .is_some_and(|pr| pr.heard_ticks <= 2 * self.cfg.heartbeat_ticks)
    }

    /// Close enough to the commit index to vote without stalling commits, and holding the
    /// configuration in effect (so it knows it is a member when it is promoted).
    fn caught_up(&self, peer: NodeId) -> bool {
        self.progress.get(&peer).is_some_and(|pr| {
            pr.matched >= self.membership_index()
                && pr.matched + self.cfg.catch_up_entries >= self.log.committed()
                && self.live(peer)
        })
    }

    /// Asks the leader to change the configuration. Returns the index of the new configuration
    /// entry (the change is done once it is committed). `force` skips the safety checks (a
    /// quorum of live voters left, a learner caught up), never the one-at-a-time rule.
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
        force: bool,
    ) -> Result<u64, ChangeError> {
        if self.role != Role::Leader {
            return Err(ChangeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(why) = self.change_busy() {
            return Err(ChangeError::Busy(why));
        }
        let mut next = self.membership.clone();
        let id = change.node();
        if id == 0 {
            return Err(ChangeError::Invalid("node id 0 means \"none\"".into()));
        }
        match change {
            MembershipChange::AddLearner { addr, promote, .. } => {
                if let Some(m) = next.get(id) {
                    return Err(ChangeError::Invalid(format!(
                        "node {id} is already a {} (at {})",
                        role_name(m.role),
                        m.addr
                    )));
                }
                next.members.insert(
                    id,
                    Member {
                        role: MemberRole::Learner,
                        addr,
                        incarnation: 0,
                        promote,
                    },
                );
            }
            MembershipChange::Promote { .. } => {
                match next.get(id).map(|m| m.role) {
                    None => return Err(ChangeError::Invalid(format!("node {id} is not a member"))),
                    Some(MemberRole::Voter) => {
                        return Err(ChangeError::Invalid(format!(
                            "node {id} is already a voter"
                        )))
                    }
                    Some(MemberRole::Learner) => {}
                }
                let heard = self.progress.get(&id).map_or(0, |pr| pr.incarnation);
                if !force && !self.caught_up(id) {
                    let matched = self.progress.get(&id).map_or(0, |pr| pr.matched);
                    return Err(ChangeError::Unsafe(format!(
                        "node {id} has not caught up (it holds the log to index {matched}, the commit index is {}); promote it once it has, or force",
                        self.log.committed()
                    )));
                }
                if let Some(m) = next.members.get_mut(&id) {
                    m.role = MemberRole::Voter;
                    m.promote = false;
                    m.incarnation = heard;
                }
            }
            MembershipChange::Remove { .. } => {
                if next.members.remove(&id).is_none() {
                    return Err(ChangeError::Invalid(format!("node {id} is not a member")));
                }
            }
        }
        self.membership
            .single_change_to(&next)
            .map_err(ChangeError::Invalid)?;
        if !force {
            self.check_quorum_after(&next)?;
        }
        Ok(self.append_config(next, "asked"))
    }

    /// Refuses a configuration whose voters that are alive now would not make a quorum.
    fn check_quorum_after(&self, next: &Membership) -> Result<(), ChangeError> {
        let voters: Vec<NodeId> = next.voters().collect();
        let live: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| {
                *v == self.id
                    || (self.reachable(*v)
                        && self
                            .progress
                            .get(v)
                            .is_some_and(|pr| next.counts(*v, pr.incarnation)))
            })
            .collect();
        let need = majority(voters.len());
        if live.len() < need {
            let down: Vec<String> = voters
                .iter()
                .filter(|v| !live.contains(v))
                .map(|v| v.to_string())
                .collect();
            return Err(ChangeError::Unsafe(format!(
                "after this change {} of its {} voters would be reachable (down or not caught up: {}), fewer than the {need} a quorum needs; bring them back first, or force",
                live.len(),
                voters.len(),
                down.join(",")
            )));
        }
        Ok(())
    }

    fn append_config(&mut self, next: Membership, why: &str) -> u64 {
        let index = self.log.last_index() + 1;
        self.log.append(Entry::config(self.term, index, &next));
        self.configs.push((index, next));
        ::log::info!(
            "node {}: proposing a configuration change ({why}) at index {index} in term {}",
            self.id,
            self.term
        );
        self.refresh_membership();
        index
    }

    /// Changes the leader makes on its own, one at a time, each once it is safe:
    /// * a voter speaking from a new data dir (it lost its disk) is demoted to a learner at
    ///   once, to be promoted again (two single-server changes: see
    ///   `Membership::single_change_to`);
    /// * a learner added as a future voter (or demoted that way) is promoted once it caught
    ///   up, with the data dir it speaks from: it then holds the log up to the configuration
    ///   that admits it, and only from then on counts;
    /// * a voter whose data dir was never recorded (a cluster founded before incarnations)
    ///   gets it recorded.
    pub(super) fn maybe_reconfigure(&mut self) {
        if self.role != Role::Leader || self.change_busy().is_some() {
            return;
        }
        for (id, m) in self.membership.members.clone() {
            let heard = self.progress.get(&id).map_or(0, |pr| pr.incarnation);
            if id == self.id || heard == 0 || !self.live(id) {
                continue;
            }
            let mut next = self.membership.clone();
            let Some(member) = next.members.get_mut(&id) else {
                continue;
            };
            let why = match m.role {
                MemberRole::Voter if m.incarnation != 0 && m.incarnation != heard => {
                    member.role = MemberRole::Learner;
                    member.promote = true;
                    member.incarnation = heard;
                    format!(
                        "node {id} came back with a new data dir {heard:x} (it was {:x}): it lost what it acknowledged, so it becomes a learner until it has caught up",
                        m.incarnation
                    )
                }
                MemberRole::Voter if m.incarnation == 0 && self.caught_up(id) => {
                    member.incarnation = heard;
                    format!("recording node {id}'s data dir {heard:x}")
                }
                MemberRole::Learner if m.promote && self.caught_up(id) => {
                    member.role = MemberRole::Voter;
                    member.promote = false;
                    member.incarnation = heard;
                    format!("node {id} caught up: promoting it to voter")
                }
                _ => continue,
            };
            if self.membership.single_change_to(&next).is_err() {
                continue;
            }
            self.append_config(next, &why);
            return;
        }
    }

    /// A leader that is not a voter of the committed configuration (it removed itself) steps
    /// down once that configuration is committed: it has handed its log to the cluster that
    /// continues without it (thesis §4.2.2).
    pub(super) fn step_down_if_removed(&mut self) {
        if self.role == Role::Leader
            && !self.membership.is_voter(self.id)
            && self.membership_index() <= self.log.committed()
        {
            // Hand over at once to a voter holding the whole log, so the cluster does not wait
            // an election timeout for a new leader.
            let last = self.log.last_index();
            let successor = self
                .voter_peers()
                .into_iter()
                .filter(|v| self.counts_progress(*v))
                .find(|v| self.progress.get(v).is_some_and(|pr| pr.matched == last));
            if let Some(next) = successor {
                self.send(next, RaftMessage::TimeoutNow { term: self.term });
            }
            let term = self.term;
            self.become_follower(
                term,
                0,
                "the configuration that removes it is committed; handing over",
            );
        }
    }
}

pub(super) fn role_name(role: MemberRole) -> &'static str {
    match role {
        MemberRole::Voter => "voter",
        MemberRole::Learner => "learner",
    }
}

impl Raft {
    /// Disaster recovery (`--force-new-cluster`): when a majority of voters is lost for good,
    /// restart this node from its own log as the only voter of a new configuration. Everything
    /// in its log counts as committed, including entries that never were (they may be applied
    /// although the old cluster never acknowledged them), and writes acknowledged by the old
    /// cluster but missing here are lost. Call once, before the first tick.
    pub fn force_new_cluster(&mut self) -> u64 {
        let mut next = Membership::default();
        let addr = self
            .membership
            .get(self.id)
            .map(|m| m.addr.clone())
            .or_else(|| self.cfg.addrs.get(&self.id).cloned())
            .unwrap_or_default();
        next.members.insert(
            self.id,
            Member {
                role: MemberRole::Voter,
                addr,
                incarnation: self.cfg.incarnation,
                promote: false,
            },
        );
        let term = self.term + 1;
        self.reset(term);
        self.role = Role::Follower;
        self.bootstrap = None;
        let last = self.log.last_index();
        self.log.commit_to(last);
        ::log::warn!(
            "node {}: FORCING A NEW CLUSTER in term {term}: this node is now the only voter, and all {last} entries of its log count as committed whether or not the old cluster committed them",
            self.id
        );
        self.append_config(next, "--force-new-cluster")
    }
}
