//! The keyspace against a reference model: random writes, deletes, range deletes, compactions
//! and snapshot round trips, checked after every step by reading every kept revision.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// The reference: the whole store as of every revision, kept as plain maps.
#[derive(Default)]
struct Model {
    /// revision -> every live key -> (value, create, mod, version).
    states: Vec<BTreeMap<String, (String, u64, u64, u64)>>,
    compact: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![BTreeMap::new()],
            compact: 0,
        }
    }

    fn now(&self) -> &BTreeMap<String, (String, u64, u64, u64)> {
        self.states.last().unwrap()
    }

    fn revision(&self) -> u64 {
        self.states.len() as u64 - 1
    }

    /// Applies one write of several changes (None deletes); a write that changes nothing
    /// keeps the revision.
    fn write(&mut self, changes: &[(String, Option<String>)]) {
        let rev = self.revision() + 1;
        let mut next = self.now().clone();
        let mut changed = false;
        for (k, v) in changes {
            match v {
                Some(v) => {
                    let (create, version) = match next.get(k) {
                        Some((_, c, _, n)) => (*c, n + 1),
                        None => (rev, 1),
                    };
                    next.insert(k.clone(), (v.clone(), create, rev, version));
                    changed = true;
                }
                None => changed |= next.remove(k).is_some(),
            }
        }
        if changed {
            self.states.push(next);
        }
    }
}

fn key(rng: &mut StdRng) -> String {
    // A small keyspace with shared prefixes, so ranges and prefixes overlap often.
    let a = ["a", "ab", "abc", "b", "ba", "c"][rng.gen_range(0..6)];
    format!("{a}{}", rng.gen_range(0..4))
}

fn check(m: &Mvcc, model: &Model, rng: &mut StdRng) {
    assert_eq!(m.revision(), model.revision());
    assert_eq!(m.len(), model.now().len());
    let kvs = |state: &BTreeMap<String, (String, u64, u64, u64)>| -> Vec<KeyValue> {
        state
            .iter()
            .map(|(k, (v, c, md, n))| KeyValue {
                key: k.clone(),
                value: Some(v.clone()),
                mod_revision: *md,
                create_revision: *c,
                version: *n,
                lease: 0,
            })
            .collect()
    };
    let all = KeyRange::Prefix(String::new());
    let at = |rev: Option<u64>| {
        m.range(
            &all,
            &RangeOptions {
                revision: rev,
                ..RangeOptions::default()
            },
        )
    };
    assert_eq!(at(None).unwrap().kvs, kvs(model.now()), "now");
    for rev in model.compact.max(1)..=model.revision() {
        let res = at(Some(rev)).unwrap();
        assert_eq!(
            res.kvs,
            kvs(&model.states[rev as usize]),
            "at revision {rev}"
        );
        assert_eq!(res.count as usize, res.kvs.len());
    }
    if model.compact > 1 {
        assert_eq!(
            at(Some(model.compact - 1)),
            Err(RevisionError::Compacted {
                compact_revision: model.compact
            })
        );
    }
    assert_eq!(
        at(Some(model.revision() + 1)),
        Err(RevisionError::Future {
            revision: model.revision()
        })
    );
    // A random prefix with a limit, now.
    let p = key(rng)[..1].to_string();
    let limit = rng.gen_range(1..4);
    let res = m
        .range(
            &KeyRange::Prefix(p.clone()),
            &RangeOptions {
                limit,
                ..RangeOptions::default()
            },
        )
        .unwrap();
    let all: Vec<&String> = model.now().keys().filter(|k| k.starts_with(&p)).collect();
    assert_eq!(res.count as usize, all.len());
    assert_eq!(res.more, all.len() as u64 > limit);
    let got: Vec<&String> = res.kvs.iter().map(|kv| &kv.key).collect();
    assert_eq!(
        got,
        all.into_iter().take(limit as usize).collect::<Vec<_>>()
    );
    // The history from the compaction on replays to the model's states.
    let from = model.compact.max(1);
    if from <= model.revision() {
        let events = m
            .events_since(&KeyRange::Prefix(String::new()), from, 0)
            .unwrap();
        let mut state = model.states[from as usize - 1].clone();
        // Before `from` only the state at `from - 1` matters; it may be compacted, so start
        // from the model's.
        let mut last = (0, String::new());
        for e in &events {
            assert!((e.mod_revision, e.key.clone()) > last, "events in order");
            last = (e.mod_revision, e.key.clone());
            match e.kind {
                EventKind::Put => {
                    state.insert(
                        e.key.clone(),
                        (
                            e.value.clone().unwrap(),
                            e.create_revision,
                            e.mod_revision,
                            e.version,
                        ),
                    );
                }
                EventKind::Delete => {
                    assert!(state.remove(&e.key).is_some(), "a delete of a live key");
                }
            }
        }
        assert_eq!(&state, model.now(), "events replay to the current state");
    }
}

