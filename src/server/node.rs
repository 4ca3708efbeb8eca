//! The node loop: the one task that runs the driver (and with it the Raft core and the
//! key-value service) and carries out its output on tokio.
//!
//! Each turn it waits for an input (a tick, a peer message, a client request, the log writer's
//! report that a job is durable, a snapshot encoded in the background), takes every other input
//! already waiting without blocking, hands them all to the driver, and does what the driver's
//! output says: send the messages, queue the disk jobs with the log writer (`log_writer.rs`, its
//! own thread, which owns the storage), deliver the answers, start encoding a snapshot. It never
//! waits for the disk and never touches a file. Which message may leave when, what is applied
//! and who gets which answer is the driver's decision (`src/driver/`), the same code the
//! simulation runs.

use super::connection::{NodeRequest, Reply};
use super::log_writer::{LogWriter, Report, WriteJob};
use super::metrics::SnapshotLabels;
use super::node_metrics::NodeMetrics;
use crate::driver::{Applied, DiskJob, Driver, DriverError, Output, SnapshotTask};
use crate::rpc::types::{Envelope, NodeId, Role, Snapshot};
use crate::storage::{prepare_snapshot_streamed, PreparedSnapshot, StorageError, StreamedError};
use raftd_transport::{PeerEvent, SendError, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Most inputs taken in one turn before the driver's output is carried out, so a flood of
/// messages cannot starve ticks or delay fsyncs without bound.
const MAX_INPUTS_PER_TURN: usize = 4096;

/// A turn of the node loop longer than this is logged (it holds back heartbeats).
const SLOW_TURN: Duration = Duration::from_millis(50);

/// Log entries a compaction dropped are freed on another thread from this many on (about
/// 0.3 µs an entry: 75–110 ms for the 250,000 of a 1M-key store's compacted log).
const FREE_ELSEWHERE: usize = 10_000;
/// Snapshot data this large (or larger) is dropped on a background thread.
const FREE_ELSEWHERE_BYTES: usize = 1 << 20;

/// Why the node loop stopped on its own.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// A snapshot encoded and written under a temporary name in the background, or why not: a
/// message, or the storage error (an fsync that failed stops the node, as anywhere else).
type Prepared = Result<(Snapshot, PreparedSnapshot), (String, Option<StorageError>)>;

pub struct NodeLoop {
    pub driver: Driver<Reply>,
    pub wal: LogWriter,
    /// Where snapshot files are prepared.
    pub data_dir: PathBuf,
    pub transport: Transport<Envelope>,
    pub events: mpsc::Receiver<PeerEvent<Envelope>>,
    pub requests: mpsc::Receiver<NodeRequest>,
    pub members: BTreeMap<NodeId, SocketAddr>,
    pub tick: Duration,
    /// How long a stopping leader waits for its successor to take over.
    pub handover: Duration,
    /// A snapshot being encoded in the background.
    pub snapshot_job: Option<oneshot::Receiver<Prepared>>,
    /// Hashes of the applied state computed in the background (index, hash), for the
    /// consistency check.
    pub hashes_tx: mpsc::UnboundedSender<(u64, u64)>,
    pub hashes_rx: mpsc::UnboundedReceiver<(u64, u64)>,
    /// The file of the snapshot the driver queued as a `SaveSnapshot` job, until the job is
    /// handed to the log writer.
    pub prepared: Option<PreparedSnapshot>,
    pub metrics: NodeMetrics,
    /// Ticks so far (the metrics that cost more are updated every tenth).
    pub ticks: u64,
    /// When the snapshot being encoded was started.
    pub snapshot_started: Option<std::time::Instant>,
    /// What the last `carry_out` did, for the slow-turn warning.
    pub last_turn: TurnWork,
    /// A second reference to the core's current snapshot data, so that the last reference to a
    /// replaced snapshot is dropped on a background thread, never on this loop (see
    /// `release_replaced_snapshot`).
    pub snapshot_held: Option<bytes::Bytes>,
}

/// Where a turn's time went (see `SLOW_TURN`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnWork {
    pub drive: Duration,
    pub execute: Duration,
    pub applied: usize,
    pub messages: usize,
}

