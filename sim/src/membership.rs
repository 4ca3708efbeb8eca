//! Membership in the simulation: an operator's requests (`MemberAdd`, `MemberRemove`,
//! `TransferLeader`, …) sent straight to a node, spare nodes started to join, and the new
//! fault: a node's disk is lost and it restarts empty under the same id.

use super::clients::ADMIN;
use super::*;

impl Cluster {
    /// A fresh data dir identity (never 0).
    pub(super) fn fresh_incarnation(&mut self) -> u64 {
        loop {
            let n: u64 = self.rng.gen();
            if n != 0 {
                return n;
            }
        }
    }

    /// Sends a membership request to node `to` as an operator would (no network between);
    /// its answer, now or later, lands in `admin_answers`. Returns how many answers there were
    /// before it, so a caller can find its own.
    pub fn admin(&mut self, to: NodeId, req: ClientRequest) -> usize {
        let before = self.admin_answers.len();
        let route = Route {
            client: ADMIN,
            op: 0,
            request_id: req.id(),
        };
        self.input(to, Input::Client { route, req });
        before
    }

    /// Starts spare node `id` (down so far, with an empty disk) to join the cluster, as
    /// `raftd --join` does: it waits, never votes, until the leader has caught it up and a
    /// committed configuration makes it a voter.
    pub fn add_node(&mut self, id: NodeId) {
        self.joined.insert(id);
        if !self.node(id).is_up() {
            self.start(id);
        }
    }

    /// The node's disk is lost: it restarts empty under the same id, with a new data dir
    /// identity (as a wiped `--data-dir` gets a new `raftd.id`).
    pub fn lose_disk(&mut self, id: NodeId) {
        if self.node(id).is_up() {
            self.crash(id);
        }
        self.replace_disk(id);
        self.start(id);
    }

    /// Gives the (stopped) node `id` an empty disk with a new data dir identity: a lost disk,
    /// or a damaged one the operator moved aside.
    pub(crate) fn replace_disk(&mut self, id: NodeId) {
        let incarnation = self.fresh_incarnation();
        let old = self.node(id).disk.incarnation;
        self.founding_appliers.remove(&(id, old));
        if self.founding_appliers.is_empty()
            && self
                .applied_anywhere
                .get(&1)
                .is_some_and(|e| e.kind == EntryKind::Config && e.term == 1)
            && self.applied_anywhere.len() == 1
        {
            // Only this disk had founded the cluster (nothing else was applied anywhere): the
            // cluster is founded anew, and its entry 1 may differ.
            self.applied_anywhere.clear();
            self.committed_by_term.clear();
        }
        self.node_mut(id).disk = MemDisk::fresh(incarnation);
    }

    /// Whether node `id` was ever started (founders, and spares once added): a spare never
    /// added stays down whatever restarts the nemesis asks for.
    pub fn ever_started(&self, id: NodeId) -> bool {
        id as usize <= self.cfg.founder_count() || self.joined.contains(&id)
    }

    /// The voters of the configuration node `id` has in effect (empty while it is down or has
    /// none yet).
    pub fn voters_of(&self, id: NodeId) -> Vec<NodeId> {
        self.raft(id)
            .map(|r| r.membership().voters().collect())
            .unwrap_or_default()
    }

    /// The nodes that are up and lead, each in its own term (normally one).
    pub fn leaders_now(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|id| self.raft(*id).is_some_and(|r| r.role() == Role::Leader))
            .collect()
    }
}
