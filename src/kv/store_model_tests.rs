//! The whole state machine against a reference model: random puts (with and without leases,
//! some naming leases that do not exist), deletes, range deletes, transactions, lease grants
//! and revocations and compactions, with the store sent through a snapshot and restored now
//! and then. After every step the keys, their versions, the leases and their keys, and the
//! revision must match the model's.

use super::*;
use crate::kv::txn::{CmpOp, Compare, CompareValue, Target, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Default)]
struct Model {
    /// key -> (value, version, lease)
    keys: BTreeMap<String, (String, u64, u64)>,
    leases: BTreeMap<u64, BTreeSet<String>>,
    next_lease: u64,
    revision: u64,
}

impl Model {
    fn put(&mut self, k: &str, v: &str, lease: u64) {
        let version = self.keys.get(k).map_or(1, |(_, n, _)| n + 1);
        if let Some((_, _, old)) = self.keys.get(k) {
            if let Some(set) = self.leases.get_mut(old) {
                set.remove(k);
            }
        }
        if lease != 0 {
            self.leases.entry(lease).or_default().insert(k.to_string());
        }
        self.keys
            .insert(k.to_string(), (v.to_string(), version, lease));
    }

    fn delete(&mut self, k: &str) -> bool {
        match self.keys.remove(k) {
            Some((_, _, lease)) => {
                if let Some(set) = self.leases.get_mut(&lease) {
                    set.remove(k);
                }
                true
            }
            None => false,
        }
    }
}

fn apply(store: &mut KvStore, op: Op) -> Outcome {
    store.apply_op(op).expect("a command has an outcome")
}

fn check(store: &KvStore, model: &Model, what: &str) {
    assert_eq!(store.revision(), model.revision, "{what}: revision");
    let got: BTreeMap<String, (String, u64, u64)> = store
        .mvcc()
        .range(&KeyRange::Prefix(String::new()), &Default::default())
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value.unwrap(), kv.version, kv.lease)))
        .collect();
    assert_eq!(got, model.keys, "{what}: keys");
    let leases: BTreeMap<u64, BTreeSet<String>> = store
        .leases()
        .ttls()
        .map(|(id, _)| {
            let keys = store
                .leases()
                .get(id)
                .unwrap()
                .keys
                .iter()
                .cloned()
                .collect();
            (id, keys)
        })
        .collect();
    assert_eq!(leases, model.leases, "{what}: leases");
}

#[test]
fn the_state_machine_matches_a_reference_model() {
    let keys = ["a", "a/1", "a/2", "b", "b/1"];
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = KvStore::default();
        let mut model = Model {
            next_lease: 1,
            ..Model::default()
        };
        for step in 0..200 {
            let k = keys[rng.gen_range(0..keys.len())];
            let v = format!("v{step}");
            let what = format!("seed {seed} step {step}");
            match rng.gen_range(0..12) {
                0..=3 => {
                    // Put, maybe with a lease (one that exists, or one that does not).
                    let lease = match rng.gen_range(0..3) {
                        0 => 0,
                        1 => model.leases.keys().next().copied().unwrap_or(0),
                        _ => model.next_lease + 5,
                    };
                    let out = apply(
                        &mut store,
                        Op::Put {
                            key: k.into(),
                            value: v.clone(),
                            lease,
                        },
                    );
                    if lease != 0 && !model.leases.contains_key(&lease) {
                        assert_eq!(
                            out,
                            Outcome::Refused(Refusal::LeaseNotFound { lease_id: lease }),
                            "{what}"
                        );
                    } else {
                        model.revision += 1;
                        model.put(k, &v, lease);
                        assert_eq!(
                            out,
                            Outcome::Written {
                                revision: model.revision
                            },
                            "{what}"
                        );
                    }
                }
                4 => {
                    let existed = model.delete(k);
                    model.revision += u64::from(existed);
                    let out = apply(&mut store, Op::Delete { key: k.into() });
                    assert_eq!(
                        out,
                        Outcome::Deleted {
                            deleted: u64::from(existed),
                            revision: model.revision
                        },
                        "{what}"
                    );
                }
                5 => {
                    let gone: Vec<String> = model
                        .keys
                        .keys()
                        .filter(|x| x.starts_with("a"))
                        .cloned()
                        .collect();
                    for g in &gone {
                        model.delete(g);
                    }
                    model.revision += u64::from(!gone.is_empty());
                    apply(
                        &mut store,
                        Op::DeleteRange {
                            key: "a".into(),
                            end: None,
                            prefix: true,
                        },
                    );
                }
                6 => {
                    let out = apply(&mut store, Op::LeaseGrant { ttl: 10 });
                    assert_eq!(
                        out,
                        Outcome::LeaseGranted {
                            lease_id: model.next_lease,
                            ttl: 10
                        },
                        "{what}"
                    );
                    model.leases.insert(model.next_lease, BTreeSet::new());
                    model.next_lease += 1;
                }
                7 => {
                    // Revoke a lease that exists (or one that does not).
                    let id = model.leases.keys().last().copied().unwrap_or(99);
                    let out = apply(
                        &mut store,
                        Op::LeaseRevoke {
                            lease_id: id,
                            expired: rng.gen(),
                        },
                    );
                    match model.leases.remove(&id) {
                        None => assert_eq!(
                            out,
                            Outcome::Refused(Refusal::LeaseNotFound { lease_id: id }),
                            "{what}"
                        ),
                        Some(held) => {
                            for h in &held {
                                model.keys.remove(h);
                            }
                            model.revision += u64::from(!held.is_empty());
                            assert_eq!(
                                out,
                                Outcome::Deleted {
                                    deleted: held.len() as u64,
                                    revision: model.revision
                                },
                                "{what}"
                            );
                        }
                    }
                }
                8 => {
                    // A transaction on the key's value: put on a match, read otherwise.
                    let want = format!("v{}", rng.gen_range(0..step.max(1)));
                    let matches = model.keys.get(k).is_some_and(|(val, _, _)| *val == want);
                    let txn = Txn {
                        compare: vec![Compare {
                            key: k.into(),
                            target: Target::Value,
                            op: CmpOp::Eq,
                            value: CompareValue::Str(want),
                        }],
                        success: vec![TxnOp::Put {
                            key: k.into(),
                            value: v.clone(),
                            lease: 0,
                        }],
                        failure: vec![TxnOp::Get { key: k.into() }],
                    };
                    let out = apply(&mut store, Op::Txn(txn));
                    if matches {
                        model.revision += 1;
                        model.put(k, &v, 0);
                    }
                    match out {
                        Outcome::Txn(t) => {
                            assert_eq!(t.succeeded, matches, "{what}");
                            assert_eq!(t.revision, model.revision, "{what}");
                        }
                        other => panic!("{what}: {other:?}"),
                    }
                }
                9 => {
                    let rev = rng.gen_range(0..=model.revision);
                    apply(&mut store, Op::Compact { revision: rev });
                }
                10 => {
                    // Through a snapshot and back, as a follower installs it.
                    let snap = store.to_snapshot(1, 0).unwrap();
                    store = KvStore::from_snapshot(&snap).unwrap();
                }
                _ => {}
            }
            check(&store, &model, &what);
        }
    }
}
