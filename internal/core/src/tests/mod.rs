//! One unit test per rule of §5.1–5.4 of the extended Raft paper ("In Search of an
//! Understandable Consensus Algorithm (Extended Version)"), plus the pre-vote and check-quorum
//! extensions (Ongaro's thesis §9.6, §6.2), run against the pure core: inputs go in through
//! `tick`/`step`/`propose`, outputs come out of `ready()`/`advance()`.
//!
//! Each test fails if the rule it names is broken. Helpers live here; the tests are split by
//! section.

use super::*;
use crate::message::ConflictHint;
use std::collections::BTreeSet;

mod async_persist;
mod membership;
mod paper_5_1;
mod paper_5_2;
mod paper_5_3;
mod paper_5_4;
mod pre_vote;
mod read_index;
mod refused;
mod snapshot;

/// Pinned election timeout: exactly this many ticks (the range is `[ELECTION, ELECTION + 1)`).
pub(super) const ELECTION: u32 = 10;
pub(super) const HEARTBEAT: u32 = 3;

/// Node `id` of a cluster of voters `1..=n`, with a pinned election timeout and the plain
/// algorithm (no pre-vote, no check-quorum). Tests about the extensions switch them on.
pub(super) fn config(id: NodeId, n: u64) -> Config {
    let mut cfg = Config::new(id, (1..=n).collect());
    cfg.election_ticks_min = ELECTION;
    cfg.election_ticks_max = ELECTION + 1;
    cfg.heartbeat_ticks = HEARTBEAT;
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    // A compaction drops the whole log up to the snapshot; the tests of the log kept behind
    // it set their own.
    cfg.log_behind_snapshot = 0;
    cfg
}

/// A log holding one command per given term, at indexes 1, 2, ...
pub(super) fn log_of(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| entry(*t, i as u64 + 1))
        .collect()
}

/// A command entry whose data names its position, so logs from different nodes compare by
/// content as well as by term.
pub(super) fn entry(term: u64, index: u64) -> Entry {
    Entry::command(term, index, format!("{term}@{index}").into_bytes())
}

/// The terms of a log, by index from 1.
pub(super) fn terms_of(log: &RaftLog) -> Vec<u64> {
    (1..=log.last_index())
        .map(|i| log.term(i).unwrap())
        .collect()
}

/// Every entry of a log, by index from 1.
pub(super) fn entries_of(log: &RaftLog) -> Vec<Entry> {
    (1..=log.last_index())
        .map(|i| log.get(i).unwrap().clone())
        .collect()
}

/// A node restarted from storage with this hard state and log.
pub(super) fn restored(cfg: Config, term: u64, vote: NodeId, terms: &[u64]) -> Raft {
    Raft::new(cfg, HardState { term, vote }, log_of(terms)).unwrap()
}

/// Node `id` of `n` voters in `term`, not having voted, with an empty log.
pub(super) fn follower(id: NodeId, n: u64, term: u64) -> Raft {
    restored(config(id, n), term, 0, &[])
}

/// Takes one `Ready` and reports it done (as if persisted, sent and applied).
pub(super) fn ready_once(r: &mut Raft) -> Ready {
    let rd = r.ready();
    r.advance();
    rd
}

/// Runs `ready()`/`advance()` until there is nothing left to do; returns every message handed
/// out (both those to send at once and those to send after persisting), in order.
pub(super) fn drain(r: &mut Raft) -> Vec<Envelope> {
    let mut out = Vec::new();
    for _ in 0..100 {
        if !r.has_ready() {
            return out;
        }
        let rd = ready_once(r);
        out.extend(rd.messages);
        out.extend(rd.persisted_messages);
    }
    panic!("node {} never runs out of work", r.id());
}

/// Ticks until `done` holds; returns how many ticks it took. Panics after 1000 ticks.
pub(super) fn tick_until(r: &mut Raft, done: impl Fn(&Raft) -> bool) -> u32 {
    for n in 1..=1000 {
        r.tick();
        if done(r) {
            return n;
        }
    }
    panic!("node {}: condition never held", r.id());
}

