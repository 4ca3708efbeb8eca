//! The node loop: the one task that owns the Raft core (and, through the log writer, the
//! storage).
//!
//! Each turn it waits for an input (a tick, a peer message, a client request, a write made
//! durable), then takes every other input already waiting without blocking, steps them all,
//! and handles the resulting `Ready`s: send, queue the write with the log writer
//! (`wal_writer.rs`, its own thread), apply what is committed. It never waits for the disk: a
//! leader's own write runs in parallel with replication and with the next requests, and what
//! must wait for durability (votes, acknowledgements, the leader counting its own copy) waits
//! for the writer's report. The writer syncs everything queued meanwhile with one fsync
//! (group commit).

use super::client::Reply;
use super::wal_writer::WalWriter;
use crate::config::NodeConfig;
use crate::kv::{Answer, KvService, KvStore};
use crate::raft::{Persisting, Raft, Snapshot};
use crate::rpc::types::{
    ClientRequest, ClientResponse, Entry, Envelope, NodeId, SnapshotMeta, StatusResponse,
};
use crate::storage::{prepare_snapshot, PreparedSnapshot, StorageError};
use raftd_transport::{PeerEvent, SendError, Transport};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Inputs a connection task can give the node loop.
pub enum NodeRequest {
    /// A client request; its answer goes to `reply` (sized so `try_send` cannot fail).
    Client { req: ClientRequest, reply: Reply },
}

/// Most inputs taken in one turn before the `Ready` is handled, so a flood of messages cannot
/// starve ticks or delay fsyncs without bound.
const MAX_INPUTS_PER_TURN: usize = 4096;

pub struct NodeLoop {
    pub raft: Raft,
    pub wal: WalWriter,
    /// Where the storage lives (snapshot files are prepared there).
    pub data_dir: PathBuf,
    /// `Ready`s whose writes are queued and not yet durable, oldest first.
    pub in_flight: VecDeque<InFlight>,
    pub transport: Transport<Envelope>,
    pub events: mpsc::Receiver<PeerEvent<Envelope>>,
    pub requests: mpsc::Receiver<NodeRequest>,
    pub members: BTreeMap<NodeId, SocketAddr>,
    pub tick: Duration,
    pub service: KvService,
    /// Where to send the answer of each request the service has not answered yet.
    pub waiting: HashMap<u64, Reply>,
    pub next_request: u64,
    pub snapshots: SnapshotPolicy,
    /// A snapshot being serialized in the background.
    pub snapshot_job: Option<oneshot::Receiver<Result<(Snapshot, PreparedSnapshot), String>>>,
    /// How long copying the state machine for the running snapshot held up the loop.
    pub snapshot_clone_time: Duration,
}

/// A handed-off `Ready` waiting for its write (and every write before it) to be durable.
pub struct InFlight {
    /// The writer's sequence number that makes it durable.
    seq: u64,
    persisting: Persisting,
    /// Votes and acknowledgements: they may leave only once the write is durable.
    persisted_messages: Vec<Envelope>,
}

/// When to snapshot the state machine and compact the log.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPolicy {
    /// Entries applied since the last snapshot.
    pub entries: u64,
    /// Command bytes held in the log.
    pub bytes: u64,
}

