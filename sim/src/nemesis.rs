//! Seeded random fault schedules ("nemesis") against the simulated cluster, with concurrent
//! clients, and the checks `raftsim` runs on them.
//!
//! A [`Schedule`] is an explicit list of timed [`Fault`]s, generated from a seed
//! ([`Schedule::generate`]): partitions (random splits, bridges, one-way cuts, isolating the
//! leader), crashes that lose unsynced writes (of a random node or of the leader), restarts,
//! network profiles (drops, duplicates, reordering, long delays), skewed timer rates, and moves
//! of clients across partitions. [`run_schedule`] runs it with the schedule's seed for the
//! simulation's own randomness and checks, after every step of every node (the cluster's
//! built-in checks): at most one leader per term, state-machine safety, commit / applied /
//! snapshot indexes never moving backwards, every snapshot of an index holding one state, and
//! leader completeness; every 100 ms of virtual time and at the end: log matching; at the end:
//! every client history is linearizable. After the faults stop (everything healed and
//! restarted, a reliable network), a leader must be elected and a client write must succeed
//! within [`RunOpts::liveness_us`].
//!
//! Because the fault list is explicit, a failing schedule can be shrunk ([`shrink`]) by
//! removing events and shortening the fault phase while it still fails the same way.

use super::{ClientConfig, Cluster, CoreTuning, Micros, NetConfig, SimConfig, MS, SEC};
use crate::check::{check_history, Input as OpInput, Output};
use raftd::rpc::types::{ClientRequest, ClientResponse, NodeId, RaftMessage, Role};
use raftd_core::Raft;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// One fault (or repair) the nemesis applies.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case", tag = "fault")]
pub enum Fault {
    /// Kill a node: whatever it had not fsynced is lost.
    Crash { node: NodeId },
    /// Kill whichever node leads (highest term) at that moment, if any.
    CrashLeader,
    /// Start a crashed node from its disk (nothing if it is up).
    Restart { node: NodeId },
    /// Start every crashed node.
    RestartAll,
    /// Only nodes of one group can talk to each other.
    Partition { groups: Vec<Vec<NodeId>> },
    /// Two sides that cannot talk to each other, and one node that talks to both.
    Bridge {
        bridge: NodeId,
        left: Vec<NodeId>,
        right: Vec<NodeId>,
    },
    /// Crash `node` right after it next grants a vote (as the reply leaves), and start it
    /// again `restart_after_us` later.
    CrashAfterVote {
        node: NodeId,
        restart_after_us: Micros,
    },
    /// Cut the link `from -> to` only.
    OneWay { from: NodeId, to: NodeId },
    /// Cut whichever node leads (highest term) off from every other node.
    IsolateLeader,
    /// Every link up again.
    Heal,
    /// Network behaviour from now on.
    Net {
        drop_pct: u32,
        dup_pct: u32,
        min_delay_us: u64,
        max_delay_us: u64,
        long_delay_pct: u32,
        long_delay_ms: u64,
    },
    /// A node's timers run at another rate: one tick every `tick_us` (10 ms is nominal).
    Clock { node: NodeId, tick_us: Micros },
    /// A client moves next to `node` (reaches what `node` reaches), or anywhere (None).
    Home { client: usize, node: Option<NodeId> },
    /// The node's disk is lost: it restarts empty under the same id, with a new data dir
    /// identity. It must never count as the member it was until it is re-admitted.
    LoseDisk { node: NodeId },
    /// An operator adds `node` through the leader: a spare, started to join, or a founder
    /// removed earlier (still running with its old data). As a voter (`learner: false`): a
    /// learner first, promoted by the leader once caught up; as a learner: until promoted.
    AddMember {
        node: NodeId,
        #[serde(default)]
        learner: bool,
    },
    /// An operator promotes learner `node` (refused while it has not caught up).
    PromoteMember { node: NodeId },
    /// An operator removes `node` through the leader (refused if unsafe); the node keeps
    /// running, as a forgotten process would.
    RemoveMember { node: NodeId },
    /// An operator asks the leader to hand over to the most up-to-date voter.
    TransferLeader,
    /// Every fsync of `node` takes `extra_ms` longer for `for_ms`.
    SlowDisk {
        node: NodeId,
        extra_ms: u64,
        for_ms: u64,
    },
    /// `node`'s disk refuses writes (ENOSPC) for `for_ms`.
    DiskFull { node: NodeId, for_ms: u64 },
    /// `node`'s next fsync fails (EIO): it stops, and is started again `restart_after_ms`
    /// later (an operator, or a supervisor).
    FsyncError { node: NodeId, restart_after_ms: u64 },
    /// Power loss at `node`: it crashes with its first unsynced batch landing in pieces.
    TornCrash { node: NodeId },
    /// A bit rots in a synced batch of `node`'s log (not the last); it restarts, finds the
    /// damage and is repaired from the cluster.
    BitRot { node: NodeId },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[NodeId]| {
            v.iter()
                .map(|n| format!("n{n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Fault::Crash { node } => write!(f, "crash n{node}"),
            Fault::CrashLeader => write!(f, "crash the leader"),
            Fault::Restart { node } => write!(f, "restart n{node}"),
            Fault::RestartAll => write!(f, "restart every crashed node"),
            Fault::Partition { groups } => {
                let g: Vec<String> = groups.iter().map(|g| format!("{{{}}}", list(g))).collect();
                write!(f, "partition {}", g.join(" | "))
            }
            Fault::Bridge {
                bridge,
                left,
                right,
            } => write!(
                f,
                "bridge partition {{{}}} <- n{bridge} -> {{{}}}",
                list(left),
                list(right)
            ),
            Fault::OneWay { from, to } => write!(f, "cut link n{from} -> n{to}"),
            Fault::CrashAfterVote {
                node,
                restart_after_us,
            } => write!(
                f,
                "crash n{node} as soon as it grants a vote, restart {:.1} ms later",
                *restart_after_us as f64 / 1000.0
            ),
            Fault::IsolateLeader => write!(f, "isolate the leader"),
            Fault::Heal => write!(f, "heal all links"),
            Fault::Net {
                drop_pct,
                dup_pct,
                min_delay_us,
                max_delay_us,
                long_delay_pct,
                long_delay_ms,
            } => write!(
                f,
                "network: {drop_pct}% drop, {dup_pct}% dup, delay {:.1}-{:.1} ms, {long_delay_pct}% delayed up to {long_delay_ms} ms",
                *min_delay_us as f64 / 1000.0,
                *max_delay_us as f64 / 1000.0
            ),
            Fault::Clock { node, tick_us } => {
                write!(f, "clock of n{node}: tick every {:.1} ms", *tick_us as f64 / 1000.0)
            }
            Fault::Home { client, node } => match node {
                Some(n) => write!(f, "client {client} moves next to n{n}"),
                None => write!(f, "client {client} reaches every node"),
            },
            Fault::LoseDisk { node } => write!(f, "n{node} loses its disk and restarts empty"),
            Fault::AddMember {
                node,
                learner: false,
            } => write!(f, "add n{node} (it joins)"),
            Fault::AddMember {
                node,
                learner: true,
            } => write!(f, "add n{node} as a learner (it joins)"),
            Fault::PromoteMember { node } => write!(f, "promote learner n{node}"),
            Fault::RemoveMember { node } => write!(f, "remove n{node} (it keeps running)"),
            Fault::TransferLeader => write!(f, "transfer leadership"),
            Fault::SlowDisk {
                node,
                extra_ms,
                for_ms,
            } => write!(f, "n{node}'s fsyncs take {extra_ms} ms longer for {for_ms} ms"),
            Fault::DiskFull { node, for_ms } => write!(f, "n{node}'s disk is full for {for_ms} ms"),
            Fault::FsyncError {
                node,
                restart_after_ms,
            } => write!(
                f,
                "n{node}'s next fsync fails (it stops, and starts again {restart_after_ms} ms later)"
            ),
            Fault::TornCrash { node } => {
                write!(f, "power loss at n{node}: its unsynced batch lands in pieces")
            }
            Fault::BitRot { node } => {
                write!(f, "a bit rots in n{node}'s log; it restarts and is repaired")
            }
        }
    }
}

/// One timed fault.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Step {
    pub at_us: Micros,
    #[serde(flatten)]
    pub fault: Fault,
}

