//! A seeded, virtual-time simulation of a raftd cluster.
//!
//! Every node runs the daemon's own [`Driver`] (`raftd::driver`: the Raft core and the
//! key-value service, with the rules for when a message may leave, what is applied and who is
//! answered). The simulation only carries out the driver's output, as the daemon's node loop
//! does: messages go over the simulated network, disk jobs are queued for the simulated disk,
//! which syncs them in order, all jobs queued during one fsync together in the next (group
//! commit), and reports each sync back to the driver; answers go to the simulated clients. A
//! crash throws away the driver and every job not yet synced; a restart rebuilds the core from
//! the simulated disk.
//!
//! The network can cut links (partitions, one-way too), drop, delay, duplicate and reorder.
//! All randomness comes from one seed, so a failing run replays exactly. Safety is checked as
//! the run goes: at most one leader per term, and no two nodes applying different entries at
//! one index (each node applying every index once, in order). A violation panics with the
//! seed in the message.
//!
//! Simulated clients (`clients.rs`) send requests over the simulated network and record a
//! history for the linearizability checker. A crash loses the requests pending at the node
//! (their clients time out); a restart starts the store from the disk's snapshot (or empty)
//! and the log after it rebuilds the rest.
//!
//! Snapshots are the driver's too (`SimConfig::snapshot_entries` is its policy): the state
//! machine is encoded at once when the driver asks, and the snapshot is saved by a disk job in
//! the queue like any other; a snapshot the leader sends is a disk job as well. The safety
//! checks know about them: a node's applied index may jump to a snapshot's index, every
//! snapshot of one index must hold the same state, and a node's commit, applied and snapshot
//! indexes never move backwards within an incarnation (nor its snapshot across restarts).

pub mod bugs;
pub mod check;
mod checks;
mod clients;
mod disk;
pub mod disk_faults;
mod helpers;
mod membership;
pub mod nemesis;
mod network;
pub mod scenario;
mod watchers;

pub use clients::{
    client_name, AnswerFate, AnswerHook, Arrival, Attempt, ClientConfig, ClientId, ClientStats,
    OpRecord, Route, SimClient,
};
pub use disk::MemDisk;
pub use network::{Links, NetConfig};

use bugs::BugSet;
use clients::Clients;
use raftd::driver::{Applied, DiskJob, Driver, DriverConfig, Output, SnapshotPolicy};
use raftd::kv::{KvService, KvStore};
use raftd::rpc::types::{
    ClientRequest, ClientResponse, Entry, EntryKind, Envelope, NodeId, RaftMessage, Role,
    SnapshotMeta,
};
use raftd_core::{Config, Founding, Raft};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

/// Virtual microseconds.
pub type Micros = u64;

pub const MS: Micros = 1_000;
pub const SEC: Micros = 1_000_000;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub net: NetConfig,
    /// Length of one tick (the core's defaults assume 10 ms).
    pub tick_us: Micros,
    /// fsync latency, uniform in this range.
    pub fsync_us: (Micros, Micros),
    /// Count serialized bytes of every message (slower; for the bandwidth test).
    pub measure_bytes: bool,
    /// Changes applied to every node's core config.
    pub tune: fn(&mut Config),
    /// Snapshot policy, as the daemon's `snapshot_entries`: a node snapshots its store and
    /// compacts its log once this many entries were applied since its last snapshot. None:
    /// never (the log grows forever).
    pub snapshot_entries: Option<u64>,
    /// Core settings applied to every node before `tune` (data, so a generated schedule can
    /// carry them).
    pub core: CoreTuning,
    /// Classic bugs switched on in every node (none by default).
    pub bugs: BugSet,
    /// Nodes 1..=founders found the cluster (all of them by default); the others are spares,
    /// down until `add_node` starts them to join.
    pub founders: Option<usize>,
    /// The consistency check's interval (every 25 entries by default, far more often than
    /// the daemon's 10,000, so simulated runs exercise it). Every check must match: a
    /// `Corrupt` alarm fails the run.
    pub hash_every: u64,
}

/// Core settings a simulation may change; None keeps the core's default.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CoreTuning {
    pub election_ticks: Option<(u32, u32)>,
    pub max_entries_per_message: Option<usize>,
    pub pre_vote: Option<bool>,
    pub check_quorum: Option<bool>,
}