/// Lets `r` time out and win an election with the votes (and pre-votes) of every peer, then
/// drains its first `Ready`s (the no-op and the first probes go out).
pub(super) fn elect(r: &mut Raft) {
    tick_until(r, |r| r.role() != Role::Follower);
    let id = r.id();
    let peers = r.peers.clone();
    if r.role() == Role::PreCandidate {
        let asked = r.term() + 1;
        for p in &peers {
            if r.role() != Role::PreCandidate {
                break;
            }
            r.step(pre_vote_reply(*p, id, asked, true));
        }
    }
    assert_eq!(
        r.role(),
        Role::Candidate,
        "node {id} did not become candidate"
    );
    let term = r.term();
    for p in &peers {
        if r.role() == Role::Leader {
            break;
        }
        r.step(vote_reply(*p, id, term, true));
    }
    assert_eq!(r.role(), Role::Leader, "node {id} did not win");
    drain(r);
}

/// `elect`, then every follower acknowledges the whole log: all progresses are streaming
/// (`Replicate`), everything is committed and applied, and nothing is left to send.
pub(super) fn stable_leader(r: &mut Raft) {
    elect(r);
    let last = r.log().last_index();
    for p in r.peers.clone() {
        r.step(append_reply(p, r.id(), r.term(), true, last, None));
    }
    drain(r);
    assert_eq!(r.log().committed(), last);
    for p in r.peers.clone() {
        assert_eq!(r.progress(p).unwrap().state, ProgressState::Replicate);
    }
}

// ----- messages -----

pub(super) fn env(from: NodeId, to: NodeId, msg: RaftMessage) -> Envelope {
    Envelope {
        incarnation: 0,
        from,
        to,
        msg,
    }
}

pub(super) fn vote_req(
    from: NodeId,
    to: NodeId,
    term: u64,
    last_index: u64,
    last_term: u64,
) -> Envelope {
    env(
        from,
        to,
        RaftMessage::RequestVote {
            transfer: false,
            term,
            candidate_id: from,
            last_log_index: last_index,
            last_log_term: last_term,
            pre_vote: false,
        },
    )
}

pub(super) fn pre_vote_req(
    from: NodeId,
    to: NodeId,
    term: u64,
    last_index: u64,
    last_term: u64,
) -> Envelope {
    env(
        from,
        to,
        RaftMessage::RequestVote {
            transfer: false,
            term,
            candidate_id: from,
            last_log_index: last_index,
            last_log_term: last_term,
            pre_vote: true,
        },
    )
}

pub(super) fn vote_reply(from: NodeId, to: NodeId, term: u64, granted: bool) -> Envelope {
    env(
        from,
        to,
        RaftMessage::RequestVoteReply {
            term,
            vote_granted: granted,
            pre_vote: false,
        },
    )
}

pub(super) fn pre_vote_reply(from: NodeId, to: NodeId, term: u64, granted: bool) -> Envelope {
    env(
        from,
        to,
        RaftMessage::RequestVoteReply {
            term,
            vote_granted: granted,
            pre_vote: true,
        },
    )
}

pub(super) fn append(
    from: NodeId,
    to: NodeId,
    term: u64,
    prev: (u64, u64),
    entries: Vec<Entry>,
    commit: u64,
) -> Envelope {
    env(
        from,
        to,
        RaftMessage::AppendEntries {
            term,
            leader_id: from,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: commit,
            read_round: 0,
        },
    )
}

pub(super) fn append_reply(
    from: NodeId,
    to: NodeId,
    term: u64,
    success: bool,
    match_index: u64,
    conflict: Option<ConflictHint>,
) -> Envelope {
    env(
        from,
        to,
        RaftMessage::AppendEntriesReply {
            term,
            success,
            match_index,
            conflict,
            read_round: 0,
        },
    )
}

