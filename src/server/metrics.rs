//! The node's Prometheus metrics (`GET /metrics` on `--http-listen`), with the
//! `prometheus-client` crate: one registry per node, every metric a handle of atomics that the
//! node loop, the log writer and the HTTP server update without locks.
//!
//! Who updates what:
//! * the node loop, after each turn: the Raft state gauges (term, role, leader, indexes) and
//!   what follows from their changes (elections started and won, leader changes, entries
//!   proposed and committed), client request latency per type (arrival to answer), the
//!   AppendEntries batch sizes it sends, snapshots sent, peers up and down;
//! * the node loop, every tenth tick: the store's gauges (keys, revision, sessions, watches),
//!   alarms, the transport's per-peer byte counters, and the time of its last turn (`/livez`);
//! * the log writer: fsync (batch write) durations, snapshot save and install durations, WAL
//!   and snapshot file sizes.
//!
//! Names follow Prometheus conventions: the `raftd_` prefix, `_total` for counters, base
//! units (`_seconds`, `_bytes`). docs/OPERATIONS.md lists them with the alerts worth setting.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::Ordering;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// The request types whose latency is measured (what a client sends; `Status`-like requests
/// answered at once included), as the label `type` (a Rust keyword, hence by hand).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct RequestType {
    pub name: RequestName,
}