/// A complete, replayable run: the cluster, the clients and the faults.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Seeds the simulation's randomness (network, fsync, timers, clients).
    pub seed: u64,
    pub nodes: usize,
    pub clients: usize,
    /// The daemon's snapshot policy (None: never snapshot).
    pub snapshot_entries: Option<u64>,
    /// Core settings (election timeouts, batch size, pre-vote, check-quorum).
    #[serde(default)]
    pub core: CoreTuning,
    /// Length of the fault phase (virtual).
    pub duration_us: Micros,
    pub events: Vec<Step>,
    /// Spare nodes (ids after `nodes`) that membership changes may add.
    #[serde(default)]
    pub spares: usize,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOpts {
    /// Cluster size; random in 3..=7 if None.
    pub nodes: Option<usize>,
    /// Length of the fault phase.
    pub duration_us: Micros,
}

impl Default for GenOpts {
    fn default() -> Self {
        GenOpts {
            nodes: None,
            duration_us: 5 * SEC,
        }
    }
}

impl Schedule {
    /// The schedule of `seed` (its generator is independent of the simulation's randomness).
    pub fn generate(seed: u64, opts: &GenOpts) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
        let nodes = opts
            .nodes
            .unwrap_or_else(|| *[3, 3, 4, 5, 5, 5, 6, 7].choose(&mut rng).unwrap_or(&5));
        let ids: Vec<NodeId> = (1..=nodes as NodeId).collect();
        let spares = *[0, 1, 1, 2].choose(&mut rng).unwrap_or(&0);
        let spare_ids: Vec<NodeId> = (nodes as NodeId + 1..=(nodes + spares) as NodeId).collect();
        let clients = rng.gen_range(4..=10);
        let snapshot_entries = rng.gen_bool(0.5).then(|| rng.gen_range(10..=80));
        // Narrow election timeouts give concurrent candidates (split votes); small batches
        // replicate a new leader's backlog in pieces; without pre-vote and check-quorum, cut-off
        // nodes raise terms and depose leaders.
        let core = CoreTuning {
            election_ticks: [None, None, Some((10, 13)), Some((15, 18)), Some((20, 60))]
                .choose(&mut rng)
                .copied()
                .flatten(),
            max_entries_per_message: [None, Some(1), Some(2), Some(3), Some(8)]
                .choose(&mut rng)
                .copied()
                .flatten(),
            pre_vote: rng.gen_bool(0.3).then_some(false),
            check_quorum: rng.gen_bool(0.3).then_some(false),
        };
        let tolerate = (nodes - 1) / 2;
        let mut events = Vec::new();
        let mut push = |at_us: Micros, fault: Fault| events.push(Step { at_us, fault });