impl NodeLoop {
    /// Runs until `shutdown` is cancelled (returns Ok) or storage fails (returns the error: the
    /// node must stop rather than answer anything it could not make durable).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StorageError> {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Before the ticker and the inputs: under a steady load they are always ready
                // (a turn outlasts a tick), and a finished snapshot polled after them would wait,
                // and the log grow, until the load stops.
                done = wait_job(&mut self.snapshot_job), if self.snapshot_job.is_some() => {
                    self.snapshot_job = None;
                    self.finish_snapshot(done).await?;
                }
                // Also ahead of the inputs: a durable write releases acknowledgements and lets
                // a leader commit.
                durable = self.wal.durable() => self.on_durable(durable?),
                _ = ticker.tick() => {
                    self.raft.tick();
                    let answers = self.service.tick();
                    self.deliver(answers);
                }
                Some(event) = self.events.recv() => self.on_peer_event(event),
                Some(request) = self.requests.recv() => self.on_request(request),
            }
            for _ in 0..MAX_INPUTS_PER_TURN {
                match self.events.try_recv() {
                    Ok(event) => self.on_peer_event(event),
                    Err(_) => break,
                }
            }
            while let Ok(request) = self.requests.try_recv() {
                self.on_request(request);
            }
            self.handle_ready().await?;
            self.maybe_start_snapshot();
        }
        // Finish the writes in flight (and send what waited for them) before saying so.
        self.drain().await?;
        let answers = self.service.shutdown();
        self.deliver(answers);
        ::log::info!(
            "node {}: shutting down in term {} (disk writes complete)",
            self.raft.id(),
            self.raft.term()
        );
        self.transport.shutdown().await;
        Ok(())
    }

    fn on_peer_event(&mut self, event: PeerEvent<Envelope>) {
        match event {
            PeerEvent::Message { from, msg } => {
                // The transport knows who is on the other end; an envelope claiming otherwise
                // is dropped rather than trusted.
                if msg.from != from {
                    ::log::warn!(
                        "node {}: dropping a message claiming to be from node {} on node {from}'s connection",
                        self.raft.id(),
                        msg.from
                    );
                    return;
                }
                ::log::debug!("node {}: recv {msg}", self.raft.id());
                self.raft.step(msg);
            }
            // The core needs no notice (Raft retransmits); people reading the log do.
            PeerEvent::Connected { peer } => {
                let addr = self
                    .members
                    .get(&peer)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                ::log::info!(
                    "node {}: peer {peer} up (connected to {addr}) in term {}",
                    self.raft.id(),
                    self.raft.term()
                );
            }
            PeerEvent::Disconnected { peer, reason } => {
                ::log::info!(
                    "node {}: peer {peer} down in term {}: {reason}",
                    self.raft.id(),
                    self.raft.term()
                );
            }
        }
    }

    fn on_request(&mut self, request: NodeRequest) {
        let NodeRequest::Client { req, reply } = request;
        if let ClientRequest::Status { id } = req {
            reply.send(ClientResponse::Status(self.status(id)));
            return;
        }
        let rid = self.next_request;
        self.next_request += 1;
        match self.service.request(&mut self.raft, rid, req) {
            Some(resp) => {
                reply.send(resp);
            }
            None => {
                self.waiting.insert(rid, reply);
            }
        }
    }

    fn deliver(&mut self, answers: Vec<Answer>) {
        for (rid, resp) in answers {
            if let Some(reply) = self.waiting.remove(&rid) {
                // The connection may be gone; its answers are simply dropped.
                reply.send(resp);
            }
        }
    }

    fn status(&self, id: u64) -> StatusResponse {
        let s = self.raft.status();
        let leader = (s.leader != 0).then_some(s.leader);
        StatusResponse {
            id,
            node_id: s.id,
            role: s.role.public_name().to_string(),
            term: s.term,
            leader_id: leader,
            leader_addr: leader
                .and_then(|l| self.members.get(&l))
                .map(|a| a.to_string()),
            commit_index: s.commit_index,
            last_applied: s.last_applied,
            last_log_index: s.last_log_index,
            snapshot_index: self.raft.log().snapshot().index,
            members: self
                .members
                .iter()
                .map(|(id, addr)| (id.to_string(), addr.to_string()))
                .collect(),
        }
    }

    async fn handle_ready(&mut self) -> Result<(), StorageError> {
        // Every linearizable read received this turn shares one ReadIndex round.
        let answers = self.service.flush_reads(&mut self.raft);
        self.deliver(answers);
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            for env in std::mem::take(&mut rd.messages) {
                self.send(env);
            }
            if let Some(snapshot) = rd.snapshot.take() {
                // Installing rewrites the log on disk: the writes queued before must land first.
                self.drain().await?;
                self.install_snapshot(&snapshot)?;
            }
            // Entries committed on a majority are applied now, whether or not our own copy is
            // durable yet: a crash would lose only our copy, and the log brings it back.
            let answers = self.service.on_ready(&self.raft, &rd);
            self.deliver(answers);
            if let Some(last) = rd.committed_entries.last() {
                ::log::debug!(
                    "node {}: applied {} entries up to index {}",
                    self.raft.id(),
                    rd.committed_entries.len(),
                    last.index
                );
            }
            let persisting = self.raft.handed_off();
            let has_write = rd.hard_state.is_some() || !rd.entries.is_empty();
            if !has_write && self.in_flight.is_empty() {
                // Nothing in flight: what these messages vouch for is durable already.
                for env in std::mem::take(&mut rd.persisted_messages) {
                    self.send(env);
                }
                self.raft.persisted(persisting);
                continue;
            }
            // A `Ready` without a write still waits for the writes queued before it: its
            // acknowledgements may vouch for their entries.
            let seq = if has_write {
                self.wal
                    .queue(rd.hard_state.take(), std::mem::take(&mut rd.entries))
            } else {
                self.wal.last_queued()
            };
            self.in_flight.push_back(InFlight {
                seq,
                persisting,
                persisted_messages: std::mem::take(&mut rd.persisted_messages),
            });
        }
        Ok(())
    }

    /// The writer made everything up to `seq` durable: tell the core, send what waited.
    fn on_durable(&mut self, seq: u64) {
        while self.in_flight.front().is_some_and(|f| f.seq <= seq) {
            let Some(done) = self.in_flight.pop_front() else {
                break;
            };
            self.raft.persisted(done.persisting);
            for env in done.persisted_messages {
                self.send(env);
            }
        }
    }

    /// Waits until every queued write is durable (before the log is rewritten on disk, and
    /// before shutting down).
    async fn drain(&mut self) -> Result<(), StorageError> {
        while !self.in_flight.is_empty() || !self.wal.idle() {
            let seq = self.wal.durable().await?;
            self.on_durable(seq);
        }
        Ok(())
    }

    /// Starts serializing the state machine in the background once the log has grown past
    /// the policy's thresholds, so the node keeps serving (heartbeats included) meanwhile.
    fn maybe_start_snapshot(&mut self) {
        if self.snapshot_job.is_some() {
            return;
        }
        let log = self.raft.log();
        let since = log.applied().saturating_sub(log.snapshot().index);
        if since == 0 || (since < self.snapshots.entries && log.bytes() < self.snapshots.bytes) {
            return;
        }
        let started = std::time::Instant::now();
        let store = self.service.store().clone();
        let size_hint = self.raft.snapshot().map_or(0, |s| s.data.len());
        self.snapshot_clone_time = started.elapsed();
        let index = store.applied();
        let Some(term) = log.term(index) else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            // Serializing, writing and fsyncing the bytes all happen here, off the node loop.
            let meta = SnapshotMeta { index, term };
            let result = store
                .to_snapshot_bytes(size_hint)
                .map_err(|e| format!("cannot serialize the state machine: {e}"))
                .and_then(|data| {
                    let prepared =
                        prepare_snapshot(&dir, meta, &data).map_err(|e| e.to_string())?;
                    Ok((
                        Snapshot {
                            meta,
                            data: Arc::new(data),
                        },
                        prepared,
                    ))
                });
            let _ = tx.send(result);
        });
        self.snapshot_job = Some(rx);
    }

    /// The background serialization finished: make the snapshot durable, compact the log on
    /// disk, then in memory.
    async fn finish_snapshot(
        &mut self,
        done: Result<Result<(Snapshot, PreparedSnapshot), String>, oneshot::error::RecvError>,
    ) -> Result<(), StorageError> {
        let (snapshot, prepared) = match done {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                ::log::error!("node {}: cannot prepare a snapshot: {e}", self.raft.id());
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let meta = snapshot.meta;
        if meta.index <= self.raft.log().snapshot().index {
            // A newer snapshot was installed from the leader meanwhile.
            self.wal.storage().discard_prepared_snapshot(prepared);
            return Ok(());
        }
        // The log on disk is about to be rewritten: the writes queued before must land first,
        // and then every entry handed out is durable (the tail below).
        self.drain().await?;
        let tail: Vec<Entry> = self
            .raft
            .log()
            .stable_entries()
            .iter()
            .filter(|e| e.index > meta.index)
            .cloned()
            .collect();
        let started = std::time::Instant::now();
        let disk_usage = {
            let mut storage = self.wal.storage();
            let hs = storage.hard_state();
            storage.save_prepared_snapshot(prepared, &tail, hs)?;
            storage.disk_usage()
        };
        let saved_in = started.elapsed();
        if let Err(e) = self.raft.compact(snapshot) {
            ::log::warn!(
                "node {}: snapshot at index {} not used: {e}",
                self.raft.id(),
                meta.index
            );
        }
        ::log::info!(
            "node {}: log compacted to index {} in term {}; data dir now {} bytes (node loop paused {:.1} ms to copy the state, {:.1} ms to save)",
            self.raft.id(),
            meta.index,
            self.raft.term(),
            disk_usage,
            self.snapshot_clone_time.as_secs_f64() * 1e3,
            saved_in.as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// A snapshot from the leader: persist it (replacing the log up to its index), then
    /// restore the state machine from it. The caller drained the writer first.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let meta = snapshot.meta;
        let tail: Vec<Entry> = self.raft.log().stable_entries().to_vec();
        {
            let mut storage = self.wal.storage();
            let hs = storage.hard_state();
            storage.save_snapshot(meta, &snapshot.data, &tail, hs)?;
        }
        let store: KvStore =
            serde_json::from_slice(&snapshot.data).map_err(|e| StorageError::Corrupt {
                path: self.data_dir.join(crate::storage::SNAPSHOT_FILE_NAME),
                offset: 0,
                reason: format!("the leader's snapshot does not decode as a key-value store: {e}"),
            })?;
        self.service.restore(store);
        // A snapshot being prepared in the background meanwhile is older: `finish_snapshot`
        // discards it when it arrives.
        Ok(())
    }

    fn send(&self, env: Envelope) {
        ::log::debug!("node {}: send {env}", self.raft.id());
        match self.transport.send(env.to, &env) {
            Ok(()) => {}
            // Raft retransmits: a dropped message to a slow or absent peer costs nothing but time.
            Err(SendError::QueueFull) => {
                ::log::debug!(
                    "node {}: queue to node {} full; dropped {}",
                    self.raft.id(),
                    env.to,
                    env.msg.kind()
                )
            }
            Err(e) => ::log::warn!(
                "node {}: cannot send {} to node {}: {e}",
                self.raft.id(),
                env.msg.kind(),
                env.to
            ),
        }
    }
}

/// Builds the core's configuration from the daemon's.
pub fn raft_config(cfg: &NodeConfig) -> Result<crate::raft::Config, crate::config::ConfigError> {
    let timing = cfg.timing()?;
    let mut rc = crate::raft::Config::new(cfg.id, cfg.members().keys().copied().collect());
    rc.heartbeat_ticks = timing.heartbeat_ticks;
    rc.election_ticks_min = timing.election_ticks_min;
    rc.election_ticks_max = timing.election_ticks_max;
    rc.seed = rand::random();
    // Every AppendEntries must fit in one peer frame, or it is dropped on every retransmission
    // and the follower never catches up.
    let limits = ReplicationLimits::for_frame(cfg.max_frame_bytes);
    rc.max_entries_per_message = rc.max_entries_per_message.min(limits.max_entries);
    rc.max_bytes_per_message = rc.max_bytes_per_message.min(limits.max_batch_bytes);
    rc.snapshot_chunk_bytes = rc.snapshot_chunk_bytes.min(limits.max_command_bytes.max(1));
    Ok(rc)
}

/// What fits in one AppendEntries frame of `max_frame_bytes`. Entry data travels as base64
/// (4 bytes per 3) inside JSON, next to per-entry and per-message fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationLimits {
    /// Entries per message.
    pub max_entries: usize,
    /// Command bytes in a message of several entries.
    pub max_batch_bytes: usize,
    /// Bytes of one command (an entry that travels alone).
    pub max_command_bytes: usize,
}

