//! The replicated key-value state machine: applies committed commands in log order.

use super::command::{Command, Op, Outcome, Refusal};
use super::leases::Leases;
use super::mvcc::{Event, KeyRange, Mvcc, RangeOptions, RevisionError};
use super::sessions::{Check, SessionLimits, Sessions};
use super::txn::{Txn, TxnOp, TxnOutcome, TxnResponse};
use crate::rpc::types::{Entry, EntryKind, Snapshot, SnapshotMeta};
use raftd_core::Membership;
use serde::{Deserialize, Serialize};
// Persistent maps: cloning the store for a snapshot is O(1) (the copy shares structure), so the
// node loop is not held up while the snapshot is serialized in the background.
use imbl::OrdMap;
use std::io;

#[path = "store_image.rs"]
mod image;
pub use image::StoreImageError;

/// Clients remembered at once (each with up to 256 outcomes).
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(from = "StoreImage")]
pub struct KvStore {
    /// The keys, their versions and history (revisions).
    mvcc: Mvcc,
    #[serde(default)]
    leases: Leases,
    sessions: Sessions,
    applied: u64,
    /// The configuration as of `applied`, so a snapshot of the store carries it (the core
    /// needs it to restart from the snapshot). Empty in snapshots of older versions.
    #[serde(default, skip_serializing_if = "Membership::is_empty")]
    membership: Membership,
    /// The changes applied since the driver last took them (for watches); recorded only
    /// while `record_events` is on, so a node nobody watches pays nothing for it.
    #[serde(skip)]
    events: Vec<Event>,
    #[serde(skip)]
    record_events: bool,
}

/// Two stores are equal when their replicated state is: what a node records for its watches
/// is its own business.
impl PartialEq for KvStore {
    fn eq(&self, other: &Self) -> bool {
        self.mvcc == other.mvcc
            && self.leases == other.leases
            && self.sessions == other.sessions
            && self.applied == other.applied
            && self.membership == other.membership
    }
}

impl Eq for KvStore {}

/// A store as snapshots hold it: `mvcc` since revisions, `data` (plain key -> value) before.
#[derive(Deserialize)]
struct StoreImage {
    #[serde(default)]
    mvcc: Option<Mvcc>,
    #[serde(default)]
    data: Option<OrdMap<String, String>>,
    #[serde(default)]
    leases: Leases,
    sessions: Sessions,
    applied: u64,
    #[serde(default)]
    membership: Membership,
}

