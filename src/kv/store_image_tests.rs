//! The binary store image: what goes in comes out, the JSON of earlier versions still loads,
//! and no damaged image panics or loads as a store it is not.

use super::super::KvStore;
use super::*;
use crate::kv::command::{Command, Op};
use crate::rpc::types::Entry;

/// A store with a bit of everything an image carries: keys with history and tombstones, a
/// compaction, leases with keys, client sessions, and non-ASCII keys and values.
fn rich_store() -> KvStore {
    let mut store = KvStore::new(16);
    let mut apply = |client: Option<&str>, seq: u64, op: Op| {
        let cmd = Command {
            client_id: client.map(str::to_string),
            seq,
            op,
            at_ms: 1_000 + seq,
        };
        let index = store.applied() + 1;
        store.apply(&Entry::command(1, index, cmd.encode().expect("encode")));
    };
    apply(None, 0, Op::LeaseGrant { ttl: 30 });
    for i in 0..40u64 {
        apply(
            Some("client-a"),
            i + 1,
            Op::Put {
                key: format!("k{:02}", i % 13),
                value: format!("value {i} ✓ \"quoted\" \n"),
                lease: if i % 5 == 0 { 1 } else { 0 },
            },
        );
    }
    apply(Some("client-b"), 1, Op::Delete { key: "k03".into() });
    apply(None, 0, Op::Compact { revision: 20 });
    apply(Some("client-b"), 2, Op::Delete { key: "k04".into() });
    apply(
        None,
        0,
        Op::Put {
            key: "ключ/é".into(),
            value: String::new(),
            lease: 0,
        },
    );
    store
}

#[test]
fn an_image_reads_back_as_the_same_store_and_encodes_the_same_again() {
    let store = rich_store();
    assert!(
        store.mvcc().versions() > store.len(),
        "some history is kept"
    );
    assert!(!store.sessions().is_empty());
    let bytes = store.to_snapshot_bytes(0).expect("encode");
    assert!(bytes.starts_with(MAGIC));
    let back = KvStore::from_snapshot_bytes(&bytes).expect("decode");
    assert_eq!(back, store);
    assert_eq!(back.state_hash(), store.state_hash());
    assert_eq!(
        back.mvcc().compact_revision(),
        store.mvcc().compact_revision()
    );
    assert_eq!(back.to_snapshot_bytes(0).expect("encode"), bytes);
    // The streamed form is the same bytes.
    let mut streamed = Vec::new();
    store.write_snapshot(&mut streamed).expect("stream");
    assert_eq!(streamed, bytes);
}

#[test]
fn an_empty_store_has_an_image_too() {
    let store = KvStore::new(4);
    let back = KvStore::from_snapshot_bytes(&store.to_snapshot_bytes(0).unwrap()).unwrap();
    assert_eq!(back, store);
}

#[test]
fn the_json_image_of_earlier_versions_still_loads() {
    let store = rich_store();
    let json = store.to_json_image().expect("json");
    assert_eq!(json.first(), Some(&b'{'));
    let back = KvStore::from_snapshot_bytes(&json).expect("decode json");
    assert_eq!(back, store);
}

#[test]
fn an_image_cut_anywhere_is_refused() {
    let bytes = rich_store().to_snapshot_bytes(0).unwrap();
    for len in 0..bytes.len() {
        assert!(
            KvStore::from_snapshot_bytes(&bytes[..len]).is_err(),
            "an image cut to {len} of {} bytes loaded",
            bytes.len()
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let err = KvStore::from_snapshot_bytes(&longer).unwrap_err();
    assert!(err.to_string().contains("follow the end"), "{err}");
}

#[test]
fn damaged_bytes_give_an_error_or_a_valid_store_never_a_panic() {
    let store = rich_store();
    let bytes = store.to_snapshot_bytes(0).unwrap();
    let mut errors = 0;
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            match KvStore::from_snapshot_bytes(&bad) {
                Err(_) => errors += 1,
                // A changed value byte can still be a valid store (the file's CRC is what
                // catches that); whatever loads must still hold together.
                Ok(other) => {
                    let _ = other.state_hash();
                    let _ = other.to_snapshot_bytes(0).unwrap();
                }
            }
        }
    }
    assert!(errors > bytes.len(), "most damage is caught: {errors}");
}

/// An image built by hand from a head and the keys' records.
fn image(keys: u64, records: &[u8]) -> Vec<u8> {
    let head = serde_json::json!({
        "applied": 3, "revision": 3, "compact_revision": 0, "keys": keys,
        "leases": Leases::default(), "sessions": Sessions::new(crate::kv::SessionLimits::with_max_sessions(4)),
        "membership": Membership::default(),
    });
    let head = serde_json::to_vec(&head).unwrap();
    let mut out = MAGIC.to_vec();
    crate::varint::put(&mut out, head.len() as u64);
    out.extend_from_slice(&head);
    out.extend_from_slice(records);
    out.extend_from_slice(END);
    out
}

/// One key's record: `versions` as (mod_revision, value).
fn record(key: &str, versions: &[(u64, Option<&str>)]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::varint::put(&mut out, key.len() as u64);
    out.extend_from_slice(key.as_bytes());
    crate::varint::put(&mut out, versions.len() as u64);
    for (rev, value) in versions {
        for n in [*rev, *rev, 1, 0] {
            crate::varint::put(&mut out, n);
        }
        match value {
            None => crate::varint::put(&mut out, 0),
            Some(v) => {
                crate::varint::put(&mut out, v.len() as u64 + 1);
                out.extend_from_slice(v.as_bytes());
            }
        }
    }
    out
}

#[test]
fn images_that_break_the_stores_rules_are_refused() {
    let ok = [
        record("a", &[(1, Some("x"))]),
        record("b", &[(2, Some("y")), (3, None)]),
    ]
    .concat();
    let store = KvStore::from_snapshot_bytes(&image(2, &ok)).expect("a valid image");
    assert_eq!(store.get("a"), Some("x"));
    assert_eq!(store.get("b"), None);
    assert_eq!(store.len(), 1);

    let cases: [(&str, Vec<u8>, u64); 6] = [
        (
            "not after",
            [
                record("b", &[(1, Some("x"))]),
                record("a", &[(2, Some("y"))]),
            ]
            .concat(),
            2,
        ),
        (
            "not after",
            [
                record("a", &[(1, Some("x"))]),
                record("a", &[(2, Some("y"))]),
            ]
            .concat(),
            2,
        ),
        ("no versions", record("a", &[]), 1),
        (
            "out of order",
            record("a", &[(2, Some("x")), (1, Some("y"))]),
            1,
        ),
        ("out of order", record("a", &[(9, Some("x"))]), 1),
        ("ends early", record("a", &[(1, Some("x"))]), 2),
    ];
    for (why, records, keys) in cases {
        let err = KvStore::from_snapshot_bytes(&image(keys, &records)).unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    let mut not_utf8 = record("a", &[(1, Some("x"))]);
    let last = not_utf8.len() - 1;
    not_utf8[last] = 0xff;
    let err = KvStore::from_snapshot_bytes(&image(1, &not_utf8)).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}