impl ReplicationLimits {
    /// The envelope and AppendEntries fields, every number at its widest (20 digits).
    const MESSAGE_OVERHEAD: usize = 400;
    /// One entry's fields, comma and base64 padding, every number at its widest.
    const ENTRY_OVERHEAD: usize = 100;

    pub fn for_frame(max_frame_bytes: usize) -> ReplicationLimits {
        let avail = max_frame_bytes.saturating_sub(Self::MESSAGE_OVERHEAD);
        // A quarter of the frame for per-entry fields, three quarters for base64 data.
        ReplicationLimits {
            max_entries: (avail / 4 / Self::ENTRY_OVERHEAD).max(1),
            max_batch_bytes: (avail * 3 / 4 * 3 / 4).max(1),
            max_command_bytes: avail.saturating_sub(Self::ENTRY_OVERHEAD) * 3 / 4,
        }
    }
}

/// Waits for a background job, if there is one (the select! branch is disabled otherwise).
async fn wait_job<T>(
    job: &mut Option<oneshot::Receiver<T>>,
) -> Result<T, oneshot::error::RecvError> {
    match job {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::ReplicationLimits;
    use crate::rpc::types::{Entry, Envelope, RaftMessage};

    fn append_entries(entries: Vec<Entry>) -> usize {
        let env = Envelope {
            from: u64::MAX,
            to: u64::MAX,
            msg: RaftMessage::AppendEntries {
                term: u64::MAX,
                leader_id: u64::MAX,
                prev_log_index: u64::MAX,
                prev_log_term: u64::MAX,
                entries,
                leader_commit: u64::MAX,
                read_round: u64::MAX,
            },
        };
        serde_json::to_vec(&env).unwrap().len()
    }

    #[test]
    fn the_largest_append_entries_fits_in_a_frame() {
        for frame in [1024, 4096, 65536, 1 << 20, 16 << 20] {
            let l = ReplicationLimits::for_frame(frame);
            // One entry of the largest command.
            let one = vec![Entry::command(
                u64::MAX,
                u64::MAX,
                vec![7; l.max_command_bytes],
            )];
            assert!(append_entries(one) <= frame, "{frame}: {l:?}");
            // A full batch, every entry with the worst base64 padding (len % 3 == 1).
            let n = l.max_entries.min(1024);
            let each = (l.max_batch_bytes / n).max(1);
            let each = each - (each + 2) % 3;
            let batch = (0..n)
                .map(|_| Entry::command(u64::MAX, u64::MAX, vec![7; each]))
                .collect();
            assert!(append_entries(batch) <= frame, "{frame}: {l:?}");
        }
        let default = ReplicationLimits::for_frame(16 << 20);
        assert!(default.max_entries >= 1024 && default.max_batch_bytes >= 1 << 20);
    }
}
