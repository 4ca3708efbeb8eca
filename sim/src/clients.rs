//! Simulated key-value clients: each sends one request at a time, over the simulated network,
//! to the node it believes leads, and records every operation (call, return, outcome) for the
//! linearizability checker.
//!
//! A client follows `NotLeader` hints, retries on `Timeout` or silence (after
//! `attempt_timeout`) at the next node, and always retries a write with the same
//! `client_id`/`seq`, so a write that committed but whose answer was lost is applied once.
//! After `op_deadline` or `max_attempts` it gives up: a write's outcome is then unknown
//! (`Output::Unknown`, it may take effect at any later time), a read tells nothing.
//!
//! Where a client sits in the network: with `home = Some(h)` it reaches node `n` only if
//! `n == h` or the link `h -> n` is up (answers: `n -> h`), so partitions set on the node links
//! cut it together with its home node; with `home = None` it reaches every node. `cut` removes
//! single nodes on top of that.

use super::{Cluster, Event, Input, Micros, MS, SEC};
use crate::check::{Input as OpInput, Operation, Output};
use raftd::rpc::types::{ClientRequest, ClientResponse, Consistency, ErrorCode, NodeId, Role};
use rand::Rng;
use std::collections::{BTreeSet, VecDeque};

/// Index of a client in the cluster (0-based).
pub type ClientId = usize;

/// Settings of the clients added by `Cluster::add_clients`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub clients: usize,
    /// Keys are `k0..k{keys-1}`.
    pub keys: usize,
    /// Values are `0..{values-1}` (small, so Cas sometimes succeeds).
    pub values: usize,
    /// Relative weights of Get, Put, Delete, Cas.
    pub mix: [u32; 4],
    /// Wait this long for an answer before retrying elsewhere.
    pub attempt_timeout: Micros,
    /// Give up on an operation after this long since its call.
    pub op_deadline: Micros,
    pub max_attempts: usize,
    /// Pause between two operations of one client, uniform in this range.
    pub think: (Micros, Micros),
    /// Random clients generate operations on their own; scripted ones only run `submit`ted ones.
    pub random: bool,
}

impl ClientConfig {
    pub fn new(clients: usize) -> ClientConfig {
        ClientConfig {
            clients,
            keys: 3,
            values: 4,
            mix: [35, 25, 10, 30],
            attempt_timeout: SEC,
            op_deadline: 10 * SEC,
            max_attempts: 100,
            think: (0, 20 * MS),
            random: true,
        }
    }

    /// Clients that only run what the test submits.
    pub fn scripted(clients: usize) -> ClientConfig {
        ClientConfig {
            random: false,
            ..ClientConfig::new(clients)
        }
    }
}

/// What the simulation does with an answer a node is about to send to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFate {
    Deliver,
    /// Lost on the way.
    Drop,
    /// Lost, and the node crashes right after the event that produced it.
    DropAndCrash,
    /// Sent, and the node crashes right after the event that produced it (before it can tell
    /// its followers, say, that the entry committed).
    DeliverAndCrash,
}

/// Decides the fate of each answer: `(node, client, response)`.
pub type AnswerHook = Box<dyn FnMut(NodeId, ClientId, &ClientResponse) -> AnswerFate>;

/// A request reaching a node's KV service.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Micros,
    pub node: NodeId,
    pub role: Role,
    pub term: u64,
    /// The node led but had not yet committed an entry of its own term (its no-op).
    pub leader_before_first_commit: bool,
}

/// One send of an operation's request.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub sent: Micros,
    pub node: NodeId,
    /// The request's `id`.
    pub request_id: u64,
}