#[test]
fn the_keyspace_matches_a_reference_model() {
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut m = Mvcc::new();
        let mut model = Model::new();
        for step in 0..150 {
            match rng.gen_range(0..10) {
                0..=4 => {
                    // A write of one to three distinct keys.
                    let n = rng.gen_range(1..=3);
                    let mut changes: Vec<(String, Option<String>)> = Vec::new();
                    for _ in 0..n {
                        let k = key(&mut rng);
                        if changes.iter().any(|(c, _)| *c == k) {
                            continue;
                        }
                        let v = if rng.gen_bool(0.75) {
                            Some(format!("v{step}"))
                        } else {
                            None
                        };
                        changes.push((k, v));
                    }
                    for (k, v) in &changes {
                        match v {
                            Some(v) => {
                                m.put(k, v.clone(), 0);
                            }
                            None => {
                                m.delete(k);
                            }
                        }
                    }
                    m.finish_write();
                    model.write(&changes);
                }
                5 | 6 => {
                    // Delete a prefix.
                    let p = key(&mut rng)[..rng.gen_range(1..=2)].to_string();
                    let range = KeyRange::Prefix(p);
                    let keys = m.live_keys(&range);
                    for k in &keys {
                        m.delete(k);
                    }
                    m.finish_write();
                    let changes: Vec<_> = keys.into_iter().map(|k| (k, None)).collect();
                    model.write(&changes);
                }
                7 => {
                    let rev = rng.gen_range(0..=model.revision() + 1);
                    let got = m.compact(rev);
                    if rev > model.revision() {
                        assert!(matches!(got, Err(RevisionError::Future { .. })));
                    } else if rev <= model.compact {
                        assert!(matches!(got, Err(RevisionError::Compacted { .. })));
                    } else {
                        assert_eq!(got, Ok(()));
                        model.compact = rev;
                    }
                }
                8 => {
                    // Through a snapshot and back: the index is rebuilt from the chains.
                    let bytes = serde_json::to_vec(&m).unwrap();
                    let back: Mvcc = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(back, m, "seed {seed} step {step}");
                    m = back;
                }
                _ => {}
            }
            check(&m, &model, &mut rng);
        }
    }
}

#[test]
fn compaction_bounds_history() {
    let mut m = Mvcc::new();
    for i in 0..1000 {
        m.put("hot", format!("{i}"), 0);
        m.finish_write();
    }
    assert_eq!(m.versions(), 1000);
    m.compact(990).unwrap();
    assert_eq!(m.versions(), 11, "the version at 990 and the ten after it");
    m.delete("hot");
    m.finish_write();
    m.compact(m.revision()).unwrap();
    assert_eq!(
        m.versions(),
        1,
        "the delete stays while it is at the compaction revision (a watch may start there)"
    );
    m.put("other", "x".into(), 0);
    m.finish_write();
    m.compact(m.revision()).unwrap();
    assert_eq!(
        m.versions(),
        1,
        "a deleted key's tombstone goes with a later compaction"
    );
    assert_eq!(m.live_keys(&KeyRange::Prefix(String::new())), ["other"]);
}

#[test]
fn ranges_and_their_edges() {
    let mut m = Mvcc::new();
    for k in ["a", "a/1", "a/2", "a0", "b", "\u{e9}"] {
        m.put(k, k.to_uppercase(), 0);
    }
    m.finish_write();
    let keys = |r: KeyRange| -> Vec<String> { m.live_keys(&r) };
    assert_eq!(keys(KeyRange::Prefix("a/".into())), ["a/1", "a/2"]);
    assert_eq!(
        keys(KeyRange::Prefix("a".into())),
        ["a", "a/1", "a/2", "a0"]
    );
    assert_eq!(
        keys(KeyRange::from_fields("a/".into(), Some("a0".into()), false).unwrap()),
        ["a/1", "a/2"]
    );
    assert_eq!(
        keys(KeyRange::from_fields("b".into(), Some("\0".into()), false).unwrap()),
        ["b", "\u{e9}"]
    );
    assert_eq!(keys(KeyRange::Prefix(String::new())).len(), 6);
    assert!(KeyRange::from_fields("b".into(), Some("a".into()), false).is_err());
    assert!(KeyRange::from_fields("a".into(), Some("b".into()), true).is_err());
    assert!(KeyRange::from_fields(String::new(), None, false).is_err());
    let r = m
        .range(
            &KeyRange::Prefix("a".into()),
            &RangeOptions {
                count_only: true,
                ..RangeOptions::default()
            },
        )
        .unwrap();
    assert_eq!((r.count, r.kvs.len()), (4, 0));
    let r = m
        .range(
            &KeyRange::Key("a".into()),
            &RangeOptions {
                keys_only: true,
                ..RangeOptions::default()
            },
        )
        .unwrap();
    assert_eq!(r.kvs[0].value, None);
    assert!(KeyRange::Prefix("a".into()).overlaps(&KeyRange::Key("a/1".into())));
    assert!(KeyRange::Prefix("a".into()).overlaps(&KeyRange::Prefix("a/".into())));
    assert!(!KeyRange::Prefix("a/".into()).overlaps(&KeyRange::Prefix("b".into())));
}

