//! The messages Raft nodes exchange, and the log entries and state they carry.
//!
//! Peer messages (`RaftMessage` inside an `Envelope`) are this project's own design and are
//! documented in docs/RAFT_RPC.md. All types derive serde and are encoded as JSON, one object
//! per length-delimited frame. The client protocol (docs/CLIENT_PROTOCOL.md) lives in the
//! daemon crate (`raftd::rpc::types`), which re-exports these.

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
    /// A cluster configuration (`crate::Membership`, as JSON): in effect on every node from the
    /// moment it is appended (thesis §4.1).
    Config,
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

    pub fn config(term: u64, index: u64, membership: &crate::Membership) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Config,
            data: Bytes::from(membership.encode()),
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

/// A snapshot of the state machine: the state after applying every entry up to `meta.index`,
/// as the state machine encoded it. The one snapshot type of every layer: the core sends it
/// in chunks, storage writes and loads it, the state machine is rebuilt from it. Its bytes are
/// shared, not copied, between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
    /// The configuration in effect at `meta.index` (empty in snapshots of clusters founded
    /// before configurations were logged).
    pub membership: crate::Membership,
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
        /// Sent by a leadership transfer's target (thesis §3.10): voters answer even if they
        /// heard from a leader within the election timeout.
        #[serde(default, skip_serializing_if = "is_false")]
        transfer: bool,
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
        /// The leader's latest ReadIndex round (see internal/core/src/read_index.rs); echoed back.
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
        /// The configuration in effect at the snapshot's index (on every chunk: it is small).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        membership: Option<crate::Membership>,
    },
    InstallSnapshotReply {
        term: u64,
        snapshot: SnapshotMeta,
        /// Bytes of that snapshot the follower holds (where the next chunk must start).
        received: u64,
        /// The follower installed it (or already had its state).
        done: bool,
    },
    /// From a leader handing leadership over (thesis §3.10): the target starts an election at
    /// once, without waiting for its timer or asking for pre-votes.
    TimeoutNow { term: u64 },
    /// The hash of the sender's applied state at log index `index` (a multiple of the
    /// consistency check's interval), for the shell's consistency check: replicas that applied
    /// the same log must hold the same state. The core ignores it.
    StateHash { term: u64, index: u64, hash: u64 },
    /// From a node whose data dir is empty, asking whether the cluster is still to be founded
    /// (every founding member empty) or exists already (then the asker waits to be caught up).
    Bootstrap { term: u64 },
    BootstrapReply {
        term: u64,
        /// The asker's data dir, echoed: an answer to a question asked before the asker lost
        /// its disk (a late delivery) says nothing about now.
        asker: u64,
        /// The replier holds the cluster's configuration.
        initialized: bool,
        /// The replier's data dir is empty too, but it will found nothing: a member holds the
        /// cluster's data (it waits to be caught up).
        #[serde(default, skip_serializing_if = "is_false")]
        waiting: bool,
        /// The founding configuration (the replier's entry 1), while its log still holds it:
        /// a founding member whose own copy never reached its disk adopts it, if it names the
        /// asker with the asker's data dir.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        founding: Option<crate::Membership>,
        /// The replier's configuration in effect: a member it names with the asker's own data
        /// dir has never written anything (its log is empty), so it is that member, not a
        /// lost disk, and takes that configuration until the leader catches it up.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        membership: Option<crate::Membership>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
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
            | RaftMessage::InstallSnapshotReply { term, .. }
            | RaftMessage::TimeoutNow { term }
            | RaftMessage::StateHash { term, .. }
            | RaftMessage::Bootstrap { term }
            | RaftMessage::BootstrapReply { term, .. } => *term,
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
            RaftMessage::TimeoutNow { .. } => "TimeoutNow",
            RaftMessage::StateHash { .. } => "StateHash",
            RaftMessage::Bootstrap { .. } => "Bootstrap",
            RaftMessage::BootstrapReply { .. } => "BootstrapReply",
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
    /// The sender's data dir (see `crate::membership`): a node that lost its disk speaks with a
    /// new one, and does not count as the member it was. 0: not known (older senders, tests).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
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
            RaftMessage::TimeoutNow { term } => {
                write!(f, "{}->{} TimeoutNow(term={term})", self.from, self.to)
            }
            RaftMessage::StateHash { term, index, hash } => write!(
                f,
                "{}->{} StateHash(term={term}, index={index}, hash={hash:016x})",
                self.from, self.to
            ),
            RaftMessage::Bootstrap { term } => write!(
                f,
                "{}->{} Bootstrap(term={term}, incarnation={})",
                self.from, self.to, self.incarnation
            ),
            RaftMessage::BootstrapReply {
                term, initialized, ..
            } => write!(
                f,
                "{}->{} BootstrapReply(term={term}, initialized={initialized}, incarnation={})",
                self.from, self.to, self.incarnation
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
