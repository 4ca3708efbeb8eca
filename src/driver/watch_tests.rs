//! The watch hub against the store's own history: whatever the start revision and range, and
//! whether the watch is set up before, during or after the writes, the events it is sent equal
//! the store's history over its range from its start, in order, each once.

use super::*;
use crate::kv::mvcc::EventKind;
use crate::kv::Op;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn apply(store: &mut KvStore, op: Op) {
    store.apply_op(op);
}

fn put(k: &str, v: &str) -> Op {
    Op::Put {
        key: k.into(),
        value: v.into(),
        lease: 0,
    }
}

/// Delivers what the store applied since the last call, as the driver does after each Ready.
fn deliver(hub: &mut WatchHub<u32>, store: &mut KvStore, out: &mut Output<u32>) {
    let events = store.take_events();
    hub.deliver(&events, store.revision(), &mut out.watch_events);
}

/// Every event each watch (by connection) was sent, in the order sent.
fn events_of(out: &Output<u32>, conn: u32) -> Vec<Event> {
    out.watch_events
        .iter()
        .filter(|(c, _)| *c == conn)
        .flat_map(|(_, r)| match r {
            ClientResponse::Events { events, .. } => events.to_vec(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn every_watch_sees_its_ranges_history_once_in_order() {
    for seed in 0..30u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = KvStore::default();
        let mut hub: WatchHub<u32> = WatchHub::new(100);
        let mut out = Output::default();
        // (connection, range, start) of each watch set up.
        let mut watches: Vec<(u32, KeyRange, u64)> = Vec::new();
        let keys = ["a", "a/1", "a/2", "b", "b/1", "c"];
        for step in 0..200 {
            match rng.gen_range(0..10) {
                0 => {
                    // A new watch, from the past, from now or from the future.
                    let conn = watches.len() as u32 + 1;
                    let range = match rng.gen_range(0..3) {
                        0 => KeyRange::Key(keys[rng.gen_range(0..keys.len())].into()),
                        1 => KeyRange::Prefix(["a", "b/", ""][rng.gen_range(0..3)].into()),
                        _ => KeyRange::Span {
                            start: "a/".into(),
                            end: Some("b/".into()),
                        },
                    };
                    let rev = store.revision();
                    let start = match rng.gen_range(0..3) {
                        0 => None,
                        1 => Some(rng.gen_range(1..=rev + 1)),
                        _ => Some(rev + rng.gen_range(1..4)),
                    };
                    hub.watch(&mut store, 7, range.clone(), start, conn, &mut out);
                    let from = start.unwrap_or(rev + 1).max(1);
                    watches.push((conn, range, from));
                }
                1 => {
                    let k = keys[rng.gen_range(0..keys.len())];
                    apply(&mut store, Op::Delete { key: k.into() });
                }
                2 => apply(
                    &mut store,
                    Op::DeleteRange {
                        key: "a".into(),
                        end: None,
                        prefix: true,
                    },
                ),
                _ => {
                    let k = keys[rng.gen_range(0..keys.len())];
                    apply(&mut store, put(k, &format!("v{step}")));
                }
            }
            // Deliver after some applies only: one Ready may hold many entries.
            if rng.gen_bool(0.5) {
                deliver(&mut hub, &mut store, &mut out);
            }
        }
        deliver(&mut hub, &mut store, &mut out);
        for (conn, range, from) in &watches {
            let want = store.mvcc().events_since(range, *from, 0).unwrap();
            assert_eq!(
                &events_of(&out, *conn),
                &want,
                "seed {seed}, watch of {range:?} from {from}"
            );
        }
    }
}

#[test]
fn a_compacted_start_is_refused_and_a_restored_store_catches_watches_up() {
    let mut store = KvStore::default();
    for i in 0..10 {
        apply(&mut store, put("k", &i.to_string()));
    }
    apply(&mut store, Op::Compact { revision: 5 });
    let mut hub: WatchHub<u32> = WatchHub::new(100);
    let mut out = Output::default();
    hub.watch(
        &mut store,
        1,
        KeyRange::Key("k".into()),
        Some(4),
        1,
        &mut out,
    );
    assert!(matches!(
        &out.answers[0].1,
        ClientResponse::Error(e) if e.code == ErrorCode::Compacted && e.compact_revision == Some(5)
    ));
    assert!(hub.is_empty());

    // A watch at revision 10; the leader's snapshot at revision 13 replaces the store.
    hub.watch(&mut store, 2, KeyRange::Key("k".into()), None, 2, &mut out);
    hub.watch(&mut store, 3, KeyRange::Key("k".into()), None, 3, &mut out);
    let mut leader = store.clone();
    for i in 10..13 {
        apply(&mut leader, put("k", &i.to_string()));
    }
    let mut restored = leader.clone();
    hub.restored(&mut restored, &mut out.watch_events);
    let got = events_of(&out, 2);
    assert_eq!(
        got.iter().map(|e| e.mod_revision).collect::<Vec<_>>(),
        [11, 12, 13]
    );
    // Events applied after the restore reach the watch: recording was switched on.
    apply(&mut restored, put("k", "after"));
    deliver(&mut hub, &mut restored, &mut out);
    assert_eq!(events_of(&out, 2).last().unwrap().mod_revision, 14);

    // A snapshot whose history was compacted past a watch's position ends it.
    let mut far = restored.clone();
    for i in 0..5 {
        apply(&mut far, put("k", &format!("far{i}")));
    }
    apply(&mut far, Op::Compact { revision: 19 });
    let mut behind: WatchHub<u32> = WatchHub::new(100);
    let mut out2 = Output::default();
    behind.watch(
        &mut restored,
        9,
        KeyRange::Key("k".into()),
        None,
        9,
        &mut out2,
    );
    behind.restored(&mut far, &mut out2.watch_events);
    assert!(matches!(
        &out2.watch_events.last().unwrap().1,
        ClientResponse::Error(e) if e.code == ErrorCode::Compacted
    ));
    assert!(behind.is_empty());
}

#[test]
fn progress_cancel_close_and_shutdown() {
    let mut store = KvStore::default();
    let mut hub: WatchHub<u32> = WatchHub::new(3);
    let mut out = Output::default();
    hub.watch(
        &mut store,
        1,
        KeyRange::Prefix("p".into()),
        None,
        1,
        &mut out,
    );
    hub.watch(
        &mut store,
        2,
        KeyRange::Prefix("p".into()),
        None,
        2,
        &mut out,
    );
    hub.watch(
        &mut store,
        2,
        KeyRange::Prefix("q".into()),
        None,
        2,
        &mut out,
    );
    assert!(
        matches!(&out.answers.last().unwrap().1, ClientResponse::Error(e) if e.code == ErrorCode::BadRequest),
        "a watch id in use on the connection is refused"
    );
    hub.watch(
        &mut store,
        3,
        KeyRange::Prefix("q".into()),
        None,
        2,
        &mut out,
    );
    assert_eq!(hub.len(), 3);
    for _ in 0..3 {
        hub.tick(0, &mut out.watch_events);
    }
    let progress = out
        .watch_events
        .iter()
        .filter(|(_, r)| matches!(r, ClientResponse::Events { events, .. } if events.is_empty()))
        .count();
    assert_eq!(progress, 3, "one progress notification per idle watch");

    assert!(hub.cancel(&mut store, 2, 3));
    assert!(!hub.cancel(&mut store, 2, 3), "cancelled once");
    hub.connection_closed(&mut store, 2);
    assert_eq!(hub.len(), 1);
    apply(&mut store, put("p1", "x"));
    deliver(&mut hub, &mut store, &mut out);
    assert_eq!(events_of(&out, 1).len(), 1);
    assert_eq!(events_of(&out, 1)[0].kind, EventKind::Put);
    assert!(
        events_of(&out, 2).is_empty(),
        "closed connections get nothing"
    );

    let slow = hub.cancel_slow(&mut store, 1, 1).unwrap();
    assert!(matches!(slow.1, ClientResponse::Error(e) if e.code == ErrorCode::WatchCancelled));
    assert!(hub.is_empty());
    apply(&mut store, put("p2", "y"));
    assert!(store.take_events().is_empty(), "no watch, nothing recorded");

    hub.watch(
        &mut store,
        5,
        KeyRange::Prefix("p".into()),
        None,
        4,
        &mut out,
    );
    let mut end = Vec::new();
    hub.shutdown(&mut end);
    assert!(matches!(&end[0].1, ClientResponse::Error(e) if e.code == ErrorCode::WatchCancelled));
}