impl CoreTuning {
    pub fn apply(&self, config: &mut Config) {
        if let Some((min, max)) = self.election_ticks {
            config.election_ticks_min = min;
            config.election_ticks_max = max;
        }
        if let Some(n) = self.max_entries_per_message {
            config.max_entries_per_message = n.max(1);
        }
        if let Some(p) = self.pre_vote {
            config.pre_vote = p;
        }
        if let Some(q) = self.check_quorum {
            config.check_quorum = q;
        }
    }
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            net: NetConfig::reliable(),
            tick_us: 10 * MS,
            fsync_us: (100, 2_000),
            measure_bytes: false,
            tune: |_| {},
            snapshot_entries: None,
            core: CoreTuning::default(),
            bugs: BugSet::none(),
            founders: None,
            hash_every: 25,
        }
    }

    /// How many nodes found the cluster.
    pub fn founder_count(&self) -> usize {
        self.founders.unwrap_or(self.nodes).min(self.nodes)
    }
}

/// Called after every step of every up node, with the virtual time: lets a test check an
/// invariant of the cores (say, that matchIndex never decreases) at every transition.
pub type Observer = Box<dyn FnMut(Micros, &Raft)>;

/// Decides, for each message a node sends, whether to crash that node right after (see
/// `Cluster::crash_on_send`).
pub type CrashOnSend = Box<dyn FnMut(&Envelope) -> bool>;

/// Traffic counters.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    /// Messages sent, by kind (`RequestVote`, `AppendEntries`, …), whether or not delivered.
    pub sent: BTreeMap<&'static str, u64>,
    /// Serialized bytes of AppendEntries requests (with `measure_bytes`).
    pub append_bytes: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// AppendEntries replies that refused the request (a log mismatch or a stale term): how
    /// many round trips the leaders spent finding where logs diverge.
    pub append_rejects: u64,
}

impl NetStats {
    pub fn total(&self) -> u64 {
        self.sent.values().sum()
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.sent.get(kind).copied().unwrap_or(0)
    }
}

enum Input {
    Tick,
    Message(Envelope),
    Client { route: Route, req: ClientRequest },
}

enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Deliver(Envelope),
    SyncDone {
        node: NodeId,
        incarnation: u64,
    },
    /// A client request reaches a node.
    ClientArrive {
        node: NodeId,
        route: Route,
        req: ClientRequest,
    },
    /// A node's answer reaches a client.
    ClientAnswer {
        node: NodeId,
        route: Route,
        resp: ClientResponse,
    },
    ClientTimer {
        client: clients::ClientId,
        token: u64,
    },
    /// A watcher (re)opens its watch stream.
    WatcherTimer {
        watcher: usize,
    },
    /// A node's driver goes on with what one drive left (`Driver::wants_drive`).
    Drive {
        node: NodeId,
        incarnation: u64,
    },
}

struct Scheduled {
    at: Micros,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and we want the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One of the driver's disk jobs on its way to the simulated disk.
struct PendingWrite {
    job: DiskJob,
    /// When the fsync that makes it durable completes.
    done_at: Micros,
}

pub struct SimNode {
    pub id: NodeId,
    /// The daemon's driver (core and key-value service) of this incarnation; None while down.
    driver: Option<Driver<Route>>,
    pub disk: MemDisk,
    /// Disk jobs queued, oldest first; each is durable at its `done_at`.
    writes: VecDeque<PendingWrite>,
    /// What this incarnation's state machine applied one by one, in order, after
    /// `applied_base` (`applied[i]` is index `applied_base + 1 + i`).
    pub applied: Vec<Entry>,
    /// The index of the snapshot this incarnation's state machine was last restored from (at
    /// start or by an InstallSnapshot): everything up to it is reflected without being in
    /// `applied`.
    pub applied_base: u64,
    /// Snapshots this node took of its own store / installed from a leader, over all
    /// incarnations.
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// (commit, applied, snapshot) index last observed in this incarnation.
    watermarks: (u64, u64, u64),
    incarnation: u64,
    /// This node's tick length (clocks may run at different rates).
    pub tick_us: Micros,
    /// The disk faults in effect on this node.
    pub disk_faults: disk_faults::DiskFaults,
}

impl SimNode {
    pub fn raft(&self) -> Option<&Raft> {
        self.driver.as_ref().map(Driver::raft)
    }

    /// The driver (None while the node is down).
    pub fn driver(&self) -> Option<&Driver<Route>> {
        self.driver.as_ref()
    }

    /// The key-value service (None while the node is down).
    pub fn service(&self) -> Option<&KvService<Route>> {
        self.driver.as_ref().map(Driver::service)
    }

