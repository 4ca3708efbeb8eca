//! Founding a cluster (thesis §4.4) without mistaking a lost disk for a new cluster.
//!
//! A node with an empty data dir cannot tell by itself whether the cluster is new or whether it
//! lost its disk. With `Founding::Unanimous` it asks every founding member. Only when every one
//! of them answers that its data dir is empty too is the cluster founded: each node writes the
//! same first entry (index 1, term 1), a configuration of the founding voters with the
//! incarnations they answered with. If any member already holds the cluster's configuration,
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
    /// Ticks since the last round of questions (`None`: none asked yet).
    elapsed: Option<u32>,
}

impl Raft {
    /// Answers and collects the founding round's messages. Returns whether `env` was one.
    pub(super) fn bootstrap_message(&mut self, env: &Envelope) -> bool {
        match env.msg {
            RaftMessage::Bootstrap { .. } => {
                let initialized = !self.membership.is_empty();
                let founding = self
                    .log
                    .get(1)
                    .filter(|e| e.kind == EntryKind::Config && e.term == 1)
                    .and_then(|e| Membership::decode(&e.data).ok());
                let mut empty: Vec<(NodeId, u64)> = match &self.bootstrap {
                    Some(probe) => probe.empty.iter().map(|(id, inc)| (*id, *inc)).collect(),
                    None => Vec::new(),
                };
                if !initialized {
                    empty.push((self.id, self.cfg.incarnation));
                }
                self.send(
                    env.from,
                    RaftMessage::BootstrapReply {
                        term: self.term,
                        asker: env.incarnation,
                        initialized,
                        empty,
                        founding,
                    },
                );
                true
            }
            RaftMessage::BootstrapReply {
                asker,
                initialized,
                ref empty,
                ref founding,
                ..
            } => {
                let Some(probe) = self.bootstrap.as_mut() else {
                    return true;
                };
                if !self.cfg.voters.contains(&env.from) || asker != self.cfg.incarnation {
                    return true;
                }
                if let Some(m) = founding.as_ref().filter(|m| {
                    m.get(self.id)
                        .is_some_and(|me| me.incarnation == self.cfg.incarnation)
                }) {
                    ::log::info!(
                        "node {}: node {} already founded the cluster with this node's data dir as a voter; adopting its founding entry",
                        self.id,
                        env.from
                    );
                    let m = m.clone();
                    self.found_with(m);
                    return true;
                }
                if initialized {
                    ::log::warn!(
                        "node {}: the data dir is empty but node {} already holds the cluster's configuration: this node lost its data (or is new); it will not vote until the leader has caught it up and re-admitted it",
                        self.id,
                        env.from
                    );
                    self.bootstrap = None;
                    return true;
                }
                probe.empty.insert(env.from, env.incarnation);
                for (id, inc) in empty {
                    if *id != self.id && self.cfg.voters.contains(id) {
                        probe.empty.entry(*id).or_insert(*inc);
                    }
                }
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
        let everyone = self
            .cfg
            .voters
            .iter()
            .all(|v| *v == self.id || probe.empty.contains_key(v));
        if !everyone {
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
        // Every founding member writes this same entry: it is committed by construction.
        self.log.append(Entry::config(1, 1, &founding));
        self.log.commit_to(1);
        self.configs.push((1, founding));
        self.refresh_membership();
    }
}
