//! The revisioned keyspace (MVCC): every change advances one store revision, every key keeps
//! the versions written since the last compaction, and a read may ask for any revision that
//! was not compacted away.
//!
//! Layout, chosen for the two things history is read for:
//! * `keys`: each key's chain of versions, oldest first. A read at revision `r` takes, for each
//!   key of its range, the newest version written at or before `r` (a binary search in a chain
//!   that compaction keeps short). A deleted key ends in a tombstone until compaction.
//! * `changes`: revision -> the keys changed at it. Watches replay history from a revision in
//!   order through it, and compaction finds the chains it must prune through it, so neither
//!   scans the whole keyspace. It is an index, rebuilt from the chains when a snapshot loads.
//!   Every revision changes at least one key, so the revisions it holds are consecutive: it is
//!   a persistent vector indexed by revision, full to the last slot, where a sorted map's nodes
//!   are a third empty and cost a key each (about 50 bytes a revision at a million keys).
//!
//! A write that changes several keys (a transaction, a range delete, a revoked lease) changes
//! them all at one revision; a key changes at most once per revision, so the events of one
//! revision are ordered by key.

use imbl::{OrdMap, Vector};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A key's versions, oldest first. Most keys have one (history is compacted), kept inline in
/// the map's node rather than in an allocation of its own.
pub type Chain = SmallVec<[Version; 1]>;

/// The keys changed at one revision: usually one.
type Changed = SmallVec<[String; 1]>;

/// One version of a key. A tombstone (`value: None`) records a delete.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Version {
    #[serde(rename = "m")]
    pub mod_revision: u64,
    #[serde(rename = "c", default, skip_serializing_if = "is_zero")]
    pub create_revision: u64,
    /// Writes since the key was created (1 for the write that created it); 0 in a tombstone.
    #[serde(rename = "n", default, skip_serializing_if = "is_zero")]
    pub version: u64,
    /// Shared, not owned: the map's nodes are copied when a write changes a node that a
    /// snapshot, a hash or a backup still holds, and copying a shared value is a reference
    /// count, not an allocation and a copy of its bytes.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub value: Option<std::sync::Arc<str>>,
    #[serde(rename = "l", default, skip_serializing_if = "is_zero")]
    pub lease: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A live key as reads return it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    /// Omitted by `keys_only` reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub mod_revision: u64,
    pub create_revision: u64,
    pub version: u64,
    /// The lease the key is attached to, 0 for none.
    #[serde(default)]
    pub lease: u64,
}

/// What changed: a Put (the key's new version) or a Delete (`value` None, revisions and version
/// 0 but `mod_revision`, the revision of the delete).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub mod_revision: u64,
    pub create_revision: u64,
    pub version: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// The keys a request covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// One key.
    Key(String),
    /// Every key starting with this (every key, if empty).
    Prefix(String),
    /// Keys from `start` (inclusive) to `end` (exclusive); `end` None: to the last key.
    Span { start: String, end: Option<String> },
}

impl KeyRange {
    /// The range of a request's `key`, `end` and `prefix` fields. `end` "\0" means every key
    /// from `key` on, as in etcd.
    pub fn from_fields(
        key: String,
        end: Option<String>,
        prefix: bool,
    ) -> Result<KeyRange, &'static str> {
        match (end, prefix) {
            (Some(_), true) => Err("give either end or prefix, not both"),
            (Some(end), false) if end == "\0" => Ok(KeyRange::Span {
                start: key,
                end: None,
            }),
            (Some(end), false) => {
                if end.as_bytes() <= key.as_bytes() {
                    return Err("end must be greater than key");
                }
                Ok(KeyRange::Span {
                    start: key,
                    end: Some(end),
                })
            }
            (None, true) => Ok(KeyRange::Prefix(key)),
            (None, false) if key.is_empty() => Err("key must not be empty"),
            (None, false) => Ok(KeyRange::Key(key)),
        }
    }

    pub fn contains(&self, k: &str) -> bool {
        match self {
            KeyRange::Key(key) => k == key,
            KeyRange::Prefix(p) => k.starts_with(p.as_str()),
            KeyRange::Span { start, end } => {
                k.as_bytes() >= start.as_bytes()
                    && end.as_ref().is_none_or(|e| k.as_bytes() < e.as_bytes())
            }
        }
    }

    /// The first key the range can hold.
    fn start(&self) -> &str {
        match self {
            KeyRange::Key(k) | KeyRange::Prefix(k) => k,
            KeyRange::Span { start, .. } => start,
        }
    }

    /// Whether `k`, at or after `start()`, is past the range's end (keys in order).
    fn past_end(&self, k: &str) -> bool {
        match self {
            KeyRange::Key(key) => k != key,
            KeyRange::Prefix(p) => !k.starts_with(p.as_str()),
            KeyRange::Span { end, .. } => {
                end.as_ref().is_some_and(|e| k.as_bytes() >= e.as_bytes())
            }
        }
    }

    /// Whether two ranges share a key (used to refuse a transaction that writes a key twice).
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        match (self, other) {
            (KeyRange::Key(a), b) | (b, KeyRange::Key(a)) => b.contains(a),
            _ => {
                // Two open ranges overlap when either's first key lies in the other, or, for
                // prefixes, one prefix extends the other.
                self.contains(other.start()) || other.contains(self.start())
            }
        }
    }
}

