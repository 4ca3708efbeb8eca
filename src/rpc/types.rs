//! Every message that crosses a process boundary.
//!
//! The peer messages, log entries and hard state are the core's (`raftd_core::message`,
//! re-exported here so every layer names them one way). Client requests and responses follow
//! the public contract in docs/CLIENT_PROTOCOL.md. All types derive serde and are encoded as
//! JSON, one object per length-delimited frame.

pub use raftd_core::message::*;

use crate::kv::mvcc::{Event, KeyValue};
use crate::kv::txn::{Compare, TxnOp, TxnResponse};
use serde::{Deserialize, Serialize};

// ----- client protocol v1 (docs/CLIENT_PROTOCOL.md) -----

/// A request from a client. Parsed only after the frame was checked to be a JSON object, so a
/// failure here is a `BadRequest` that can still echo the request's `id`. Unknown extra fields
/// are ignored (newer clients may send more); missing or mistyped ones are errors.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum ClientRequest {
    Put {
        id: u64,
        key: String,
        value: String,
        /// Attach the key to this lease (0 or absent: none).
        #[serde(default, skip_serializing_if = "is_zero")]
        lease: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Get {
        id: u64,
        key: String,
        #[serde(default)]
        consistency: Consistency,
    },
    Delete {
        id: u64,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Cas {
        id: u64,
        key: String,
        /// Required, but may be null ("the key is absent").
        #[serde(deserialize_with = "required_nullable")]
        expected: Option<String>,
        /// Required, but may be null ("delete the key").
        #[serde(deserialize_with = "required_nullable")]
        value: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Status {
        id: u64,
    },
    // ----- v2: membership (docs/CLIENT_PROTOCOL.md, "Membership") -----
    MemberList {
        id: u64,
    },
    /// Adds a member. A voter is added as a learner first and promoted by the leader once it
    /// has caught up, so an empty node never counts in a quorum.
    MemberAdd {
        id: u64,
        node_id: NodeId,
        addr: String,
        #[serde(default)]
        learner: bool,
        #[serde(default)]
        force: bool,
    },
    MemberPromote {
        id: u64,
        node_id: NodeId,
        #[serde(default)]
        force: bool,
    },
    MemberRemove {
        id: u64,
        node_id: NodeId,
        #[serde(default)]
        force: bool,
    },
    TransferLeader {
        id: u64,
        /// Default: the voter whose log is most up to date.
        #[serde(default)]
        node_id: Option<NodeId>,
    },
    // ----- v2: revisions, ranges, transactions (docs/CLIENT_PROTOCOL.md, "Revisions") -----
    Range {
        id: u64,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
        #[serde(default, skip_serializing_if = "is_zero")]
        limit: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keys_only: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        count_only: bool,
        /// Read the store as it was at this revision (absent or 0: now).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<u64>,
        #[serde(default)]
        consistency: Consistency,
    },
    DeleteRange {
        id: u64,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Txn {
        id: u64,
        #[serde(default)]
        compare: Vec<Compare>,
        #[serde(default)]
        success: Vec<TxnOp>,
        #[serde(default)]
        failure: Vec<TxnOp>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Compact {
        id: u64,
        revision: u64,
    },
    // ----- v2: watches -----
    /// Streams every change of a key, range or prefix from `start_revision` (absent: from the
    /// next change) as `Events` answers with this request's id.
    Watch {
        id: u64,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_revision: Option<u64>,
    },
    CancelWatch {
        id: u64,
        watch_id: u64,
    },
    // ----- v2: leases -----
    LeaseGrant {
        id: u64,
        ttl: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    LeaseKeepAlive {
        id: u64,
        lease_id: u64,
    },
    LeaseRevoke {
        id: u64,
        lease_id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    LeaseTimeToLive {
        id: u64,
        lease_id: u64,
    },
    // ----- v2: backups (docs/CLIENT_PROTOCOL.md, "Backups") -----
    /// A consistent copy of the whole store, taken by the leader after a ReadIndex round (so
    /// it holds every write acknowledged before the request) and streamed as one
    /// `SnapshotHeader`, `SnapshotChunk`s and a `SnapshotDone` with this request's id.
    Snapshot {
        id: u64,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A field that must be present but may be null: without a `default`, serde reports a missing
/// field instead of silently reading it as null.
fn required_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Served by the leader after confirming it still leads (ReadIndex).
    #[default]
    Linearizable,
    /// Served from the local copy of whichever node receives it; may be behind.
    Stale,
}

impl ClientRequest {
    pub fn id(&self) -> u64 {
        match self {
            ClientRequest::Put { id, .. }
            | ClientRequest::Get { id, .. }
            | ClientRequest::Delete { id, .. }
            | ClientRequest::Cas { id, .. }
            | ClientRequest::Status { id }
            | ClientRequest::MemberList { id }
            | ClientRequest::MemberAdd { id, .. }
            | ClientRequest::MemberPromote { id, .. }
            | ClientRequest::MemberRemove { id, .. }
            | ClientRequest::TransferLeader { id, .. }
            | ClientRequest::Range { id, .. }
            | ClientRequest::DeleteRange { id, .. }
            | ClientRequest::Txn { id, .. }
            | ClientRequest::Compact { id, .. }
            | ClientRequest::Watch { id, .. }
            | ClientRequest::CancelWatch { id, .. }
            | ClientRequest::LeaseGrant { id, .. }
            | ClientRequest::LeaseKeepAlive { id, .. }
            | ClientRequest::LeaseRevoke { id, .. }
            | ClientRequest::LeaseTimeToLive { id, .. }
            | ClientRequest::Snapshot { id } => *id,
        }
    }
}

/// A successful answer. Each request fills in its own fields (docs/CLIENT_PROTOCOL.md); the
/// others are left out of the JSON.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct OkResponse {
    pub id: u64,
    /// `Get` and `Cas`: the value (null when absent). Omitted for `Put` and `Delete`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_nullable"
    )]
    pub value: Option<Option<String>>,
    /// `Cas` and `Txn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
    /// Membership requests: every member after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberStatus>>,
    /// `TransferLeader`: the node that now leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<NodeId>,
    /// Writes: the store revision after the write; reads: the store revision read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// `Get` of a present key: its revisions, version and lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
    /// `Range`: the keys, in key order; `more` when `limit` cut them; `count` of all matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvs: Option<Vec<KeyValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `Delete`, `DeleteRange`, `LeaseRevoke`: keys deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// `Txn`: one answer per op run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<Vec<TxnResponse>>,
    /// Lease requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<u64>,
    /// `LeaseGrant`, `LeaseKeepAlive`: the ttl granted (seconds); `LeaseTimeToLive`: what is
    /// left of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// `LeaseTimeToLive`: the ttl the lease was granted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_ttl: Option<u64>,
    /// `LeaseTimeToLive`: the keys attached to the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

impl OkResponse {
    /// An `Ok` carrying nothing but the request's id.
    pub fn bare(id: u64) -> OkResponse {
        OkResponse {
            id,
            ..OkResponse::default()
        }
    }
}

/// One member, as `MemberList` and the other membership requests report it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    /// "Voter" or "Learner".
    pub role: String,
    /// The last log index the leader knows this member holds (its own last index for the
    /// leader itself).
    pub match_index: u64,
    pub is_leader: bool,
    /// A learner the leader will promote on its own once it has caught up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promote: bool,
    /// A voter that speaks from another data dir than the one it was admitted with (it lost
    /// its disk): it does not count until the leader has caught it up and re-admitted it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readmitting: bool,
    /// The identity of the data dir the configuration admitted it with (16 hex digits;
    /// absent when not recorded). A wiped data dir comes back with another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Leader's view only (absent on a follower): whether this member answered within two
    /// heartbeat intervals, which is what the `Unsafe` check of a change counts as live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
}

/// Reads a present field (even null) as Some, so `"value": null` differs from no `value`.
fn present_nullable<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The answer to `Status`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    pub id: u64,
    pub node_id: NodeId,
    /// "Leader", "Follower" or "Candidate".
    pub role: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub commit_index: u64,
    pub last_applied: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    /// Every member, this node included: id (as a string, JSON keys are strings) -> address.
    pub members: std::collections::BTreeMap<String, String>,
    /// The voters and the learners of the configuration in effect.
    #[serde(default)]
    pub voters: Vec<NodeId>,
    #[serde(default)]
    pub learners: Vec<NodeId>,
    /// What is wrong with this node that an operator must see: `"NoSpace"` (its disk is full:
    /// it refuses writes), `"Corrupt"` (its applied state differs from the other members' at
    /// the same index). Empty when all is well.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// Bytes of the data dir's log and snapshot files (as the log writer last saw them).
    #[serde(default)]
    pub data_bytes: u64,
}

/// Error codes of the client protocol.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotLeader,
    Timeout,
    BadRequest,
    TooLarge,
    ShuttingDown,
    /// A membership change that would leave the cluster without a quorum of live voters (or
    /// promote a node that has not caught up); send it again with `"force": true` to insist.
    Unsafe,
    /// Another membership change (or a leadership transfer) is in progress.
    Busy,
    /// A retried (`client_id`, `seq`) older than what the cluster still remembers: nothing was
    /// applied now, and whether it was applied before is unknown.
    SessionExpired,
    /// The node's disk is full: writes are refused, reads still served.
    NoSpace,
    /// The revision asked for was compacted away (`compact_revision` says up to where).
    Compacted,
    /// No such lease (it expired or was revoked).
    LeaseNotFound,
    /// The watch ended: its reader was too slow, or the node is stopping. Watch again from
    /// the last revision seen + 1.
    WatchCancelled,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The request's id; null when the frame could not be read as a request at all.
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
    /// With `NotLeader`: where the leader is, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<Option<NodeId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_addr: Option<Option<String>>,
    /// With `Compacted`: the oldest revision still kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_revision: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum ClientResponse {
    Ok(OkResponse),
    Status(StatusResponse),
    Error(ErrorResponse),
    /// A watch was set up; its events follow with the same id. `revision` is the store
    /// revision of the node serving it.
    Watching {
        id: u64,
        revision: u64,
    },
    /// Changes a watch covers, in revision order (empty: a progress notification). `revision`
    /// is the store revision of the node serving the watch when it sent them.
    Events {
        id: u64,
        events: WatchEvents,
        revision: u64,
    },
    /// The first answer to `Snapshot`: what the copy covers. Chunks follow.
    SnapshotHeader {
        id: u64,
        /// The last log index the copy reflects, and that entry's term.
        index: u64,
        term: u64,
        /// The store revision at `index`.
        revision: u64,
        /// Live keys in the copy.
        keys: u64,
    },
    /// The next bytes of the snapshot's data, from `offset`; base64 in the JSON.
    SnapshotChunk {
        id: u64,
        offset: u64,
        #[serde(with = "raftd_core::message::b64")]
        data: Vec<u8>,
    },
    /// The last answer to `Snapshot`: the data was `size` bytes with this CRC-32 (IEEE), which
    /// the client checks before it keeps the file.
    SnapshotDone {
        id: u64,
        size: u64,
        crc32: u32,
    },
}

/// The changes of one `Events` answer. A node sends the same changes to every watch of the
/// same range, so they are encoded to JSON once, by whichever connection writes them first,
/// and the bytes are shared by all the others (a thousand watches of one prefix cost one
/// encoding, not a thousand).
#[derive(Clone, Debug)]
pub struct WatchEvents {
    events: std::sync::Arc<Vec<Event>>,
    json: std::sync::Arc<std::sync::OnceLock<Box<serde_json::value::RawValue>>>,
}

impl WatchEvents {
    pub fn new(events: Vec<Event>) -> WatchEvents {
        WatchEvents {
            events: std::sync::Arc::new(events),
            json: Default::default(),
        }
    }

    /// The changes, owned (copied if they are shared).
    pub fn into_vec(self) -> Vec<Event> {
        std::sync::Arc::try_unwrap(self.events).unwrap_or_else(|shared| (*shared).clone())
    }
}

impl std::ops::Deref for WatchEvents {
    type Target = [Event];
    fn deref(&self) -> &[Event] {
        &self.events
    }
}

impl PartialEq for WatchEvents {
    fn eq(&self, other: &Self) -> bool {
        self.events == other.events
    }
}

impl Eq for WatchEvents {}

impl Serialize for WatchEvents {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = match self.json.get() {
            Some(raw) => raw,
            None => {
                let raw = serde_json::value::to_raw_value(&*self.events)
                    .map_err(serde::ser::Error::custom)?;
                self.json.get_or_init(|| raw)
            }
        };
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for WatchEvents {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Event>::deserialize(d).map(WatchEvents::new)
    }
}

impl ClientResponse {
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ClientResponse {
        ClientResponse::Error(ErrorResponse {
            id,
            code,
            message: message.into(),
            leader_id: None,
            leader_addr: None,
            compact_revision: None,
        })
    }

    /// The id of the request this answers (None for an answer to a frame that was not one).
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientResponse::Ok(ok) => Some(ok.id),
            ClientResponse::Status(s) => Some(s.id),
            ClientResponse::Error(e) => e.id,
            ClientResponse::Watching { id, .. }
            | ClientResponse::Events { id, .. }
            | ClientResponse::SnapshotHeader { id, .. }
            | ClientResponse::SnapshotChunk { id, .. }
            | ClientResponse::SnapshotDone { id, .. } => Some(*id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_json() {
        let env = Envelope {
            incarnation: 0,
            from: 1,
            to: 2,
            msg: RaftMessage::AppendEntries {
                term: 3,
                leader_id: 1,
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![Entry::noop(3, 5), Entry::command(3, 6, b"hello".to_vec())],
                leader_commit: 4,
                read_round: 0,
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains("\"type\":\"AppendEntries\""), "{text}");
        assert!(text.contains("aGVsbG8="), "data is base64: {text}");
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn garbage_base64_is_an_error_not_a_panic() {
        let text = r#"{"term":1,"index":1,"kind":"Command","data":"!!!"}"#;
        assert!(serde_json::from_str::<Entry>(text).is_err());
    }
}