/// The (term, granted) of every vote reply (pre-vote or not, as asked) in `msgs` to `to`.
pub(super) fn vote_replies(msgs: &[Envelope], to: NodeId, pre: bool) -> Vec<(u64, bool)> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match m.msg {
            RaftMessage::RequestVoteReply {
                term,
                vote_granted,
                pre_vote,
            } if pre_vote == pre => Some((term, vote_granted)),
            _ => None,
        })
        .collect()
}

/// The peers that `msgs` ask for a vote (or a pre-vote) in `term`.
pub(super) fn vote_requests(msgs: &[Envelope], term: u64, pre: bool) -> BTreeSet<NodeId> {
    msgs.iter()
        .filter(|m| matches!(m.msg, RaftMessage::RequestVote { term: t, pre_vote, .. } if t == term && pre_vote == pre))
        .map(|m| m.to)
        .collect()
}

/// One AppendEntries as seen by a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Append {
    pub to: NodeId,
    pub term: u64,
    pub prev: (u64, u64),
    pub entries: Vec<Entry>,
    pub commit: u64,
}

pub(super) fn appends(msgs: &[Envelope]) -> Vec<Append> {
    msgs.iter()
        .filter_map(|m| match &m.msg {
            RaftMessage::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => Some(Append {
                to: m.to,
                term: *term,
                prev: (*prev_log_index, *prev_log_term),
                entries: entries.clone(),
                commit: *leader_commit,
            }),
            _ => None,
        })
        .collect()
}

/// One AppendEntriesReply as seen by a test: (to, term, success, match_index, hint).
pub(super) fn append_replies(
    msgs: &[Envelope],
) -> Vec<(NodeId, u64, bool, u64, Option<ConflictHint>)> {
    msgs.iter()
        .filter_map(|m| match m.msg {
            RaftMessage::AppendEntriesReply {
                term,
                success,
                match_index,
                conflict,
                ..
            } => Some((m.to, term, success, match_index, conflict)),
            _ => None,
        })
        .collect()
}

// ----- a lossless in-memory network for tests that need several nodes -----

pub(super) struct Net {
    pub nodes: BTreeMap<NodeId, Raft>,
    /// Every committed entry each node was handed, in the order it was handed.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Nodes whose messages (in and out) are dropped.
    pub isolated: BTreeSet<NodeId>,
    /// Every message delivered so far.
    pub delivered: Vec<Envelope>,
}

impl Net {
    pub fn new(nodes: Vec<Raft>) -> Net {
        Net {
            applied: nodes.iter().map(|r| (r.id(), Vec::new())).collect(),
            nodes: nodes.into_iter().map(|r| (r.id(), r)).collect(),
            isolated: BTreeSet::new(),
            delivered: Vec::new(),
        }
    }

    pub fn node(&self, id: NodeId) -> &Raft {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Every node hands out all its pending work (persisting and applying at once); then all
    /// the messages produced are delivered. Returns how many messages were produced.
    pub fn round(&mut self) -> usize {
        let mut out = Vec::new();
        for (id, r) in self.nodes.iter_mut() {
            for _ in 0..100 {
                if !r.has_ready() {
                    break;
                }
                let rd = r.ready();
                self.applied
                    .get_mut(id)
                    .unwrap()
                    .extend(rd.committed_entries);
                out.extend(rd.messages);
                out.extend(rd.persisted_messages);
                r.advance();
            }
        }
        let produced = out.len();
        for m in out {
            if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
                continue;
            }
            // A member that has no node here (not started yet) simply does not answer.
            let Some(to) = self.nodes.get_mut(&m.to) else {
                continue;
            };
            self.delivered.push(m.clone());
            to.step(m);
        }
        produced
    }

    /// Rounds until no node has anything left to do.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            if self.round() == 0 {
                return;
            }
        }
        panic!("the network never settles");
    }

    /// Ticks node `id` alone until its role changes, then settles.
    pub fn time_out(&mut self, id: NodeId) {
        let role = self.node(id).role();
        tick_until(self.node_mut(id), |r| r.role() != role);
        self.settle();
    }
}
