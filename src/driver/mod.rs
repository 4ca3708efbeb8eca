//! The driver: the one I/O-free layer between the Raft core and the world, run by both the
//! daemon's node loop (`src/server/node.rs`) and the simulation (`sim/`).
//!
//! It owns the core and the key-value service and turns inputs (ticks, peer messages, client
//! requests, "the disk made job N durable", "the snapshot is encoded") into an [`Output`]: the
//! messages to send, the disk jobs to queue, the answers to deliver, the snapshot to encode.
//! It does no I/O itself, so what the simulation proves about it is what the daemon does.
//!
//! The rules it keeps, so no shell has to:
//! * A `Ready`'s `messages` leave at once; its `persisted_messages` (votes, acknowledgements)
//!   leave only once its disk job *and every job queued before it* is durable. A `Ready` with
//!   nothing to write still waits for the jobs queued before it, since its acknowledgements may
//!   vouch for their entries; with nothing in flight its messages leave at once.
//! * Committed entries are applied as soon as the core hands them out, whether or not this
//!   node's own copy is durable yet: they are on a majority of disks, and a crash would lose
//!   only this copy, which the log brings back.
//! * The disk has one queue. Saving a snapshot and installing the leader's are jobs in it like
//!   appends, so nothing waits for the queue to drain before the log is rewritten: every job
//!   before a snapshot job is written before it, and the snapshot's `tail` is exactly what
//!   those jobs leave after the snapshot's index.
//! * Every answer carries the reply token `R` of its request (a connection's sender in the
//!   daemon, a client's route in the simulation); the driver keeps no table of its own.

mod consistency;
mod membership;
mod output;
mod snapshot;
#[cfg(test)]
mod tests;
mod watch;

pub use output::{Applied, BackupTask, DiskJob, HashTask, Output, SnapshotTask};
pub use snapshot::SnapshotPolicy;
pub use watch::{ReplyTo, MAX_WATCHES};

#[cfg(feature = "bugs")]
use crate::kv::KvBugs;
use crate::kv::{KvService, KvStore};
use crate::rpc::types::{
    ClientRequest, ClientResponse, Envelope, ErrorCode, NodeId, RaftMessage, Role, Snapshot,
    SnapshotMeta, StatusResponse,
};
use membership::{Asked, PendingChange, PendingTransfer};
use raftd_core::{MembershipChange, Persisting, Raft, SnapshotCheck};
use snapshot::SnapshotState;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// The driver cannot go on: the node must stop.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DriverError {
    /// Only this node's own code can cause it: the core installs no snapshot that failed the
    /// check `Driver::new` gives it, and the check decodes the same way.
    #[error("the leader's snapshot at index {index} does not decode as a key-value store ({reason}); restart the node to fetch it again")]
    BadSnapshot { index: u64, reason: String },
}

/// The store the core's snapshot check decoded, kept so that an accepted snapshot is decoded
/// once, not once to check it and again to load it.
type Decoded = Arc<Mutex<Option<(SnapshotMeta, KvStore)>>>;

/// The check the core runs on a leader's complete snapshot before installing it: it must decode
/// as a store, and that store must be the state after the snapshot's last entry. A snapshot
/// that fails is refused like any impossible message, so one bad snapshot cannot stop a node.
fn snapshot_check(decoded: Decoded) -> SnapshotCheck {
    SnapshotCheck(Arc::new(move |meta: &SnapshotMeta, data: &[u8]| {
        let store = KvStore::from_snapshot_bytes(data)
            .map_err(|e| format!("it is not a key-value store: {e}"))?;
        if store.applied() != meta.index {
            return Err(format!(
                "its store has applied index {}, not the snapshot's {}",
                store.applied(),
                meta.index
            ));
        }
        *decoded.lock().unwrap_or_else(|p| p.into_inner()) = Some((*meta, store));
        Ok(())
    }))
}