impl EncodeLabelSet for RequestType {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("type", self.name).encode(encoder.encode_label())
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RequestName {
    Put,
    Get,
    Delete,
    Cas,
    Range,
    DeleteRange,
    Txn,
    Compact,
    Watch,
    Lease,
    Member,
    Status,
    Snapshot,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    pub alarm: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    /// `taken` (by this node), `installed` (from the leader), `sent` (to a follower).
    pub event: &'static str,
}

/// Every metric of one node.
pub struct Metrics {
    registry: Registry,
    pub term: Gauge,
    pub role: Family<RoleLabels, Gauge>,
    pub leader_id: Gauge,
    pub leader_changes: Counter,
    pub elections_started: Counter,
    pub elections_won: Counter,
    pub proposals: Counter,
    pub commits: Counter,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub last_log_index: Gauge,
    pub snapshot_index: Gauge,
    pub voters: Gauge,
    pub learners: Gauge,
    pub fsync_seconds: Histogram,
    pub append_entries_batch: Histogram,
    pub peer_sent_bytes: Family<PeerLabels, Counter>,
    pub peer_received_bytes: Family<PeerLabels, Counter>,
    pub peer_dropped_frames: Family<PeerLabels, Counter>,
    pub peer_connected: Family<PeerLabels, Gauge>,
    pub requests_in_flight: Family<RequestType, Gauge>,
    pub request_seconds: Family<RequestType, Histogram>,
    pub snapshots: Family<SnapshotLabels, Counter>,
    pub snapshot_seconds: Family<SnapshotLabels, Histogram>,
    pub wal_bytes: Gauge,
    pub snapshot_bytes: Gauge,
    pub keys: Gauge,
    pub revision: Gauge,
    pub sessions: Gauge,
    pub watches: Gauge,
    pub alarms: Family<AlarmLabels, Gauge>,
    /// Milliseconds since the epoch at the node loop's last turn (for `/livez`).
    pub last_turn_ms: Gauge,
}

fn latency_buckets() -> Histogram {
    // 50 µs to about 13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("raftd");
        let m = Metrics {
            term: Gauge::default(),
            role: Family::default(),
            leader_id: Gauge::default(),
            leader_changes: Counter::default(),
            elections_started: Counter::default(),
            elections_won: Counter::default(),
            proposals: Counter::default(),
            commits: Counter::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_log_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            voters: Gauge::default(),
            learners: Gauge::default(),
            fsync_seconds: latency_buckets(),
            append_entries_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            peer_sent_bytes: Family::default(),
            peer_received_bytes: Family::default(),
            peer_dropped_frames: Family::default(),
            peer_connected: Family::default(),
            requests_in_flight: Family::default(),
            request_seconds: Family::new_with_constructor(latency_buckets),
            snapshots: Family::default(),
            snapshot_seconds: Family::new_with_constructor(latency_buckets),
            wal_bytes: Gauge::default(),
            snapshot_bytes: Gauge::default(),
            keys: Gauge::default(),
            revision: Gauge::default(),
            sessions: Gauge::default(),
            watches: Gauge::default(),
            alarms: Family::default(),
            last_turn_ms: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("term", "The current Raft term", m.term.clone());
        r.register(
            "role",
            "1 for the role this node has now (follower, pre_candidate, candidate, leader), 0 for the others",
            m.role.clone(),
        );
        r.register(
            "leader_id",
            "The leader this node knows (0: none)",
            m.leader_id.clone(),
        );
        r.register(
            "leader_changes",
            "Times the leader this node knows changed (to another node or to none)",
            m.leader_changes.clone(),
        );
        r.register(
            "elections_started",
            "Elections this node started (it became a candidate)",
            m.elections_started.clone(),
        );
        r.register(
            "elections_won",
            "Elections this node won (it became leader)",
            m.elections_won.clone(),
        );
        r.register(
            "proposals",
            "Entries this node appended to its log as leader (client writes, no-ops, configurations)",
            m.proposals.clone(),
        );
        r.register(
            "committed_entries",
            "Entries this node saw committed",
            m.commits.clone(),
        );
        r.register("commit_index", "The commit index", m.commit_index.clone());
        r.register(
            "applied_index",
            "The index applied to the key-value store",
            m.applied_index.clone(),
        );
        r.register(
            "last_log_index",
            "The index of the last log entry",
            m.last_log_index.clone(),
        );
        r.register(
            "snapshot_index",
            "The index the latest snapshot covers",
            m.snapshot_index.clone(),
        );
        r.register(
            "voters",
            "Voters of the configuration in effect",
            m.voters.clone(),
        );
        r.register(
            "learners",
            "Learners of the configuration in effect",
            m.learners.clone(),
        );
        r.register_with_unit(
            "fsync_duration",
            "Time to write and fsync one batch of log records",
            Unit::Seconds,
            m.fsync_seconds.clone(),
        );
        r.register(
            "append_entries_batch_entries",
            "Entries per AppendEntries message sent (heartbeats not counted)",
            m.append_entries_batch.clone(),
        );
        r.register_with_unit(
            "peer_sent",
            "Bytes written to each peer (frames with their length prefixes)",
            Unit::Bytes,
            m.peer_sent_bytes.clone(),
        );
        r.register_with_unit(
            "peer_received",
            "Bytes read from each peer (frames with their length prefixes)",
            Unit::Bytes,
            m.peer_received_bytes.clone(),
        );
        r.register(
            "peer_dropped_frames",
            "Frames to each peer dropped (queue full, not connected, a failed write, over the frame limit); Raft retransmits",
            m.peer_dropped_frames.clone(),
        );
        r.register(
            "peer_connected",
            "1 while the connection to the peer is up",
            m.peer_connected.clone(),
        );
        r.register(
            "client_requests_in_flight",
            "Client requests received and not answered yet, per type",
            m.requests_in_flight.clone(),
        );
        r.register_with_unit(
            "client_request_duration",
            "Time from a client request's arrival to its answer, per type (a write: committed and applied)",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        r.register(
            "snapshots",
            "Snapshots taken by this node, installed from the leader, sent to followers, and streamed to clients as backups",
            m.snapshots.clone(),
        );
        r.register_with_unit(
            "snapshot_duration",
            "Time to take a snapshot (encode and write it) and to install one",
            Unit::Seconds,
            m.snapshot_seconds.clone(),
        );
        r.register_with_unit(
            "wal",
            "Size of the write-ahead log file",
            Unit::Bytes,
            m.wal_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot",
            "Size of the snapshot file",
            Unit::Bytes,
            m.snapshot_bytes.clone(),
        );
        r.register("keys", "Live keys in the store", m.keys.clone());
        r.register("revision", "The store's revision", m.revision.clone());
        r.register(
            "sessions",
            "Client sessions kept for exactly-once writes",
            m.sessions.clone(),
        );
        r.register("watches", "Watches this node serves", m.watches.clone());
        r.register(
            "alarm",
            "1 while an alarm is raised (no_space: writes refused; corrupt: replicas disagree)",
            m.alarms.clone(),
        );
        r.register(
            "last_turn_timestamp_ms",
            "When the node loop last ran (ms since the epoch)",
            m.last_turn_ms.clone(),
        );
        // Families shown from the start (at zero), so dashboards and alerts find them before
        // the first snapshot or alarm.
        for event in ["taken", "installed", "sent", "backup"] {
            let labels = SnapshotLabels { event };
            let _ = m.snapshots.get_or_create(&labels);
            let _ = m.snapshot_seconds.get_or_create(&labels);
        }
        for alarm in ["no_space", "corrupt"] {
            let _ = m.alarms.get_or_create(&AlarmLabels { alarm });
        }
        m.set_role("follower");
        Metrics { registry, ..m }
    }

    /// The text exposition (OpenMetrics text format, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Sets a counter to a total kept elsewhere (the transport's own counters).
    pub fn set_counter(counter: &Counter, total: u64) {
        counter.inner().store(total, Ordering::Relaxed);
    }

    pub fn set_role(&self, role: &str) {
        for r in ["follower", "pre_candidate", "candidate", "leader"] {
            self.role
                .get_or_create(&RoleLabels { role: r })
                .set(i64::from(r == role));
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Saturating u64 → i64 for gauges.
pub fn g(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The type label of a client request.
pub fn request_type(req: &crate::rpc::types::ClientRequest) -> RequestType {
    use crate::rpc::types::ClientRequest as R;
    let name = match req {
        R::Put { .. } => RequestName::Put,
        R::Get { .. } => RequestName::Get,
        R::Delete { .. } => RequestName::Delete,
        R::Cas { .. } => RequestName::Cas,
        R::Range { .. } => RequestName::Range,
        R::DeleteRange { .. } => RequestName::DeleteRange,
        R::Txn { .. } => RequestName::Txn,
        R::Compact { .. } => RequestName::Compact,
        R::Watch { .. } | R::CancelWatch { .. } => RequestName::Watch,
        R::LeaseGrant { .. }
        | R::LeaseKeepAlive { .. }
        | R::LeaseRevoke { .. }
        | R::LeaseTimeToLive { .. } => RequestName::Lease,
        R::MemberList { .. }
        | R::MemberAdd { .. }
        | R::MemberPromote { .. }
        | R::MemberRemove { .. }
        | R::TransferLeader { .. } => RequestName::Member,
        R::Status { .. } => RequestName::Status,
        R::Snapshot { .. } => RequestName::Snapshot,
    };
    RequestType { name }
}