        // Starting conditions: skewed clocks, clients sitting next to some node, a network.
        for &node in &ids {
            if rng.gen_bool(0.3) {
                push(0, random_clock(&mut rng, node));
            }
        }
        for client in 0..clients {
            if rng.gen_bool(0.4) {
                push(
                    0,
                    Fault::Home {
                        client,
                        node: Some(*ids.choose(&mut rng).unwrap_or(&1)),
                    },
                );
            }
        }
        push(0, random_net(&mut rng));

        let mut down: Vec<NodeId> = Vec::new();
        // Leader crashes not yet followed by a restart-all (the node is not known here).
        let mut leaders_down = 0;
        // Disks lost so far: each may not count until re-admitted, so each takes a place in
        // the fault budget for the rest of the run.
        let mut lost = 0;
        // Membership as the operator (this generator) asked for it, taken or not: spares
        // added and not removed since, those of them added as learners and not promoted, and
        // founders removed (still running, forgotten, with their data).
        let mut added: Vec<NodeId> = Vec::new();
        let mut learners: Vec<NodeId> = Vec::new();
        let mut removed: Vec<NodeId> = Vec::new();
        let mut at: Micros = 0;
        loop {
            at += if rng.gen_bool(0.3) {
                rng.gen_range(5..60) * MS
            } else {
                rng.gen_range(60..700) * MS
            };
            if at >= opts.duration_us {
                break;
            }
            let budget = down.len() + leaders_down + lost < tolerate;
            // Nodes faults may hit: the founders and the spares added (up ones only).
            let up: Vec<NodeId> = ids
                .iter()
                .chain(&added)
                .copied()
                .filter(|n| !down.contains(n))
                .collect();
            let draw = rng.gen_range(0..100);
            let fault = match draw {
                // Membership: a fifth of the draws in schedules with spares, and lost disks.
                0..=2 if budget && rng.gen_bool(0.5) => {
                    lost += 1;
                    Fault::LoseDisk {
                        node: *up.choose(&mut rng).unwrap_or(&1),
                    }
                }
                3..=8 if !spare_ids.is_empty() || draw <= 4 => {
                    let free: Vec<NodeId> = spare_ids
                        .iter()
                        .copied()
                        .filter(|n| !added.contains(n))
                        .collect();
                    let mut options = vec!["transfer"];
                    if !free.is_empty() {
                        options.extend(["add", "add"]);
                    }
                    if !learners.is_empty() {
                        options.push("promote");
                    }
                    if !added.is_empty() {
                        options.push("remove added");
                    }
                    // A founder removed (the leader too, when it is picked) takes a place in
                    // the fault budget for the rest of the run, as a lost disk does: whether
                    // the spare meant to replace it was taken is not known here.
                    if budget && ids.len() - removed.len() >= 3 {
                        options.push("remove founder");
                    }
                    if !removed.is_empty() {
                        options.push("re-add founder");
                    }
                    match *options.choose(&mut rng).unwrap_or(&"transfer") {
                        "add" => {
                            let node = *free.choose(&mut rng).unwrap_or(&1);
                            let learner = rng.gen_bool(0.3);
                            added.push(node);
                            if learner && rng.gen_bool(0.7) {
                                // Promoted by the operator a while later (maybe too soon).
                                push(
                                    at + rng.gen_range(50..1_500) * MS,
                                    Fault::PromoteMember { node },
                                );
                            } else if learner {
                                learners.push(node);
                            } else if budget && ids.len() - removed.len() >= 3 && rng.gen_bool(0.4)
                            {
                                // A replacement: a founder (the leader, maybe) goes a while
                                // after the new node was added (its add may still be pending).
                                let old = pick_founder(&ids, &removed, &mut rng);
                                removed.push(old);
                                lost += 1;
                                push(
                                    at + rng.gen_range(100..2_000) * MS,
                                    Fault::RemoveMember { node: old },
                                );
                            }
                            Fault::AddMember { node, learner }
                        }
                        "promote" => {
                            let i = rng.gen_range(0..learners.len());
                            let node = learners[i];
                            // Refused while it lags: maybe asked again later.
                            if rng.gen_bool(0.5) {
                                learners.swap_remove(i);
                            }
                            Fault::PromoteMember { node }
                        }
                        "remove added" => {
                            let node = added.swap_remove(rng.gen_range(0..added.len()));
                            learners.retain(|n| *n != node);
                            Fault::RemoveMember { node }
                        }
                        "remove founder" => {
                            let node = pick_founder(&ids, &removed, &mut rng);
                            removed.push(node);
                            lost += 1;
                            Fault::RemoveMember { node }
                        }
                        "re-add founder" => {
                            let node = removed.swap_remove(rng.gen_range(0..removed.len()));
                            Fault::AddMember {
                                node,
                                learner: false,
                            }
                        }
                        _ => Fault::TransferLeader,
                    }
                }
                10..=11 if rng.gen_bool(0.5) => Fault::TransferLeader,
                0..=4 if budget => {
                    let node = *up.choose(&mut rng).unwrap_or(&1);
                    down.push(node);
                    Fault::Crash { node }
                }
                // A reboot: crash, and start again a moment later.
                5..=9 if budget => {
                    let node = *up.choose(&mut rng).unwrap_or(&1);
                    push(at + rng.gen_range(1..100) * MS, Fault::Restart { node });
                    Fault::Crash { node }
                }
                10..=19 if budget => {
                    leaders_down += 1;
                    Fault::CrashLeader
                }
                0..=29 if !down.is_empty() => {
                    let i = rng.gen_range(0..down.len());
                    Fault::Restart {
                        node: down.swap_remove(i),
                    }
                }
                0..=34 => {
                    down.clear();
                    leaders_down = 0;
                    Fault::RestartAll
                }
                35..=44 => {
                    let mut shuffled = ids.clone();
                    shuffled.shuffle(&mut rng);
                    let parts = if nodes >= 5 && rng.gen_bool(0.3) {
                        3
                    } else {
                        2
                    };
                    let mut groups: Vec<Vec<NodeId>> = vec![Vec::new(); parts];
                    for (i, n) in shuffled.into_iter().enumerate() {
                        let g = if i < parts {
                            i
                        } else {
                            rng.gen_range(0..parts)
                        };
                        groups[g].push(n);
                    }
                    groups.iter_mut().for_each(|g| g.sort_unstable());
                    Fault::Partition { groups }
                }
                45..=51 => {
                    let mut shuffled = ids.clone();
                    shuffled.shuffle(&mut rng);
                    let bridge = shuffled[0];
                    let rest = &shuffled[1..];
                    let cut = rng.gen_range(1..rest.len().max(2)).min(rest.len());
                    let mut left = rest[..cut].to_vec();
                    let mut right = rest[cut..].to_vec();
                    left.sort_unstable();
                    right.sort_unstable();
                    Fault::Bridge {
                        bridge,
                        left,
                        right,
                    }
                }
                52..=59 => {
                    let from = *ids.choose(&mut rng).unwrap_or(&1);
                    let others: Vec<NodeId> = ids.iter().copied().filter(|&n| n != from).collect();
                    let to = *others.choose(&mut rng).unwrap_or(&1);
                    Fault::OneWay { from, to }
                }
                60..=63 => Fault::IsolateLeader,
                64..=66 => Fault::CrashAfterVote {
                    node: *ids.choose(&mut rng).unwrap_or(&1),
                    restart_after_us: rng.gen_range(0..30) * MS,
                },
                67..=79 => Fault::Heal,
                80..=87 => random_net(&mut rng),
                88..=91 => {
                    let node = *ids.choose(&mut rng).unwrap_or(&1);
                    random_clock(&mut rng, node)
                }
                // Disk faults. A failing fsync and a power loss take the node down until the
                // restart that follows (like a reboot); rot costs the node its data dir, so it
                // counts as a lost disk for the rest of the run.
                92..=96 => {
                    let node = *up.choose(&mut rng).unwrap_or(&1);
                    match rng.gen_range(0..10) {
                        0..=2 => Fault::SlowDisk {
                            node,
                            extra_ms: *[20, 100, 400, 1000].choose(&mut rng).unwrap_or(&100),
                            for_ms: rng.gen_range(100..2_000),
                        },
                        3..=4 => Fault::DiskFull {
                            node,
                            for_ms: rng.gen_range(50..2_000),
                        },
                        5..=6 if budget => Fault::FsyncError {
                            node,
                            restart_after_ms: rng.gen_range(1..300),
                        },
                        7..=8 if budget => {
                            push(at + rng.gen_range(1..100) * MS, Fault::Restart { node });
                            Fault::TornCrash { node }
                        }
                        9 if budget && rng.gen_bool(0.5) => {
                            lost += 1;
                            Fault::BitRot { node }
                        }
                        _ => Fault::SlowDisk {
                            node,
                            extra_ms: 50,
                            for_ms: 500,
                        },
                    }
                }
                _ => Fault::Home {
                    client: rng.gen_range(0..clients),
                    node: if rng.gen_bool(0.7) {
                        Some(*ids.choose(&mut rng).unwrap_or(&1))
                    } else {
                        None
                    },
                },
            };
            push(at, fault);
        }
        // Now and then a burst of leader crashes in quick succession (Figure 8 of the paper),
        // restarting the crashed nodes whenever a majority is about to be lost.
        if rng.gen_bool(0.4) && tolerate > 0 {
            let mut t = rng.gen_range(0..opts.duration_us / 2 + 1);
            let end = (t + rng.gen_range(500..3_000) * MS).min(opts.duration_us);
            let mut crashed = 0;
            while t < end {
                push(t, Fault::CrashLeader);
                crashed += 1;
                if crashed >= tolerate {
                    push(t + rng.gen_range(1..80) * MS, Fault::RestartAll);
                    crashed = 0;
                }
                // Mostly before the new leader has replicated its first entries.
                t += if rng.gen_bool(0.7) {
                    rng.gen_range(1..20) * MS
                } else {
                    rng.gen_range(20..300) * MS
                };
            }
            push(end, Fault::RestartAll);
        }
        events.sort_by_key(|e| e.at_us);
        Schedule {
            seed,
            nodes,
            clients,
            snapshot_entries,
            core,
            duration_us: opts.duration_us,
            events,
            spares,
        }
    }

    /// The schedule as a readable list, one event a line.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "seed {}: {} nodes (+{} spares), {} clients, snapshots {}, faults for {}, core {:?}\n",
            self.seed,
            self.nodes,
            self.spares,
            self.clients,
            self.snapshot_entries
                .map_or("off".to_string(), |n| format!("every {n} entries")),
            fmt_time(self.duration_us),
            self.core
        );
        for step in &self.events {
            out.push_str(&format!("  {:>9}  {}\n", fmt_time(step.at_us), step.fault));
        }
        out
    }
}

