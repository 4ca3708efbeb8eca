//! The node loop: the one task that owns the Raft core and the storage.
//!
//! Each turn it waits for an input (a tick, a peer message, a client request), then takes every
//! other input already waiting without blocking, steps them all, and handles the resulting
//! `Ready`: send, write + one fsync for the whole batch, send what waited for the fsync, apply,
//! advance. Inputs that arrive during the fsync are batched into the next turn (group commit).

use crate::config::NodeConfig;
use crate::kv::{Answer, KvService};
use crate::raft::Raft;
use crate::rpc::types::{ClientRequest, ClientResponse, Envelope, NodeId, StatusResponse};
use crate::storage::{Storage, StorageError};
use raftd_transport::{PeerEvent, SendError, Transport};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Inputs a connection task can give the node loop.
pub enum NodeRequest {
    /// A client request; its answer goes to `reply` (sized so `try_send` cannot fail).
    Client {
        req: ClientRequest,
        reply: mpsc::Sender<ClientResponse>,
    },
}

/// Most inputs taken in one turn before the `Ready` is handled, so a flood of messages cannot
/// starve ticks or delay fsyncs without bound.
const MAX_INPUTS_PER_TURN: usize = 4096;

pub struct NodeLoop {
    pub raft: Raft,
    pub storage: Storage,
    pub transport: Transport<Envelope>,
    pub events: mpsc::Receiver<PeerEvent<Envelope>>,
    pub requests: mpsc::Receiver<NodeRequest>,
    pub members: BTreeMap<NodeId, SocketAddr>,
    pub tick: Duration,
    pub service: KvService,
    /// Where to send the answer of each request the service has not answered yet.
    pub waiting: HashMap<u64, mpsc::Sender<ClientResponse>>,
    pub next_request: u64,
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
            self.handle_ready()?;
        }
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
            let _ = reply.try_send(ClientResponse::Status(self.status(id)));
            return;
        }
        let rid = self.next_request;
        self.next_request += 1;
        match self.service.request(&mut self.raft, rid, req) {
            Some(resp) => {
                let _ = reply.try_send(resp);
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
                let _ = reply.try_send(resp);
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
            snapshot_index: 0,
            members: self
                .members
                .iter()
                .map(|(id, addr)| (id.to_string(), addr.to_string()))
                .collect(),
        }
    }

    fn handle_ready(&mut self) -> Result<(), StorageError> {
        // Every linearizable read received this turn shares one ReadIndex round.
        let answers = self.service.flush_reads(&mut self.raft);
        self.deliver(answers);
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            for env in std::mem::take(&mut rd.messages) {
                self.send(env);
            }
            if rd.hard_state.is_some() || !rd.entries.is_empty() {
                let storage = &mut self.storage;
                // fsync blocks; let the runtime move other tasks (connections, the transport)
                // to another worker meanwhile.
                tokio::task::block_in_place(|| storage.save(rd.hard_state.as_ref(), &rd.entries))?;
            }
            for env in std::mem::take(&mut rd.persisted_messages) {
                self.send(env);
            }
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
            self.raft.advance();
        }
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
    Ok(rc)
}