/// Everything that happened to one client operation.
#[derive(Debug, Clone)]
pub struct OpRecord {
    pub client: ClientId,
    pub key: String,
    pub input: OpInput,
    /// `Unknown` while pending, after giving up, or if the client was stopped.
    pub output: Output,
    /// First send.
    pub call: Micros,
    /// When the final answer arrived (None while pending or given up).
    pub ret: Option<Micros>,
    /// The node whose answer completed the operation.
    pub answered_by: Option<NodeId>,
    /// For writes: the session sequence number (the client id is `client_name`).
    pub seq: Option<u64>,
    pub attempts: Vec<Attempt>,
    pub arrivals: Vec<Arrival>,
    /// Error answers received (NotLeader, Timeout, …), with the node and time.
    pub errors: Vec<(Micros, NodeId, ErrorCode)>,
    pub done: bool,
    /// How the operation goes over the wire: a Get may be sent as a `Range` over every key,
    /// a Cas as a single-key `Txn` (protocol v2), so the checker covers those requests too.
    pub wire: Wire,
    /// A Get sent as a `Range`: what it read of every key of the keyspace (absent ones as
    /// None), each checked as a read of that key over the same interval.
    pub range_reads: Vec<(String, Option<String>)>,
}

/// The request an operation is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// v1: `Get`, `Put`, `Delete`, `Cas`.
    Plain,
    /// A Get as a `Range` over the prefix "k" (every key), read back per key.
    Range,
    /// A Cas as a `Txn`: compare the value (or `version == 0` for absent), then Put or
    /// Delete, else Get.
    Txn,
}

impl OpRecord {
    pub fn is_write(&self) -> bool {
        self.input != OpInput::Get
    }

    /// As an operation for the checker.
    pub fn operation(&self) -> Operation {
        Operation {
            client: self.client as u64,
            key: self.key.clone(),
            input: self.input.clone(),
            output: self.output.clone(),
            call: self.call,
            ret: self.ret.unwrap_or(0),
        }
    }

    /// As operations for the checker: a `Range` is one read per key it covers, all over its
    /// interval. (A weaker check than one model over every key: each key's reads must be
    /// linearizable, not the whole range as one snapshot; the store reads a range from one
    /// applied state, which `Mvcc::range` tests against a model.)
    pub fn operations(&self) -> Vec<Operation> {
        if self.wire != Wire::Range || self.range_reads.is_empty() {
            return vec![self.operation()];
        }
        self.range_reads
            .iter()
            .map(|(key, value)| Operation {
                key: key.clone(),
                output: Output::Value(value.clone()),
                ..self.operation()
            })
            .collect()
    }
}

/// The name a client uses as its session `client_id`.
pub fn client_name(client: ClientId) -> String {
    format!("sim-client-{client}")
}

pub struct SimClient {
    pub id: ClientId,
    pub home: Option<NodeId>,
    pub cut: BTreeSet<NodeId>,
    /// Always send to this node, ignoring hints (a client stuck to one server).
    pub pinned: Option<NodeId>,
    /// Where the next request goes.
    pub leader_guess: NodeId,
    /// Round-robin cursor over every node, apart from hints: a client that gets no hint (or
    /// only stale ones) goes through every node, rather than back and forth between two
    /// that point at each other (a removed node still running hints its stale leader).
    rr: NodeId,
    /// `NotLeader` hints followed in a row without an answer from a leader.
    hints_in_a_row: u32,
    cfg: ClientConfig,
    next_seq: u64,
    /// The record index of the operation in flight.
    current: Option<usize>,
    /// Operations waiting to run (scripted clients).
    queue: VecDeque<(String, OpInput)>,
    /// Only the timer armed last counts.
    timer: u64,
    stopped: bool,
}

impl SimClient {
    /// This client's settings (timeouts, deadline, op mix), to change mid-run.
    pub fn config_mut(&mut self) -> &mut ClientConfig {
        &mut self.cfg
    }

    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }
}

/// Client-side traffic counters.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    pub requests_sent: u64,
    pub requests_dropped: u64,
    pub answers_sent: u64,
    pub answers_dropped: u64,
    /// Answers a client did not expect (a finished operation, an old attempt).
    pub late_answers: u64,
    /// Answers that were neither Ok, NotLeader, Timeout, ShuttingDown, NoSpace nor
    /// SessionExpired.
    pub bad_answers: u64,
    /// Retries answered `SessionExpired` (outcome unknown).
    pub expired: u64,
}