/// A founder not removed yet, at random.
fn pick_founder(ids: &[NodeId], removed: &[NodeId], rng: &mut StdRng) -> NodeId {
    let left: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|n| !removed.contains(n))
        .collect();
    *left.choose(rng).unwrap_or(&1)
}

fn random_clock(rng: &mut StdRng, node: NodeId) -> Fault {
    // From 30% fast to 40% slow against nominal 10 ms ticks.
    let tick_us = *[7_000, 8_000, 9_000, 10_000, 11_000, 12_000, 14_000]
        .choose(rng)
        .unwrap_or(&10_000);
    Fault::Clock { node, tick_us }
}

fn random_net(rng: &mut StdRng) -> Fault {
    match rng.gen_range(0..4) {
        0 => Fault::Net {
            drop_pct: 0,
            dup_pct: 0,
            min_delay_us: 100,
            max_delay_us: 1_000,
            long_delay_pct: 0,
            long_delay_ms: 0,
        },
        _ => {
            let max_delay_us = rng.gen_range(2..40) * MS;
            Fault::Net {
                drop_pct: rng.gen_range(0..=20),
                dup_pct: rng.gen_range(0..=10),
                min_delay_us: rng.gen_range(100..=max_delay_us / 2),
                max_delay_us,
                long_delay_pct: rng.gen_range(0..=5),
                long_delay_ms: rng.gen_range(100..=2_000),
            }
        }
    }
}

