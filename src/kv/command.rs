//! What a key-value write looks like inside a log entry, and what applying it returns.

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
}

impl Command {
    /// The command as entry data (JSON), in a buffer of about its size: it stays in the log
    /// until the next snapshot, and a doubling buffer would waste up to half of it.
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        let strings = match &self.op {
            Op::Put { key, value } => key.len() + value.len(),
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
        };
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
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }
}

/// The result of applying a command. Kept in the client's session so that a retry gets the
/// first outcome back.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Put and Delete.
    Done,
    Cas {
        succeeded: bool,
        /// The value after the request.
        value: Option<String>,
    },
    /// The (client_id, seq) pair is older than what the cluster still remembers: it may have
    /// been applied before, and its outcome is gone. Nothing was changed now.
    SessionExpired,
}
