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

    /// The membership request sent with id `id`.
    pub fn admin_request(&self, id: u64) -> Option<&ClientRequest> {
        self.admin_requests.get(&id)
    }

    /// Each membership request sent: its kind, and whether some answer to it was `Ok`.
    pub fn admin_outcomes(&self) -> Vec<(&'static str, bool)> {
        self.admin_requests
            .iter()
            .map(|(id, req)| {
                let kind = match req {
                    ClientRequest::MemberAdd { learner: true, .. } => "add learner",
                    ClientRequest::MemberAdd { .. } => "add",
                    ClientRequest::MemberPromote { .. } => "promote",
                    ClientRequest::MemberRemove { .. } => "remove",
                    ClientRequest::TransferLeader { .. } => "transfer",
                    _ => "other",
                };
                let ok = self
                    .admin_answers
                    .iter()
                    .any(|(_, r)| r.id() == Some(*id) && matches!(r, ClientResponse::Ok(_)));
                (kind, ok)
            })
            .collect()
    }

    /// A request id for `admin` that no other membership request of this run has.
    pub fn next_admin_id(&self) -> u64 {
        self.admin_requests.len() as u64 + 1
    }

    /// Sends a membership request to node `to` as an operator would (no network between);
    /// its answer, now or later, lands in `admin_answers` once checked
    /// ([`Cluster::check_admin_answer`]). Returns how many answers there were before it, so a
    /// caller can find its own.
    pub fn admin(&mut self, to: NodeId, req: ClientRequest) -> usize {
        let before = self.admin_answers.len();
        self.admin_requests.insert(req.id(), req.clone());
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

impl Cluster {
    /// An answer to a membership request must tell the truth: `Ok` to a change only once a
    /// configuration with that change in it is committed on the answering node; `Ok` to a
    /// transfer naming a node that led; errors only of the kinds an operator must expect
    /// (no leader here, busy, unsafe, an unknown outcome, a promotion of a node that is not a
    /// learner).
    pub(super) fn check_admin_answer(&self, node: NodeId, resp: &ClientResponse) {
        let seed = self.cfg.seed;
        let Some(req) = resp.id().and_then(|id| self.admin_requests.get(&id)) else {
            panic!("[seed {seed}] membership answer from n{node} to no request sent: {resp:?}");
        };
        let raft = self.raft(node);
        match resp {
            ClientResponse::Ok(ok) => {
                if let ClientRequest::TransferLeader { .. } = req {
                    let led = ok
                        .leader_id
                        .is_some_and(|l| self.leaders.values().any(|x| *x == l));
                    assert!(
                        led,
                        "[seed {seed}] membership answer: n{node} answered {req:?} with leader {:?}, which never led",
                        ok.leader_id
                    );
                    return;
                }
                let Some(raft) = raft else {
                    panic!("[seed {seed}] membership answer from n{node}, which is down");
                };
                let committed = raft.membership_at(raft.log().committed());
                let holds = match req {
                    ClientRequest::MemberAdd {
                        node_id, learner, ..
                    } => committed.get(*node_id).is_some_and(|m| {
                        *learner || m.role == raftd_core::MemberRole::Voter || m.promote
                    }),
                    ClientRequest::MemberPromote { node_id, .. } => committed.is_voter(*node_id),
                    ClientRequest::MemberRemove { node_id, .. } => !committed.contains(*node_id),
                    _ => true,
                };
                assert!(
                    holds,
                    "[seed {seed}] membership answer: n{node} answered Ok to {req:?} but its committed configuration is {committed:?}"
                );
            }
            ClientResponse::Error(e) => {
                use raftd::rpc::types::ErrorCode as C;
                let expected = match e.code {
                    C::NotLeader | C::Busy | C::Unsafe | C::Timeout | C::ShuttingDown => true,
                    // Promoting what is not a member of the leader's configuration (an add
                    // that was refused, or a learner removed since), or adding a voter that
                    // is there as a learner (a removal the operator believes in was refused).
                    C::BadRequest => {
                        let member =
                            |id: &NodeId| raft.is_some_and(|r| r.membership().contains(*id));
                        match req {
                            ClientRequest::MemberPromote { node_id, .. } => !member(node_id),
                            ClientRequest::MemberAdd { node_id, .. } => member(node_id),
                            _ => false,
                        }
                    }
                    _ => false,
                };
                assert!(
                    expected,
                    "[seed {seed}] membership answer: n{node} refused {req:?} with {:?}: {}",
                    e.code, e.message
                );
            }
            other => {
                panic!("[seed {seed}] membership answer: n{node} answered {req:?} with {other:?}")
            }
        }
    }
}