/// `12.345s`.
pub fn fmt_time(us: Micros) -> String {
    format!("{}.{:03}s", us / SEC, (us % SEC) / MS)
}

/// How to run a schedule.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Print each fault as it happens, role changes, elections and commits.
    pub trace: bool,
    /// After the faults stop: time allowed to elect a leader and complete one client write.
    pub liveness_us: Micros,
    /// How often (virtual) the log matching check runs during the fault phase.
    pub check_every_us: Micros,
    /// Bugs switched on in the cluster (none by default).
    pub bugs: crate::bugs::BugSet,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            trace: false,
            liveness_us: 10 * SEC,
            check_every_us: 100 * MS,
            bugs: crate::bugs::BugSet::none(),
        }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Client operations, and those that completed with an answer.
    pub ops: usize,
    pub ops_completed: usize,
    pub writes_completed: usize,
    /// Terms that had a leader.
    pub leaders: usize,
    /// Virtual time simulated.
    pub virtual_us: Micros,
    /// From the end of the faults to the first successful write.
    pub recovery_us: Micros,
    /// Membership requests by kind: (asked, answered `Ok`).
    pub membership: BTreeMap<&'static str, (u64, u64)>,
}

/// Which rule a failing run broke (used to keep shrinking on the same failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    TwoLeaders,
    /// A node voted for two candidates in one term.
    DoubleVote,
    /// A leader committed an entry that a node without it could still overwrite.
    UnsafeCommit,
    StateMachineSafety,
    LogMatching,
    LeaderCompleteness,
    Monotonicity,
    /// A watcher delivered something other than its prefix's history.
    Watch,
    /// A membership request was answered with something untrue or unexpected.
    Membership,
    Snapshot,
    Linearizability,
    Liveness,
    /// Any other assertion or panic (in the core, the service or the simulation).
    Panic,
}

impl FailureKind {
    fn classify(msg: &str) -> FailureKind {
        let has = |s: &str| msg.contains(s);
        if has("two leaders") {
            FailureKind::TwoLeaders
        } else if has("unsafe commit") {
            FailureKind::UnsafeCommit
        } else if has("voted twice") {
            FailureKind::DoubleVote
        } else if has("leader completeness") {
            FailureKind::LeaderCompleteness
        } else if has("log matching") {
            FailureKind::LogMatching
        } else if has("applied a different entry") || has("conflict at committed index") {
            FailureKind::StateMachineSafety
        } else if has("went backwards") || has("move back") {
            FailureKind::Monotonicity
        } else if has("membership answer") {
            FailureKind::Membership
        } else if has("watcher") {
            FailureKind::Watch
        } else if has("snapshot") {
            FailureKind::Snapshot
        } else if has("linearizab") {
            FailureKind::Linearizability
        } else if has("liveness") {
            FailureKind::Liveness
        } else {
            FailureKind::Panic
        }
    }
}

/// Why a run failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// Virtual time when it was detected.
    pub at_us: Micros,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} at {}: {}",
            self.kind,
            fmt_time(self.at_us),
            self.message
        )
    }
}

/// Runs `schedule`; any broken rule (a failed check, or a panic anywhere in the cluster) is
/// returned as a [`Failure`]. Panics are caught: install a quiet panic hook when running many.
pub fn run_schedule(schedule: &Schedule, opts: &RunOpts) -> Result<RunStats, Failure> {
    let now = std::cell::Cell::new(0);
    match catch_unwind(AssertUnwindSafe(|| run_inner(schedule, opts, &now))) {
        Ok(Ok(stats)) => Ok(stats),
        Ok(Err(message)) => Err(Failure {
            kind: FailureKind::classify(&message),
            message,
            at_us: now.get(),
        }),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic with a non-string payload".to_string());
            Err(Failure {
                kind: FailureKind::classify(&message),
                message,
                at_us: now.get(),
            })
        }
    }
}

/// Prints role changes and commit advances of every node (`--seed` traces).
fn trace_observer() -> super::Observer {
    let mut seen: BTreeMap<NodeId, (Role, u64, u64)> = BTreeMap::new();
    Box::new(move |now: Micros, raft: &Raft| {
        let id = raft.id();
        let state = (raft.role(), raft.term(), raft.log().committed());
        let before = seen.insert(id, state);
        let Some((role, term, commit)) = before else {
            return;
        };
        let t = fmt_time(now);
        if role != state.0 || term != state.1 {
            if state.0 == Role::Leader {
                println!(
                    "  {t:>9}  * n{id} is LEADER of term {} (log {}@{}, commit {})",
                    state.1,
                    raft.log().last_index(),
                    raft.log().last_term(),
                    state.2
                );
            } else if state.0 == Role::Candidate && role != Role::Candidate {
                println!("  {t:>9}    n{id} campaigns in term {}", state.1);
            } else if role == Role::Leader {
                println!(
                    "  {t:>9}    n{id} steps down: {} in term {}",
                    state.0, state.1
                );
            }
        }
        if state.2 > commit && state.0 == Role::Leader {
            println!("  {t:>9}    n{id} commits up to {}", state.2);
        }
    })
}

