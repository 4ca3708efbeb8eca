//! The replicated key-value state machine: applies committed commands in log order.

use super::command::{Command, Op, Outcome};
use super::sessions::{Check, SessionLimits, Sessions};
use crate::rpc::types::{Entry, EntryKind, Snapshot, SnapshotMeta};
use raftd_core::Membership;
use serde::{Deserialize, Serialize};
// A persistent map: cloning it for a snapshot is O(1) (the copy shares structure), so the
// node loop is not held up while the snapshot is serialized in the background.
use imbl::OrdMap;

/// Clients remembered at once (each with up to 256 outcomes).
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KvStore {
    data: OrdMap<String, String>,
    sessions: Sessions,
    applied: u64,
    /// The configuration as of `applied`, so a snapshot of the store carries it (the core
    /// needs it to restart from the snapshot). Empty in snapshots of older versions.
    #[serde(default, skip_serializing_if = "Membership::is_empty")]
    membership: Membership,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new(DEFAULT_MAX_SESSIONS)
    }
}

impl KvStore {
    pub fn new(max_sessions: usize) -> KvStore {
        KvStore::with_limits(SessionLimits::with_max_sessions(max_sessions))
    }

    pub fn with_limits(limits: SessionLimits) -> KvStore {
        KvStore {
            data: OrdMap::new(),
            sessions: Sessions::new(limits),
            applied: 0,
            membership: Membership::default(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.data.get(key)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Rebuilds a store from a snapshot's bytes: the one place a state machine is made from a
    /// snapshot (at start, and when the leader sends one).
    pub fn from_snapshot(snapshot: &Snapshot) -> serde_json::Result<KvStore> {
        serde_json::from_slice(&snapshot.data)
    }

    /// The configuration as of the applied index (empty if none was applied or restored).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The configuration a snapshot of this store records (the core's, at the applied index:
    /// it also knows the configuration of stores restored from older snapshots).
    pub fn set_membership(&mut self, membership: Membership) {
        self.membership = membership;
    }

    /// A snapshot of the store at its applied index, whose term is `term`.
    pub fn to_snapshot(&self, term: u64, size_hint: usize) -> serde_json::Result<Snapshot> {
        Ok(Snapshot {
            membership: self.membership.clone(),
            meta: SnapshotMeta {
                index: self.applied,
                term,
            },
            data: std::sync::Arc::new(self.to_snapshot_bytes(size_hint)?),
        })
    }

    /// The store as snapshot bytes (JSON). `size_hint` is the size of the previous snapshot:
    /// the buffer starts a little larger than that, so a snapshot of megabytes is not grown by
    /// doubling (which briefly holds the old buffer, the new one and the slack at the memory
    /// peak), and is trimmed to size afterwards.
    pub fn to_snapshot_bytes(&self, size_hint: usize) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(size_hint + size_hint / 8 + 4096);
        serde_json::to_writer(&mut out, self)?;
        out.shrink_to_fit();
        Ok(out)
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// A 64-bit hash of the data (every key and value, in key order) for the consistency
    /// check: replicas that applied the same log must give the same hash. FNV-1a over each
    /// key and value with its length, so that ("ab","c") and ("a","bc") differ; stable across
    /// builds and machines.
    pub fn state_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (k, v) in &self.data {
            eat(k.as_bytes());
            eat(v.as_bytes());
        }
        h
    }

    /// Test hook: changes the data behind the log's back, as memory or disk corruption would.
    #[cfg(feature = "bugs")]
    pub fn corrupt_for_test(&mut self, key: &str, value: &str) {
        self.data.insert(key.to_string(), value.to_string());
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Applies one committed entry. Returns the outcome for a command (None for a no-op).
    /// An entry whose data is not a valid command (which the server never proposes) changes
    /// nothing, on every node alike, and yields None.
    pub fn apply(&mut self, entry: &Entry) -> Option<Outcome> {
        self.apply_entry(entry, false)
    }

    /// `apply` with the injected `double_apply` bug switched on or off.
    #[cfg(feature = "bugs")]
    pub fn apply_with_bugs(&mut self, entry: &Entry, double_apply: bool) -> Option<Outcome> {
        self.apply_entry(entry, double_apply)
    }

    fn apply_entry(&mut self, entry: &Entry, double_apply: bool) -> Option<Outcome> {
        assert_eq!(
            entry.index,
            self.applied + 1,
            "entries must be applied in order, each once"
        );
        self.applied = entry.index;
        if entry.kind == EntryKind::Config {
            // The core refused any configuration that does not decode before it was logged.
            if let Ok(m) = Membership::decode(&entry.data) {
                self.membership = m;
            }
            return None;
        }
        if entry.kind != EntryKind::Command {
            return None;
        }
        let cmd: Command = match serde_json::from_slice(&entry.data) {
            Ok(cmd) => cmd,
            Err(e) => {
                ::log::warn!(
                    "skipping entry {} that is not a key-value command: {e}",
                    entry.index
                );
                return None;
            }
        };
        Some(self.apply_command(entry.index, &cmd, double_apply))
    }

    fn apply_command(&mut self, index: u64, cmd: &Command, double_apply: bool) -> Outcome {
        self.sessions.advance_clock(cmd.at_ms, index);
        if let Some(client) = &cmd.client_id {
            // BUG (double_apply, only with the `bugs` feature): execute the retried command
            // again, whether its outcome is remembered or expired.
            match self.sessions.check(client, cmd.seq) {
                Check::Fresh => {}
                Check::Duplicate(outcome) if !double_apply => return outcome,
                Check::Expired if !double_apply => {
                    self.sessions.mark_expired(client, cmd.seq, index);
                    return Outcome::SessionExpired;
                }
                Check::Duplicate(_) | Check::Expired => {}
            }
        }
        let outcome = self.execute(&cmd.op);
        if let Some(client) = &cmd.client_id {
            self.sessions
                .record(client, cmd.seq, index, outcome.clone());
        }
        outcome
    }

    fn execute(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                Outcome::Done
            }
            Op::Delete { key } => {
                self.data.remove(key);
                Outcome::Done
            }
            Op::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.data.get(key);
                if current != expected.as_ref() {
                    return Outcome::Cas {
                        succeeded: false,
                        value: current.cloned(),
                    };
                }
                match value {
                    Some(v) => {
                        self.data.insert(key.clone(), v.clone());
                    }
                    None => {
                        self.data.remove(key);
                    }
                }
                Outcome::Cas {
                    succeeded: true,
                    value: value.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, client: Option<&str>, seq: u64, op: Op) -> Entry {
        let cmd = Command {
            at_ms: 0,
            client_id: client.map(str::to_string),
            seq,
            op,
        };
        Entry::command(1, index, serde_json::to_vec(&cmd).unwrap())
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn put_get_delete_cas() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(&Entry::noop(1, 1)), None);
        assert_eq!(
            kv.apply(&entry(2, None, 0, put("a", "1"))),
            Some(Outcome::Done)
        );
        assert_eq!(kv.get("a").map(String::as_str), Some("1"));
        let cas = |expected: Option<&str>, value: Option<&str>| Op::Cas {
            key: "a".into(),
            expected: expected.map(str::to_string),
            value: value.map(str::to_string),
        };
        assert_eq!(
            kv.apply(&entry(3, None, 0, cas(Some("2"), Some("3")))),
            Some(Outcome::Cas {
                succeeded: false,
                value: Some("1".into())
            })
        );
        assert_eq!(
            kv.apply(&entry(4, None, 0, cas(Some("1"), None))),
            Some(Outcome::Cas {
                succeeded: true,
                value: None
            })
        );
        assert_eq!(kv.get("a"), None);
        assert_eq!(
            kv.apply(&entry(5, None, 0, cas(None, Some("9")))),
            Some(Outcome::Cas {
                succeeded: true,
                value: Some("9".into())
            })
        );
        assert_eq!(
            kv.apply(&entry(6, None, 0, Op::Delete { key: "a".into() })),
            Some(Outcome::Done)
        );
        assert!(kv.is_empty());
    }

    #[test]
    fn a_retried_write_is_applied_once_and_answered_with_its_first_outcome() {
        let mut kv = KvStore::default();
        let cas = Op::Cas {
            key: "k".into(),
            expected: None,
            value: Some("v".into()),
        };
        let first = kv.apply(&entry(1, Some("c1"), 7, cas.clone()));
        kv.apply(&entry(2, Some("other"), 1, put("k", "w")));
        // The same (client, seq) committed again (a retry after a timeout) changes nothing.
        let again = kv.apply(&entry(3, Some("c1"), 7, cas));
        assert_eq!(first, again);
        assert_eq!(kv.get("k").map(String::as_str), Some("w"));
    }

    #[test]
    fn garbage_entry_data_changes_nothing() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(&Entry::command(1, 1, b"not json".to_vec())), None);
        assert!(kv.is_empty());
        assert_eq!(kv.applied(), 1);
    }
}