/// Settings of the driver and the service it runs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub snapshots: SnapshotPolicy,
    /// Largest encoded write accepted (`TooLarge` above); see `config::ReplicationLimits`.
    pub max_command_bytes: usize,
    /// Requests pending longer than this many ticks are answered `Timeout`.
    pub request_timeout_ticks: u64,
    /// The consistency check hashes the applied state at every multiple of this index (0:
    /// off). Nodes compare hashes only at indexes they all hash, so every node of a cluster
    /// should use the same interval.
    pub hash_every: u64,
    /// Milliseconds per tick (lease ttls are counted in ticks).
    pub tick_ms: u64,
    /// Revisions of history a leader keeps before it proposes a compaction (0: all).
    pub auto_compact_revisions: u64,
    /// Committed entries one `drive` applies at most; the rest wait for the next call
    /// (`wants_drive` says so). A follower that was behind, or that got a large commit index at
    /// once, would otherwise apply hundreds of thousands of entries in one turn while
    /// heartbeats and votes wait behind them.
    pub apply_per_drive: usize,
    /// The service's injected bugs (only with the `bugs` feature).
    #[cfg(feature = "bugs")]
    pub bugs: KvBugs,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            snapshots: SnapshotPolicy::never(),
            max_command_bytes: usize::MAX,
            request_timeout_ticks: crate::kv::DEFAULT_REQUEST_TIMEOUT_TICKS,
            hash_every: DEFAULT_HASH_EVERY,
            tick_ms: 10,
            auto_compact_revisions: 0,
            apply_per_drive: DEFAULT_APPLY_PER_DRIVE,
            #[cfg(feature = "bugs")]
            bugs: KvBugs::default(),
        }
    }
}

/// About 20 ms of applying at a million keys (20 µs an entry): well inside a heartbeat
/// interval, and large enough that a busy follower's turns are not spent on overhead.
pub const DEFAULT_APPLY_PER_DRIVE: usize = 1024;

/// The consistency check's default interval: every 10,000 log entries.
pub const DEFAULT_HASH_EVERY: u64 = 10_000;

/// A handed-off `Ready` waiting for its disk job (and every job before it) to be durable.
#[derive(Debug)]
struct InFlight {
    /// The job whose durability releases it.
    seq: u64,
    persisting: Persisting,
    persisted_messages: Vec<Envelope>,
}

pub struct Driver<R> {
    /// Bytes of the data dir (the shell says; `Status` shows it).
    data_bytes: u64,
    raft: Raft,
    service: KvService<R>,
    in_flight: VecDeque<InFlight>,
    /// Sequence numbers of the last disk job queued and the last one reported durable.
    last_queued: u64,
    last_durable: u64,
    policy: SnapshotPolicy,
    snapshot: SnapshotState,
    out: Output<R>,
    /// Filled by the core's snapshot check, emptied when the snapshot is loaded.
    decoded: Decoded,
    /// Where the command line (`--peers`, or the members `--join` learned) says members
    /// listen: this node's own view, used before the configuration's addresses.
    fallback_addrs: BTreeMap<NodeId, String>,
    changes: Vec<PendingChange<R>>,
    transfers: Vec<PendingTransfer<R>>,
    /// The peers the shell was last told to talk to, and what they were computed from.
    connected: BTreeMap<NodeId, String>,
    peers_key: PeersKey,
    ticks: u64,
    request_timeout_ticks: u64,
    consistency: consistency::Consistency,
    watches: watch::WatchHub<R>,
    apply_per_drive: usize,
}

impl<R: ReplyTo> Driver<R> {
    /// A driver for `raft` (restored from the disk) and `store` (restored from the disk's
    /// snapshot, or empty). `addrs` says where each member listens.
    pub fn new(
        mut raft: Raft,
        mut store: KvStore,
        addrs: BTreeMap<NodeId, String>,
        cfg: DriverConfig,
    ) -> Driver<R> {
        if store.membership().is_empty() {
            // A store from before configurations were logged: it holds the one the core
            // derived, so every node's store (and snapshot) records the same.
            store.set_membership(raft.membership_at(store.applied()));
        }
        let decoded = Decoded::default();
        raft.set_snapshot_check(snapshot_check(decoded.clone()));
        let fallback_addrs = addrs.clone();
        let addrs = member_addrs(raft.membership(), &fallback_addrs);
        let mut service = KvService::new(raft.id(), store, addrs);
        service.set_max_command_bytes(cfg.max_command_bytes);
        service.set_request_timeout_ticks(cfg.request_timeout_ticks);
        service.set_hash_every(cfg.hash_every);
        service.set_tick_ms(cfg.tick_ms);
        service.set_auto_compact(cfg.auto_compact_revisions);
        #[cfg(feature = "bugs")]
        service.set_bugs(cfg.bugs);
        let mut driver = Driver {
            data_bytes: 0,
            raft,
            service,
            in_flight: VecDeque::new(),
            last_queued: 0,
            last_durable: 0,
            policy: cfg.snapshots,
            snapshot: SnapshotState::default(),
            out: Output::default(),
            decoded,
            fallback_addrs,
            changes: Vec::new(),
            transfers: Vec::new(),
            connected: BTreeMap::new(),
            peers_key: PeersKey::default(),
            ticks: 0,
            request_timeout_ticks: cfg.request_timeout_ticks.max(1),
            consistency: consistency::Consistency::default(),
            watches: watch::WatchHub::new((1000 / cfg.tick_ms.max(1)).max(1)),
            apply_per_drive: cfg.apply_per_drive.max(1),
        };
        // The shell starts out talking to the configuration's members (`member_addrs`).
        driver.connected = driver.peer_addrs();
        driver.peers_key = driver.peers_key();
        driver
    }

