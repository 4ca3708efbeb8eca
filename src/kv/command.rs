//! What a key-value write looks like inside a log entry, and what applying it returns.

use super::txn::{Txn, TxnOutcome};
use serde::{Deserialize, Serialize};

/// A client write, as stored in the log (JSON in the entry's data).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Session of the client that sent it, for at-most-once application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default)]
    pub seq: u64,
    pub op: Op,
    /// The leader's wall clock (ms since the epoch) when it proposed the command: the log's
    /// clock, by which every node alike expires idle client sessions. 0 in older entries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub at_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op")]
pub enum Op {
    Put {
        key: String,
        value: String,
        /// The lease the key is attached to (0: none).
        #[serde(default, skip_serializing_if = "is_zero")]
        lease: u64,
    },
    Delete {
        key: String,
    },
    /// Sets `key` to `value` (or deletes it, if `value` is None) only if its current value is
    /// `expected` (None: absent).
    Cas {
        key: String,
        expected: Option<String>,
        value: Option<String>,
    },
    /// Deletes every key of a range (the request's `key`, `end` and `prefix`).
    DeleteRange {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
    },
    Txn(Txn),
    /// Forgets history before `revision`.
    Compact {
        revision: u64,
    },
    LeaseGrant {
        ttl: u64,
    },
    /// Revokes a lease and deletes its keys; `expired` when the leader's clock ran it out
    /// (for the logs: both do the same).
    LeaseRevoke {
        lease_id: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        expired: bool,
    },
}

impl Command {
    /// The command as entry data (JSON), in a buffer of about its size: it stays in the log
    /// until the next snapshot, and a doubling buffer would waste up to half of it.
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        let strings = self.op.size_hint();
        let client = self.client_id.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(strings + client + 96);
        serde_json::to_writer(&mut out, self)?;
        if out.capacity() > out.len() + 64 {
            out.shrink_to_fit(); // escaped characters made it outgrow the estimate
        }
        Ok(out)
    }
}

impl Op {
    /// About how many bytes of strings the op carries (to size its encoding buffer).
    fn size_hint(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
            Op::Cas {
                key,
                expected,
                value,
            } => {
                key.len()
                    + expected.as_ref().map_or(0, String::len)
                    + value.as_ref().map_or(0, String::len)
            }
            Op::DeleteRange { key, end, .. } => key.len() + end.as_ref().map_or(0, String::len),
            Op::Txn(txn) => txn.size_hint(),
            Op::Compact { .. } | Op::LeaseGrant { .. } | Op::LeaseRevoke { .. } => 16,
        }
    }
}

/// The result of applying a command. Kept in the client's session so that a retry gets the
/// first outcome back.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Put and Delete applied by a version before revisions (kept in older snapshots'
    /// sessions).
    Done,
    Cas {
        succeeded: bool,
        /// The value after the request.
        value: Option<String>,
        /// The store revision after the request (0 in outcomes from before revisions).
        #[serde(default)]
        revision: u64,
    },
    /// The (client_id, seq) pair is older than what the cluster still remembers: it may have
    /// been applied before, and its outcome is gone. Nothing was changed now.
    SessionExpired,
    /// Put, Compact: the store revision after it.
    Written {
        revision: u64,
    },
    /// Delete, DeleteRange and LeaseRevoke: how many keys went, and the revision after.
    Deleted {
        deleted: u64,
        revision: u64,
    },
    Txn(TxnOutcome),
    LeaseGranted {
        lease_id: u64,
        ttl: u64,
    },
    /// Refused when applied; nothing changed.
    Refused(Refusal),
}

/// Why an applied command changed nothing.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A Put (or a transaction's) names a lease that does not exist.
    LeaseNotFound { lease_id: u64 },
    /// A compaction at or below the last one.
    Compacted { compact_revision: u64 },
    /// A compaction past the store's revision.
    FutureRevision { revision: u64 },
}