    /// The key-value store this incarnation rebuilt from the log.
    pub fn store(&self) -> Option<&KvStore> {
        self.driver.as_ref().map(Driver::store)
    }

    pub fn is_up(&self) -> bool {
        self.driver.is_some()
    }

    /// Last index this incarnation's state machine reflects (applied, or covered by the
    /// snapshot it was restored from).
    pub fn applied_index(&self) -> u64 {
        self.applied_base + self.applied.len() as u64
    }

    /// The entry this incarnation applied at `index`, if it applied it one by one (None if it
    /// is covered by a snapshot or not applied yet).
    pub fn applied_entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.applied_base {
            return None;
        }
        self.applied.get((index - self.applied_base - 1) as usize)
    }
}

pub struct Cluster {
    pub cfg: SimConfig,
    pub now: Micros,
    rng: StdRng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub nodes: Vec<SimNode>,
    /// Links are what carries traffic; tests may also set them directly (one-way cuts,
    /// partitions). `disconnect`/`connect` keep this per-node flag on top.
    pub links: Links,
    disconnected: Vec<bool>,
    pub stats: NetStats,
    pub disk_stats: disk_faults::DiskFaultStats,
    /// Nodes a failed fsync stopped, with when to start them again (for the schedule).
    disk_stops: Vec<(Micros, NodeId)>,
    /// A test corrupted a store on purpose: consistency mismatches are expected.
    corrupted: bool,
    /// index -> the entry every node must apply there.
    applied_anywhere: BTreeMap<u64, Entry>,
    /// The (node, data dir) that applied the founding entry (index 1). It is committed by
    /// construction, not by a quorum: if every node that applied it lost its disk before
    /// anyone else took it, the cluster is founded again, with another entry 1.
    founding_appliers: std::collections::BTreeSet<(NodeId, u64)>,
    /// index -> the term the node that applied it first was in then: the entry was committed
    /// in that term or earlier, so every leader of a later term must hold it (leader
    /// completeness).
    committed_by_term: BTreeMap<u64, u64>,
    /// snapshot index -> the state every snapshot at that index must hold.
    snapshot_states: BTreeMap<u64, KvStore>,
    /// term -> the node that led it.
    leaders: BTreeMap<u64, NodeId>,
    /// (node, data dir, term) -> whom the node told it votes for in that term (a granted vote,
    /// or its own vote request), over all its restarts.
    votes: BTreeMap<(NodeId, u64, u64), NodeId>,
    observer: Option<Observer>,
    /// A node that sends a message matching this is crashed as soon as the event that made it
    /// send is handled (before anything else happens), so a test can crash a node at exactly
    /// the moment it promised something, e.g. right after granting a vote.
    pub crash_on_send: Option<CrashOnSend>,
    /// Nodes `crash_on_send` picked, crashed after the current event.
    crash_pending: Vec<NodeId>,
    /// Nodes crashed by `crash_on_send` so far, in order.
    pub crashed_on_send: Vec<NodeId>,
    /// Nodes to crash once the current event is handled (an `AnswerFate::DropAndCrash`).
    crash_after_event: Vec<NodeId>,
    clients: Clients,
    /// Answers to membership requests (`admin`), oldest first.
    pub admin_answers: Vec<(NodeId, ClientResponse)>,
    /// Membership requests sent with `admin`, by request id, to check their answers.
    admin_requests: BTreeMap<u64, ClientRequest>,
    /// Nodes that were started to join (spares added with `add_node`).
    joined: std::collections::BTreeSet<NodeId>,
    watchers: watchers::Watchers,
}

