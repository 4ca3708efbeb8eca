//! The simulated network: which links are up, and how messages are dropped, delayed,
//! duplicated and (through random delays) reordered.

use raftd::rpc::types::NodeId;

#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way delay is uniform in `min_delay_us..=max_delay_us`; a spread reorders messages.
    pub min_delay_us: u64,
    pub max_delay_us: u64,
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub dup_rate: f64,
    /// Probability that a message is held back for a long time (up to `long_delay_us`).
    pub long_delay_rate: f64,
    pub long_delay_us: u64,
}

impl NetConfig {
    /// A LAN: 0.1–1 ms, nothing lost.
    pub fn reliable() -> NetConfig {
        NetConfig {
            min_delay_us: 100,
            max_delay_us: 1_000,
            drop_rate: 0.0,
            dup_rate: 0.0,
            long_delay_rate: 0.0,
            long_delay_us: 0,
        }
    }

    /// 10% loss, 2% duplicates, 1–27 ms delay (so messages overtake each other), and a few
    /// messages delayed by up to a second.
    pub fn unreliable() -> NetConfig {
        NetConfig {
            min_delay_us: 1_000,
            max_delay_us: 27_000,
            drop_rate: 0.10,
            dup_rate: 0.02,
            long_delay_rate: 0.01,
            long_delay_us: 1_000_000,
        }
    }
}

/// Which directed links carry traffic. Node ids are 1-based.
#[derive(Debug, Clone)]
pub struct Links {
    n: usize,
    up: Vec<bool>,
}

impl Links {
    pub fn new(n: usize) -> Links {
        Links {
            n,
            up: vec![true; (n + 1) * (n + 1)],
        }
    }

    pub fn is_up(&self, from: NodeId, to: NodeId) -> bool {
        self.up[from as usize * (self.n + 1) + to as usize]
    }

    pub fn set(&mut self, from: NodeId, to: NodeId, up: bool) {
        self.up[from as usize * (self.n + 1) + to as usize] = up;
    }

    /// Cuts or restores every link to and from `node`.
    pub fn set_node(&mut self, node: NodeId, up: bool) {
        for other in 1..=self.n as NodeId {
            if other != node {
                self.set(node, other, up);
                self.set(other, node, up);
            }
        }
    }

    /// Only nodes in the same group can talk.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        for a in 1..=self.n as NodeId {
            for b in 1..=self.n as NodeId {
                let together = groups.iter().any(|g| g.contains(&a) && g.contains(&b));
                self.set(a, b, together);
            }
        }
    }

    pub fn heal(&mut self) {
        self.up.iter_mut().for_each(|u| *u = true);
    }
}