/// Client state kept by the cluster.
#[derive(Default)]
pub(super) struct Clients {
    pub(super) clients: Vec<SimClient>,
    pub(super) records: Vec<OpRecord>,
    pub(super) next_request_id: u64,
    pub(super) hook: Option<AnswerHook>,
    pub(super) stats: ClientStats,
}

/// The client id of membership requests an operator makes (`Cluster::admin`): answered at
/// once into `Cluster::admin_answers`, outside any client's history.
pub const ADMIN: ClientId = usize::MAX;

/// Where a node sends the answer of a request it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub client: ClientId,
    pub op: usize,
    pub request_id: u64,
}

impl raftd::driver::ReplyTo for Route {
    /// Each operation (or watch stream, for watchers) is a connection of its own.
    fn connection(&self) -> u64 {
        (self.client as u64).rotate_left(32) ^ self.op as u64
    }
}

impl Cluster {
    /// Adds clients; random ones start at once (each at a random moment of its think time).
    pub fn add_clients(&mut self, cfg: ClientConfig) -> Vec<ClientId> {
        let mut ids = Vec::new();
        for _ in 0..cfg.clients {
            let id = self.clients.clients.len();
            let guess = self.rng.gen_range(1..=self.cfg.nodes as NodeId);
            self.clients.clients.push(SimClient {
                id,
                home: None,
                cut: BTreeSet::new(),
                pinned: None,
                leader_guess: guess,
                rr: guess,
                hints_in_a_row: 0,
                cfg: cfg.clone(),
                next_seq: 1,
                current: None,
                queue: VecDeque::new(),
                timer: 0,
                stopped: false,
            });
            if cfg.random {
                let (lo, hi) = cfg.think;
                let wait = self.rng.gen_range(lo..=hi.max(lo));
                self.arm_timer(id, wait);
            }
            ids.push(id);
        }
        ids
    }

    pub fn client(&self, id: ClientId) -> &SimClient {
        &self.clients.clients[id]
    }

    pub fn client_mut(&mut self, id: ClientId) -> &mut SimClient {
        &mut self.clients.clients[id]
    }

    pub fn client_ids(&self) -> Vec<ClientId> {
        (0..self.clients.clients.len()).collect()
    }

    /// Queues an operation for a client; it starts at once if the client is idle.
    pub fn submit(&mut self, client: ClientId, key: &str, input: OpInput) {
        self.clients.clients[client]
            .queue
            .push_back((key.to_string(), input));
        if self.clients.clients[client].current.is_none() {
            self.start_next_op(client);
        }
    }

    /// Random clients start no new operation (those in flight go on until answered or given up).
    pub fn stop_clients(&mut self) {
        for c in &mut self.clients.clients {
            c.stopped = true;
        }
    }

    /// Random clients generate operations again after `stop_clients`.
    pub fn resume_clients(&mut self) {
        let ids: Vec<ClientId> = self.client_ids();
        for id in ids {
            let c = &mut self.clients.clients[id];
            c.stopped = false;
            if c.current.is_none() {
                self.start_next_op(id);
            }
        }
    }

    /// No client has an operation in flight or queued.
    pub fn clients_idle(&self) -> bool {
        self.clients.clients.iter().all(SimClient::is_idle)
    }

    /// Every client operation so far.
    pub fn op_records(&self) -> &[OpRecord] {
        &self.clients.records
    }

    pub fn client_stats(&self) -> &ClientStats {
        &self.clients.stats
    }

    /// The history for the checker: every operation, pending ones as `Unknown`.
    pub fn kv_history(&self) -> Vec<Operation> {
        self.clients
            .records
            .iter()
            .flat_map(OpRecord::operations)
            .collect()
    }

    /// Installs a hook deciding the fate of every answer to a client (see [`AnswerFate`]).
    pub fn set_answer_hook(&mut self, hook: AnswerHook) {
        self.clients.hook = Some(hook);
    }

