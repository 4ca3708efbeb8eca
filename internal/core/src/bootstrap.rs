//! Founding a cluster (thesis §4.4) without mistaking a lost disk for a new cluster.
//!
//! A node with an empty data dir cannot tell by itself whether the cluster is new or whether it
//! lost its disk. With `Founding::Unanimous` it asks every founding member. Only when every one
//! of them answers that its data dir is empty too is the cluster founded: the founding member
//! with the lowest id writes the first entry (index 1, term 1), a configuration of the founding
//! voters with the incarnations they answered with, and every other founding member adopts
//! that entry from whichever member holds it, if it names that member with its own data dir. If any member already holds the cluster's configuration,
//! this node never founds anything: it waits, never votes, and is caught up by the leader,
//! which re-admits it once it holds the log (`reconfigure.rs`). One exception: a founding
//! member that peers founded without it (it asked last), or whose own copy of the founding
//! entry never reached its disk (it crashed at once), has an empty log although the others
//! founded. Its data dir is the one the founding entry names, and it never voted or
//! acknowledged anything (that needs the entry, which is written before any vote), so it
//! adopts the founding entry from a peer: without this, founders that crashed that early could
//! leave too few voters to ever elect a leader. A majority would not do: two
//! wiped nodes of three that see each other while the third (holding the data) is cut off
//! would found a new cluster and silently drop the committed history.

use super::Raft;
use crate::membership::Membership;
use crate::message::{Entry, EntryKind, Envelope, NodeId, RaftMessage};
use std::collections::BTreeMap;

/// The answers collected while the log is empty.
#[derive(Debug, Default)]
pub(super) struct Probe {
    /// Founding members that answered "my data dir is empty too", with their incarnations.
    empty: BTreeMap<NodeId, u64>,
    /// The data dir each founding member was last heard from with.
    seen: BTreeMap<NodeId, u64>,
    /// The founding author's data dirs in the order they were first heard from.
    author_dirs: Vec<u64>,
    /// Some member holds the cluster's data: this node founds nothing, it waits to be caught
    /// up (still asking, so it can take the configuration if it turns out to be admitted).
    waiting: bool,
    /// The founding author's data dir this node last told "my data dir is empty": that author
    /// may found counting on it, so no founding entry naming the author with another data dir
    /// may be taken (it was written by a disk since lost) until the author says it waits.
    told: Option<u64>,
    /// Ticks since the last round of questions (`None`: none asked yet).
    elapsed: Option<u32>,
}

impl Raft {
    /// The founding member that writes the founding entry: the lowest id.
    fn founding_author(&self) -> NodeId {
        self.cfg.voters.iter().min().copied().unwrap_or(0)
    }