impl Cluster {
    pub fn new(cfg: SimConfig) -> Cluster {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let n = cfg.nodes;
        let mut cluster = Cluster {
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes: Vec::new(),
            links: Links::new(n),
            disconnected: vec![false; n],
            stats: NetStats::default(),
            disk_stats: disk_faults::DiskFaultStats::default(),
            disk_stops: Vec::new(),
            corrupted: false,
            applied_anywhere: BTreeMap::new(),
            founding_appliers: Default::default(),
            committed_by_term: BTreeMap::new(),
            snapshot_states: BTreeMap::new(),
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            observer: None,
            crash_on_send: None,
            crash_pending: Vec::new(),
            crashed_on_send: Vec::new(),
            crash_after_event: Vec::new(),
            clients: Clients::default(),
            admin_answers: Vec::new(),
            admin_requests: BTreeMap::new(),
            joined: Default::default(),
            watchers: Default::default(),
            rng: StdRng::seed_from_u64(rng.gen()),
            cfg,
        };
        let founders = cluster.cfg.founder_count() as NodeId;
        for id in 1..=n as NodeId {
            let incarnation = cluster.fresh_incarnation();
            cluster.nodes.push(SimNode {
                id,
                driver: None,
                disk: MemDisk::fresh(incarnation),
                writes: VecDeque::new(),
                applied: Vec::new(),
                applied_base: 0,
                snapshots_taken: 0,
                snapshots_installed: 0,
                watermarks: (0, 0, 0),
                incarnation: 0,
                tick_us: cluster.cfg.tick_us,
                disk_faults: disk_faults::DiskFaults::default(),
            });
            if id <= founders {
                cluster.start(id);
            }
        }
        cluster
    }

    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    pub fn ids(&self) -> Vec<NodeId> {
        (1..=self.cfg.nodes as NodeId).collect()
    }

