//! Queries and conveniences for tests: who leads, what was applied where, proposing, and the
//! MIT-lab style `one()`.

use super::*;
use rand::seq::SliceRandom;

impl Cluster {
    /// Installs `observer`, called after every step of every up node (see [`Observer`]).
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// Nodes that are running (not crashed).
    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }

    /// Up nodes among `among` whose role is leader, whatever their term.
    pub fn leaders_among(&self, among: &[NodeId]) -> Vec<NodeId> {
        self.leaders()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| among.contains(id))
            .collect()
    }

    /// Up nodes whose commit index has reached `index`.
    pub fn committed_on(&self, index: u64) -> usize {
        self.nodes
            .iter()
            .filter_map(SimNode::raft)
            .filter(|r| r.log().committed() >= index)
            .count()
    }

    /// Up nodes that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, u64)> {
        self.nodes
            .iter()
            .filter_map(SimNode::raft)
            .filter(|r| r.role() == Role::Leader)
            .map(|r| (r.id(), r.term()))
            .collect()
    }

    /// The leader among `among` with the highest term, if exactly one node of `among` leads in
    /// that term.
    pub fn leader_among(&self, among: &[NodeId]) -> Option<NodeId> {
        let mut by_term: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
        for (id, term) in self.leaders() {
            if among.contains(&id) {
                by_term.entry(term).or_default().push(id);
            }
        }
        let (_, ids) = by_term.iter().next_back()?;
        (ids.len() == 1).then(|| ids[0])
    }

    /// Waits up to `timeout` for a leader among `among`; panics with the seed otherwise.
    pub fn wait_for_leader(&mut self, among: &[NodeId], timeout: Micros) -> NodeId {
        let among = among.to_vec();
        let ok = self.run_until(timeout, |c| c.leader_among(&among).is_some());
        let seed = self.cfg.seed;
        assert!(
            ok,
            "[seed {seed}] no leader among {among:?} within {} ms",
            timeout / MS
        );
        self.leader_among(&among).unwrap_or(0)
    }

    /// Nodes that applied index `index`, and the command there (None for a no-op).
    pub fn applied_at(&self, index: u64) -> (usize, Option<Vec<u8>>) {
        let mut count = 0;
        let mut data = None;
        for node in &self.nodes {
            if node.applied_index() < index {
                continue;
            }
            count += 1;
            // Covered by a snapshot: the entry every node applied there.
            let e = node
                .applied_entry(index)
                .or_else(|| self.applied_anywhere.get(&index));
            if let Some(e) = e.filter(|e| e.kind == EntryKind::Command) {
                data = Some(e.data.to_vec());
            }
        }
        (count, data)
    }

    /// Proposes `data` at node `id` if it is up and leads.
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Option<(u64, u64)> {
        let driver = self.driver_mut(id)?;
        let result = driver.propose(data.to_vec()).ok();
        if result.is_some() {
            self.drive(id);
        }
        result
    }

    /// Like the MIT lab's `one()`: submits `data` to a leader (retrying across leaders) until
    /// at least `expected` nodes applied it, within `timeout`. Returns the index.
    pub fn one(&mut self, data: &[u8], expected: usize, timeout: Micros) -> u64 {
        let seed = self.cfg.seed;
        let deadline = self.now + timeout;
        while self.now < deadline {
            let mut proposed = None;
            for id in self.ids() {
                if let Some((index, _)) = self.propose(id, data) {
                    proposed = Some(index);
                    break;
                }
            }
            if let Some(index) = proposed {
                let want = data.to_vec();
                let until = (self.now + 2 * SEC).min(deadline);
                let done = self.run_until(until - self.now, |c| {
                    let (n, d) = c.applied_at(index);
                    n >= expected && d.as_deref() == Some(&want[..])
                });
                if done {
                    return index;
                }
            } else {
                self.run_for(50 * MS);
            }
        }
        panic!(
            "[seed {seed}] one({:?}) did not reach {expected} nodes within {} ms",
            String::from_utf8_lossy(data),
            timeout / MS
        );
    }

    /// Highest term any up node is in.
    pub fn max_term(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(SimNode::raft)
            .map(|r| r.term())
            .max()
            .unwrap_or(0)
    }

    /// Every committed entry any node applied so far, by index.
    pub fn applied_anywhere(&self) -> &BTreeMap<u64, Entry> {
        &self.applied_anywhere
    }
}

/// Random faults for chaos loops. Each draws from the cluster's generator, so a run stays a
/// function of its seed.
impl Cluster {
    /// Crashes a random node, unless that would leave `min_up` or fewer running (then nothing
    /// happens). Returns the crashed node.
    pub fn crash_random(&mut self, min_up: usize) -> Option<NodeId> {
        let all = self.ids();
        let id = *all.choose(self.rng())?;
        if self.up_ids().len() > min_up {
            self.crash(id);
            return Some(id);
        }
        None
    }

    /// Restarts a random crashed node, if any.
    pub fn restart_random(&mut self) -> Option<NodeId> {
        let down: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|&id| !self.node(id).is_up())
            .collect();
        let id = *down.choose(self.rng())?;
        self.restart(id);
        Some(id)
    }

    /// Splits the nodes into two random non-empty groups that cannot talk to each other.
    pub fn split_random(&mut self) {
        let mut ids = self.ids();
        ids.shuffle(self.rng());
        let cut = self.rng().gen_range(1..ids.len().max(2));
        let (a, b) = ids.split_at(cut);
        self.links.partition(&[a, b]);
    }

    /// Cuts one random directed link (`from` stops reaching `to`; the other way stays up).
    pub fn cut_random_one_way(&mut self) {
        let all = self.ids();
        let from = *all.choose(self.rng()).unwrap_or(&1);
        let to = *all.choose(self.rng()).unwrap_or(&2);
        if from != to {
            self.links.set(from, to, false);
        }
    }
}