    /// Where each member of the configuration in effect listens.
    pub fn member_addrs(&self) -> BTreeMap<NodeId, String> {
        member_addrs(self.raft.membership(), &self.fallback_addrs)
    }

    /// Hands leadership to the most up-to-date voter before a planned stop. Returns the target,
    /// or None if this node does not lead or has no one to hand over to.
    pub fn transfer_before_stop(&mut self) -> Option<NodeId> {
        if self.raft.role() != Role::Leader || self.raft.transferring_to().is_some() {
            return self.raft.transferring_to();
        }
        self.raft.transfer_leader(None).ok()
    }

    /// Disaster recovery: see `Raft::force_new_cluster`.
    pub fn force_new_cluster(&mut self) -> u64 {
        self.raft.force_new_cluster()
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn service(&self) -> &KvService<R> {
        &self.service
    }

    pub fn store(&self) -> &KvStore {
        self.service.store()
    }

    /// No disk job is waiting to be made durable.
    pub fn idle(&self) -> bool {
        self.last_durable >= self.last_queued
    }

    /// One logical tick for the core and for the service's request timeouts. `now_ms` is the
    /// shell's wall clock (ms since the epoch), which this node stamps into the commands it
    /// proposes as leader (the log's clock, for session expiry).
    pub fn tick(&mut self, now_ms: u64) {
        self.service.set_now_ms(now_ms);
        self.raft.tick();
        if self.service.no_space()
            && self.raft.role() == Role::Leader
            && self.raft.transferring_to().is_none()
        {
            // Elected (again) with a full disk, or the last handover was abandoned.
            self.transfer_before_stop();
        }
        self.ticks += 1;
        let answers = self.service.tick();
        self.out.answers.extend(answers);
        self.service.leader_tick(&mut self.raft);
        let revision = self.service.store().revision();
        self.watches.tick(revision, &mut self.out.watch_events);
    }

    /// A client connection closed: the watches on it end.
    pub fn connection_closed(&mut self, connection: u64) {
        self.watches
            .connection_closed(self.service.store_mut(), connection);
    }

    /// The shell found watch `watch_id`'s connection too far behind: the watch ends with
    /// `WatchCancelled`.
    pub fn cancel_slow_watch(&mut self, connection: u64, watch_id: u64) {
        if let Some(answer) =
            self.watches
                .cancel_slow(self.service.store_mut(), connection, watch_id)
        {
            self.out.watch_events.push(answer);
        }
    }

    /// Watches this node serves.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// A message from a peer (the shell has checked which peer's connection it came on).
    pub fn step(&mut self, env: Envelope) {
        if let RaftMessage::StateHash { index, hash, .. } = env.msg {
            self.consistency
                .peer_hash(self.raft.id(), env.from, index, hash);
            return;
        }
        self.raft.step(env);
    }

    /// A client request; its answer comes with `reply` in this or a later output.
    pub fn request(&mut self, req: ClientRequest, reply: R) {
        if let ClientRequest::Status { id } = req {
            let status = self.status(id);
            self.out
                .answers
                .push((reply, ClientResponse::Status(status)));
            return;
        }
        let id = req.id();
        let asked = match req {
            ClientRequest::Watch {
                id,
                key,
                end,
                prefix,
                start_revision,
            } => {
                match crate::kv::mvcc::KeyRange::from_fields(key, end, prefix) {
                    Ok(range) => self.watches.watch(
                        self.service.store_mut(),
                        id,
                        range,
                        start_revision,
                        reply,
                        &mut self.out,
                    ),
                    Err(msg) => self.out.answers.push((
                        reply,
                        ClientResponse::error(Some(id), ErrorCode::BadRequest, msg),
                    )),
                }
                return;
            }
            ClientRequest::CancelWatch { id, watch_id } => {
                let connection = reply.connection();
                self.watches
                    .cancel(self.service.store_mut(), connection, watch_id);
                self.out.answers.push((
                    reply,
                    ClientResponse::Ok(crate::rpc::types::OkResponse::bare(id)),
                ));
                return;
            }
            ClientRequest::MemberList { .. } => {
                let answer = if self.raft.role() == Role::Leader {
                    membership::ok_members(
                        id,
                        membership::members(&self.raft, &self.fallback_addrs),
                    )
                } else {
                    self.service.not_leader(id, self.raft.leader())
                };
                self.out.answers.push((reply, answer));
                return;
            }
            ClientRequest::MemberAdd {
                node_id,
                addr,
                learner,
                force,
                ..
            } => Asked::Change(
                MembershipChange::AddLearner {
                    id: node_id,
                    addr,
                    promote: !learner,
                },
                force,
            ),
            ClientRequest::MemberPromote { node_id, force, .. } => {
                Asked::Change(MembershipChange::Promote { id: node_id }, force)
            }
            ClientRequest::MemberRemove { node_id, force, .. } => {
                Asked::Change(MembershipChange::Remove { id: node_id }, force)
            }
            ClientRequest::TransferLeader { node_id, .. } => Asked::Transfer(node_id),
            req => {
                if let Some(answer) = self.service.request(&mut self.raft, reply, req) {
                    self.out.answers.push(answer);
                }
                return;
            }
        };
        self.membership_request(id, asked, reply);
    }

    fn membership_request(&mut self, id: u64, asked: Asked, reply: R) {
        if self.raft.role() != Role::Leader {
            let answer = self.service.not_leader(id, self.raft.leader());
            self.out.answers.push((reply, answer));
            return;
        }
        match asked {
            Asked::Change(change, force) => {
                match membership::start_change(&mut self.raft, change, force) {
                    Ok(index) => self.changes.push(PendingChange {
                        reply,
                        id,
                        index,
                        term: self.raft.term(),
                        since: self.ticks,
                    }),
                    Err((code, message)) => {
                        self.out
                            .answers
                            .push((reply, ClientResponse::error(Some(id), code, message)));
                    }
                }
            }
            Asked::Transfer(target) => match self.raft.transfer_leader(target) {
                Ok(target) => self.transfers.push(PendingTransfer {
                    reply,
                    id,
                    target,
                    since: self.ticks,
                }),
                Err(e) => {
                    let (code, message) = membership::refusal(e);
                    self.out
                        .answers
                        .push((reply, ClientResponse::error(Some(id), code, message)));
                }
            },
        }
    }

    /// Answers the membership requests that are done, failed or too old.
    fn answer_membership(&mut self) {
        let applied = self.store().applied();
        let leader = self.raft.role() == Role::Leader;
        let (term, timeout) = (self.raft.term(), self.request_timeout_ticks);
        let expired = |since: u64, ticks: u64| ticks.saturating_sub(since) >= timeout;
        for p in std::mem::take(&mut self.changes) {
            // Our entry is applied: still the leader of its term (a leader never loses its own
            // entries), or the entry at its index is still of its term (a leader that removed
            // itself steps down in the very turn its removal commits, and the change did take
            // effect).
            let ours_applied = applied >= p.index
                && ((leader && term == p.term) || self.raft.log().term(p.index) == Some(p.term));
            let answer = if ours_applied {
                membership::ok_members(p.id, membership::members(&self.raft, &self.fallback_addrs))
            } else if !leader || term != p.term {
                ClientResponse::error(
                    Some(p.id),
                    ErrorCode::Timeout,
                    "leadership changed before the change was committed; it may or may not take effect: check MemberList",
                )
            } else if expired(p.since, self.ticks) {
                ClientResponse::error(
                    Some(p.id),
                    ErrorCode::Timeout,
                    "the change was not committed in time; it may still take effect: check MemberList",
                )
            } else {
                self.changes.push(p);
                continue;
            };
            self.out.answers.push((p.reply, answer));
        }
        for p in std::mem::take(&mut self.transfers) {
            let now = self.raft.leader();
            let answer = if now == p.target {
                membership::ok_leader(p.id, p.target)
            } else if now != 0 && now != self.raft.id() {
                ClientResponse::error(
                    Some(p.id),
                    ErrorCode::Timeout,
                    format!("node {now} leads, not node {}", p.target),
                )
            } else if leader && self.raft.transferring_to() != Some(p.target) {
                ClientResponse::error(
                    Some(p.id),
                    ErrorCode::Timeout,
                    format!(
                        "node {} did not take over within an election timeout; this node still leads",
                        p.target
                    ),
                )
            } else if expired(p.since, self.ticks) {
                ClientResponse::error(
                    Some(p.id),
                    ErrorCode::Timeout,
                    "the transfer did not finish in time",
                )
            } else {
                self.transfers.push(p);
                continue;
            };
            self.out.answers.push((p.reply, answer));
        }
    }

    /// The disk made every job up to `seq` durable: tell the core, release what waited.
    pub fn durable(&mut self, seq: u64) {
        self.last_durable = self.last_durable.max(seq);
        while self.in_flight.front().is_some_and(|f| f.seq <= seq) {
            let Some(done) = self.in_flight.pop_front() else {
                break;
            };
            self.raft.persisted(done.persisting);
            self.out.messages.extend(done.persisted_messages);
        }
        if let Some(snapshot) = self.snapshot.saved(seq) {
            self.compact(snapshot);
        }
    }

    /// Appends a raw command to the leader's log (tests and tools; clients go through
    /// `request`). Returns the (index, term) it will be committed at, if it is.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), raftd_core::NotLeader> {
        self.raft.propose(data)
    }