    pub fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[id as usize - 1]
    }

    /// Node `id`'s wall clock (ms since the epoch): virtual time from a fixed date, with a
    /// skew of up to half an hour either way that the seed picks per node, so leaders stamp
    /// commands with clocks that disagree (the log's clock must only move forward).
    fn wall_clock_ms(&self, id: NodeId) -> u64 {
        const START_MS: u64 = 1_800_000_000_000;
        let skew = self.cfg.seed.wrapping_add(id.wrapping_mul(7919)) % 3_600_000;
        START_MS + self.now / 1000 + skew - 1_800_000
    }

    fn driver_mut(&mut self, id: NodeId) -> Option<&mut Driver<Route>> {
        self.node_mut(id).driver.as_mut()
    }

    pub fn raft(&self, id: NodeId) -> Option<&Raft> {
        self.node(id).raft()
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn schedule(&mut self, after: Micros, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + after,
            seq: self.seq,
            event,
        });
    }

    fn start(&mut self, id: NodeId) {
        // As the daemon's `Storage::open`: the log's bytes are replayed (a torn last batch
        // dropped); damage makes the node refuse its data dir, which is then repaired.
        self.recover_image(id);
        let founders: Vec<NodeId> = (1..=self.cfg.founder_count() as NodeId).collect();
        let mut config = Config::new(id, founders.clone());
        config.seed = self.rng.gen();
        // Small batches (with the driver's `apply_per_drive`): nodes take inputs while
        // committed entries wait to be applied, as a busy daemon does.
        config.max_apply_batch = 4;
        // A few entries kept behind each snapshot: some lagging followers catch up from the
        // log, others need the snapshot.
        config.log_behind_snapshot = 3;
        // As the daemon: an empty founding member founds the cluster only with every other
        // founding member empty too; any other empty node waits to be caught up.
        config.founding = if founders.contains(&id) && !self.joined.contains(&id) {
            Founding::Unanimous
        } else {
            Founding::Join
        };
        config.incarnation = self.node(id).disk.incarnation;
        config.addrs = self
            .ids()
            .into_iter()
            .map(|n| (n, format!("sim-node-{n}")))
            .collect();
        config.bugs = self.cfg.bugs.core();
        self.cfg.core.apply(&mut config);
        (self.cfg.tune)(&mut config);
        let seed = self.cfg.seed;
        let disk = self.node(id).disk.clone();
        // As the daemon starts (src/server/mod.rs): the store from the disk's snapshot, the
        // core from the snapshot and the log after it.
        let mut disk = disk;
        let store = match &mut disk.snapshot {
            Some(snap) => {
                let store = KvStore::from_snapshot(snap).unwrap_or_else(|e| {
                    panic!("[seed {seed}] node {id}: the snapshot on disk does not decode: {e}")
                });
                self.check_snapshot_state(id, snap.meta, &store);
                // As the daemon: the configuration at the snapshot is part of its state.
                snap.membership = store.membership().clone();
                store
            }
            None => KvStore::default(),
        };
        let disk_snapshot = disk.snapshot_index();
        let raft = Raft::restore(config, disk.hard_state, disk.snapshot, disk.entries)
            .expect("valid sim config");
        let restored = raft.snapshot_index();
        assert!(
            restored >= disk_snapshot,
            "[seed {seed}] node {id} restarted with its snapshot at {restored}, below the {disk_snapshot} its disk holds"
        );
        let marks = (
            raft.log().committed(),
            raft.log().applied(),
            raft.snapshot_index(),
        );
        let tick_us = self.node(id).tick_us;
        let first_tick = self.rng.gen_range(1..=tick_us);
        let addrs = self
            .ids()
            .into_iter()
            .map(|n| (n, format!("sim-node-{n}")))
            .collect();
        let driver_cfg = DriverConfig {
            snapshots: match self.cfg.snapshot_entries {
                // No ratio: the simulation's states are small, and its schedules snapshot often.
                Some(entries) => SnapshotPolicy {
                    entries,
                    bytes: u64::MAX,
                    log_percent: 0,
                },
                None => SnapshotPolicy::never(),
            },
            bugs: self.cfg.bugs.kv(),
            hash_every: self.cfg.hash_every,
            tick_ms: (tick_us / MS).max(1),
            // Small, so that compactions run under every fault the simulation has.
            auto_compact_revisions: 64,
            // Small, so that a node takes inputs with committed entries left to apply.
            apply_per_drive: 8,
            ..DriverConfig::default()
        };
        let node = self.node_mut(id);
        node.driver = Some(Driver::new(raft, store, addrs, driver_cfg));
        // The state machine starts from the snapshot (or empty) and is rebuilt as the log after
        // it is applied again.
        node.applied.clear();
        node.applied_base = disk_snapshot;
        node.watermarks = marks;
        node.incarnation += 1;
        let incarnation = node.incarnation;
        self.schedule(
            first_tick,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
    }

    /// Kills a node: everything not fsynced is lost, with its queued inputs and its state
    /// machine. The disk keeps what was synced. Pending client requests are dropped without
    /// an answer (their clients time out).
    pub fn crash(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        node.disk_faults.fsync_error = None;
        node.disk_faults.no_space_reported = false;
        node.driver = None;
        node.writes.clear();
        node.applied.clear();
        node.applied_base = 0;
        node.incarnation += 1;
        self.watchers_node_down(id);
    }

    /// Starts a crashed node again from its disk.
    pub fn restart(&mut self, id: NodeId) {
        if self.node(id).is_up() {
            self.crash(id);
        }
        self.start(id);
    }

    /// Cuts `id` off from every other node (as the MIT lab's `disconnect`): it stays cut off
    /// until `connect(id)` or `heal()`, whatever other nodes are connected meanwhile.
    pub fn disconnect(&mut self, id: NodeId) {
        self.disconnected[id as usize - 1] = true;
        self.links.set_node(id, false);
    }

    /// Joins `id` back to every node that is not itself disconnected (as the MIT lab's
    /// `connect`): links to nodes still cut off stay down.
    pub fn connect(&mut self, id: NodeId) {
        self.disconnected[id as usize - 1] = false;
        for other in self.ids() {
            if other != id && !self.disconnected[other as usize - 1] {
                self.links.set(id, other, true);
                self.links.set(other, id, true);
            }
        }
    }

    /// Is `id` cut off by `disconnect`?
    pub fn is_connected(&self, id: NodeId) -> bool {
        !self.disconnected[id as usize - 1]
    }

    /// Every link up again, every node connected.
    pub fn heal(&mut self) {
        self.disconnected.iter_mut().for_each(|d| *d = false);
        self.links.heal();
    }

    pub fn set_net(&mut self, net: NetConfig) {
        self.cfg.net = net;
    }

    /// Runs the simulation for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Micros) {
        let end = self.now + duration;
        while let Some(next) = self.queue.peek() {
            if next.at > end {
                break;
            }
            let Some(ev) = self.queue.pop() else { break };
            self.now = ev.at;
            self.handle(ev.event);
            for id in std::mem::take(&mut self.crash_pending) {
                if self.node(id).is_up() {
                    self.crash(id);
                    self.crashed_on_send.push(id);
                }
            }
            for id in std::mem::take(&mut self.crash_after_event) {
                if self.node(id).is_up() {
                    self.crash(id);
                }
            }
        }
        self.now = end;
    }

    /// Runs until `cond` holds (checked every millisecond of virtual time) or `timeout` passes.
    pub fn run_until(&mut self, timeout: Micros, mut cond: impl FnMut(&Cluster) -> bool) -> bool {
        let end = self.now + timeout;
        while self.now < end {
            if cond(self) {
                return true;
            }
            self.run_for(MS);
        }
        cond(self)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                if self.node(node).incarnation != incarnation {
                    return; // a tick of a crashed incarnation
                }
                let tick_us = self.node(node).tick_us;
                self.schedule(tick_us, Event::Tick { node, incarnation });
                self.input(node, Input::Tick);
            }
            Event::Deliver(env) => {
                if !self.links.is_up(env.from, env.to) {
                    self.stats.dropped += 1;
                    return;
                }
                self.stats.delivered += 1;
                let to = env.to;
                self.input(to, Input::Message(env));
            }
            Event::SyncDone { node, incarnation } => {
                if self.node(node).incarnation != incarnation {
                    return;
                }
                self.finish_sync(node);
            }
            Event::ClientArrive { node, route, req } => self.client_arrive(node, route, req),
            Event::ClientAnswer { node, route, resp } => self.client_answer(node, route, resp),
            Event::ClientTimer { client, token } => self.client_timer(client, token),
            Event::WatcherTimer { watcher } => self.watcher_timer(watcher),
            Event::Drive { node, incarnation } => {
                if self.node(node).incarnation == incarnation && self.node(node).is_up() {
                    self.drive(node);
                }
            }
        }
    }

    /// One input, as the daemon's node loop takes it, then the driver's output carried out.
    fn input(&mut self, id: NodeId, input: Input) {
        if !self.node(id).is_up() {
            return;
        }
        if let Input::Client { route, .. } = &input {
            self.note_arrival(id, *route);
        }
        let wall_clock = self.wall_clock_ms(id);
        let Some(driver) = self.driver_mut(id) else {
            return;
        };
        match input {
            Input::Tick => driver.tick(wall_clock),
            Input::Message(env) => driver.step(env),
            Input::Client { route, req } => driver.request(req, route),
        }
        self.observe(id);
        self.drive(id);
    }

    /// Runs the node's driver and carries out its output until it has nothing more to say.
    fn drive(&mut self, id: NodeId) {
        let seed = self.cfg.seed;
        loop {
            let Some(driver) = self.driver_mut(id) else {
                return;
            };
            let out = driver
                .drive()
                .unwrap_or_else(|e| panic!("[seed {seed}] node {id}: {e}"));
            if out.is_empty() {
                return;
            }
            // More committed entries than one drive applies: the daemon goes on in its next
            // turn, after the inputs waiting; so does the simulation, after the events due now.
            let more = driver.wants_drive();
            self.execute(id, out);
            self.check_applied(id);
            self.observe(id);
            if more {
                let incarnation = self.node(id).incarnation;
                self.schedule(
                    0,
                    Event::Drive {
                        node: id,
                        incarnation,
                    },
                );
                return;
            }
        }
    }

    /// Does what the daemon's node loop does with an output, on the simulated network, disk
    /// and clients, checking the state machine's safety on the way.
    fn execute(&mut self, id: NodeId, out: Output<Route>) {
        let Output {
            messages,
            disk,
            answers,
            applied,
            prepare_snapshot,
            compacted: _,
            // Every node can reach every other in the simulation: nothing to connect.
            peers: _,
            hash_states,
            watch_events,
            backups,
            // Freed here; the daemon frees many on another thread.
            released: _,
        } = out;
        for env in messages {
            self.send(env);
        }
        // The simulated clients take no backups; a backup from a test is checked against the
        // state every node must hold at its index.
        for task in backups {
            self.check_snapshot_state(id, task.meta(), &task.store);
        }
        // The daemon hashes on a blocking thread; here at once (virtual time does not move).
        for task in hash_states {
            let hash = task.hash();
            if let Some(driver) = self.driver_mut(id) {
                driver.state_hashed(task.index, hash);
            }
        }
        self.check_consistency(id);
        for applied in applied {
            match applied {
                Applied::Entry(entry) => self.apply(id, &entry),
                Applied::Snapshot(meta) => self.restored_from_snapshot(id, meta),
            }
        }
        for job in disk {
            self.queue_write(id, job);
        }
        for (route, resp) in answers.into_iter().chain(watch_events) {
            self.answer(id, route, resp);
        }
        if let Some(task) = prepare_snapshot {
            // Encoded at once (the daemon does it on another thread while the node goes on);
            // saving it is a disk job like any other.
            let seed = self.cfg.seed;
            let meta = task.meta();
            self.check_snapshot_state(id, meta, &task.store);
            let snapshot = task.encode().unwrap_or_else(|e| {
                panic!("[seed {seed}] node {id}: cannot encode its store: {e}")
            });
            let Some(driver) = self.driver_mut(id) else {
                return;
            };
            if driver.snapshot_prepared(snapshot) {
                self.node_mut(id).snapshots_taken += 1;
            }
        }
    }

    /// Queues a disk job behind the node's other jobs. A job queued while the disk syncs joins
    /// the next sync, with every other job queued meanwhile.
    fn queue_write(&mut self, id: NodeId, job: DiskJob) {
        if let DiskJob::InstallSnapshot { snapshot, .. } = &job {
            let seed = self.cfg.seed;
            let store = KvStore::from_snapshot(snapshot).unwrap_or_else(|e| {
                panic!(
                    "[seed {seed}] node {id}: the snapshot at {} from the leader does not decode: {e}",
                    snapshot.meta.index
                )
            });
            self.check_snapshot_state(id, snapshot.meta, &store);
        }
        let now = self.now;
        let node = self.node(id);
        let running = node.writes.front().map(|w| w.done_at);
        let last = node.writes.back().map(|w| w.done_at);
        let done_at = match (running, last) {
            // Idle disk: sync now.
            (None, _) => now + self.sync_delay(id),
            // A later sync is already waiting to start: join it.
            (Some(first), Some(last)) if last > first => last,
            // Only one sync running (or one held by a full disk): the next one starts when it
            // ends.
            (Some(first), _) => first.max(now) + self.sync_delay(id),
        };
        let schedule = last != Some(done_at);
        let incarnation = self.node(id).incarnation;
        let seq = job.seq();
        self.node_mut(id)
            .writes
            .push_back(PendingWrite { job, done_at });
        // BUG (ack-before-fsync): say the job is durable before its fsync returned.
        if self.cfg.bugs.contains(bugs::Bug::AckBeforeFsync) {
            if let Some(driver) = self.driver_mut(id) {
                driver.durable(seq);
            }
        }
        if schedule {
            self.schedule(
                done_at - now,
                Event::SyncDone {
                    node: id,
                    incarnation,
                },
            );
        }
    }

    fn fsync_delay(&mut self) -> Micros {
        let (lo, hi) = self.cfg.fsync_us;
        self.rng.gen_range(lo..=hi)
    }

    /// Every job due by now is durable: on the disk, and reported to the driver.
    fn finish_sync(&mut self, id: NodeId) {
        if !self.sync_allowed(id) {
            return;
        }
        self.complete_writes(id, Some(self.now));
        self.drive(id);
    }

    /// Every job in flight becomes durable now.
    fn flush_writes(&mut self, id: NodeId) {
        self.complete_writes(id, None);
    }

    /// Writes the jobs due by `due` (all of them with None) to the disk, oldest first, and
    /// reports the last one durable to the driver.
    fn complete_writes(&mut self, id: NodeId, due: Option<Micros>) {
        let mut synced = false;
        let mut last = None;
        while self
            .node(id)
            .writes
            .front()
            .is_some_and(|w| due.is_none_or(|due| w.done_at <= due))
        {
            last = self.complete_write(id, &mut synced).or(last);
        }
        if let (Some(seq), Some(driver)) = (last, self.driver_mut(id)) {
            driver.durable(seq);
            self.observe(id);
        }
    }

    /// Writes the oldest job to the disk; returns its sequence number.
    fn complete_write(&mut self, id: NodeId, synced: &mut bool) -> Option<u64> {
        let w = self.node_mut(id).writes.pop_front()?;
        let disk = &mut self.node_mut(id).disk;
        let seq = w.job.seq();
        match w.job {
            DiskJob::Append {
                hard_state,
                entries,
                ..
            } => {
                disk.save(hard_state, &entries, !*synced);
                *synced = true;
            }
            DiskJob::SaveSnapshot { snapshot, tail, .. } => {
                let hs = disk.hard_state;
                disk.save_snapshot(snapshot, &tail, hs);
            }
            DiskJob::InstallSnapshot {
                hard_state,
                snapshot,
                tail,
                ..
            } => {
                let hs = hard_state.unwrap_or(disk.hard_state);
                disk.save_snapshot(snapshot, &tail, hs);
            }
        }
        Some(seq)
    }

    /// No node's consistency check may find a mismatch, unless a test corrupted a store on
    /// purpose (`corrupted`).
    fn check_consistency(&self, id: NodeId) {
        if self.corrupted {
            return;
        }
        if let Some(m) = self
            .node(id)
            .driver()
            .and_then(|d| d.consistency_mismatch())
        {
            panic!(
                "[seed {}] node {id}: consistency check failed: {m}",
                self.cfg.seed
            );
        }
    }

    /// Test hook: changes node `id`'s store behind the log's back (as memory or disk damage
    /// would), so the consistency check must raise `Corrupt`.
    pub fn corrupt_store(&mut self, id: NodeId, key: &str, value: &str) {
        self.corrupted = true;
        if let Some(d) = self.driver_mut(id) {
            d.corrupt_store_for_test(key, value);
        }
    }

    fn check_applied(&self, id: NodeId) {
        let seed = self.cfg.seed;
        let node = self.node(id);
        if let (Some(raft), Some(store)) = (node.raft(), node.store()) {
            assert_eq!(
                store.applied(),
                raft.log().applied(),
                "[seed {seed}] node {id}: the store's applied index differs from the core's"
            );
            assert_eq!(
                node.applied_index(),
                raft.log().applied(),
                "[seed {seed}] node {id}: the state machine's applied index differs from the core's"
            );
        }
    }

    /// State-machine safety: every node applies each index once, in order, and all nodes apply
    /// the same entry at the same index.
    fn apply(&mut self, id: NodeId, entry: &Entry) {
        let seed = self.cfg.seed;
        let term = self.raft(id).map_or(0, Raft::term);
        let node = self.node_mut(id);
        let expected = node.applied_index() + 1;
        assert_eq!(
            entry.index, expected,
            "[seed {seed}] node {id} applied index {} but expected {expected}",
            entry.index
        );
        node.applied.push(entry.clone());
        if entry.index == 1 {
            let dir = node.disk.incarnation;
            self.founding_appliers.insert((id, dir));
        }
        match self.applied_anywhere.get(&entry.index) {
            Some(first) => assert_eq!(
                first, entry,
                "[seed {seed}] node {id} applied a different entry at index {} than another node",
                entry.index
            ),
            None => {
                self.applied_anywhere.insert(entry.index, entry.clone());
                self.committed_by_term.insert(entry.index, term);
            }
        }
    }

    /// The state machine took the leader's snapshot: it now reflects everything up to its
    /// index, and its applied index jumps there (never back).
    fn restored_from_snapshot(&mut self, id: NodeId, meta: SnapshotMeta) {
        let seed = self.cfg.seed;
        let node = self.node_mut(id);
        let before = node.applied_index();
        assert!(
            meta.index > before,
            "[seed {seed}] node {id} installs a snapshot at {} although its state machine already reflects index {before}: it would move back",
            meta.index
        );
        node.snapshots_installed += 1;
        node.applied.clear();
        node.applied_base = meta.index;
    }

    /// Snapshots node `id`'s store at its applied index now, whatever the policy says, and
    /// makes it durable at once (with every job queued before it). Returns what the snapshot
    /// covers; None if the node is down or has applied nothing since its last snapshot.
    pub fn take_snapshot(&mut self, id: NodeId) -> Option<SnapshotMeta> {
        // A snapshot still being saved finishes first (one at a time).
        self.flush_writes(id);
        self.drive(id);
        let meta = self.driver_mut(id)?.start_snapshot()?;
        self.drive(id);
        self.flush_writes(id);
        self.drive(id);
        Some(meta)
    }

    fn send(&mut self, env: Envelope) {
        *self.stats.sent.entry(env.msg.kind()).or_default() += 1;
        self.check_one_vote_per_term(&env);
        if let RaftMessage::AppendEntriesReply { success: false, .. } = env.msg {
            self.stats.append_rejects += 1;
        }
        if self.crash_on_send.as_mut().is_some_and(|crash| crash(&env))
            && !self.crash_pending.contains(&env.from)
        {
            self.crash_pending.push(env.from);
        }
        if self.cfg.measure_bytes {
            if let RaftMessage::AppendEntries { .. } = env.msg {
                let bytes = serde_json::to_vec(&env).map(|v| v.len()).unwrap_or(0);
                self.stats.append_bytes += bytes as u64 + 4;
            }
        }
        let net = self.cfg.net.clone();
        if !self.links.is_up(env.from, env.to) || self.rng.gen_bool(net.drop_rate) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if self.rng.gen_bool(net.dup_rate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.rng.gen_range(net.min_delay_us..=net.max_delay_us);
            if net.long_delay_rate > 0.0 && self.rng.gen_bool(net.long_delay_rate) {
                delay += self.rng.gen_range(0..=net.long_delay_us);
            }
            self.schedule(delay, Event::Deliver(env.clone()));
        }
    }
}
