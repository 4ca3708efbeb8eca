//! A nemesis for real `raftd` processes on 127.0.0.1: a cluster whose every directed peer link
//! `i -> j` runs through a fault-injecting proxy (`proxy.rs`), fault actions on it (partitions,
//! one-way cuts, bridges, black holes, slow links, SIGKILL + restart, SIGSTOP/SIGCONT),
//! a seeded fault schedule, and key-value clients that record a history for the
//! linearizability checker (mirroring the simulation's clients, `sim/src/clients.rs`).
//!
//! Everything here must run inside a tokio runtime; every loop is bounded in count and in time.

use crate::process::Node;
use crate::proxy::Proxy;
use raftd::client::{Client, ClientError, ClientOptions, Connection};
use raftd::rpc::types::{ClientRequest, ClientResponse, Consistency, StatusResponse};
use raftd_sim::check::{Input, Operation, Output};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Microseconds since `start` on the monotonic clock: the time base of the history.
pub fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

pub struct NemesisCluster {
    pub nodes: Vec<Node>,
    /// The proxy of each directed link `(from, to)`.
    pub proxies: BTreeMap<(u64, u64), Proxy>,
    dir: Option<tempfile::TempDir>,
    pub path: PathBuf,
    paused: BTreeSet<u64>,
}