fn leader_now(c: &Cluster) -> Option<NodeId> {
    c.leaders()
        .into_iter()
        .max_by_key(|&(_, term)| term)
        .map(|(id, _)| id)
}

fn apply_fault(c: &mut Cluster, fault: &Fault, trace: bool) {
    let t = fmt_time(c.now);
    let mut note = String::new();
    match fault {
        Fault::Crash { node } => {
            if c.node(*node).is_up() {
                c.crash(*node);
            } else {
                note = " (already down)".into();
            }
        }
        Fault::CrashLeader => match leader_now(c) {
            Some(id) => {
                c.crash(id);
                note = format!(": n{id}");
            }
            None => note = ": no leader".into(),
        },
        Fault::Restart { node } => {
            if c.node(*node).is_up() {
                note = " (already up)".into();
            } else {
                c.restart(*node);
            }
        }
        Fault::RestartAll => {
            let down: Vec<NodeId> = c
                .ids()
                .into_iter()
                .filter(|&n| !c.node(n).is_up() && c.ever_started(n))
                .collect();
            for &id in &down {
                c.restart(id);
            }
            note = format!(": {down:?}");
        }
        Fault::Partition { groups } => {
            let groups: Vec<&[NodeId]> = groups.iter().map(Vec::as_slice).collect();
            c.links.partition(&groups);
        }
        Fault::Bridge {
            bridge,
            left,
            right,
        } => {
            let mut a = left.clone();
            a.push(*bridge);
            let mut b = right.clone();
            b.push(*bridge);
            c.links.partition(&[&a, &b]);
        }
        Fault::OneWay { from, to } => c.links.set(*from, *to, false),
        Fault::CrashAfterVote { node, .. } => {
            let node = *node;
            c.crash_on_send = Some(Box::new(move |env| {
                env.from == node
                    && matches!(
                        env.msg,
                        RaftMessage::RequestVoteReply {
                            vote_granted: true,
                            pre_vote: false,
                            ..
                        }
                    )
            }));
        }
        Fault::IsolateLeader => match leader_now(c) {
            Some(id) => {
                c.links.set_node(id, false);
                note = format!(": n{id}");
            }
            None => note = ": no leader".into(),
        },
        Fault::Heal => c.heal(),
        Fault::Net {
            drop_pct,
            dup_pct,
            min_delay_us,
            max_delay_us,
            long_delay_pct,
            long_delay_ms,
        } => c.set_net(NetConfig {
            min_delay_us: *min_delay_us,
            max_delay_us: (*max_delay_us).max(*min_delay_us),
            drop_rate: f64::from(*drop_pct) / 100.0,
            dup_rate: f64::from(*dup_pct) / 100.0,
            long_delay_rate: f64::from(*long_delay_pct) / 100.0,
            long_delay_us: long_delay_ms * MS,
        }),
        Fault::Clock { node, tick_us } => c.nodes[*node as usize - 1].tick_us = (*tick_us).max(1),
        Fault::Home { client, node } => {
            if *client < c.client_ids().len() {
                c.client_mut(*client).home = *node;
            }
        }
        Fault::LoseDisk { node } => c.lose_disk(*node),
        Fault::AddMember { node, learner } => {
            c.add_node(*node);
            note = admin_note(c, |id| ClientRequest::MemberAdd {
                id,
                node_id: *node,
                addr: format!("sim-node-{node}"),
                learner: *learner,
                force: false,
            });
        }
        Fault::PromoteMember { node } => {
            note = admin_note(c, |id| ClientRequest::MemberPromote {
                id,
                node_id: *node,
                force: false,
            });
        }
        Fault::RemoveMember { node } => {
            note = admin_note(c, |id| ClientRequest::MemberRemove {
                id,
                node_id: *node,
                force: false,
            });
        }
        Fault::TransferLeader => {
            note = admin_note(c, |id| ClientRequest::TransferLeader { id, node_id: None });
        }
        Fault::SlowDisk {
            node,
            extra_ms,
            for_ms,
        } => c.slow_disk(*node, extra_ms * MS, for_ms * MS),
        Fault::DiskFull { node, for_ms } => c.disk_full(*node, for_ms * MS),
        Fault::FsyncError {
            node,
            restart_after_ms,
        } => c.fsync_error(*node, restart_after_ms * MS),
        Fault::TornCrash { node } => c.torn_crash(*node),
        Fault::BitRot { node } => {
            if c.ever_started(*node) {
                c.bit_rot(*node);
            }
        }
    }
    if trace {
        println!("  {t:>9}  ! {fault}{note}");
    }
}

/// A membership answer for the trace: `Ok`, or the error's code and message.
fn describe_admin_answer(c: &Cluster, resp: &ClientResponse) -> String {
    let what = resp
        .id()
        .and_then(|id| c.admin_request(id))
        .map_or("?".to_string(), |r| format!("{r:?}"));
    match resp {
        ClientResponse::Error(e) => format!("{what}: {:?} {}", e.code, e.message),
        _ => format!("{what}: ok"),
    }
}