    pub fn clear_answer_hook(&mut self) {
        self.clients.hook = None;
    }

    fn client_reaches(&self, client: ClientId, node: NodeId) -> bool {
        let c = &self.clients.clients[client];
        !c.cut.contains(&node)
            && c.home
                .is_none_or(|h| h == node || self.links.is_up(h, node))
    }

    fn node_reaches(&self, node: NodeId, client: ClientId) -> bool {
        let c = &self.clients.clients[client];
        !c.cut.contains(&node)
            && c.home
                .is_none_or(|h| h == node || self.links.is_up(node, h))
    }

    fn arm_timer(&mut self, client: ClientId, after: Micros) {
        let c = &mut self.clients.clients[client];
        c.timer += 1;
        let token = c.timer;
        self.schedule(after, Event::ClientTimer { client, token });
    }

    /// A client's timer fired: start the next operation, or retry the current one.
    pub(super) fn client_timer(&mut self, client: ClientId, token: u64) {
        if self.clients.clients[client].timer != token {
            return;
        }
        match self.clients.clients[client].current {
            None => self.start_next_op(client),
            Some(op) => {
                // Silence: this attempt's node is down, cut off or slow. Try the next one.
                let node = self.clients.records[op]
                    .attempts
                    .last()
                    .map_or(0, |a| a.node);
                if self.clients.clients[client].leader_guess == node {
                    self.next_guess(client);
                }
                self.retry(client, op);
            }
        }
    }

    fn next_guess(&mut self, client: ClientId) {
        let n = self.cfg.nodes as NodeId;
        let c = &mut self.clients.clients[client];
        c.rr = c.rr % n + 1;
        c.leader_guess = c.rr;
    }

    fn start_next_op(&mut self, client: ClientId) {
        let c = &mut self.clients.clients[client];
        if c.current.is_some() {
            return;
        }
        let (key, input) = match c.queue.pop_front() {
            Some(op) => op,
            None if c.cfg.random && !c.stopped => {
                let cfg = c.cfg.clone();
                self.random_op(&cfg)
            }
            None => return,
        };
        let c = &mut self.clients.clients[client];
        let seq = (input != OpInput::Get).then(|| {
            let s = c.next_seq;
            c.next_seq += 1;
            s
        });
        let op = self.clients.records.len();
        // Every fourth Get goes as a Range and every other Cas as a Txn, by the record's
        // number, so no seed's random draws change.
        let wire = match &input {
            OpInput::Get if op % 4 == 1 => Wire::Range,
            OpInput::Cas { .. } if op % 2 == 1 => Wire::Txn,
            _ => Wire::Plain,
        };
        self.clients.records.push(OpRecord {
            wire,
            range_reads: Vec::new(),
            client,
            key,
            input,
            output: Output::Unknown,
            call: self.now,
            ret: None,
            answered_by: None,
            seq,
            attempts: Vec::new(),
            arrivals: Vec::new(),
            errors: Vec::new(),
            done: false,
        });
        self.clients.clients[client].current = Some(op);
        self.send_attempt(client, op);
    }

    fn random_op(&mut self, cfg: &ClientConfig) -> (String, OpInput) {
        let key = format!("k{}", self.rng.gen_range(0..cfg.keys.max(1)));
        let values = cfg.values.max(1);
        let total: u32 = cfg.mix.iter().sum::<u32>().max(1);
        let mut pick = self.rng.gen_range(0..total);
        let mut kind = 0;
        for (i, w) in cfg.mix.iter().enumerate() {
            if pick < *w {
                kind = i;
                break;
            }
            pick -= w;
        }
        let input = match kind {
            0 => OpInput::Get,
            1 => OpInput::Put(self.rng.gen_range(0..values).to_string()),
            2 => OpInput::Delete,
            _ => {
                // Absent as expected or new value now and then, so Cas also creates and deletes.
                let expected =
                    (!self.rng.gen_bool(0.2)).then(|| self.rng.gen_range(0..values).to_string());
                let value =
                    (!self.rng.gen_bool(0.1)).then(|| self.rng.gen_range(0..values).to_string());
                OpInput::Cas { expected, value }
            }
        };
        (key, input)
    }

