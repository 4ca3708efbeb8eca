//! The invariants the simulation checks as it runs (§5.2, §5.4, §7): one leader and one vote
//! per term, safe commits, leader completeness, log matching, indexes that never go backwards,
//! and identical snapshots at one index. A violation panics with the seed in the message.

use super::*;
use raftd_core::Membership;

impl Cluster {
    /// Safety check after every step: one leader per term. Then the test's observer, if any.
    pub(super) fn observe(&mut self, id: NodeId) {
        let now = self.now;
        if let (Some(observer), Some(raft)) =
            (self.observer.as_mut(), self.nodes[id as usize - 1].raft())
        {
            observer(now, raft);
        }
        let Some(raft) = self.raft(id) else { return };
        let seed = self.cfg.seed;
        // Correct members never send what the core refuses as impossible (validate.rs); with
        // no bug switched on, a refusal means the check or the sender is wrong.
        assert!(
            !self.cfg.bugs.is_empty() || raft.refused_messages() == 0,
            "[seed {seed}] node {id} refused {} message(s) from a correct member, the last {:?}",
            raft.refused_messages(),
            raft.last_refusal()
        );
        let marks = (
            raft.log().committed(),
            raft.log().applied(),
            raft.snapshot_index(),
        );
        let before = self.node(id).watermarks;
        assert!(
            marks.0 >= before.0 && marks.1 >= before.1 && marks.2 >= before.2,
            "[seed {seed}] node {id}: (commit, applied, snapshot) index went backwards from {before:?} to {marks:?}"
        );
        let disk_snapshot = self.node(id).disk.snapshot_index();
        assert!(
            marks.2 >= disk_snapshot,
            "[seed {seed}] node {id}: snapshot index {} is below the {disk_snapshot} on its disk",
            marks.2
        );
        self.node_mut(id).watermarks = marks;
        if marks.0 > before.0 && self.raft(id).is_some_and(|r| r.role() == Role::Leader) {
            self.check_commit_is_safe(id, marks.0);
        }
        let Some(raft) = self.raft(id) else { return };
        if raft.role() == Role::Leader {
            let term = raft.term();
            let new = !self.leaders.contains_key(&term);
            let leader = *self.leaders.entry(term).or_insert(id);
            assert_eq!(
                leader, id,
                "[seed {seed}] two leaders in term {term}: node {leader} and node {id}"
            );
            if new {
                self.check_leader_completeness(id);
            }
        }
    }

    /// Leader completeness (§5.4): a node that just became leader of term T holds every entry
    /// committed in an earlier term. An entry counts as committed before T if a node applied it
    /// while in a term below T (it may have been committed in T or later otherwise, and a
    /// leader of T elected by late votes need not hold it). Entries its snapshot covers are
    /// committed, and the snapshot checks vouch for them.
    pub(super) fn check_leader_completeness(&self, id: NodeId) {
        let Some(raft) = self.raft(id) else { return };
        let term = raft.term();
        let log = raft.log();
        let from = log.snapshot().index + 1;
        for (&index, &seen) in self.committed_by_term.range(from..) {
            if seen >= term {
                continue;
            }
            let want = &self.applied_anywhere[&index];
            let have = log.get(index);
            assert!(
                have == Some(want),
                "[seed {}] leader completeness: node {id} became leader of term {term} without the entry at index {index} (term {}) applied in term {seen}; it holds {:?}",
                self.cfg.seed,
                want.term,
                have.map(|e| e.term)
            );
        }
    }