    /// The node is stopping: answer everything pending with `ShuttingDown`.
    pub fn shutdown(&mut self) {
        let answers = self.service.shutdown();
        self.out.answers.extend(answers);
        self.watches.shutdown(&mut self.out.watch_events);
        let pending = std::mem::take(&mut self.changes)
            .into_iter()
            .map(|p| (p.reply, p.id))
            .chain(
                std::mem::take(&mut self.transfers)
                    .into_iter()
                    .map(|p| (p.reply, p.id)),
            );
        for (reply, id) in pending {
            self.out.answers.push((
                reply,
                ClientResponse::error(
                    Some(id),
                    ErrorCode::ShuttingDown,
                    "node is stopping; check MemberList at another node",
                ),
            ));
        }
    }

    /// Whether `drive` has more to do without a new input: committed entries beyond
    /// `apply_per_drive`, or what the core produced after the last call. The shell calls
    /// `drive` again soon, after the inputs that are waiting (ticks and peer messages first).
    pub fn wants_drive(&self) -> bool {
        self.raft.has_ready()
    }

    /// Does the work the inputs so far made possible and returns everything for the shell to
    /// do. Call it after every batch of inputs, and again while `wants_drive`.
    pub fn drive(&mut self) -> Result<Output<R>, DriverError> {
        self.process()?;
        self.out.released = self.raft.take_released();
        Ok(std::mem::take(&mut self.out))
    }