    /// Gives up if the operation ran out of time or attempts; otherwise sends it again.
    fn retry(&mut self, client: ClientId, op: usize) {
        let c = &self.clients.clients[client];
        let rec = &self.clients.records[op];
        if self.now.saturating_sub(rec.call) >= c.cfg.op_deadline
            || rec.attempts.len() >= c.cfg.max_attempts
        {
            self.finish(client, op, Output::Unknown, None);
            return;
        }
        self.send_attempt(client, op);
    }

    fn send_attempt(&mut self, client: ClientId, op: usize) {
        let c = &self.clients.clients[client];
        let node = c.pinned.unwrap_or(c.leader_guess);
        let attempt_timeout = c.cfg.attempt_timeout;
        self.clients.next_request_id += 1;
        let request_id = self.clients.next_request_id;
        let rec = &mut self.clients.records[op];
        rec.attempts.push(Attempt {
            sent: self.now,
            node,
            request_id,
        });
        let req = request(rec, request_id, client);
        self.arm_timer(client, attempt_timeout);
        let route = Route {
            client,
            op,
            request_id,
        };
        self.clients.stats.requests_sent += 1;
        let reachable = self.client_reaches(client, node);
        self.transmit(reachable, |_| Event::ClientArrive {
            node,
            route,
            req: req.clone(),
        });
        if !reachable {
            self.clients.stats.requests_dropped += 1;
        }
    }

    /// Sends a message with the network's drop, duplicate and delay rules.
    fn transmit(&mut self, reachable: bool, mut event: impl FnMut(()) -> Event) {
        let net = self.cfg.net.clone();
        if !reachable || self.rng.gen_bool(net.drop_rate) {
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
            self.schedule(delay, event(()));
        }
    }

    /// A request reaches `node` (if the link is still up): queued like any input.
    pub(super) fn client_arrive(&mut self, node: NodeId, route: Route, req: ClientRequest) {
        if route.client == ADMIN {
            self.input(node, Input::Client { route, req });
            return;
        }
        if !self.client_reaches(route.client, node) {
            self.clients.stats.requests_dropped += 1;
            return;
        }
        self.input(node, Input::Client { route, req });
    }

    /// The KV service is about to see this request: note what the node was at that moment.
    pub(super) fn note_arrival(&mut self, node: NodeId, route: Route) {
        if route.client == ADMIN || route.client >= crate::watchers::WATCHER_BASE {
            return;
        }
        let Some(raft) = self.raft(node) else { return };
        let log = raft.log();
        let arrival = Arrival {
            at: self.now,
            node,
            role: raft.role(),
            term: raft.term(),
            leader_before_first_commit: raft.role() == Role::Leader
                && log.term(log.committed()) != Some(raft.term()),
        };
        self.clients.records[route.op].arrivals.push(arrival);
    }

    /// `node` answers a request: through the hook, then the network.
    pub(super) fn answer(&mut self, node: NodeId, route: Route, resp: ClientResponse) {
        if route.client == ADMIN {
            self.check_admin_answer(node, &resp);
            self.admin_answers.push((node, resp));
            return;
        }
        if route.client >= crate::watchers::WATCHER_BASE {
            self.watch_answer(node, route, resp);
            return;
        }
        let fate = match self.clients.hook.as_mut() {
            Some(hook) => hook(node, route.client, &resp),
            None => AnswerFate::Deliver,
        };
        self.clients.stats.answers_sent += 1;
        if matches!(fate, AnswerFate::DropAndCrash | AnswerFate::DeliverAndCrash)
            && !self.crash_after_event.contains(&node)
        {
            self.crash_after_event.push(node);
        }
        if matches!(fate, AnswerFate::Drop | AnswerFate::DropAndCrash) {
            self.clients.stats.answers_dropped += 1;
            return;
        }
        let reachable = self.node_reaches(node, route.client);
        if !reachable {
            self.clients.stats.answers_dropped += 1;
        }
        self.transmit(reachable, |_| Event::ClientAnswer {
            node,
            route,
            resp: resp.clone(),
        });
    }