    /// A leader just committed `index`: no node without that entry may be able to win an
    /// election (§5.4.3: the entry is on a majority that would refuse any such candidate).
    ///
    /// Each node is considered as a candidate with its in-memory log and with its durable log
    /// (what it would restart with), and each with the configuration that log puts in effect:
    /// a candidate campaigns, and counts votes, by its own configuration, which may be older
    /// or newer than the leader's. It may campaign only if that configuration makes it a voter
    /// with the data dir it has; it counts a vote only from a voter of that configuration
    /// speaking from the data dir the configuration records. A node grants a vote if either of
    /// its logs is no more up to date than the candidate's, unless that log's configuration
    /// says it forgot what it promised (none at all, or one that admitted another data dir).
    /// Single-server changes made only after the leader committed an entry of its term keep
    /// every such majority overlapping the one that committed the entry; this is the check
    /// that would see them fail to.
    pub(super) fn check_commit_is_safe(&self, leader: NodeId, index: u64) {
        let Some(entry) = self.raft(leader).and_then(|r| r.log().get(index)).cloned() else {
            return;
        };
        /// One of a node's logs: its last entry, whether it holds the committed entry, and
        /// the configuration it puts in effect.
        struct View {
            last: (u64, u64),
            holds: bool,
            config: Membership,
        }
        let views: Vec<(NodeId, u64, Vec<View>)> = self
            .nodes
            .iter()
            .map(|n| {
                let disk = &n.disk;
                let disk_last = disk
                    .entries
                    .last()
                    .map_or(disk.snapshot_meta().term, |e| e.term);
                let disk_holds = index <= disk.snapshot_index()
                    || disk
                        .entries
                        .get((index - disk.snapshot_index() - 1) as usize)
                        .is_some_and(|e| *e == entry);
                let mut v = vec![View {
                    last: (disk_last, disk.last_index()),
                    holds: disk_holds,
                    config: disk.membership(),
                }];
                if let Some(r) = n.raft() {
                    let log = r.log();
                    v.push(View {
                        last: (log.last_term(), log.last_index()),
                        holds: index <= log.snapshot().index || log.get(index) == Some(&entry),
                        config: r.membership().clone(),
                    });
                }
                (n.id, disk.incarnation, v)
            })
            .collect();
        let remembers = |id: NodeId, incarnation: u64, config: &Membership| {
            !config.is_empty()
                && config
                    .get(id)
                    .is_none_or(|m| m.incarnation == 0 || m.incarnation == incarnation)
        };
        for (cand, cand_inc, cand_views) in &views {
            for view in cand_views {
                if view.holds || !view.config.counts(*cand, *cand_inc) {
                    continue;
                }
                let mut electors = vec![*cand];
                for (voter, voter_inc, voter_views) in &views {
                    if voter == cand || !view.config.counts(*voter, *voter_inc) {
                        continue;
                    }
                    if voter_views
                        .iter()
                        .any(|w| remembers(*voter, *voter_inc, &w.config) && view.last >= w.last)
                    {
                        electors.push(*voter);
                    }
                }
                let quorum = view.config.voter_count() / 2 + 1;
                assert!(
                    electors.len() < quorum,
                    "[seed {}] unsafe commit: node {leader} committed index {index} (term {}) in term {}, yet node {cand} without it (log {}@{}, voters {:?}) could win an election with the votes of {electors:?}",
                    self.cfg.seed,
                    entry.term,
                    self.raft(leader).map_or(0, Raft::term),
                    view.last.1,
                    view.last.0,
                    view.config.voters().collect::<Vec<_>>(),
                );
            }
        }
    }

    /// One vote per term (§5.2), even across crashes: a node never tells two candidates (itself
    /// included, by asking for votes) that it votes for them in one term.
    pub(super) fn check_one_vote_per_term(&mut self, env: &Envelope) {
        let (term, vote) = match env.msg {
            RaftMessage::RequestVote {
                term,
                pre_vote: false,
                ..
            } => (term, env.from),
            RaftMessage::RequestVoteReply {
                term,
                vote_granted: true,
                pre_vote: false,
            } => (term, env.to),
            _ => return,
        };
        // A data dir that was lost is another voter: its successor's votes are its own.
        let first = *self
            .votes
            .entry((env.from, env.incarnation, term))
            .or_insert(vote);
        assert_eq!(
            first, vote,
            "[seed {}] node {} voted twice in term {term}: for node {first} and for node {vote}",
            self.cfg.seed, env.from
        );
    }

    /// Log matching (§5.3): if two up nodes' logs hold an entry with the same index and term,
    /// the logs are identical up to it (compared where both still hold entries, after their
    /// snapshots). Returns the first violation found.
    pub fn check_log_matching(&self) -> Result<(), String> {
        let rafts: Vec<&Raft> = self.nodes.iter().filter_map(SimNode::raft).collect();
        for (i, a) in rafts.iter().enumerate() {
            for b in &rafts[i + 1..] {
                let (la, lb) = (a.log(), b.log());
                let lo = la.snapshot().index.max(lb.snapshot().index) + 1;
                let hi = la.last_index().min(lb.last_index());
                // The highest common index where the terms agree: everything from `lo` to it
                // must be the same entry.
                let Some(top) = (lo..=hi).rev().find(|&k| la.term(k) == lb.term(k)) else {
                    continue;
                };
                for k in lo..=top {
                    if la.get(k) != lb.get(k) {
                        return Err(format!(
                            "[seed {}] log matching: nodes {} and {} agree on the term at index {top} but differ at index {k} ({:?} vs {:?})",
                            self.cfg.seed,
                            a.id(),
                            b.id(),
                            la.get(k).map(|e| e.term),
                            lb.get(k).map(|e| e.term)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every snapshot of one index holds the same state (state-machine safety for snapshots),
    /// and that state has applied exactly up to the index.
    pub(super) fn check_snapshot_state(&mut self, id: NodeId, meta: SnapshotMeta, store: &KvStore) {
        let seed = self.cfg.seed;
        assert_eq!(
            store.applied(),
            meta.index,
            "[seed {seed}] node {id}: the snapshot at index {} holds a store applied up to {}",
            meta.index,
            store.applied()
        );
        match self.snapshot_states.get(&meta.index) {
            Some(first) => assert!(
                first == store,
                "[seed {seed}] node {id}: its snapshot at index {} holds another state than an earlier snapshot at that index",
                meta.index
            ),
            None => {
                self.snapshot_states.insert(meta.index, store.clone());
            }
        }
    }
}