impl NemesisCluster {
    /// Starts `n` nodes whose peer links all go through proxies. `extra` is appended to every
    /// node's command line.
    pub async fn start(n: usize, extra: &[&str]) -> NemesisCluster {
        assert!(n >= 1, "a cluster needs a node");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        // Hold the nodes' ports while the proxies bind theirs, so no proxy gets a node's port;
        // released just before the nodes start.
        let reserved = crate::process::reserve_ports(n);
        let ports: Vec<u16> = reserved
            .iter()
            .map(|l| l.local_addr().expect("local addr").port())
            .collect();
        let ids: Vec<u64> = (1..=n as u64).collect();
        let mut proxies = BTreeMap::new();
        for &from in &ids {
            for &to in &ids {
                if from == to {
                    continue;
                }
                let target = SocketAddr::from(([127, 0, 0, 1], ports[to as usize - 1]));
                let proxy = Proxy::start(from, to, target)
                    .await
                    .expect("start a link proxy");
                proxies.insert((from, to), proxy);
            }
        }
        drop(reserved);
        // Authenticated as the launcher's clusters are: the secret's handshake runs through
        // the link proxies like any other bytes.
        let secret = crate::process::write_secret(&path);
        let mut extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        extra.extend(["--cluster-secret-file".into(), secret.display().to_string()]);
        let mut nodes = Vec::new();
        for &id in &ids {
            let peers: Vec<String> = ids
                .iter()
                .filter(|&&j| j != id)
                .map(|&j| format!("{j}={}", proxies[&(id, j)].listen))
                .collect();
            let mut node = Node::new(
                id,
                ports[id as usize - 1],
                path.join(format!("node{id}")),
                path.join(format!("node{id}.log")),
                peers.join(","),
                extra.clone(),
            );
            node.start();
            nodes.push(node);
        }
        NemesisCluster {
            nodes,
            proxies,
            dir: Some(dir),
            path,
            paused: BTreeSet::new(),
        }
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Every node's own (client) address, in id order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(Node::addr).collect()
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// Keeps the data dirs and logs after the cluster is dropped (for a failure report).
    pub fn keep_files(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }

    // ----- links -----

    pub fn cut(&self, from: u64, to: u64) {
        self.proxies[&(from, to)].cut();
    }

    pub fn stall(&self, from: u64, to: u64) {
        self.proxies[&(from, to)].stall();
    }

    /// Cuts every link between different groups, both ways. Nodes in no group are untouched.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        for (a, ga) in groups.iter().enumerate() {
            for (b, gb) in groups.iter().enumerate() {
                if a == b {
                    continue;
                }
                for &x in ga {
                    for &y in gb {
                        self.cut(x, y);
                    }
                }
            }
        }
    }

    /// Two halves that reach each other only through `bridge`.
    pub fn bridge(&self, left: &[u64], bridge: u64, right: &[u64]) {
        let _ = bridge;
        self.partition(&[left.to_vec(), right.to_vec()]);
    }

    /// Holds every byte to and from `id` (the connections stay open).
    pub fn black_hole(&self, id: u64) {
        for (&(from, to), p) in &self.proxies {
            if from == id || to == id {
                p.stall();
            }
        }
    }

    pub fn slow_all(&self, delay: Duration) {
        for p in self.proxies.values() {
            p.set_delay(delay);
        }
    }

    /// Restores every link and removes every delay.
    pub fn heal_links(&self) {
        for p in self.proxies.values() {
            p.set_delay(Duration::ZERO);
            p.restore();
        }
    }

    // ----- processes -----

    pub fn is_up(&mut self, id: u64) -> bool {
        self.node(id).is_running()
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.paused.contains(&id)
    }

    /// SIGKILL (a crash; a paused node dies too).
    pub fn kill(&mut self, id: u64) {
        self.node(id).kill();
        self.paused.remove(&id);
    }

    /// Starts a killed node again on the same data dir, port and peers.
    pub fn restart(&mut self, id: u64) {
        if !self.node(id).is_running() {
            self.node(id).kill(); // reap a child that exited by itself
            self.node(id).start();
        }
    }

    pub fn pause(&mut self, id: u64) {
        if let Some(pid) = self.node(id).pid() {
            if self.node(id).is_running() {
                // SAFETY: kill(2) on a child pid we own and have not reaped.
                unsafe {
                    libc::kill(pid as i32, libc::SIGSTOP);
                }
                self.paused.insert(id);
            }
        }
    }

    pub fn resume(&mut self, id: u64) {
        if self.paused.remove(&id) {
            if let Some(pid) = self.node(id).pid() {
                // SAFETY: as in `pause`.
                unsafe {
                    libc::kill(pid as i32, libc::SIGCONT);
                }
            }
        }
    }

    /// Ends every fault: links restored, paused nodes continued, dead nodes restarted.
    pub fn heal_all(&mut self) {
        self.heal_links();
        for id in self.ids() {
            self.resume(id);
            self.restart(id);
        }
    }

    /// Node ids that died without being killed by the nemesis (a crash of raftd itself).
    pub fn unexpected_exits(&mut self, killed: &BTreeSet<u64>) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|id| !killed.contains(id))
            .filter(|&id| !self.node(id).is_running())
            .collect()
    }

    // ----- status -----

    /// The Status of node `id`, if it answers within half a second.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        status_of(self.nodes[id as usize - 1].addr()).await
    }

    /// The node that claims leadership in the highest term among running, unpaused nodes.
    pub async fn current_leader(&mut self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in self.ids() {
            if self.is_paused(id) || !self.is_up(id) {
                continue;
            }
            if let Some(s) = self.status(id).await {
                if s.role == "Leader" && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Waits until exactly one of `among` leads and all of them name it in the same term.
    pub async fn wait_for_leader(&self, among: &[u64], timeout: Duration) -> Option<(u64, u64)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut statuses = Vec::new();
            for &id in among {
                statuses.push(self.status(id).await);
            }
            if let Some(statuses) = statuses.into_iter().collect::<Option<Vec<_>>>() {
                let leaders: Vec<&StatusResponse> =
                    statuses.iter().filter(|s| s.role == "Leader").collect();
                if leaders.len() == 1 {
                    let (leader, term) = (leaders[0].node_id, leaders[0].term);
                    if statuses
                        .iter()
                        .all(|s| s.leader_id == Some(leader) && s.term == term)
                    {
                        return Some((leader, term));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Waits until every node reports the same commit index and has applied it, then reads
    /// every key from every node's local copy (a stale Get) and returns the keys whose values
    /// differ between nodes (empty: the replicas agree).
    pub async fn check_convergence(
        &self,
        keys: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        let mut converged = false;
        while Instant::now() < deadline {
            let mut marks = Vec::new();
            for id in self.ids() {
                marks.push(
                    self.status(id)
                        .await
                        .map(|s| (s.commit_index, s.last_applied)),
                );
            }
            last = format!("{marks:?}");
            if let Some(marks) = marks.into_iter().collect::<Option<Vec<_>>>() {
                if marks.iter().all(|&(c, a)| c == a && c == marks[0].0) {
                    converged = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !converged {
            return Err(format!(
                "nodes did not reach the same applied index within {timeout:?}: (commit, applied) per node {last}"
            ));
        }
        let mut diffs = Vec::new();
        for key in keys {
            let mut values = BTreeMap::new();
            for node in &self.nodes {
                let v = stale_get(node.addr(), key).await;
                values.insert(node.id, v);
            }
            let first = values.values().next().cloned();
            if values.values().any(|v| Some(v) != first.as_ref()) {
                diffs.push(format!("{key}: {values:?}"));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!("replicas disagree: {}", diffs.join("; ")))
        }
    }

    /// How many lines of all node logs contain `needle` (e.g. "now leader" for elections won).
    pub fn count_in_logs(&self, needle: &str) -> usize {
        self.nodes
            .iter()
            .map(|n| n.log().lines().filter(|l| l.contains(needle)).count())
            .sum()
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = n.log();
                let all: Vec<&str> = log.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!("----- node {} (last {lines} lines) -----\n{tail}", n.id)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Status of the node at `addr`, or None within half a second.
pub async fn status_of(addr: SocketAddr) -> Option<StatusResponse> {
    let mut conn = Connection::connect(addr, Duration::from_millis(200), 1 << 20)
        .await
        .ok()?;
    match conn
        .request(&ClientRequest::Status { id: 1 }, Duration::from_millis(300))
        .await
    {
        Ok(ClientResponse::Status(s)) => Some(s),
        _ => None,
    }
}

/// A stale Get of `key` from the node at `addr`: Some(value) or an error description.
async fn stale_get(addr: SocketAddr, key: &str) -> Result<Option<String>, String> {
    let mut conn = Connection::connect(addr, Duration::from_millis(500), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    let req = ClientRequest::Get {
        id: 1,
        key: key.to_string(),
        consistency: Consistency::Stale,
    };
    match conn.request(&req, Duration::from_secs(2)).await {
        Ok(ClientResponse::Ok(ok)) => Ok(ok.value.flatten()),
        other => Err(format!("{other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// One node (often the leader) cut off from all others, both ways.
    Isolate,
    /// The nodes split into 2 or 3 groups at random (with 3 nodes: every node alone).
    Split,
    /// One directed link cut (one side hears the other, not the reverse).
    OneWay,
    /// Two halves that reach each other only through one node.
    Bridge,
    /// SIGKILL, restarted on the same data dir when the fault ends.
    Kill,
    /// SIGSTOP, SIGCONT when the fault ends.
    Pause,
    /// Every link to and from one node holds its bytes; delivered late when the fault ends.
    BlackHole,
    /// Every link delays what it forwards by a few tens of milliseconds.
    Slow,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::OneWay,
        FaultKind::Bridge,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::BlackHole,
        FaultKind::Slow,
    ];
}

/// A fault as applied.
#[derive(Debug, Clone)]
pub enum Fault {
    Partition(Vec<Vec<u64>>),
    OneWay {
        from: u64,
        to: u64,
    },
    Bridge {
        left: Vec<u64>,
        bridge: u64,
        right: Vec<u64>,
    },
    Kill(u64),
    Pause(u64),
    BlackHole(u64),
    Slow(Duration),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition(groups) => write!(f, "partition {groups:?}"),
            Fault::OneWay { from, to } => write!(f, "cut link {from}->{to}"),
            Fault::Bridge {
                left,
                bridge,
                right,
            } => write!(f, "bridge {left:?} <-{bridge}-> {right:?}"),
            Fault::Kill(id) => write!(f, "SIGKILL node {id}"),
            Fault::Pause(id) => write!(f, "SIGSTOP node {id}"),
            Fault::BlackHole(id) => write!(f, "black-hole node {id}"),
            Fault::Slow(d) => write!(f, "delay every link by {d:?}"),
        }
    }
}

impl NemesisCluster {
    /// Picks the concrete fault of `kind` (the leader is the target about half the time).
    pub async fn choose(&mut self, kind: FaultKind, rng: &mut StdRng) -> Fault {
        let ids = self.ids();
        let leader = self.current_leader().await;
        let target = |rng: &mut StdRng| match leader {
            Some(l) if rng.gen_bool(0.5) => l,
            _ => *ids.choose(rng).expect("a node"),
        };
        match kind {
            FaultKind::Isolate => {
                let x = target(rng);
                let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != x).collect();
                Fault::Partition(vec![vec![x], rest])
            }
            FaultKind::Split => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(rng);
                let groups = if ids.len() <= 3 {
                    shuffled.iter().map(|&i| vec![i]).collect()
                } else if rng.gen_bool(0.5) {
                    let cut = ids.len() / 2;
                    vec![shuffled[..cut].to_vec(), shuffled[cut..].to_vec()]
                } else {
                    let third = ids.len() / 3;
                    vec![
                        shuffled[..third].to_vec(),
                        shuffled[third..2 * third].to_vec(),
                        shuffled[2 * third..].to_vec(),
                    ]
                };
                Fault::Partition(groups)
            }
            FaultKind::OneWay => {
                let a = target(rng);
                let others: Vec<u64> = ids.iter().copied().filter(|&i| i != a).collect();
                let b = *others.choose(rng).expect("two nodes");
                if rng.gen_bool(0.5) {
                    Fault::OneWay { from: a, to: b }
                } else {
                    Fault::OneWay { from: b, to: a }
                }
            }
            FaultKind::Bridge => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(rng);
                let bridge = shuffled.pop().expect("a node");
                let half = shuffled.len() / 2;
                Fault::Bridge {
                    left: shuffled[..half].to_vec(),
                    bridge,
                    right: shuffled[half..].to_vec(),
                }
            }
            FaultKind::Kill => Fault::Kill(target(rng)),
            FaultKind::Pause => Fault::Pause(target(rng)),
            FaultKind::BlackHole => Fault::BlackHole(target(rng)),
            FaultKind::Slow => Fault::Slow(Duration::from_millis(rng.gen_range(5..=40))),
        }
    }

    pub fn apply(&mut self, fault: &Fault) {
        match fault {
            Fault::Partition(groups) => self.partition(groups),
            Fault::OneWay { from, to } => self.cut(*from, *to),
            Fault::Bridge {
                left,
                bridge,
                right,
            } => self.bridge(left, *bridge, right),
            Fault::Kill(id) => self.kill(*id),
            Fault::Pause(id) => self.pause(*id),
            Fault::BlackHole(id) => self.black_hole(*id),
            Fault::Slow(d) => self.slow_all(*d),
        }
    }
}

/// How the nemesis picks and times its faults.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Run these kinds in this order; None: random kinds until `duration` ends.
    pub plan: Option<Vec<FaultKind>>,
    /// Stop starting rounds after this long.
    pub duration: Duration,
    /// How long a fault lasts, uniform in this range (ms).
    pub hold_ms: (u64, u64),
    /// Quiet time between two faults, uniform in this range (ms).
    pub gap_ms: (u64, u64),
    /// Chance that a random round stacks a second fault on the first.
    pub stack: f64,
    /// Hard bound on the number of rounds.
    pub max_rounds: usize,
}

impl ScheduleConfig {
    /// Every kind `times` times, in a seeded random order.
    pub fn each_kind(times: usize, rng: &mut StdRng) -> Vec<FaultKind> {
        let mut plan: Vec<FaultKind> = FaultKind::ALL
            .iter()
            .flat_map(|&k| std::iter::repeat_n(k, times))
            .collect();
        plan.shuffle(rng);
        plan
    }
}

#[derive(Debug, Default, Clone)]
pub struct FaultReport {
    pub counts: BTreeMap<FaultKind, usize>,
    /// `(ms since start, description)` of every fault and heal.
    pub log: Vec<(u64, String)>,
    pub rounds: usize,
    /// Nodes that died while the nemesis had not killed them.
    pub crashes: Vec<String>,
}

impl FaultReport {
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k:?}={n}"))
            .collect();
        format!(
            "{} faults in {} rounds ({})",
            self.total(),
            self.rounds,
            kinds.join(", ")
        )
    }
}

/// Runs fault rounds (quiet gap, apply, hold, heal everything) until the plan, the duration or
/// `max_rounds` ends; returns right after the last heal.
pub async fn run_schedule(
    cluster: &mut NemesisCluster,
    cfg: &ScheduleConfig,
    rng: &mut StdRng,
    start: Instant,
) -> FaultReport {
    let mut report = FaultReport::default();
    let end = Instant::now() + cfg.duration;
    let mut plan = cfg.plan.clone().map(|p| p.into_iter());
    let ms = |start: Instant| start.elapsed().as_millis() as u64;
    while report.rounds < cfg.max_rounds && Instant::now() < end {
        if report.rounds > 0 {
            // The quiet gap comes between rounds, not after the last one, so the caller
            // measures recovery from the moment the last fault ended.
            let gap = rng.gen_range(cfg.gap_ms.0..=cfg.gap_ms.1.max(cfg.gap_ms.0));
            tokio::time::sleep(Duration::from_millis(gap)).await;
            if Instant::now() >= end {
                break;
            }
        }
        let kinds: Vec<FaultKind> = match plan.as_mut() {
            Some(p) => match p.next() {
                Some(k) => vec![k],
                None => break,
            },
            None => {
                let mut ks = vec![*FaultKind::ALL.choose(rng).expect("kinds")];
                if rng.gen_bool(cfg.stack) {
                    ks.push(*FaultKind::ALL.choose(rng).expect("kinds"));
                }
                ks
            }
        };
        report.rounds += 1;
        let mut killed = BTreeSet::new();
        for kind in kinds {
            let fault = cluster.choose(kind, rng).await;
            if let Fault::Kill(id) = fault {
                killed.insert(id);
            }
            cluster.apply(&fault);
            *report.counts.entry(kind).or_default() += 1;
            report.log.push((ms(start), fault.to_string()));
        }
        let hold = rng.gen_range(cfg.hold_ms.0..=cfg.hold_ms.1.max(cfg.hold_ms.0));
        tokio::time::sleep(Duration::from_millis(hold)).await;
        for id in cluster.unexpected_exits(&killed) {
            report
                .crashes
                .push(format!("node {id} exited by itself at {} ms", ms(start)));
        }
        cluster.heal_all();
        report.log.push((ms(start), "heal".into()));
    }
    cluster.heal_all();
    report
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub clients: usize,
    /// Keys are `k0..k{keys-1}`.
    pub keys: usize,
    /// Relative weights of Get, Put, Delete, Cas.
    pub mix: [u32; 4],
    /// Give up on an operation after this long (its outcome is then unknown).
    pub op_deadline: Duration,
    /// Wait this long for one answer before retrying at the next node.
    pub attempt_timeout: Duration,
    /// Pause between two operations of one client, uniform in this range (ms).
    pub think_ms: (u64, u64),
    /// The first `impatient` clients give up after `impatient_deadline` instead (attempts of a
    /// third of it), so some writes end with an unknown outcome during faults.
    pub impatient: usize,
    pub impatient_deadline: Duration,
    /// Hard bound on the operations of one client.
    pub max_ops: usize,
    pub seed: u64,
}

impl WorkloadConfig {
    pub fn new(clients: usize, seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            clients,
            keys: 5,
            mix: [35, 25, 10, 30],
            op_deadline: Duration::from_secs(6),
            attempt_timeout: Duration::from_secs(1),
            think_ms: (0, 10),
            impatient: clients / 3,
            impatient_deadline: Duration::from_millis(1200),
            max_ops: 100_000,
            seed,
        }
    }

    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys).map(|k| format!("k{k}")).collect()
    }
}

/// What one client did.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub history: Vec<Operation>,
    /// Answers that should never come (BadRequest, protocol errors).
    pub anomalies: Vec<String>,
}

/// Shared between the clients and the test: when to stop, and a count of successes.
#[derive(Default)]
pub struct WorkloadCtl {
    pub stop: AtomicBool,
    pub ok: AtomicU64,
}

/// Starts the clients; each stops after its current operation once `ctl.stop` is set.
pub fn spawn_clients(
    addrs: Vec<SocketAddr>,
    cfg: &WorkloadConfig,
    start: Instant,
    ctl: Arc<WorkloadCtl>,
) -> Vec<JoinHandle<ClientReport>> {
    (0..cfg.clients)
        .map(|c| {
            let mut addrs = addrs.clone();
            let len = addrs.len();
            addrs.rotate_left(c % len);
            tokio::spawn(client_loop(
                c as u64,
                addrs,
                cfg.clone(),
                start,
                ctl.clone(),
            ))
        })
        .collect()
}

async fn client_loop(
    client: u64,
    addrs: Vec<SocketAddr>,
    cfg: WorkloadConfig,
    start: Instant,
    ctl: Arc<WorkloadCtl>,
) -> ClientReport {
    let mut rng =
        StdRng::seed_from_u64(cfg.seed ^ (client + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (deadline, attempt_timeout) = if (client as usize) < cfg.impatient {
        (cfg.impatient_deadline, cfg.impatient_deadline / 3)
    } else {
        (cfg.op_deadline, cfg.attempt_timeout)
    };
    let opts = ClientOptions {
        deadline,
        attempt_timeout,
        connect_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let mut cl = Client::new(addrs, opts);
    let keys = cfg.key_names();
    // The last value this client saw per key, so its Cas sometimes succeeds.
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut report = ClientReport::default();
    let total: u32 = cfg.mix.iter().sum();
    // Past the client's own deadline (plus slack), the operation is abandoned as unknown.
    let hard = deadline + attempt_timeout + Duration::from_secs(2);
    for n in 0..cfg.max_ops {
        if ctl.stop.load(Ordering::Relaxed) {
            break;
        }
        let key = keys.choose(&mut rng).expect("keys").clone();
        let value = format!("{client}.{n}");
        let mut pick = rng.gen_range(0..total.max(1));
        let mut kind = 0;
        while kind < 3 && pick >= cfg.mix[kind] {
            pick -= cfg.mix[kind];
            kind += 1;
        }
        let input = match kind {
            0 => Input::Get,
            1 => Input::Put(value.clone()),
            2 => Input::Delete,
            _ => Input::Cas {
                expected: if rng.gen_bool(0.9) {
                    seen.get(&key).cloned().flatten()
                } else {
                    Some(format!("nope.{n}"))
                },
                value: if rng.gen_bool(0.1) { None } else { Some(value) },
            },
        };
        let call = micros_since(start);
        // Every fourth Get goes as a Range over every key, every other Cas as a Txn
        // (protocol v2), by the operation's number: the checker covers those too.
        let wire = match &input {
            Input::Get if n % 4 == 1 => Wire::Range,
            Input::Cas { .. } if n % 2 == 1 => Wire::Txn,
            _ => Wire::Plain,
        };
        let mut range_reads = Vec::new();
        let result =
            tokio::time::timeout(hard, run_op(&mut cl, &key, &input, wire, &mut range_reads)).await;
        let ret = micros_since(start);
        // A Range that was answered is a read of every key over the same interval (checked
        // per key): the keys it did not return were absent.
        if wire == Wire::Range && matches!(result, Ok(Ok(_))) {
            for k in keys.iter().filter(|k| **k != key) {
                let v = range_reads
                    .iter()
                    .find(|(rk, _)| rk == k)
                    .and_then(|(_, v)| v.clone());
                report.history.push(Operation {
                    client,
                    key: k.clone(),
                    input: Input::Get,
                    output: Output::Value(v),
                    call,
                    ret,
                });
            }
        }
        let output = match result {
            Ok(Ok(out)) => out,
            Ok(Err(ClientError::Unavailable(..))) | Err(_) => Output::Unknown,
            Ok(Err(e)) => {
                report
                    .anomalies
                    .push(format!("client {client}: {input:?} on {key} failed: {e}"));
                Output::Unknown
            }
        };
        match &output {
            Output::Value(v) => {
                seen.insert(key.clone(), v.clone());
            }
            Output::Cas { value, .. } => {
                seen.insert(key.clone(), value.clone());
            }
            Output::Done => {
                let after = match &input {
                    Input::Put(v) => Some(v.clone()),
                    _ => None,
                };
                seen.insert(key.clone(), after);
            }
            Output::Unknown => {}
        }
        if output != Output::Unknown {
            ctl.ok.fetch_add(1, Ordering::Relaxed);
        }
        report.history.push(Operation {
            client,
            key,
            input,
            output,
            call,
            ret,
        });
        let (lo, hi) = cfg.think_ms;
        let think = rng.gen_range(lo..=hi.max(lo));
        if think > 0 {
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }
    report
}

/// How an operation goes over the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Plain,
    /// A Get as a `Range` over the prefix "k" (every key of the workload).
    Range,
    /// A Cas as a `Txn` (compare the value, or `version == 0` for absent; Put or Delete; else
    /// Get).
    Txn,
}

async fn run_op(
    cl: &mut Client,
    key: &str,
    input: &Input,
    wire: Wire,
    range_reads: &mut Vec<(String, Option<String>)>,
) -> Result<Output, ClientError> {
    use raftd::kv::txn::Txn;
    Ok(match input {
        Input::Get if wire == Wire::Range => {
            let r = cl
                .range(&raftd::client::store::RangeRequest::prefix("k"))
                .await?;
            // Keys the range did not return were absent; only the workload's keys start
            // with "k" (the probe key does not).
            let mut mine = None;
            for kv in r.kvs {
                if kv.key == key {
                    mine = kv.value.clone();
                }
                range_reads.push((kv.key, kv.value));
            }
            Output::Value(mine)
        }
        Input::Cas { expected, value } if wire == Wire::Txn => {
            let t = Txn::cas(key, expected.as_deref(), value.as_deref());
            let a = cl.txn(t.compare, t.success, t.failure).await?;
            Output::Cas {
                succeeded: a.succeeded,
                value: Txn::cas_value_after(value.as_deref(), a.succeeded, &a.responses).flatten(),
            }
        }
        Input::Get => Output::Value(cl.get(key, Consistency::Linearizable).await?),
        Input::Put(v) => {
            cl.put(key, v).await?;
            Output::Done
        }
        Input::Delete => {
            cl.delete(key).await?;
            Output::Done
        }
        Input::Cas { expected, value } => {
            let (succeeded, value) = cl.cas(key, expected.as_deref(), value.as_deref()).await?;
            Output::Cas { succeeded, value }
        }
    })
}

/// Counts of a history.
#[derive(Debug, Default, Clone, Copy)]
pub struct HistoryStats {
    pub ops: usize,
    pub ok: usize,
    pub ok_reads: usize,
    pub ok_writes: usize,
    pub unknown_writes: usize,
    pub unknown_reads: usize,
    pub cas_succeeded: usize,
    pub cas_failed: usize,
}

impl HistoryStats {
    pub fn of(history: &[Operation]) -> HistoryStats {
        let mut s = HistoryStats {
            ops: history.len(),
            ..HistoryStats::default()
        };
        for op in history {
            let read = op.input == Input::Get;
            match (&op.output, read) {
                (Output::Unknown, true) => s.unknown_reads += 1,
                (Output::Unknown, false) => s.unknown_writes += 1,
                (_, true) => s.ok_reads += 1,
                (_, false) => s.ok_writes += 1,
            }
            if let Output::Cas { succeeded, .. } = op.output {
                if succeeded {
                    s.cas_succeeded += 1;
                } else {
                    s.cas_failed += 1;
                }
            }
        }
        s.ok = s.ok_reads + s.ok_writes;
        s
    }
}

impl fmt::Display for HistoryStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops: {} ok ({} reads, {} writes; cas {} swapped / {} not), {} unknown writes, {} unanswered reads",
            self.ops,
            self.ok,
            self.ok_reads,
            self.ok_writes,
            self.cas_succeeded,
            self.cas_failed,
            self.unknown_writes,
            self.unknown_reads
        )
    }
}