#[test]
fn a_store_from_before_revisions_converts_the_same_everywhere() {
    let a = Mvcc::from_plain([("x".to_string(), "1".to_string()), ("y".into(), "2".into())]);
    let b = Mvcc::from_plain([("x".to_string(), "1".to_string()), ("y".into(), "2".into())]);
    assert_eq!(a, b);
    assert_eq!(a.revision(), 1);
    assert_eq!(a.get("y").unwrap().create_revision, 1);
}

/// Resident memory of this process, in bytes (Linux).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// What one key costs: 200,000 keys of 256-byte values, each written once while the history
/// is compacted to the last 10,000 revisions as the leader does; then each overwritten once
/// more with no compaction, which is what a version of history costs. Run by hand:
/// `cargo test --release --lib mvcc::tests::memory_per_key -- --ignored --nocapture`.
#[test]
#[ignore]
fn memory_per_key() {
    const KEYS: usize = 200_000;
    const KEEP: u64 = 10_000;
    let value = "v".repeat(256);
    let before = rss_bytes();
    let mut m = Mvcc::new();
    for i in 0..KEYS {
        m.put(&format!("bench/{i:07}"), value.clone(), 0);
        let rev = m.finish_write();
        if rev.is_multiple_of(KEEP / 10) && rev > KEEP {
            m.compact(rev - KEEP).unwrap();
        }
    }
    let live = rss_bytes();
    m.compact(m.revision()).unwrap();
    for i in 0..KEYS {
        m.put(&format!("bench/{i:07}"), value.clone(), 0);
        m.finish_write();
    }
    let history = rss_bytes();
    let per = |a: usize, b: usize| (b.saturating_sub(a)) as f64 / KEYS as f64;
    eprintln!(
        "per key (13-byte key, 256-byte value): {:.0} bytes with history compacted; +{:.0} bytes per version of history",
        per(before, live),
        per(live, history),
    );
}

/// The same keys in the plain map of the store before revisions, for comparison (run on its
/// own: memory freed by one measurement is reused by the next).
#[test]
#[ignore]
fn memory_per_key_plain_map() {
    const KEYS: usize = 200_000;
    let value = "v".repeat(256);
    let before = rss_bytes();
    let mut plain: imbl::OrdMap<String, String> = imbl::OrdMap::new();
    for i in 0..KEYS {
        plain.insert(format!("bench/{i:07}"), value.clone());
    }
    eprintln!(
        "per key in a plain map (13-byte key, 256-byte value): {:.0} bytes",
        rss_bytes().saturating_sub(before) as f64 / KEYS as f64
    );
    assert_eq!(plain.len(), KEYS);
}

/// What building a map of sorted keys with full leaves (`ordmap_from_sorted`, as a snapshot
/// loads) saves over inserting them in order: the map's nodes and keys per key, both built
/// from the same chains (values shared). Run by hand:
/// `cargo test --release --lib mvcc::tests::memory_of_a_loaded_map -- --ignored --nocapture`.
#[test]
#[ignore]
fn memory_of_a_loaded_map() {
    const KEYS: usize = 200_000;
    let value: std::sync::Arc<str> = std::sync::Arc::from("v".repeat(256).as_str());
    let items: Vec<(String, super::Chain)> = (0..KEYS)
        .map(|i| {
            let mut chain = super::Chain::new();
            chain.push(super::Version {
                mod_revision: i as u64 + 1,
                create_revision: i as u64 + 1,
                version: 1,
                value: Some(value.clone()),
                lease: 0,
            });
            (format!("bench/{i:07}"), chain)
        })
        .collect();
    let before = rss_bytes();
    let full = super::ordmap_from_sorted(items.clone());
    let mid = rss_bytes();
    let mut in_order = imbl::OrdMap::new();
    for (k, c) in items.clone() {
        in_order.insert(k, c);
    }
    let after = rss_bytes();
    assert_eq!(full, in_order);
    let per = |a: usize, b: usize| (b.saturating_sub(a)) as f64 / KEYS as f64;
    eprintln!(
        "map nodes and keys per key: {:.0} bytes built with full leaves, {:.0} inserted in order",
        per(before, mid),
        per(mid, after),
    );
}

#[test]
fn a_map_built_from_sorted_items_is_the_same_map() {
    for n in [0usize, 1, 2, 3, 16, 17, 33, 1000, 4097] {
        let items: Vec<(u32, u32)> = (0..n as u32).map(|i| (i * 3, i)).collect();
        let map = super::ordmap_from_sorted(items.clone());
        assert_eq!(map.len(), n);
        assert!(map.iter().map(|(k, v)| (*k, *v)).eq(items.into_iter()));
    }
}