impl NodeLoop {
    /// Runs until `shutdown` is cancelled (returns Ok) or storage fails (returns the error: the
    /// node must stop rather than answer anything it could not make durable).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Set once a stop was asked for while leading: leadership is being handed over first.
        let mut handing_over: Option<tokio::time::Instant> = None;
        loop {
            // When the branch that woke the loop began its work: that work is part of the turn.
            let mut woke: Option<std::time::Instant> = None;
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if handing_over.is_none() => {
                    let handover = if self.handover.is_zero() {
                        None
                    } else {
                        self.driver.transfer_before_stop()
                    };
                    match handover {
                        Some(target) => {
                            ::log::info!(
                                "node {}: stopping: handing leadership to node {target} first (at most {:?})",
                                self.id(),
                                self.handover
                            );
                            handing_over = Some(tokio::time::Instant::now() + self.handover);
                        }
                        None => break,
                    }
                }
                _ = sleep_until(handing_over), if handing_over.is_some() => {
                    ::log::warn!(
                        "node {}: leadership was not handed over within {:?}; stopping anyway",
                        self.id(),
                        self.handover
                    );
                    break;
                }
                // Before the ticker and the inputs: under a steady load they are always ready
                // (a turn outlasts a tick), and a finished snapshot polled after them would wait,
                // and the log grow, until the load stops.
                done = wait_job(&mut self.snapshot_job), if self.snapshot_job.is_some() => {
                    woke = Some(std::time::Instant::now());
                    self.snapshot_job = None;
                    self.on_snapshot_prepared(done)?;
                }
                // Also ahead of the inputs: a durable write releases acknowledgements and lets
                // a leader commit.
                report = self.wal.report() => {
                    woke = Some(std::time::Instant::now());
                    self.on_report(report?);
                }
                _ = ticker.tick() => {
                    woke = Some(std::time::Instant::now());
                    self.driver.tick(wall_clock_ms());
                    self.ticks += 1;
                    if self.ticks.is_multiple_of(10) {
                        self.metrics.on_tick(&self.driver, &self.transport);
                        self.metrics.log_progress(&self.driver);
                        let m = &self.metrics.metrics;
                        let bytes = m.wal_bytes.get().max(0) + m.snapshot_bytes.get().max(0);
                        self.driver.set_data_bytes(bytes as u64);
                    }
                }
                Some((index, hash)) = self.hashes_rx.recv() => self.driver.state_hashed(index, hash),
                Some(event) = self.events.recv() => self.on_peer_event(event),
                Some(request) = self.requests.recv() => self.on_request(request),
                // Last: committed entries beyond one turn's share wait behind every input, and
                // run as soon as there is none.
                _ = std::future::ready(()), if self.driver.wants_drive() => {}
            }
            let turn_started = woke.unwrap_or_else(std::time::Instant::now);
            let mut inputs = 0usize;
            for _ in 0..MAX_INPUTS_PER_TURN {
                match self.events.try_recv() {
                    Ok(event) => self.on_peer_event(event),
                    Err(_) => break,
                }
                inputs += 1;
            }
            while let Ok(request) = self.requests.try_recv() {
                self.on_request(request);
                inputs += 1;
            }
            self.carry_out()?;
            self.release_replaced_snapshot();
            let took = turn_started.elapsed();
            if took >= SLOW_TURN {
                // Heartbeats and votes wait for the turn to end: a turn this long on a leader
                // delays them toward the election timeout.
                let w = self.last_turn;
                ::log::warn!(
                    "node {}: a turn of the node loop took {} ms ({inputs} inputs; the driver {} ms, {} entries applied; carrying out {} ms, {} messages sent) in term {}",
                    self.id(),
                    took.as_millis(),
                    w.drive.as_millis(),
                    w.applied,
                    w.execute.as_millis(),
                    w.messages,
                    self.driver.raft().term()
                );
            }
            if handing_over.is_some() {
                let raft = self.driver.raft();
                if raft.role() != Role::Leader && raft.leader() != 0 && raft.leader() != raft.id() {
                    ::log::info!(
                        "node {}: node {} leads now in term {}; stopping",
                        self.id(),
                        raft.leader(),
                        raft.term()
                    );
                    break;
                }
            }
        }
        // Finish the writes in flight (and send what waited for them) before saying so; but
        // not if the disk is full: those writes were never acknowledged, and waiting for
        // space would hold the stop forever.
        while !self.driver.idle() {
            if self.driver.service().no_space() {
                self.wal.give_up_waiting_for_space();
                ::log::warn!(
                    "node {}: stopping with writes the full disk refused; none of them was acknowledged",
                    self.id()
                );
                break;
            }
            let report = self.wal.report().await?;
            self.on_report(report);
            self.carry_out()?;
        }
        self.driver.shutdown();
        self.carry_out()?;
        ::log::info!(
            "node {}: shutting down in term {} (disk writes complete)",
            self.driver.raft().id(),
            self.driver.raft().term()
        );
        self.transport.shutdown().await;
        Ok(())
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Durable(seq) => self.driver.durable(seq),
            Report::NoSpace(error) => {
                let to = self.driver.set_no_space(true);
                ::log::error!(
                    "node {}: ALARM NoSpace: writes are refused until the disk has space ({error}){}",
                    self.id(),
                    to.map_or(String::new(), |t| format!("; handing leadership to node {t}"))
                );
            }
            Report::SnapshotStored(meta, data) => self.driver.snapshot_stored(meta, data),
            Report::SpaceBack => {
                self.driver.set_no_space(false);
                ::log::warn!(
                    "node {}: NoSpace alarm cleared: writes are accepted again",
                    self.id()
                );
            }
        }
    }

    fn id(&self) -> NodeId {
        self.driver.raft().id()
    }

    /// Once the core has replaced its snapshot, drops the old snapshot's data on a background
    /// thread. That data is a mapping of a snapshot file that the new one was renamed over:
    /// dropping its last reference unmaps it, and the kernel then frees the deleted file's
    /// blocks in the caller's thread. For a file of hundreds of megabytes, with the disk busy
    /// syncing other snapshots, that can take hundreds of milliseconds: the likely cause of the
    /// elections at 3M keys (docs/PERFORMANCE.md, runs L and L2). The core holds the data in
    /// several places (its snapshot, a follower's transfer, a pending install), any of which
    /// may drop last; a second reference held here outlives them all, so the background drop
    /// is the last.
    fn release_replaced_snapshot(&mut self) {
        let current = self.driver.raft().snapshot().map(|s| &s.data);
        let same = match (&self.snapshot_held, current) {
            (Some(held), Some(cur)) => held.as_ptr() == cur.as_ptr() && held.len() == cur.len(),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        let replaced = std::mem::replace(&mut self.snapshot_held, current.cloned());
        if let Some(old) = replaced {
            if old.len() >= FREE_ELSEWHERE_BYTES {
                super::background::spawn("free-snapshot", move || drop(old));
            }
        }
    }

    fn on_peer_event(&mut self, event: PeerEvent<Envelope>) {
        match event {
            PeerEvent::Message { from, msg } => {
                // The transport knows who is on the other end; an envelope claiming otherwise
                // is dropped rather than trusted.
                if msg.from != from {
                    ::log::warn!(
                        "node {}: dropping a message claiming to be from node {} on node {from}'s connection",
                        self.id(),
                        msg.from
                    );
                    return;
                }
                ::log::debug!("node {}: recv {msg}", self.id());
                let refused = self.driver.raft().refused_messages();
                self.driver.step(msg);
                if self.driver.raft().refused_messages() > refused
                    && self.transport.close_inbound(from)
                {
                    // The core said why (once per sender, at error level); what is left is
                    // to stop reading from whoever sent it. A real member reconnects.
                    ::log::debug!(
                        "node {}: closed node {from}'s connection after a refused message",
                        self.id()
                    );
                }
            }
            // The core needs no notice (Raft retransmits); people reading the log do.
            PeerEvent::Connected { peer } => {
                self.metrics.peer(peer, true);
                let addr = self
                    .members
                    .get(&peer)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                ::log::info!(
                    "node {}: peer {peer} up (connected to {addr}) in term {}",
                    self.id(),
                    self.driver.raft().term()
                );
            }
            PeerEvent::Disconnected { peer, reason } => {
                self.metrics.peer(peer, false);
                ::log::info!(
                    "node {}: peer {peer} down in term {}: {reason}",
                    self.id(),
                    self.driver.raft().term()
                );
            }
        }
    }

    /// The configuration changed: the transport talks to exactly these peers.
    fn connect(&mut self, peers: BTreeMap<NodeId, String>) {
        let mut members = BTreeMap::new();
        for (id, addr) in peers {
            match addr.parse::<SocketAddr>() {
                Ok(a) => {
                    members.insert(id, a);
                }
                Err(_) => match self.members.get(&id) {
                    Some(a) => {
                        members.insert(id, *a);
                    }
                    None => ::log::warn!(
                        "node {}: member {id} has no usable address ({addr:?}); it cannot be reached",
                        self.id()
                    ),
                },
            }
        }
        self.transport.set_peers(
            members
                .iter()
                .filter(|(id, _)| **id != self.id())
                .map(|(id, a)| (*id, *a))
                .collect(),
        );
        self.members = members;
    }

    fn on_request(&mut self, request: NodeRequest) {
        match request {
            NodeRequest::Client { req, reply } => {
                use crate::driver::ReplyTo;
                self.metrics.request(reply.connection(), &req);
                self.driver.request(req, reply)
            }
            NodeRequest::Closed { connection } => {
                self.metrics.connection_closed(connection);
                self.driver.connection_closed(connection)
            }
        }
    }

    /// Queues what running watches stream. A watch whose connection has more than
    /// `MAX_WATCH_BACKLOG_BYTES` unwritten is cancelled instead: its reader is too slow, and
    /// the node will not hold its events for it.
    fn stream_watch_events(&mut self, events: Vec<(Reply, crate::rpc::types::ClientResponse)>) {
        use crate::driver::ReplyTo;
        let mut cancelled: Vec<(u64, u64)> = Vec::new();
        for (reply, resp) in events {
            let key = (reply.connection(), resp.id().unwrap_or(0));
            if cancelled.contains(&key) {
                continue;
            }
            let is_events = matches!(resp, crate::rpc::types::ClientResponse::Events { .. });
            let backlog = reply.backlog();
            let too_slow = backlog > super::connection::MAX_WATCH_BACKLOG_BYTES
                || (backlog > super::connection::FAIR_WATCH_BACKLOG_BYTES
                    && super::connection::watch_backlog_total()
                        > super::connection::MAX_TOTAL_WATCH_BACKLOG_BYTES);
            if is_events && too_slow {
                ::log::warn!(
                    "node {}: cancelling watch {} of a client that reads too slowly ({} bytes unwritten)",
                    self.id(),
                    key.1,
                    reply.backlog()
                );
                cancelled.push(key);
                continue;
            }
            reply.send_stream(resp);
        }
        // Their `WatchCancelled` goes out with the next turn's output.
        for (connection, watch_id) in cancelled {
            self.driver.cancel_slow_watch(connection, watch_id);
        }
    }

    /// Runs the driver and does what its output says.
    fn carry_out(&mut self) -> Result<(), NodeError> {
        let started = std::time::Instant::now();
        let out = self.driver.drive()?;
        let driven = started.elapsed();
        let (applied, messages) = (out.applied.len(), out.messages.len());
        self.execute(out);
        self.metrics.after_turn(&self.driver);
        self.last_turn = TurnWork {
            drive: driven,
            execute: started.elapsed() - driven,
            applied,
            messages,
        };
        Ok(())
    }

    fn execute(&mut self, out: Output<Reply>) {
        // Taken apart field by field (as the simulation does), so a new kind of output cannot
        // be left unhandled by either.
        let Output {
            messages,
            disk,
            answers,
            applied,
            prepare_snapshot,
            compacted: _,
            peers,
            hash_states,
            watch_events,
            backups,
            released,
        } = out;
        if released.len() >= FREE_ELSEWHERE {
            super::background::spawn("free-log", move || drop(released));
        }
        for task in backups {
            // Its latency as a request is the time to take the consistent copy; the stream's
            // is `raftd_snapshot_duration_seconds{event="backup"}`.
            use crate::driver::ReplyTo;
            self.metrics
                .answered(task.reply.connection(), Some(task.id));
            super::backup::spawn(self.id(), task, &self.metrics.metrics);
        }
        for task in hash_states {
            // Reads the whole state: off the node's thread, like a snapshot.
            let tx = self.hashes_tx.clone();
            super::background::spawn("hash", move || {
                let _ = tx.send((task.index, task.hash()));
            });
        }
        if let Some(peers) = peers {
            self.connect(peers);
        }
        for env in messages {
            self.send(env);
        }
        for job in disk {
            let job = match job {
                DiskJob::SaveSnapshot {
                    seq,
                    snapshot,
                    tail,
                } => match self.prepared.take() {
                    Some(prepared) if prepared.meta() == snapshot.meta => WriteJob::SavePrepared {
                        seq,
                        prepared,
                        tail,
                    },
                    other => {
                        if let Some(stale) = other {
                            self.wal.queue(WriteJob::DiscardPrepared(stale));
                        }
                        WriteJob::Driver(DiskJob::SaveSnapshot {
                            seq,
                            snapshot,
                            tail,
                        })
                    }
                },
                job => WriteJob::Driver(job),
            };
            self.wal.queue(job);
        }
        for (reply, resp) in answers {
            use crate::driver::ReplyTo;
            self.metrics.answered(reply.connection(), resp.id());
            // The connection may be gone; its answers are simply dropped.
            reply.send(resp);
        }
        self.stream_watch_events(watch_events);
        if let Some(Applied::Entry(last)) = applied
            .iter()
            .rev()
            .find(|a| matches!(a, Applied::Entry(_)))
        {
            ::log::debug!(
                "node {}: applied {} entries up to index {}",
                self.id(),
                applied.len(),
                last.index
            );
        }
        if let Some(task) = prepare_snapshot {
            self.start_snapshot(task);
        }
    }

    /// Encodes the snapshot straight into its file under a temporary name on a background
    /// thread, so the node keeps serving (heartbeats included) meanwhile; the snapshot's bytes
    /// are then a mapping of that file, never a copy in the heap.
    fn start_snapshot(&mut self, task: SnapshotTask) {
        let (tx, rx) = oneshot::channel();
        self.snapshot_started = Some(std::time::Instant::now());
        let dir = self.data_dir.clone();
        super::background::spawn("snapshot", move || {
            let meta = task.meta();
            let result =
                match prepare_snapshot_streamed(&dir, meta, |w| task.store.write_snapshot(w)) {
                    Ok((prepared, data)) => Ok((
                        Snapshot {
                            meta,
                            data,
                            membership: task.store.membership().clone(),
                        },
                        prepared,
                    )),
                    Err(StreamedError::Encode(e)) => {
                        Err((format!("cannot serialize the state machine: {e}"), None))
                    }
                    Err(StreamedError::Storage(e)) => Err((e.to_string(), Some(e))),
                };
            let _ = tx.send(result);
        });
        self.snapshot_job = Some(rx);
    }

    fn on_snapshot_prepared(
        &mut self,
        done: Result<Prepared, oneshot::error::RecvError>,
    ) -> Result<(), NodeError> {
        match done {
            Ok(Ok((snapshot, prepared))) => {
                let event = SnapshotLabels { event: "taken" };
                self.metrics.metrics.snapshots.get_or_create(&event).inc();
                if let Some(at) = self.snapshot_started.take() {
                    self.metrics
                        .metrics
                        .snapshot_seconds
                        .get_or_create(&event)
                        .observe(at.elapsed().as_secs_f64());
                }
                if self.driver.snapshot_prepared(snapshot) {
                    self.prepared = Some(prepared);
                } else {
                    self.wal.queue(WriteJob::DiscardPrepared(prepared));
                }
            }
            // Never retried as if the data were safe: the page cache can no longer be trusted.
            Ok(Err((_, Some(e @ StorageError::SyncFailed { .. })))) => return Err(e.into()),
            Ok(Err((e, _))) => self.driver.snapshot_failed(&e),
            Err(_) => self
                .driver
                .snapshot_failed("the snapshot task ended without an answer"),
        }
        Ok(())
    }

    fn send(&self, env: Envelope) {
        ::log::debug!("node {}: send {env}", self.id());
        self.metrics.sent(&env);
        let (to, kind) = (env.to, env.msg.kind());
        // Encoded by the peer's task, not on this loop.
        match self.transport.send(to, env) {
            Ok(()) => {}
            // Raft retransmits: a dropped message to a slow or absent peer costs nothing but time.
            Err(SendError::QueueFull) => {
                ::log::debug!(
                    "node {}: queue to node {to} full; dropped {kind}",
                    self.id(),
                )
            }
            Err(e) => ::log::warn!("node {}: cannot send {kind} to node {to}: {e}", self.id()),
        }
    }
}

/// Sleeps until `at` (forever without one: the select! branch is disabled then anyway).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// The system clock in ms since the epoch (0 if it is set before 1970). Only stamped into
/// proposed commands; the log's clock never goes back, whatever a leader's clock says.
pub(super) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