impl From<StoreImage> for KvStore {
    fn from(img: StoreImage) -> Self {
        let mvcc = match (img.mvcc, img.data) {
            (Some(m), _) => m,
            (None, Some(data)) => Mvcc::from_plain(data),
            (None, None) => Mvcc::new(),
        };
        KvStore {
            mvcc,
            leases: img.leases,
            sessions: img.sessions,
            applied: img.applied,
            membership: img.membership,
            events: Vec::new(),
            record_events: false,
        }
    }
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
            mvcc: Mvcc::new(),
            leases: Leases::default(),
            sessions: Sessions::new(limits),
            applied: 0,
            membership: Membership::default(),
            events: Vec::new(),
            record_events: false,
        }
    }

    /// The key's current value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.mvcc.value(key)
    }

    /// The keyspace with its revisions and history.
    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The store revision (of the latest change).
    pub fn revision(&self) -> u64 {
        self.mvcc.revision()
    }

    pub fn len(&self) -> usize {
        self.mvcc.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mvcc.is_empty()
    }

    /// Records the changes applied from now on, for `take_events` (watches).
    pub fn set_record_events(&mut self, on: bool) {
        self.record_events = on;
        if !on {
            self.events.clear();
        }
    }

    /// The changes applied since the last call, in revision order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Rebuilds a store from a snapshot's bytes: the one place a state machine is made from a
    /// snapshot (at start, and when the leader sends one).
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<KvStore, StoreImageError> {
        KvStore::from_snapshot_bytes(&snapshot.data)
    }

    /// Reads a store from a snapshot's data: the binary image this version writes (see
    /// `store_image.rs`), or the JSON of earlier versions.
    pub fn from_snapshot_bytes(data: &[u8]) -> Result<KvStore, StoreImageError> {
        image::decode(data)
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
    pub fn to_snapshot(&self, term: u64, size_hint: usize) -> io::Result<Snapshot> {
        Ok(Snapshot {
            membership: self.membership.clone(),
            meta: SnapshotMeta {
                index: self.applied,
                term,
            },
            data: bytes::Bytes::from(self.to_snapshot_bytes(size_hint)?),
        })
    }

    /// The store as snapshot bytes. `size_hint` is the size of the previous snapshot: the
    /// buffer starts a little larger than that, so a snapshot of megabytes is not grown by
    /// doubling (which briefly holds the old buffer, the new one and the slack at the memory
    /// peak), and is trimmed to size afterwards.
    pub fn to_snapshot_bytes(&self, size_hint: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(size_hint + size_hint / 8 + 4096);
        image::encode(self, &mut out)?;
        out.shrink_to_fit();
        Ok(out)
    }

    /// Writes the store's snapshot bytes (what `to_snapshot_bytes` returns) to `out` as they
    /// are encoded.
    pub fn write_snapshot(&self, out: &mut dyn io::Write) -> io::Result<()> {
        image::encode(self, out)
    }

    /// The store in the JSON image earlier versions wrote (which `from_snapshot_bytes` still
    /// reads), for tests of that path and for comparison in the benchmark.
    pub fn to_json_image(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
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
        for (k, v) in self.mvcc.live_pairs() {
            eat(k.as_bytes());
            eat(v.as_bytes());
        }
        h
    }

    /// Test helper: applies `op` as the next committed entry (no session).
    #[cfg(test)]
    pub(crate) fn apply_op(&mut self, op: Op) -> Option<Outcome> {
        let cmd = Command {
            client_id: None,
            seq: 0,
            op,
            at_ms: 0,
        };
        let index = self.applied + 1;
        self.apply(&Entry::command(1, index, cmd.encode().expect("encode")))
    }

    /// Test hook: changes the data behind the log's back, as memory or disk corruption would.
    #[cfg(feature = "bugs")]
    pub fn corrupt_for_test(&mut self, key: &str, value: &str) {
        self.mvcc.put(key, value.to_string(), 0);
        self.mvcc.finish_write();
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
        let outcome = self.execute_write(op);
        let revision = self.mvcc.finish_write();
        match outcome {
            Outcome::Written { .. } => Outcome::Written { revision },
            Outcome::Deleted { deleted, .. } => Outcome::Deleted { deleted, revision },
            Outcome::Cas {
                succeeded, value, ..
            } => Outcome::Cas {
                succeeded,
                value,
                revision,
            },
            Outcome::Txn(t) => Outcome::Txn(TxnOutcome { revision, ..t }),
            other => other,
        }
    }

    /// Applies one write; every key it changes changes at the revision after the store's
    /// (the caller finishes the write, and fills in the revision of the outcome).
    fn execute_write(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Put { key, value, lease } => {
                if *lease != 0 && !self.leases.contains(*lease) {
                    return Outcome::Refused(Refusal::LeaseNotFound { lease_id: *lease });
                }
                self.put(key, value, *lease);
                Outcome::Written { revision: 0 }
            }
            Op::Delete { key } => Outcome::Deleted {
                deleted: u64::from(self.delete(key)),
                revision: 0,
            },
            Op::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.mvcc.value(key);
                if current != expected.as_deref() {
                    return Outcome::Cas {
                        succeeded: false,
                        value: current.map(str::to_string),
                        revision: 0,
                    };
                }
                match value {
                    Some(v) => self.put(key, v, 0),
                    None => {
                        self.delete(key);
                    }
                }
                Outcome::Cas {
                    succeeded: true,
                    value: value.clone(),
                    revision: 0,
                }
            }
            Op::DeleteRange { key, end, prefix } => {
                // Checked when proposed; an entry logged by a buggy leader deletes nothing.
                let Ok(range) = KeyRange::from_fields(key.clone(), end.clone(), *prefix) else {
                    return Outcome::Deleted {
                        deleted: 0,
                        revision: 0,
                    };
                };
                Outcome::Deleted {
                    deleted: self.delete_range(&range),
                    revision: 0,
                }
            }
            Op::Txn(txn) => self.txn(txn),
            Op::Compact { revision } => match self.mvcc.compact(*revision) {
                Ok(()) => Outcome::Written { revision: 0 },
                Err(RevisionError::Compacted { compact_revision }) => {
                    Outcome::Refused(Refusal::Compacted { compact_revision })
                }
                Err(RevisionError::Future { revision }) => {
                    Outcome::Refused(Refusal::FutureRevision { revision })
                }
            },
            Op::LeaseGrant { ttl } => {
                let (lease_id, ttl) = self.leases.grant(*ttl);
                Outcome::LeaseGranted { lease_id, ttl }
            }
            Op::LeaseRevoke { lease_id, .. } => match self.leases.remove(*lease_id) {
                None => Outcome::Refused(Refusal::LeaseNotFound {
                    lease_id: *lease_id,
                }),
                Some(lease) => {
                    let mut deleted = 0;
                    for key in &lease.keys {
                        deleted += u64::from(self.delete(key));
                    }
                    Outcome::Deleted {
                        deleted,
                        revision: 0,
                    }
                }
            },
        }
    }

    fn put(&mut self, key: &str, value: &str, lease: u64) {
        let (prev_lease, event) = self.mvcc.put(key, value.to_string(), lease);
        self.leases.attach(key, prev_lease, lease);
        if self.record_events {
            self.events.push(event);
        }
    }

    /// Deletes `key`; false if it was not there.
    fn delete(&mut self, key: &str) -> bool {
        let Some((lease, event)) = self.mvcc.delete(key) else {
            return false;
        };
        self.leases.detach(key, lease);
        if self.record_events {
            self.events.push(event);
        }
        true
    }

    fn delete_range(&mut self, range: &KeyRange) -> u64 {
        let mut deleted = 0;
        for key in self.mvcc.live_keys(range) {
            deleted += u64::from(self.delete(&key));
        }
        deleted
    }

    fn txn(&mut self, txn: &Txn) -> Outcome {
        let succeeded = txn.holds(&self.mvcc);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Every lease a Put names must exist, or nothing runs.
        for op in ops {
            if let TxnOp::Put { lease, .. } = op {
                if *lease != 0 && !self.leases.contains(*lease) {
                    return Outcome::Refused(Refusal::LeaseNotFound { lease_id: *lease });
                }
            }
        }
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                TxnOp::Put { key, value, lease } => {
                    self.put(key, value, *lease);
                    TxnResponse::Put {}
                }
                TxnOp::Get { key } => match self.mvcc.get(key) {
                    Some(kv) => TxnResponse::Get {
                        value: kv.value,
                        mod_revision: kv.mod_revision,
                        create_revision: kv.create_revision,
                        version: kv.version,
                        lease: kv.lease,
                    },
                    None => TxnResponse::Get {
                        value: None,
                        mod_revision: 0,
                        create_revision: 0,
                        version: 0,
                        lease: 0,
                    },
                },
                TxnOp::Range {
                    key,
                    end,
                    prefix,
                    limit,
                    keys_only,
                    count_only,
                } => {
                    let result = KeyRange::from_fields(key.clone(), end.clone(), *prefix)
                        .ok()
                        .and_then(|range| {
                            self.mvcc
                                .range(
                                    &range,
                                    &RangeOptions {
                                        limit: *limit,
                                        keys_only: *keys_only,
                                        count_only: *count_only,
                                        revision: None,
                                    },
                                )
                                .ok()
                        });
                    TxnResponse::Range(result.unwrap_or_default())
                }
                TxnOp::Delete { key } => TxnResponse::Delete {
                    deleted: u64::from(self.delete(key)),
                },
                TxnOp::DeleteRange { key, end, prefix } => {
                    let deleted = KeyRange::from_fields(key.clone(), end.clone(), *prefix)
                        .map_or(0, |range| self.delete_range(&range));
                    TxnResponse::DeleteRange { deleted }
                }
            });
        }
        Outcome::Txn(TxnOutcome {
            succeeded,
            responses,
            revision: 0,
        })
    }
}