    /// An answer reaches a client (if the link is still up).
    pub(super) fn client_answer(&mut self, node: NodeId, route: Route, resp: ClientResponse) {
        if !self.node_reaches(node, route.client) {
            self.clients.stats.answers_dropped += 1;
            return;
        }
        let seed = self.cfg.seed;
        let client = route.client;
        let op = route.op;
        if self.clients.clients[client].current != Some(op) {
            self.clients.stats.late_answers += 1;
            return;
        }
        let rec = &self.clients.records[op];
        let current_attempt = rec.attempts.last().map(|a| a.request_id) == Some(route.request_id);
        match resp {
            ClientResponse::Ok(ok) => {
                assert_eq!(
                    ok.id, route.request_id,
                    "[seed {seed}] node {node} answered request {} with id {}",
                    route.request_id, ok.id
                );
                let output = match &rec.input {
                    OpInput::Get if rec.wire == Wire::Range => {
                        let kvs = ok.kvs.clone().unwrap_or_else(|| {
                            panic!("[seed {seed}] a Range answer without kvs: {ok:?}")
                        });
                        let keys = self.clients.clients[client].cfg.keys.max(1);
                        let reads: Vec<(String, Option<String>)> = (0..keys)
                            .map(|i| {
                                let k = format!("k{i}");
                                let v = kvs
                                    .iter()
                                    .find(|kv| kv.key == k)
                                    .and_then(|kv| kv.value.clone());
                                (k, v)
                            })
                            .collect();
                        let mine = reads
                            .iter()
                            .find(|(k, _)| *k == rec.key)
                            .and_then(|(_, v)| v.clone());
                        self.clients.records[op].range_reads = reads;
                        Output::Value(mine)
                    }
                    OpInput::Cas { value, .. } if rec.wire == Wire::Txn => {
                        let succeeded = ok.succeeded.unwrap_or_else(|| {
                            panic!("[seed {seed}] a Txn answer without succeeded: {ok:?}")
                        });
                        let after = if succeeded {
                            value.clone()
                        } else {
                            match ok.responses.as_deref() {
                                Some([raftd::kv::txn::TxnResponse::Get { value, .. }]) => {
                                    value.clone()
                                }
                                other => {
                                    panic!("[seed {seed}] a failed Txn without its Get: {other:?}")
                                }
                            }
                        };
                        Output::Cas {
                            succeeded,
                            value: after,
                        }
                    }
                    OpInput::Get => Output::Value(ok.value.clone().unwrap_or_else(|| {
                        panic!("[seed {seed}] a Get answer without a value: {ok:?}")
                    })),
                    OpInput::Put(_) | OpInput::Delete => Output::Done,
                    OpInput::Cas { .. } => match (ok.succeeded, ok.value.clone()) {
                        (Some(succeeded), Some(value)) => Output::Cas { succeeded, value },
                        _ => panic!("[seed {seed}] a Cas answer without an outcome: {ok:?}"),
                    },
                };
                self.finish(client, op, output, Some(node));
            }
            ClientResponse::Error(e) => {
                self.clients.records[op]
                    .errors
                    .push((self.now, node, e.code));
                if !current_attempt {
                    self.clients.stats.late_answers += 1;
                    return;
                }
                match e.code {
                    ErrorCode::NotLeader => {
                        // Hints are followed, but not forever: past a few in a row, the
                        // next node in turn is tried (the hints may be stale).
                        let c = &mut self.clients.clients[client];
                        let hint = e
                            .leader_id
                            .flatten()
                            .filter(|&l| l != node && c.hints_in_a_row < 4);
                        match hint {
                            Some(l) => {
                                c.hints_in_a_row += 1;
                                c.leader_guess = l;
                            }
                            None => {
                                c.hints_in_a_row = 0;
                                self.next_guess(client);
                            }
                        }
                        // No leader known: give the election a moment.
                        let backoff = if hint.is_some() { 0 } else { 20 * MS };
                        self.retry_after(client, op, backoff);
                    }
                    ErrorCode::Timeout | ErrorCode::ShuttingDown | ErrorCode::NoSpace => {
                        // NoSpace: nothing was written; a leader with a full disk hands
                        // leadership over, so try elsewhere.
                        self.next_guess(client);
                        self.retry_after(client, op, 10 * MS);
                    }
                    ErrorCode::SessionExpired => {
                        // The outcome is unknown (the checker allows both).
                        self.clients.stats.expired += 1;
                        self.finish(client, op, Output::Unknown, None);
                    }
                    ErrorCode::BadRequest
                    | ErrorCode::TooLarge
                    | ErrorCode::Unsafe
                    | ErrorCode::Busy
                    | ErrorCode::Compacted
                    | ErrorCode::LeaseNotFound
                    | ErrorCode::WatchCancelled => {
                        self.clients.stats.bad_answers += 1;
                        self.finish(client, op, Output::Unknown, None);
                    }
                }
            }
            // These clients neither ask for status nor watch.
            ClientResponse::Status(_)
            | ClientResponse::Watching { .. }
            | ClientResponse::Events { .. }
            | ClientResponse::SnapshotHeader { .. }
            | ClientResponse::SnapshotChunk { .. }
            | ClientResponse::SnapshotDone { .. } => {
                self.clients.stats.bad_answers += 1;
            }
        }
    }

