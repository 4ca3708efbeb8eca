//! What the node loop tells the metrics (`metrics.rs`): the Raft state after each turn and the
//! events that follow from its changes, client request latency from arrival to answer, what
//! it sends, and every tenth tick the store's size, the transport's counters and the time.

use super::metrics::SnapshotLabels;
use super::metrics::{g, request_type, AlarmLabels, Metrics, PeerLabels, RequestType};
use crate::driver::Driver;
use crate::rpc::types::{ClientRequest, Envelope, NodeId, RaftMessage, Role};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The node loop's view of the metrics, with what it saw last.
pub struct NodeMetrics {
    pub metrics: Arc<Metrics>,
    role: Option<Role>,
    leader: NodeId,
    commit: u64,
    last_index: u64,
    /// Requests not answered yet: (connection, request id) → (type, arrival).
    pending: HashMap<(u64, u64), (RequestType, Instant)>,
    /// Each type's in-flight gauge and latency histogram, taken from their families once (a
    /// family lookup takes a lock; these handles are plain atomics).
    per_type: HashMap<RequestType, (Gauge, Histogram)>,
    /// When the last progress line was logged, and the commit index it named.
    progress: (Instant, u64),
}

/// How often a node logs its commit index (at `info`, only when it moved): the commit index
/// over time in `raftctl timeline`, and a rate an operator can read off the log.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl NodeMetrics {
    pub fn new(metrics: Arc<Metrics>) -> NodeMetrics {
        NodeMetrics {
            metrics,
            role: None,
            leader: 0,
            commit: 0,
            last_index: 0,
            pending: HashMap::new(),
            per_type: HashMap::new(),
            progress: (Instant::now(), 0),
        }
    }

    fn handles(&mut self, kind: RequestType) -> &(Gauge, Histogram) {
        let m = &self.metrics;
        self.per_type.entry(kind).or_insert_with(|| {
            (
                m.requests_in_flight.get_or_create(&kind).clone(),
                m.request_seconds.get_or_create(&kind).clone(),
            )
        })
    }

    pub fn request(&mut self, connection: u64, req: &ClientRequest) {
        let kind = request_type(req);
        self.handles(kind).0.inc();
        if let Some((old, _)) = self
            .pending
            .insert((connection, req.id()), (kind, Instant::now()))
        {
            // A client reused an id still in flight: the first is no longer told apart.
            self.handles(old).0.dec();
        }
    }

    pub fn answered(&mut self, connection: u64, id: Option<u64>) {
        let Some(id) = id else { return };
        if let Some((kind, at)) = self.pending.remove(&(connection, id)) {
            let (in_flight, seconds) = self.handles(kind);
            in_flight.dec();
            seconds.observe(at.elapsed().as_secs_f64());
        }
    }

    /// A connection closed: what it was owed is no longer in flight.
    pub fn connection_closed(&mut self, connection: u64) {
        let mut gone = Vec::new();
        self.pending.retain(|(c, _), (kind, _)| {
            if *c == connection {
                gone.push(*kind);
            }
            *c != connection
        });
        for kind in gone {
            self.handles(kind).0.dec();
        }
    }

    pub fn sent(&self, env: &Envelope) {
        match &env.msg {
            RaftMessage::AppendEntries { entries, .. } if !entries.is_empty() => self
                .metrics
                .append_entries_batch
                .observe(entries.len() as f64),
            // The last chunk of a snapshot.
            RaftMessage::InstallSnapshot { pos, data, .. }
                if pos.offset + data.len() as u64 >= pos.total =>
            {
                self.metrics
                    .snapshots
                    .get_or_create(&SnapshotLabels { event: "sent" })
                    .inc();
            }
            _ => {}
        }
    }

    pub fn peer(&self, peer: NodeId, up: bool) {
        self.metrics
            .peer_connected
            .get_or_create(&PeerLabels {
                peer: peer.to_string(),
            })
            .set(i64::from(up));
    }

    /// After each turn: the Raft state, and the events its changes mean.
    pub fn after_turn<R: crate::driver::ReplyTo>(&mut self, driver: &Driver<R>) {
        let m = &self.metrics;
        let raft = driver.raft();
        let log = raft.log();
        let role = raft.role();
        if self.role != Some(role) {
            match role {
                Role::Candidate => m.elections_started.inc(),
                Role::Leader => m.elections_won.inc(),
                Role::Follower | Role::PreCandidate => 0,
            };
            m.set_role(match role {
                Role::Follower => "follower",
                Role::PreCandidate => "pre_candidate",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
            });
            self.role = Some(role);
        }
        if raft.leader() != self.leader {
            m.leader_changes.inc();
            self.leader = raft.leader();
        }
        let (commit, last) = (log.committed(), log.last_index());
        if commit > self.commit {
            if self.commit > 0 {
                m.commits.inc_by(commit - self.commit);
            }
            self.commit = commit;
        }
        if role == Role::Leader && last > self.last_index && self.last_index > 0 {
            m.proposals.inc_by(last - self.last_index);
        }
        self.last_index = last;
        m.term.set(g(raft.term()));
        m.leader_id.set(g(raft.leader()));
        m.commit_index.set(g(commit));
        m.applied_index.set(g(log.applied()));
        m.last_log_index.set(g(last));
        // The snapshot's index, not where the log starts (it may keep entries before it).
        m.snapshot_index.set(g(raft.snapshot_index()));
    }

    /// Logs the commit index if it moved and the last such line is `PROGRESS_EVERY` old.
    pub fn log_progress<R: crate::driver::ReplyTo>(&mut self, driver: &Driver<R>) {
        let (at, was) = self.progress;
        let raft = driver.raft();
        let log = raft.log();
        let commit = log.committed();
        // The first time it moves at once (a start, a catch-up), then at most every 5 s.
        if commit == was || (was > 0 && at.elapsed() < PROGRESS_EVERY) {
            return;
        }
        let secs = at.elapsed().as_secs_f64();
        ::log::info!(
            "node {}: commit index {commit}, applied {}, last log {} in term {} ({} entries committed in {secs:.1} s)",
            raft.id(),
            log.applied(),
            log.last_index(),
            raft.term(),
            commit.saturating_sub(was)
        );
        self.progress = (Instant::now(), commit);
    }

    /// Once a tick: what is costlier to look at than the Raft state.
    pub fn on_tick<R: crate::driver::ReplyTo>(
        &self,
        driver: &Driver<R>,
        transport: &raftd_transport::Transport<Envelope>,
    ) {
        let m = &self.metrics;
        // The loop runs at least once a tick; /livez needs no finer clock than this.
        m.last_turn_ms.set(g(super::node::wall_clock_ms()));
        let store = driver.store();
        m.keys.set(g(store.len() as u64));
        m.revision.set(g(store.revision()));
        m.sessions.set(g(store.sessions().len() as u64));
        m.watches.set(g(driver.watch_count() as u64));
        let membership = driver.raft().membership();
        m.voters.set(g(membership.voters().count() as u64));
        m.learners.set(g(membership.learners().count() as u64));
        let alarms = driver.alarms();
        for (name, label) in [("NoSpace", "no_space"), ("Corrupt", "corrupt")] {
            m.alarms
                .get_or_create(&AlarmLabels { alarm: label })
                .set(i64::from(alarms.iter().any(|a| a == name)));
        }
        for (peer, stats) in transport.stats().peers {
            let labels = PeerLabels {
                peer: peer.to_string(),
            };
            Metrics::set_counter(&m.peer_sent_bytes.get_or_create(&labels), stats.bytes_sent);
            Metrics::set_counter(
                &m.peer_received_bytes.get_or_create(&labels),
                stats.bytes_received,
            );
            Metrics::set_counter(
                &m.peer_dropped_frames.get_or_create(&labels),
                stats.frames_dropped,
            );
        }
    }
}