/// Sends a membership request to the current leader; says what it answered at once.
fn admin_note(c: &mut Cluster, req: impl FnOnce(u64) -> ClientRequest) -> String {
    let Some(leader) = leader_now(c) else {
        return ": no leader".into();
    };
    let id = c.next_admin_id();
    let before = c.admin(leader, req(id));
    match c.admin_answers.get(before) {
        Some((_, ClientResponse::Error(e))) => format!(" at n{leader}: {:?} {}", e.code, e.message),
        Some(_) => format!(" at n{leader}: ok"),
        None => format!(" at n{leader}: pending"),
    }
}

fn run_inner(
    s: &Schedule,
    opts: &RunOpts,
    now: &std::cell::Cell<Micros>,
) -> Result<RunStats, String> {
    let seed = s.seed;
    let mut cfg = SimConfig::new(s.nodes + s.spares, seed);
    cfg.founders = Some(s.nodes);
    cfg.snapshot_entries = s.snapshot_entries;
    cfg.core = s.core.clone();
    cfg.bugs = opts.bugs.clone();
    let mut c = Cluster::new(cfg);
    if opts.trace {
        c.set_observer(trace_observer());
    }
    let mut clients = ClientConfig::new(s.clients);
    // A lost request or answer costs one attempt timeout; clients stuck on a cut-off node
    // give up, so the history also holds writes of unknown outcome.
    clients.attempt_timeout = 200 * MS;
    clients.op_deadline = 2 * SEC;
    clients.think = (0, 30 * MS);
    c.add_clients(clients);
    // Watchers of every key and of one key's prefix, resuming across every fault.
    c.add_watchers(1, "k");
    c.add_watchers(1, "k1");
    let ids = c.ids();

    // ----- the fault phase -----
    let mut events = s.events.iter().peekable();
    // A `CrashAfterVote` waiting for its vote: (node, restart delay, crashes seen when armed).
    let mut armed: Option<(NodeId, Micros, usize)> = None;
    // Restarts due: (at, node).
    let mut restarts: Vec<(Micros, NodeId)> = Vec::new();
    let mut next_check = c.now + opts.check_every_us;
    let mut answers_seen = 0;
    while c.now < s.duration_us {
        let mut until = next_check.min(s.duration_us);
        if let Some(step) = events.peek() {
            until = until.min(step.at_us.max(c.now));
        }
        if armed.is_some() {
            until = until.min(c.now + MS);
        }
        if let Some(&(at, _)) = restarts.iter().min() {
            until = until.min(at.max(c.now));
        }
        c.run_for(until - c.now);
        now.set(c.now);
        if let Some((node, delay, seen)) = armed {
            if c.crashed_on_send.len() > seen {
                c.crash_on_send = None;
                armed = None;
                restarts.push((c.now + delay, node));
                if opts.trace {
                    println!(
                        "  {:>9}  ! n{node} crashed right after granting a vote",
                        fmt_time(c.now)
                    );
                }
            }
        }
        if opts.trace {
            for (node, resp) in &c.admin_answers[answers_seen..] {
                println!(
                    "  {:>9}  ! n{node} answers {}",
                    fmt_time(c.now),
                    describe_admin_answer(&c, resp)
                );
            }
        }
        answers_seen = c.admin_answers.len();
        restarts.extend(c.take_disk_stops());
        let t = c.now;
        let due: Vec<(Micros, NodeId)> = restarts.extract_if(.., |(at, _)| *at <= t).collect();
        for (_, node) in due {
            if !c.node(node).is_up() {
                c.restart(node);
            }
            if opts.trace {
                println!("  {:>9}  ! restart n{node}", fmt_time(c.now));
            }
        }
        while let Some(step) = events.next_if(|e| e.at_us <= c.now) {
            if let Fault::CrashAfterVote {
                node,
                restart_after_us,
            } = step.fault
            {
                armed = Some((node, restart_after_us, c.crashed_on_send.len()));
            }
            apply_fault(&mut c, &step.fault, opts.trace);
        }
        if c.now >= next_check {
            c.check_log_matching()?;
            next_check = c.now + opts.check_every_us;
        }
    }
    c.crash_on_send = None;
    c.check_log_matching()?;

    // ----- recovery: faults stop -----
    if opts.trace {
        println!(
            "  {:>9}  ! faults stop: heal, restart every crashed node, reliable network, true clocks and disks",
            fmt_time(c.now)
        );
    }
    c.heal();
    c.clear_disk_faults();
    for id in c.ids() {
        if !c.node(id).is_up() && c.ever_started(id) {
            c.restart(id);
        }
    }
    c.set_net(NetConfig::reliable());
    let nominal = c.cfg.tick_us;
    for node in &mut c.nodes {
        node.tick_us = nominal;
    }
    let healed_at = c.now;
    let deadline = healed_at + opts.liveness_us;
    let ok = c.run_until(opts.liveness_us, |c| c.leader_among(&ids).is_some());
    now.set(c.now);
    let states = |c: &Cluster| -> String {
        c.ids()
            .into_iter()
            .map(|id| match c.raft(id) {
                Some(r) => format!(
                    "n{id}: {} term {} leader {} last {}@{} commit {} voters {:?} learners {:?} can vote {} transferring to {:?}",
                    r.role(),
                    r.term(),
                    r.leader(),
                    r.log().last_index(),
                    r.log().last_term(),
                    r.log().committed(),
                    r.membership().voters().collect::<Vec<_>>(),
                    r.membership().learners().collect::<Vec<_>>(),
                    r.can_vote(),
                    r.transferring_to()
                ),
                None => format!("n{id}: down"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if !ok {
        return Err(format!(
            "[seed {seed}] liveness: no leader within {} after the faults stopped (leaders: {:?}); {}",
            fmt_time(opts.liveness_us),
            c.leaders(),
            states(&c)
        ));
    }
    // One write from a fresh client must complete.
    let mut probe = ClientConfig::scripted(1);
    probe.attempt_timeout = 300 * MS;
    probe.op_deadline = opts.liveness_us;
    // Until the deadline: while no leader is known, NotLeader answers come fast.
    probe.max_attempts = usize::MAX;
    let probe = c.add_clients(probe)[0];
    c.submit(probe, "liveness", OpInput::Put(format!("seed-{seed}")));
    let done = |c: &Cluster| {
        c.op_records()
            .iter()
            .any(|r| r.client == probe && r.output == Output::Done)
    };
    let ok = c.run_until(deadline.saturating_sub(c.now), done);
    now.set(c.now);
    if !ok {
        let probe_record = c
            .op_records()
            .iter()
            .find(|r| r.client == probe)
            .map(|r| {
                format!(
                    "attempts {:?} errors {:?}",
                    r.attempts
                        .iter()
                        .map(|a| (fmt_time(a.sent), a.node))
                        .collect::<Vec<_>>(),
                    r.errors
                )
            })
            .unwrap_or_default();
        return Err(format!(
            "[seed {seed}] liveness: no client write succeeded within {} after the faults stopped; the write: {probe_record}; {}",
            fmt_time(opts.liveness_us),
            states(&c)
        ));
    }
    let recovery_us = c.now - healed_at;
    if opts.trace {
        println!(
            "  {:>9}  ! recovered: a write succeeded {} after the faults stopped",
            fmt_time(c.now),
            fmt_time(recovery_us)
        );
    }
    c.stop_clients();
    let ok = c.run_until(30 * SEC, |c| c.clients_idle());
    now.set(c.now);
    if !ok {
        return Err(format!(
            "[seed {seed}] liveness: client operations still in flight 30 s after the clients stopped"
        ));
    }
    c.check_log_matching()?;

    // ----- the clients' histories -----
    let history = c.kv_history();
    if let Err(v) = check_history(&history) {
        return Err(format!("[seed {seed}] history not linearizable: {v}"));
    }
    c.check_watchers()?;
    if c.client_stats().bad_answers > 0 {
        return Err(format!(
            "[seed {seed}] {} bad answers to clients",
            c.client_stats().bad_answers
        ));
    }
    let records = c.op_records();
    if std::env::var_os("RAFTSIM_DEBUG").is_some() {
        for r in records {
            eprintln!(
                "client {} {:?} {:?} call {} ret {:?} attempts {:?} errors {:?}",
                r.client,
                r.input,
                r.output,
                fmt_time(r.call),
                r.ret.map(fmt_time),
                r.attempts
                    .iter()
                    .map(|a| (fmt_time(a.sent), a.node))
                    .collect::<Vec<_>>(),
                r.errors
            );
        }
    }
    let mut membership: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for (kind, ok) in c.admin_outcomes() {
        let e = membership.entry(kind).or_default();
        e.0 += 1;
        e.1 += u64::from(ok);
    }
    Ok(RunStats {
        membership,
        ops: records.len(),
        ops_completed: records
            .iter()
            .filter(|r| r.output != Output::Unknown)
            .count(),
        writes_completed: records
            .iter()
            .filter(|r| r.is_write() && r.output != Output::Unknown)
            .count(),
        leaders: c.leaders.len(),
        virtual_us: c.now,
        recovery_us,
    })
}

/// Shrinks a failing schedule: removes chunks of events (halving the chunk size down to single
/// events, delta-debugging style) and shortens the fault phase, keeping every change after
/// which the run still fails with the same [`FailureKind`]. At most `max_runs` runs.
/// Returns the smallest failing schedule found, its failure and the runs spent.
pub fn shrink(
    schedule: &Schedule,
    failure: &Failure,
    opts: &RunOpts,
    max_runs: usize,
) -> (Schedule, Failure, usize) {
    let quiet = RunOpts {
        trace: false,
        ..opts.clone()
    };
    let mut best = schedule.clone();
    let mut best_failure = failure.clone();
    let mut runs = 0;
    let try_it = |cand: &Schedule, runs: &mut usize| -> Option<Failure> {
        *runs += 1;
        match run_schedule(cand, &quiet) {
            Err(f) if f.kind == failure.kind => Some(f),
            _ => None,
        }
    };

    // The fault phase need not go on much past the failure.
    if failure.at_us < best.duration_us {
        let mut cand = best.clone();
        cand.duration_us = (failure.at_us + 100 * MS).min(best.duration_us);
        cand.events.retain(|e| e.at_us < cand.duration_us);
        if let Some(f) = try_it(&cand, &mut runs) {
            best = cand;
            best_failure = f;
        }
    }
    let mut chunk = best.events.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < best.events.len() && runs < max_runs {
            let mut cand = best.clone();
            let end = (i + chunk).min(cand.events.len());
            cand.events.drain(i..end);
            if let Some(f) = try_it(&cand, &mut runs) {
                best = cand;
                best_failure = f;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 || runs >= max_runs {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    // Shorten the fault phase to just after the last event, then halve what remains.
    let last = best.events.last().map_or(0, |e| e.at_us);
    let mut duration = best.duration_us;
    while runs < max_runs {
        let target = last + (duration - last) / 2;
        if duration - target < 50 * MS {
            break;
        }
        let mut cand = best.clone();
        cand.duration_us = target;
        match try_it(&cand, &mut runs) {
            Some(f) => {
                best = cand;
                best_failure = f;
                duration = target;
            }
            None => break,
        }
    }
    (best, best_failure, runs)
}