    /// The Ready loop.
    fn process(&mut self) -> Result<(), DriverError> {
        // Every linearizable read received since the last call shares one ReadIndex round.
        let answers = self.service.flush_reads(&mut self.raft);
        self.out.answers.extend(answers);
        let mut applied = 0;
        while self.raft.has_ready() && applied < self.apply_per_drive {
            let mut rd = self.raft.ready();
            applied += rd.committed_entries.len();
            self.out.messages.append(&mut rd.messages);
            let mut seq = None;
            if let Some(snapshot) = rd.snapshot.take() {
                // The leader's snapshot replaces the state machine before this Ready's
                // committed entries (which follow it) are applied.
                let checked = self
                    .decoded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let store = match checked {
                    Some((meta, store)) if meta == snapshot.meta => store,
                    _ => {
                        KvStore::from_snapshot(&snapshot).map_err(|e| DriverError::BadSnapshot {
                            index: snapshot.meta.index,
                            reason: e.to_string(),
                        })?
                    }
                };
                self.service.restore(store);
                self.watches
                    .restored(self.service.store_mut(), &mut self.out.watch_events);
                self.out.applied.push(Applied::Snapshot(snapshot.meta));
                // The entries after the snapshot that earlier jobs wrote (this Ready's own
                // entries follow in the next job).
                let before_this_ready = rd
                    .entries
                    .first()
                    .map_or(self.raft.log().handed(), |e| e.index - 1);
                let tail = self
                    .raft
                    .log()
                    .entries_between(snapshot.meta.index, before_this_ready);
                let hard_state = rd.hard_state.take();
                seq = Some(self.queue(|seq| DiskJob::InstallSnapshot {
                    seq,
                    hard_state,
                    snapshot,
                    tail,
                }));
            }
            if let Some(m) = rd.membership.take() {
                self.service
                    .set_addrs(member_addrs(&m, &self.fallback_addrs));
            }
            let answers = self.service.on_ready(&self.raft, &rd);
            self.out.answers.extend(answers);
            if !self.watches.is_empty() {
                let events = self.service.store_mut().take_events();
                let revision = self.service.store().revision();
                self.watches
                    .deliver(&events, revision, &mut self.out.watch_events);
            }
            self.out.hash_states.extend(
                self.service
                    .take_hash_points()
                    .into_iter()
                    .map(|(index, store)| HashTask { index, store }),
            );
            for (reply, id, store) in self.service.take_backups() {
                self.start_backup(reply, id, store);
            }
            self.out
                .applied
                .extend(rd.committed_entries.drain(..).map(Applied::Entry));
            let persisting = self.raft.handed_off();
            if rd.hard_state.is_some() || !rd.entries.is_empty() {
                let (hard_state, entries) = (rd.hard_state.take(), std::mem::take(&mut rd.entries));
                seq = Some(self.queue(|seq| DiskJob::Append {
                    seq,
                    hard_state,
                    entries,
                }));
            }
            if seq.is_none() && self.in_flight.is_empty() {
                // Nothing in flight: what these messages vouch for is durable already.
                self.out.messages.append(&mut rd.persisted_messages);
                self.raft.persisted(persisting);
                continue;
            }
            self.in_flight.push_back(InFlight {
                seq: seq.unwrap_or(self.last_queued),
                persisting,
                persisted_messages: std::mem::take(&mut rd.persisted_messages),
            });
        }
        self.answer_membership();
        // Whom to talk to changes only with the configuration or when a change commits: not
        // worth rebuilding on every turn.
        let key = self.peers_key();
        if key != self.peers_key {
            self.peers_key = key;
            let peers = self.peer_addrs();
            if peers != self.connected {
                self.connected = peers.clone();
                self.out.peers = Some(peers);
            }
        }
        self.maybe_start_snapshot();
        Ok(())
    }