    /// Answers and collects the founding round's messages. Returns whether `env` was one.
    pub(super) fn bootstrap_message(&mut self, env: &Envelope) -> bool {
        let author = self.founding_author();
        match env.msg {
            RaftMessage::Bootstrap { .. } => {
                let initialized = !self.membership.is_empty();
                let mut waiting = false;
                if let Some(probe) = self.bootstrap.as_mut() {
                    if env.from == author && !probe.author_dirs.contains(&env.incarnation) {
                        probe.author_dirs.push(env.incarnation);
                    }
                    if self.cfg.voters.contains(&env.from) {
                        probe.seen.insert(env.from, env.incarnation);
                        if env.from == author && !initialized {
                            probe.told = Some(env.incarnation);
                        }
                    }
                    waiting = probe.waiting;
                }
                let founding = self
                    .log
                    .get(1)
                    .filter(|e| e.kind == EntryKind::Config && e.term == 1)
                    .and_then(|e| Membership::decode(&e.data).ok());
                // Only a node holding log entries vouches for a configuration (one that took
                // a configuration this way itself holds none yet).
                let membership =
                    (initialized && self.log.last_index() > 0).then(|| self.membership.clone());
                self.send(
                    env.from,
                    RaftMessage::BootstrapReply {
                        term: self.term,
                        asker: env.incarnation,
                        initialized,
                        waiting,
                        founding,
                        membership,
                    },
                );
                true
            }
            RaftMessage::BootstrapReply {
                asker,
                initialized,
                waiting,
                ref founding,
                ref membership,
                ..
            } => {
                if !self.cfg.voters.contains(&env.from) || asker != self.cfg.incarnation {
                    return true;
                }
                let me = (self.id, self.cfg.incarnation);
                let names_me = |m: &Membership| m.get(me.0).is_some_and(|x| x.incarnation == me.1);
                let Some(probe) = self.bootstrap.as_mut() else {
                    return true;
                };
                probe.seen.insert(env.from, env.incarnation);
                if env.from == author && !probe.author_dirs.contains(&env.incarnation) {
                    probe.author_dirs.push(env.incarnation);
                }
                // A data dir of the author first heard from after the one we told "empty" is
                // its successor: the one we told is gone. One heard from before is a late
                // message from a predecessor, and changes nothing.
                let position = |dir: u64| probe.author_dirs.iter().position(|d| *d == dir);
                let newer = probe
                    .told
                    .is_some_and(|t| position(env.incarnation) > position(t));
                if env.from == author
                    && probe.told.is_some()
                    && (((waiting || initialized) && probe.told == Some(env.incarnation)) || newer)
                {
                    // The author founded, gave up founding, or speaks from another data dir
                    // (the one we told is gone and founds nothing): nothing counts on our
                    // "empty" any more. A new author data dir that asks is told again.
                    probe.told = None;
                }
                let told = probe.told;

                if let Some(m) = founding.as_ref().filter(|m| {
                    names_me(m)
                        && told.is_none_or(|t| m.get(author).is_some_and(|a| a.incarnation == t))
                }) {
                    ::log::info!(
                        "node {}: node {} holds the founding entry, which names this node's data dir as a voter; taking it",
                        self.id,
                        env.from
                    );
                    let m = m.clone();
                    self.found_with(m);
                    return true;
                }
                if let Some(m) = membership
                    .as_ref()
                    .filter(|m| founding.is_none() && told.is_none() && names_me(m))
                {
                    // Our log is empty and our data dir is the one the cluster admitted: we
                    // never wrote (so never promised) anything. The founding entry is gone
                    // from the replier's log (compacted), so take its configuration until the
                    // leader sends us the log.
                    ::log::info!(
                        "node {}: node {} holds a configuration that admitted this data dir; this node holds nothing yet and waits for the leader's log",
                        self.id,
                        env.from
                    );
                    self.bootstrap = None;
                    self.base_membership = m.clone();
                    self.refresh_membership();
                    return true;
                }
                if initialized {
                    if !probe.waiting {
                        ::log::warn!(
                            "node {}: the data dir is empty but node {} already holds the cluster's configuration: this node lost its data (or is new); it will not vote until the leader has caught it up and re-admitted it",
                            self.id,
                            env.from
                        );
                    }
                    probe.waiting = true;
                    return true;
                }
                probe.empty.insert(env.from, env.incarnation);
                self.maybe_found();
                true
            }
            _ => false,
        }
    }

    /// Every few ticks while the log is empty: ask the founding members that have not answered.
    pub(super) fn tick_bootstrap(&mut self) {
        let Some(probe) = self.bootstrap.as_mut() else {
            return;
        };
        let elapsed = probe.elapsed.map_or(u32::MAX, |e| e + 1);
        if elapsed < self.cfg.heartbeat_ticks {
            probe.elapsed = Some(elapsed);
            return;
        }
        probe.elapsed = Some(0);
        // Everyone, answered or not: an answer also brings news of members we cannot reach.
        let asked: Vec<NodeId> = self
            .cfg
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.id)
            .collect();
        for peer in asked {
            self.send(peer, RaftMessage::Bootstrap { term: self.term });
        }
        self.maybe_found();
    }

    fn maybe_found(&mut self) {
        let Some(probe) = self.bootstrap.as_ref() else {
            return;
        };
        if probe.waiting {
            return;
        }
        // One author for the founding entry (the founding member with the lowest id); the
        // others adopt its entry. Were each to write its own, a member whose disk was lost
        // during founding could leave two founding entries that differ in its data dir.
        if self.founding_author() != self.id {
            return;
        }
        let everyone = self
            .cfg
            .voters
            .iter()
            .all(|v| *v == self.id || probe.empty.contains_key(v));
        if !everyone {
            ::log::debug!(
                "node {}: founding members that answered empty so far: {:?}",
                self.id,
                probe.empty.keys().collect::<Vec<_>>()
            );
            return;
        }
        let mut incarnations = probe.empty.clone();
        incarnations.insert(self.id, self.cfg.incarnation);
        let founding = Membership::of_voters(&self.cfg.voters, &self.cfg.addrs, &incarnations);
        ::log::info!(
            "node {}: every founding member's data dir is empty: founding the cluster",
            self.id
        );
        self.found_with(founding);
    }

    /// Writes the founding entry (the same on every founding member).
    fn found_with(&mut self, founding: Membership) {
        self.bootstrap = None;
        if self.term == 0 {
            self.term = 1;
            self.vote = 0;
        }
        // Every founding member writes this same entry: it is committed by construction, once
        // it is on this node's disk (`persisted`). Applied before that, a crash of this write
        // would leave the node having applied an entry it no longer has, and the cluster could
        // be founded again with another.
        self.log.append(Entry::config(1, 1, &founding));
        self.founding_unsynced = true;
        self.configs.push((1, founding));
        self.refresh_membership();
    }
}