    /// Retries the current operation after `after` (through the client's timer).
    fn retry_after(&mut self, client: ClientId, op: usize, after: Micros) {
        if after == 0 {
            self.retry(client, op);
        } else {
            self.arm_timer(client, after);
        }
    }

    fn finish(&mut self, client: ClientId, op: usize, output: Output, node: Option<NodeId>) {
        let rec = &mut self.clients.records[op];
        rec.done = true;
        if output != Output::Unknown {
            rec.ret = Some(self.now);
        }
        rec.output = output;
        rec.answered_by = node;
        let c = &mut self.clients.clients[client];
        c.current = None;
        c.hints_in_a_row = 0;
        if !c.queue.is_empty() {
            self.start_next_op(client);
        } else if c.cfg.random && !c.stopped {
            let (lo, hi) = c.cfg.think;
            let wait = self.rng.gen_range(lo..=hi.max(lo));
            self.arm_timer(client, wait);
        } else {
            // Cancel the attempt timer.
            self.clients.clients[client].timer += 1;
        }
    }
}

fn request(rec: &OpRecord, id: u64, client: ClientId) -> ClientRequest {
    let key = rec.key.clone();
    let client_id = rec.seq.map(|_| client_name(client));
    match &rec.input {
        OpInput::Get if rec.wire == Wire::Range => ClientRequest::Range {
            id,
            key: "k".into(),
            end: None,
            prefix: true,
            limit: 0,
            keys_only: false,
            count_only: false,
            revision: None,
            consistency: Consistency::Linearizable,
        },
        OpInput::Cas { expected, value } if rec.wire == Wire::Txn => {
            let t = raftd::kv::txn::Txn::cas(&key, expected.as_deref(), value.as_deref());
            ClientRequest::Txn {
                id,
                compare: t.compare,
                success: t.success,
                failure: t.failure,
                client_id,
                seq: rec.seq,
            }
        }
        OpInput::Get => ClientRequest::Get {
            id,
            key,
            consistency: Consistency::Linearizable,
        },
        OpInput::Put(value) => ClientRequest::Put {
            id,
            key,
            value: value.clone(),
            lease: 0,
            client_id,
            seq: rec.seq,
        },
        OpInput::Delete => ClientRequest::Delete {
            id,
            key,
            client_id,
            seq: rec.seq,
        },
        OpInput::Cas { expected, value } => ClientRequest::Cas {
            id,
            key,
            expected: expected.clone(),
            value: value.clone(),
            client_id,
            seq: rec.seq,
        },
    }
}