    /// What `peer_addrs` depends on: the latest configuration entry, the latest committed one,
    /// and the snapshot (which may bring a configuration of its own).
    fn peers_key(&self) -> PeersKey {
        let log = self.raft.log();
        let at = self.raft.membership_index();
        PeersKey {
            config: (at, log.term(at).unwrap_or(0)),
            committed_config: self.raft.membership_index_at(log.committed()),
            snapshot_index: self.raft.snapshot_index(),
            known: !self.raft.membership().is_empty(),
        }
    }

    /// Whom to talk to: the members of the configuration in effect and of the committed one,
    /// this node excluded (the command line's members while no configuration is known).
    pub fn peer_addrs(&self) -> BTreeMap<NodeId, String> {
        let committed = self.raft.membership_at(self.raft.log().committed());
        let mut peers = member_addrs(&committed, &self.fallback_addrs);
        peers.extend(self.member_addrs());
        peers.remove(&self.raft.id());
        peers
    }

    fn queue(&mut self, job: impl FnOnce(u64) -> DiskJob) -> u64 {
        self.last_queued += 1;
        self.out.disk.push(job(self.last_queued));
        self.last_queued
    }

    fn status(&self, id: u64) -> StatusResponse {
        let s = self.raft.status();
        let addrs = self.service.addrs();
        let m = self.raft.membership();
        let leader = (s.leader != 0).then_some(s.leader);
        StatusResponse {
            id,
            node_id: s.id,
            role: s.role.public_name().to_string(),
            term: s.term,
            leader_id: leader,
            leader_addr: leader.and_then(|l| addrs.get(&l).cloned()),
            commit_index: s.commit_index,
            last_applied: s.last_applied,
            last_log_index: s.last_log_index,
            snapshot_index: self.raft.snapshot_index(),
            members: addrs
                .iter()
                .map(|(id, addr)| (id.to_string(), addr.clone()))
                .collect(),
            voters: m.voters().collect(),
            learners: m.learners().collect(),
            alarms: self.alarms(),
            data_bytes: self.data_bytes,
        }
    }

