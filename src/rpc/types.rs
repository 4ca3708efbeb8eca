//! Every message that crosses a process boundary, in one place.
//!
//! Peer messages (`RaftMessage` inside an `Envelope`) are this project's own design and are
//! documented in docs/RAFT_RPC.md. Client requests and responses follow the public contract in
//! ../shared/PROTOCOL.md. All types derive serde and are encoded as JSON, one object per
//! length-delimited frame.
//!
//! This file depends only on serde and base64 so that every layer (core, storage, transport,
//! server, tests) can share it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A node id. Positive; 0 means "none".
pub type NodeId = u64;

/// What a log entry carries.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Appended by every new leader at the start of its term (Raft §5.4.2, §8): committing it
    /// commits everything before it and tells the leader what is committed.
    Noop,
    /// An opaque command for the state machine.
    Command,
}

/// One entry of the replicated log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    /// The command bytes, base64 on the wire so JSON stays compact (≈1.33× the payload).
    /// Shared, not copied, by the clones an entry goes through (the write to disk, one
    /// AppendEntries per follower, the state machine).
    #[serde(with = "b64", default, skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
}

impl Entry {
    pub fn noop(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        }
    }

    pub fn command(term: u64, index: u64, data: Vec<u8>) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Command,
            data: Bytes::from(data),
        }
    }
}

/// The state that must be on disk before a node answers anything that depends on it:
/// its current term and whom it voted for in that term (Raft Figure 2, "Persistent state").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    /// 0 when the node has not voted in `term`.
    pub vote: NodeId,
}

/// What a snapshot covers: the state after applying every entry up to `index`, whose term was
/// `term`. The log keeps only entries after it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
}

/// Why a follower refused an AppendEntries whose previous entry does not match, so the leader
/// can skip a whole term at a time instead of one index per round trip (the XTerm/XIndex/XLen
/// idea from the extended Raft paper, end of §5.3).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    /// Term of the follower's entry at `prev_log_index`, or 0 if its log is too short.
    pub xterm: u64,
    /// First index the follower holds with term `xterm` (0 if `xterm` is 0).
    pub xindex: u64,
    /// The follower's last log index + 1.
    pub xlen: u64,
}

/// Raft peer-to-peer messages. Every message names the sender's term; a reply from a term other
/// than the one it answers is dropped by the receiver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum RaftMessage {
    /// RequestVote (§5.2). With `pre_vote`, it asks "would you vote for me in `term`?" without
    /// anyone changing their term (thesis §9.6), so a node that was cut off cannot depose a
    /// healthy leader when it comes back.
    RequestVote {
        term: u64,
        candidate_id: NodeId,
        last_log_index: u64,
        last_log_term: u64,
        #[serde(default)]
        pre_vote: bool,
    },
    RequestVoteReply {
        term: u64,
        vote_granted: bool,
        #[serde(default)]
        pre_vote: bool,
    },
    /// AppendEntries (§5.3); an empty one is a heartbeat.
    AppendEntries {
        term: u64,
        leader_id: NodeId,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
        /// The leader's latest ReadIndex round (see src/raft/read_index.rs); echoed back.
        #[serde(default, skip_serializing_if = "is_zero")]
        read_round: u64,
    },
    AppendEntriesReply {
        term: u64,
        success: bool,
        /// On success: the index up to which the follower's log now matches the leader's
        /// (prev_log_index + number of entries). On failure: the request's prev_log_index,
        /// so the leader can tell a stale rejection from a current one.
        match_index: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conflict: Option<ConflictHint>,
        /// The request's `read_round`: this follower accepted the leader after that round
        /// began.
        #[serde(default, skip_serializing_if = "is_zero")]
        read_round: u64,
    },
    /// InstallSnapshot (§7): one chunk of the leader's snapshot, for a follower whose needed
    /// entries were compacted away. Chunks are sent one at a time, each after the previous one
    /// was acknowledged.
    InstallSnapshot {
        term: u64,
        leader_id: NodeId,
        snapshot: SnapshotMeta,
        pos: ChunkPos,
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    InstallSnapshotReply {
        term: u64,
        snapshot: SnapshotMeta,
        /// Bytes of that snapshot the follower holds (where the next chunk must start).
        received: u64,
        /// The follower installed it (or already had its state).
        done: bool,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RaftMessage {
    /// The sender's term.
    pub fn term(&self) -> u64 {
        match self {
            RaftMessage::RequestVote { term, .. }
            | RaftMessage::RequestVoteReply { term, .. }
            | RaftMessage::AppendEntries { term, .. }
            | RaftMessage::AppendEntriesReply { term, .. }
            | RaftMessage::InstallSnapshot { term, .. }
            | RaftMessage::InstallSnapshotReply { term, .. } => *term,
        }
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RaftMessage::RequestVote { pre_vote: true, .. } => "PreVote",
            RaftMessage::RequestVote { .. } => "RequestVote",
            RaftMessage::RequestVoteReply { pre_vote: true, .. } => "PreVoteReply",
            RaftMessage::RequestVoteReply { .. } => "RequestVoteReply",
            RaftMessage::AppendEntries { .. } => "AppendEntries",
            RaftMessage::AppendEntriesReply { .. } => "AppendEntriesReply",
            RaftMessage::InstallSnapshot { .. } => "InstallSnapshot",
            RaftMessage::InstallSnapshotReply { .. } => "InstallSnapshotReply",
        }
    }
}

/// The chunk layout of an InstallSnapshot stream.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPos {
    /// Byte offset of this chunk in the snapshot.
    pub offset: u64,
    /// Total size of the snapshot in bytes.
    pub total: u64,
}