#[cfg(test)]
#[path = "store_model_tests.rs"]
mod model_tests;

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
            lease: 0,
        }
    }

    #[test]
    fn put_get_delete_cas() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(&Entry::noop(1, 1)), None);
        assert_eq!(
            kv.apply(&entry(2, None, 0, put("a", "1"))),
            Some(Outcome::Written { revision: 1 })
        );
        assert_eq!(kv.get("a"), Some("1"));
        let cas = |expected: Option<&str>, value: Option<&str>| Op::Cas {
            key: "a".into(),
            expected: expected.map(str::to_string),
            value: value.map(str::to_string),
        };
        assert_eq!(
            kv.apply(&entry(3, None, 0, cas(Some("2"), Some("3")))),
            Some(Outcome::Cas {
                succeeded: false,
                value: Some("1".into()),
                revision: 1
            })
        );
        assert_eq!(
            kv.apply(&entry(4, None, 0, cas(Some("1"), None))),
            Some(Outcome::Cas {
                succeeded: true,
                value: None,
                revision: 2
            })
        );
        assert_eq!(kv.get("a"), None);
        assert_eq!(
            kv.apply(&entry(5, None, 0, cas(None, Some("9")))),
            Some(Outcome::Cas {
                succeeded: true,
                value: Some("9".into()),
                revision: 3
            })
        );
        assert_eq!(
            kv.apply(&entry(6, None, 0, Op::Delete { key: "a".into() })),
            Some(Outcome::Deleted {
                deleted: 1,
                revision: 4
            })
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
        assert_eq!(kv.get("k"), Some("w"));
    }

    #[test]
    fn a_snapshot_from_before_revisions_still_loads() {
        let mut kv = KvStore::default();
        kv.apply(&entry(1, Some("c"), 1, put("a", "1")));
        kv.apply(&entry(2, None, 0, put("b", "2")));
        // The same store as a version before revisions wrote it: plain `data`, no history.
        let mut old: serde_json::Value = serde_json::to_value(&kv).unwrap();
        let obj = old.as_object_mut().unwrap();
        obj.remove("mvcc");
        obj.remove("leases");
        obj.insert("data".into(), serde_json::json!({"a": "1", "b": "2"}));
        let back: KvStore = serde_json::from_value(old).unwrap();
        assert_eq!(back.get("a"), Some("1"));
        assert_eq!(back.get("b"), Some("2"));
        assert_eq!(back.revision(), 1, "every old key created at revision 1");
        assert_eq!(back.applied(), 2);
        assert_eq!(back.sessions(), kv.sessions());
    }

    #[test]
    fn garbage_entry_data_changes_nothing() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(&Entry::command(1, 1, b"not json".to_vec())), None);
        assert!(kv.is_empty());
        assert_eq!(kv.applied(), 1);
    }
}