    /// The shell's count of the data dir's bytes, for `Status`.
    pub fn set_data_bytes(&mut self, bytes: u64) {
        self.data_bytes = bytes;
    }

    /// The alarms `Status` shows (see `StatusResponse::alarms`).
    pub fn alarms(&self) -> Vec<String> {
        let mut alarms = Vec::new();
        if self.service.no_space() {
            alarms.push("NoSpace".to_string());
        }
        if self.consistency.mismatch().is_some() {
            alarms.push("Corrupt".to_string());
        }
        alarms
    }

    /// The shell hashed the state of a `HashTask`: compare it with the peers' and tell them.
    pub fn state_hashed(&mut self, index: u64, hash: u64) {
        let id = self.raft.id();
        self.consistency.own_hash(id, index, hash);
        for &peer in self.connected.keys() {
            self.out.messages.push(Envelope {
                from: id,
                to: peer,
                incarnation: self.raft.incarnation(),
                msg: RaftMessage::StateHash {
                    term: self.raft.term(),
                    index,
                    hash,
                },
            });
        }
    }

    /// Test hook (see `KvStore::corrupt_for_test`).
    #[cfg(feature = "bugs")]
    pub fn corrupt_store_for_test(&mut self, key: &str, value: &str) {
        self.service.corrupt_for_test(key, value);
    }

    /// The first consistency-check mismatch this node saw, if any.
    pub fn consistency_mismatch(&self) -> Option<&str> {
        self.consistency.mismatch()
    }

    /// The log writer says the disk is full (`true`) or has space again. While it is full,
    /// writes are refused with `NoSpace`, and a leader hands leadership to the most caught-up
    /// voter: every write it takes would wait for a disk that refuses it, while a healthy
    /// voter can take them. Returns the node leadership is handed to, if any.
    pub fn set_no_space(&mut self, full: bool) -> Option<NodeId> {
        self.service.set_no_space(full);
        if full && self.raft.role() == Role::Leader {
            return self.transfer_before_stop();
        }
        None
    }

    // ----- snapshots of this node's own state machine -----

    /// Starts a snapshot once the policy says the log has grown enough since the last one.
    fn maybe_start_snapshot(&mut self) {
        let applied = self.store().applied();
        if !self.snapshot.can_start()
            || !self.policy.wants(
                applied,
                self.raft.snapshot_index(),
                self.raft.log_bytes_since_snapshot(),
                self.raft.snapshot().map_or(0, |s| s.data.len() as u64),
                self.snapshot.failed_at(),
            )
        {
            return;
        }
        self.start_snapshot();
    }

    /// Asks the shell to encode a snapshot of the state machine at its applied index now,
    /// whatever the policy says (tests and tools). Returns what it will cover; None if one is
    /// already in progress or nothing was applied since the last.
    pub fn start_snapshot(&mut self) -> Option<SnapshotMeta> {
        let store = self.service.store();
        let index = store.applied();
        if !self.snapshot.can_start() || index <= self.raft.snapshot_index() {
            return None;
        }
        let term = self.raft.log().term(index)?;
        let mut store = store.clone();
        store.set_membership(self.raft.membership_at(index));
        let task = SnapshotTask {
            store,
            term,
            size_hint: self.raft.snapshot().map_or(0, |s| s.data.len()),
        };
        let meta = task.meta();
        self.snapshot = SnapshotState::Preparing { index };
        self.out.prepare_snapshot = Some(task);
        Some(meta)
    }