/// A peer message with its addresses. This is the unit the core emits and the transport
/// carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub msg: RaftMessage,
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.msg {
            RaftMessage::RequestVote {
                term,
                last_log_index,
                last_log_term,
                pre_vote,
                ..
            } => write!(
                f,
                "{}->{} {}(term={term}, last={last_log_index}@{last_log_term})",
                self.from,
                self.to,
                if *pre_vote { "PreVote" } else { "RequestVote" }
            ),
            RaftMessage::RequestVoteReply {
                term,
                vote_granted,
                pre_vote,
            } => write!(
                f,
                "{}->{} {}(term={term}, granted={vote_granted})",
                self.from,
                self.to,
                if *pre_vote { "PreVoteReply" } else { "RequestVoteReply" }
            ),
            RaftMessage::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => write!(
                f,
                "{}->{} AppendEntries(term={term}, prev={prev_log_index}@{prev_log_term}, entries={}, commit={leader_commit})",
                self.from,
                self.to,
                entries.len()
            ),
            RaftMessage::AppendEntriesReply {
                term,
                success,
                match_index,
                conflict,
                ..
            } => write!(
                f,
                "{}->{} AppendEntriesReply(term={term}, success={success}, index={match_index}, hint={conflict:?})",
                self.from, self.to
            ),
            RaftMessage::InstallSnapshot {
                term, snapshot, pos, data, ..
            } => write!(
                f,
                "{}->{} InstallSnapshot(term={term}, snapshot={}@{}, offset={}/{}, bytes={})",
                self.from,
                self.to,
                snapshot.index,
                snapshot.term,
                pos.offset,
                pos.total,
                data.len()
            ),
            RaftMessage::InstallSnapshotReply {
                term,
                snapshot,
                received,
                done,
            } => write!(
                f,
                "{}->{} InstallSnapshotReply(term={term}, snapshot={}@{}, received={received}, done={done})",
                self.from, self.to, snapshot.index, snapshot.term
            ),
        }
    }
}

/// Raft role, as reported in logs and `Status`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// A node collecting pre-votes; reported as `Candidate` to clients.
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    /// The name the public protocol uses (PROTOCOL.md knows three roles).
    pub fn public_name(self) -> &'static str {
        match self {
            Role::Follower => "Follower",
            Role::PreCandidate | Role::Candidate => "Candidate",
            Role::Leader => "Leader",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// Base64 (standard alphabet, padded) for byte vectors inside JSON.
pub mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes.as_ref()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(d: D) -> Result<T, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(T::from)
            .map_err(serde::de::Error::custom)
    }
}

// ----- client protocol v1 (../shared/PROTOCOL.md) -----

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
            | ClientRequest::Status { id } => *id,
        }
    }
}

/// A successful answer to `Put`, `Get`, `Delete` or `Cas`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OkResponse {
    pub id: u64,
    /// `Get` and `Cas`: the value (null when absent). Omitted for `Put` and `Delete`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_nullable"
    )]
    pub value: Option<Option<String>>,
    /// `Cas` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
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
}

/// Error codes of the client protocol.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotLeader,
    Timeout,
    BadRequest,
    TooLarge,
    ShuttingDown,
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
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum ClientResponse {
    Ok(OkResponse),
    Status(StatusResponse),
    Error(ErrorResponse),
}

impl ClientResponse {
    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ClientResponse {
        ClientResponse::Error(ErrorResponse {
            id,
            code,
            message: message.into(),
            leader_id: None,
            leader_addr: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_json() {
        let env = Envelope {
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