/// Options of a range read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many keys (0: no limit).
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
    /// Read the store as of this revision (None or 0: now).
    pub revision: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` let through.
    pub more: bool,
    /// How many keys matched (before `limit`).
    pub count: u64,
}

/// Why a read or a compaction at a revision is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionError {
    /// The revision is older than the last compaction.
    Compacted { compact_revision: u64 },
    /// The revision is newer than the store.
    Future { revision: u64 },
}

/// The revisioned keyspace. See the module comment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(from = "MvccImage", into = "MvccImage")]
pub struct Mvcc {
    revision: u64,
    compact_revision: u64,
    keys: OrdMap<String, Chain>,
    /// The keys changed at each revision from `changes_base` on: `changes[i]` is revision
    /// `changes_base + i`. It holds the revisions at or after `compact_revision`.
    changes: Vector<Changed>,
    /// The first revision `changes` holds: `compact_revision`, or 1 before any compaction.
    changes_base: u64,
    /// Keys whose newest version is not a tombstone.
    live: usize,
    /// The revision the write in progress changes keys at, once it changed one.
    writing: bool,
}

/// What a snapshot holds of the keyspace: the chains; the index is rebuilt on load.
#[derive(Serialize, Deserialize)]
struct MvccImage {
    revision: u64,
    compact_revision: u64,
    keys: OrdMap<String, Chain>,
}

impl From<Mvcc> for MvccImage {
    fn from(m: Mvcc) -> Self {
        MvccImage {
            revision: m.revision,
            compact_revision: m.compact_revision,
            keys: m.keys,
        }
    }
}

impl From<MvccImage> for Mvcc {
    fn from(img: MvccImage) -> Self {
        Mvcc::from_chains(img.revision, img.compact_revision, img.keys)
    }
}

impl Mvcc {
    /// A keyspace from what a snapshot holds of it: its revisions and its keys' chains. The
    /// index of changes is rebuilt from the chains.
    pub(crate) fn from_chains(
        revision: u64,
        compact_revision: u64,
        keys: OrdMap<String, Chain>,
    ) -> Mvcc {
        let img = MvccImage {
            revision,
            compact_revision,
            keys,
        };
        let base = changes_base(img.compact_revision);
        // Collected by revision first: the vector is then built in one pass, in order.
        let mut by_rev: std::collections::BTreeMap<u64, Changed> = Default::default();
        let mut live = 0;
        for (key, chain) in &img.keys {
            if chain.last().is_some_and(|v| v.value.is_some()) {
                live += 1;
            }
            for v in chain {
                if v.mod_revision >= base && v.mod_revision <= img.revision {
                    by_rev.entry(v.mod_revision).or_default().push(key.clone());
                }
            }
        }
        // Keys were visited in order, so each revision's keys are sorted already. A revision
        // no chain holds (which a store this code wrote never has) stays an empty slot.
        let mut changes = Vector::new();
        let mut by_rev = by_rev.into_iter().peekable();
        for rev in base..=img.revision {
            match by_rev.next_if(|(r, _)| *r == rev) {
                Some((_, keys)) => changes.push_back(keys),
                None => changes.push_back(Changed::new()),
            }
        }
        Mvcc {
            revision: img.revision,
            compact_revision: img.compact_revision,
            keys: img.keys,
            changes,
            changes_base: base,
            live,
            writing: false,
        }
    }
}

/// A map of `items`, which are in strictly ascending key order, built with its leaves full.
///
/// Inserted in order, a B-tree splits each full leaf in two halves and never adds to the left
/// one again: every leaf ends half empty, and at a million keys that is some 80 bytes a key of
/// empty slots. Inserting every other item first makes the same half-full leaves, each spanning
/// twice the keys it holds; the items in between then land in the leaf that spans them, which
/// fills it to the brim without a split. (This depends on how `imbl` splits; were that to
/// change, the map would be as good as one built in order, and no worse.)
pub(crate) fn ordmap_from_sorted<K: Ord + Clone, V: Clone>(items: Vec<(K, V)>) -> OrdMap<K, V> {
    let mut map = OrdMap::new();
    let mut odd = Vec::with_capacity(items.len() / 2);
    for (i, item) in items.into_iter().enumerate() {
        if i % 2 == 0 {
            map.insert(item.0, item.1);
        } else {
            odd.push(item);
        }
    }
    for (k, v) in odd {
        map.insert(k, v);
    }
    map
}

impl Default for Mvcc {
    fn default() -> Self {
        Mvcc::new()
    }
}

/// The first revision the change index holds, with history compacted at `compact_revision`
/// (revision 0 is the empty store, which no change made).
fn changes_base(compact_revision: u64) -> u64 {
    compact_revision.max(1)
}

impl Mvcc {
    pub fn new() -> Mvcc {
        Mvcc {
            revision: 0,
            compact_revision: 0,
            keys: OrdMap::new(),
            changes: Vector::new(),
            changes_base: changes_base(0),
            live: 0,
            writing: false,
        }
    }

    /// Records that `key` changed at `rev`, the revision of the write in progress.
    fn record_change(&mut self, rev: u64, key: &str) {
        let next = self.changes_base + self.changes.len() as u64;
        if rev == next {
            let mut keys = Changed::new();
            keys.push(key.to_string());
            self.changes.push_back(keys);
        } else if let Some(keys) = self.changes.back_mut() {
            debug_assert_eq!(
                rev + 1,
                next,
                "changes are recorded at the write's revision"
            );
            keys.push(key.to_string());
        }
    }

    /// The keys changed at `rev`, if the index holds it.
    fn changed_at_mut(&mut self, rev: u64) -> Option<&mut Changed> {
        let i = rev.checked_sub(self.changes_base)?;
        self.changes.get_mut(usize::try_from(i).ok()?)
    }

    /// A keyspace holding `data` (a store from before revisions): every key created at
    /// revision 1, so every node converts the same data the same way.
    pub fn from_plain(data: impl IntoIterator<Item = (String, String)>) -> Mvcc {
        let mut m = Mvcc::new();
        for (k, v) in data {
            m.put(&k, v, 0);
        }
        m.finish_write();
        m
    }

    /// Every key's chain of versions, in key order (what a snapshot holds).
    pub(crate) fn chains(&self) -> &OrdMap<String, Chain> {
        &self.keys
    }

    /// The store revision: the revision of the latest change (0 before any).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Versions kept in all chains (live, past and tombstones): what history costs.
    pub fn versions(&self) -> usize {
        self.keys.values().map(|c| c.len()).sum()
    }

    /// The revision a write in progress changes keys at.
    fn write_revision(&self) -> u64 {
        self.revision + 1
    }

    /// The key's current version, if it is live.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        let v = self.keys.get(key)?.last()?;
        v.value.as_ref()?;
        Some(key_value(key, v, false))
    }

    /// The key's current value.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.keys.get(key)?.last()?.value.as_deref()
    }

    /// Every live key and value, in key order (for the consistency check's hash).
    pub fn live_pairs(&self) -> impl Iterator<Item = (&String, &str)> {
        self.keys
            .iter()
            .filter_map(|(k, chain)| chain.last()?.value.as_deref().map(|v| (k, v)))
    }

    /// Checks that `revision` can be read: not compacted, not in the future.
    pub fn check_revision(&self, revision: u64) -> Result<(), RevisionError> {
        if revision > self.revision {
            return Err(RevisionError::Future {
                revision: self.revision,
            });
        }
        if revision < self.compact_revision {
            return Err(RevisionError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        Ok(())
    }

    /// Reads `range` now or at `opts.revision`.
    pub fn range(
        &self,
        range: &KeyRange,
        opts: &RangeOptions,
    ) -> Result<RangeResult, RevisionError> {
        let at = match opts.revision {
            Some(r) if r > 0 => {
                self.check_revision(r)?;
                r
            }
            _ => self.revision,
        };
        let mut out = RangeResult {
            kvs: Vec::new(),
            more: false,
            count: 0,
        };
        let mut visit = |key: &String, chain: &Chain| {
            let Some(v) = version_at(chain, at) else {
                return;
            };
            if v.value.is_none() {
                return;
            }
            out.count += 1;
            if opts.count_only {
                return;
            }
            if opts.limit > 0 && out.kvs.len() as u64 >= opts.limit {
                out.more = true;
                return;
            }
            out.kvs.push(key_value(key, v, opts.keys_only));
        };
        match range {
            KeyRange::Key(k) => {
                if let Some(chain) = self.keys.get(k) {
                    visit(k, chain);
                }
            }
            _ => {
                for (k, chain) in self.keys.range(range.start().to_string()..) {
                    if range.past_end(k) {
                        break;
                    }
                    visit(k, chain);
                }
            }
        }
        Ok(out)
    }

    /// The keys of `range` that are live now, in key order.
    pub fn live_keys(&self, range: &KeyRange) -> Vec<String> {
        let opts = RangeOptions {
            keys_only: true,
            ..RangeOptions::default()
        };
        match self.range(range, &opts) {
            Ok(r) => r.kvs.into_iter().map(|kv| kv.key).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Puts `value` under `key`, attached to `lease` (0: none), at the revision of the write in
    /// progress. Returns the lease the key was attached to before (0: none or absent) and the
    /// event. A key changes at most once per write: the caller refuses writes that would change
    /// one twice.
    pub fn put(&mut self, key: &str, value: String, lease: u64) -> (u64, Event) {
        let rev = self.write_revision();
        let chain = self.keys.entry(key.to_string()).or_default();
        let (create_revision, version, prev_lease, was_live) = match chain.last() {
            Some(v) if v.value.is_some() => (v.create_revision, v.version + 1, v.lease, true),
            _ => (rev, 1, 0, false),
        };
        debug_assert!(chain.last().is_none_or(|v| v.mod_revision < rev));
        let shared: std::sync::Arc<str> = std::sync::Arc::from(value.as_str());
        let event = Event {
            kind: EventKind::Put,
            key: key.to_string(),
            value: Some(value),
            mod_revision: rev,
            create_revision,
            version,
            lease,
        };
        chain.push(Version {
            mod_revision: rev,
            create_revision,
            version,
            value: Some(shared),
            lease,
        });
        if !was_live {
            self.live += 1;
        }
        self.record_change(rev, key);
        self.writing = true;
        (prev_lease, event)
    }

    /// Deletes `key` at the revision of the write in progress. Returns the lease it was
    /// attached to and the event, or None if it was not live.
    pub fn delete(&mut self, key: &str) -> Option<(u64, Event)> {
        let rev = self.write_revision();
        let chain = self.keys.get_mut(key)?;
        let last = chain.last()?;
        last.value.as_ref()?;
        let lease = last.lease;
        chain.push(Version {
            mod_revision: rev,
            create_revision: 0,
            version: 0,
            value: None,
            lease: 0,
        });
        self.live -= 1;
        self.record_change(rev, key);
        self.writing = true;
        Some((
            lease,
            Event {
                kind: EventKind::Delete,
                key: key.to_string(),
                value: None,
                mod_revision: rev,
                create_revision: 0,
                version: 0,
                lease: 0,
            },
        ))
    }

    /// Ends a write: if it changed anything, the store revision advances to it. Returns the
    /// store revision after the write.
    pub fn finish_write(&mut self) -> u64 {
        if self.writing {
            self.revision += 1;
            self.writing = false;
            let rev = self.revision;
            if let Some(keys) = self.changed_at_mut(rev) {
                keys.sort_unstable();
            }
        }
        self.revision
    }

    /// Every change of `range` from `from` (inclusive) on, in revision order (by key within a
    /// revision), at most `max` of them (0: all). `from` must not be compacted.
    pub fn events_since(
        &self,
        range: &KeyRange,
        from: u64,
        max: usize,
    ) -> Result<Vec<Event>, RevisionError> {
        if from < self.compact_revision {
            return Err(RevisionError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut out = Vec::new();
        let first = from.max(self.changes_base);
        let skip = usize::try_from(first - self.changes_base).unwrap_or(usize::MAX);
        if skip >= self.changes.len() {
            return Ok(out);
        }
        for (rev, keys) in (first..).zip(self.changes.skip(skip).iter()) {
            for key in keys {
                if !range.contains(key) {
                    continue;
                }
                if let Some(v) = self.keys.get(key).and_then(|c| version_exact(c, rev)) {
                    out.push(event_of(key, v));
                }
            }
            if max > 0 && out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Forgets history before `revision`: reads at revisions before it, and watches from
    /// before it, get `Compacted` from now on. Every key keeps the version it had at
    /// `revision`.
    pub fn compact(&mut self, revision: u64) -> Result<(), RevisionError> {
        if revision > self.revision {
            return Err(RevisionError::Future {
                revision: self.revision,
            });
        }
        if revision <= self.compact_revision {
            return Err(RevisionError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        // Revisions before `revision` leave the index; `revision` itself stays (its keys are
        // what a read at it sees).
        let cut = usize::try_from(revision.saturating_sub(self.changes_base))
            .unwrap_or(usize::MAX)
            .min(self.changes.len());
        let kept = self.changes.split_off(cut);
        let old = std::mem::replace(&mut self.changes, kept);
        self.changes_base = changes_base(revision);
        for keys in old {
            for key in keys {
                let Some(chain) = self.keys.get_mut(&key) else {
                    continue;
                };
                // Keep the versions from `revision` on, and the newest one before it (the
                // key's state at `revision`) unless that is a tombstone.
                let keep_from = chain.partition_point(|v| v.mod_revision < revision);
                let written_at_revision = chain
                    .get(keep_from)
                    .is_some_and(|v| v.mod_revision == revision);
                let base = keep_from.saturating_sub(1);
                let base_is_tombstone = keep_from > 0 && chain[base].value.is_none();
                let cut = if written_at_revision || base_is_tombstone {
                    keep_from
                } else {
                    base
                };
                if cut > 0 {
                    chain.drain(..cut);
                    if chain.len() <= 1 {
                        chain.shrink_to_fit(); // back inline
                    }
                }
                if chain.is_empty() {
                    self.keys.remove(&key);
                }
            }
        }
        self.compact_revision = revision;
        Ok(())
    }
}

/// The newest version of `chain` written at or before `rev`.
fn version_at(chain: &[Version], rev: u64) -> Option<&Version> {
    let n = chain.partition_point(|v| v.mod_revision <= rev);
    n.checked_sub(1).map(|i| &chain[i])
}

/// The version of `chain` written exactly at `rev`.
fn version_exact(chain: &[Version], rev: u64) -> Option<&Version> {
    version_at(chain, rev).filter(|v| v.mod_revision == rev)
}

fn key_value(key: &str, v: &Version, keys_only: bool) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: if keys_only {
            None
        } else {
            v.value.as_deref().map(str::to_string)
        },
        mod_revision: v.mod_revision,
        create_revision: v.create_revision,
        version: v.version,
        lease: v.lease,
    }
}

fn event_of(key: &str, v: &Version) -> Event {
    Event {
        kind: if v.value.is_some() {
            EventKind::Put
        } else {
            EventKind::Delete
        },
        key: key.to_string(),
        value: v.value.as_deref().map(str::to_string),
        mod_revision: v.mod_revision,
        create_revision: v.create_revision,
        version: v.version,
        lease: v.lease,
    }
}

#[cfg(test)]
#[path = "mvcc_tests.rs"]
mod tests;