    /// A backup's read index is applied: hand the store as of now, with the configuration at
    /// its index, to the shell to stream.
    fn start_backup(&mut self, reply: R, id: u64, mut store: KvStore) {
        let index = store.applied();
        let Some(term) = self.raft.log().term(index) else {
            // Only if a leader's snapshot replaced the log within this very turn; the client
            // may simply ask again.
            let answer = ClientResponse::error(
                Some(id),
                ErrorCode::Timeout,
                "the log moved past the backup's index while it was taken; ask again",
            );
            self.out.answers.push((reply, answer));
            return;
        };
        store.set_membership(self.raft.membership_at(index));
        self.out.backups.push(BackupTask {
            reply,
            id,
            store,
            term,
        });
    }

    /// The shell encoded (and, in the daemon, wrote under a temporary name) the snapshot of
    /// the last `SnapshotTask`. Returns true if it was queued as a `SaveSnapshot` job; false if
    /// it is not wanted any more (a newer snapshot came from the leader meanwhile), in which
    /// case the shell discards what it prepared.
    pub fn snapshot_prepared(&mut self, snapshot: Snapshot) -> bool {
        if !self.snapshot.is_preparing(snapshot.meta.index) {
            return false;
        }
        let meta = snapshot.meta;
        if meta.index <= self.raft.snapshot_index() {
            ::log::debug!(
                "node {}: dropping the snapshot at {}: the leader's snapshot at {} is newer",
                self.raft.id(),
                meta.index,
                self.raft.snapshot_index()
            );
            self.snapshot = SnapshotState::Idle { failed_at: None };
            return false;
        }
        let tail = self
            .raft
            .log()
            .entries_between(meta.index, self.raft.log().handed());
        let job_snapshot = snapshot.clone();
        let seq = self.queue(|seq| DiskJob::SaveSnapshot {
            seq,
            snapshot: job_snapshot,
            tail,
        });
        self.snapshot = SnapshotState::Saving { seq, snapshot };
        true
    }

    /// The snapshot at `meta` is on disk, and `data` holds its bytes from there: the core keeps
    /// that rather than its copy in memory (ignored if the core's snapshot is another).
    pub fn snapshot_stored(&mut self, meta: SnapshotMeta, data: bytes::Bytes) {
        if self.raft.replace_snapshot_data(meta, data) {
            ::log::debug!(
                "node {}: the snapshot at index {} is now read from its file",
                self.raft.id(),
                meta.index
            );
        }
    }

    /// Encoding or writing the snapshot failed: the node goes on with its log, and tries again
    /// only after the policy's worth of further entries (not in a loop).
    pub fn snapshot_failed(&mut self, error: &str) {
        let applied = self.store().applied();
        ::log::error!(
            "node {}: cannot prepare a snapshot at index {applied}: {error}; the log keeps growing until the next attempt",
            self.raft.id()
        );
        self.snapshot = SnapshotState::Idle {
            failed_at: Some(applied),
        };
    }

    /// The `SaveSnapshot` job is durable: drop the log up to it in memory too.
    fn compact(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        match self.raft.compact(snapshot) {
            Ok(()) => self.out.compacted = Some(meta),
            // A newer snapshot from the leader was installed meanwhile: it covers more.
            Err(e) => ::log::debug!(
                "node {}: snapshot at index {} not used for compaction: {e}",
                self.raft.id(),
                meta.index
            ),
        }
    }
}

/// See `Driver::peers_key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PeersKey {
    /// The latest configuration entry (index, term): a conflict may replace one at an index.
    config: (u64, u64),
    /// The latest configuration entry that is committed.
    committed_config: u64,
    snapshot_index: u64,
    known: bool,
}

/// Where this node reaches each member of `m`: the command line's address for the members it
/// names (`--peers` is this node's own view: behind a proxy or a NAT, peers may reach one
/// member at different addresses), else the address the configuration records (members added
/// later). Before any configuration is known (a node waiting to be founded or caught up), the
/// command line's members.
fn member_addrs(
    m: &raftd_core::Membership,
    local: &BTreeMap<NodeId, String>,
) -> BTreeMap<NodeId, String> {
    if m.is_empty() {
        return local.clone();
    }
    m.members
        .iter()
        .map(|(id, member)| {
            let addr = local
                .get(id)
                .cloned()
                .unwrap_or_else(|| member.addr.clone());
            (*id, addr)
        })
        .collect()
}
