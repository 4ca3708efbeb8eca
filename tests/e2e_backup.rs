//! End to end: backups on real processes, as docs/OPERATIONS.md ("Backups") tells an operator
//! to take and restore them.
//!
//! - `raftctl snapshot save` while clients keep writing: the file holds every write that was
//!   acknowledged before the save began (the leader takes the copy after a ReadIndex round),
//!   and nothing that was never written.
//! - `raftctl snapshot status` reads it back; a damaged copy is refused by it and by restore.
//! - `raftd restore` into the data dirs of a fresh 3-node cluster (other ports, so other
//!   members): it elects a leader, holds exactly the backup's keys at the backup's revision,
//!   lists only its own members, and takes new writes.
//! - The protocol itself: a follower answers `NotLeader`; the leader streams a header, chunks
//!   at consecutive offsets and a `SnapshotDone` whose size and CRC match what came.

use raftd::client::{store::RangeRequest, Client, ClientOptions};
use raftd::kv::KvStore;
use raftd_testkit::process::{self, raftctl, wait_for, Cluster, RawConn};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TEN_S: Duration = Duration::from_secs(10);
const WRITERS: usize = 4;

fn client(nodes: Vec<SocketAddr>) -> Client {
    Client::new(
        nodes,
        ClientOptions {
            deadline: TEN_S,
            ..ClientOptions::default()
        },
    )
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// `raftd restore FILE` as node 1 of a one-node cluster into `data_dir`.
fn restore_alone(file: &Path, data_dir: &Path) -> process::Run {
    process::run(
        &process::bin(),
        &[
            "restore",
            file.to_str().unwrap(),
            "--id",
            "1",
            "--peers",
            "1=127.0.0.1:1",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
    )
}

/// The store a backup file holds.
fn store_of(file: &Path) -> KvStore {
    let (_, data, _) = raftd::storage::read_snapshot_file(file)
        .expect("a good backup")
        .expect("the file exists");
    KvStore::from_snapshot_bytes(&data).expect("a store")
}

/// Every key under `k/` in the cluster, with its value, and the revision read.
async fn all_keys(c: &mut Client) -> (BTreeMap<String, String>, u64) {
    let r = c.range(&RangeRequest::prefix("k/")).await.expect("range");
    assert!(!r.more);
    let kvs = r
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value.unwrap_or_default()))
        .collect();
    (kvs, r.revision)
}

#[test]
fn a_backup_taken_under_load_restores_into_a_new_cluster_with_every_acknowledged_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let source = Cluster::start_with(3, &["--snapshot-entries", "2000"]);
    source.leader(TEN_S);
    let nodes = source.addrs();
    let rt = raftd_testkit::runtime();

    // Writers that keep going through the backup; each records what was acknowledged, in order.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (stop, acked, nodes) = (stop.clone(), acked.clone(), nodes.clone());
        writers.push(rt.spawn(async move {
            let mut c = client(nodes);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("k/{w}/{i:06}"), format!("v{i}-{}", "x".repeat(64)));
                c.put(&key, &value).await.expect("put");
                acked.lock().unwrap().insert(key, value);
                i += 1;
            }
            i
        }));
    }
    // Some history first, past a snapshot and compaction of the source's log.
    wait_for(Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 3000).then_some(())
    })
    .expect("3000 writes");
    let before = acked.lock().unwrap().clone();
    let saved = raftctl(
        &source.cluster_arg(),
        &["--json", "snapshot", "save", file.to_str().unwrap()],
    );
    assert_eq!(saved.code, 0, "{} {}", saved.stdout, saved.stderr);
    let saved = json_of(&saved.stdout);
    // Still writing during the save (it was under load).
    let during = acked.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += rt.block_on(w).unwrap();
    }
    assert!(during > before.len(), "the writers went on during the save");
    let all_acked = acked.lock().unwrap().clone();
    println!(
        "backup: {saved}; {} keys acked before the save, {during} by its end, {written} in all",
        before.len()
    );

    // The file: every key acknowledged before the save, and only keys that were written.
    let backup = store_of(&file);
    assert_eq!(backup.applied(), saved["index"].as_u64().unwrap());
    assert_eq!(backup.revision(), saved["revision"].as_u64().unwrap());
    assert_eq!(backup.len() as u64, saved["keys"].as_u64().unwrap());
    let in_backup: BTreeMap<String, String> = backup
        .mvcc()
        .live_pairs()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    for (k, v) in &before {
        assert_eq!(
            in_backup.get(k),
            Some(v),
            "{k} was acknowledged before the save"
        );
    }
    for (k, v) in &in_backup {
        // A write can be in the backup and its acknowledgement not yet recorded (the put was
        // in flight when the writers stopped), but never a key nobody wrote.
        let (w, i) = k[2..].split_once('/').expect("k/W/I");
        assert!(w.parse::<usize>().unwrap() < WRITERS, "{k}");
        assert!(
            v.starts_with(&format!("v{}-", i.parse::<u64>().unwrap())),
            "{k}={v}"
        );
    }
    assert!(in_backup.len() >= before.len() && in_backup.len() <= all_acked.len() + WRITERS);

    // `snapshot status` reads it back without a cluster.
    let status = raftctl(
        "127.0.0.1:1",
        &["--json", "snapshot", "status", file.to_str().unwrap()],
    );
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status = json_of(&status.stdout);
    assert_eq!(status["index"], saved["index"]);
    assert_eq!(status["keys"], saved["keys"]);
    assert_eq!(status["members"], json!([1, 2, 3]));

    // A damaged copy is refused, by status and by restore, and restore writes nothing.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let damaged = dir.path().join("damaged.snap");
    std::fs::write(&damaged, &bytes).unwrap();
    let r = raftctl(
        "127.0.0.1:1",
        &["snapshot", "status", damaged.to_str().unwrap()],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("checksum"), "{}", r.stderr);
    let target = dir.path().join("never");
    let r = restore_alone(&damaged, &target);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("checksum"), "{}", r.stderr);
    assert!(!target.exists());

    // A copy whose checksums are good but whose store image is cut short (as a bug, or a
    // file put together by hand, would give): the image's own checks refuse it, by status
    // and by restore, and restore writes nothing.
    let (meta, data, _) = raftd::storage::read_snapshot_file(&file)
        .expect("a good backup")
        .expect("the file exists");
    let cut = dir.path().join("cut.snap");
    let mut w = raftd::storage::SnapshotFileWriter::create(&cut).expect("create");
    w.write(&data[..data.len() / 2]).expect("write");
    w.finish(meta).expect("finish");
    let r = raftctl(
        "127.0.0.1:1",
        &["snapshot", "status", cut.to_str().unwrap()],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("store image ends early"), "{}", r.stderr);
    let r = restore_alone(&cut, &target);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("store image ends early"), "{}", r.stderr);
    assert!(!target.exists());
    drop(source);

    // A new cluster from the backup: three fresh data dirs, other ports.
    let restored = Cluster::start_prepared(3, &mut |id, data_dir, members| {
        let r = process::run(
            &process::bin(),
            &[
                "restore",
                file.to_str().unwrap(),
                "--id",
                &id.to_string(),
                "--peers",
                members,
                "--data-dir",
                data_dir.to_str().unwrap(),
            ],
        );
        assert_eq!(r.code, 0, "restore node {id}: {}", r.stderr);
        assert!(r.stdout.contains("restored node"), "{}", r.stdout);
    });
    restored.leader(TEN_S);
    let mut c = client(restored.addrs());
    let (kvs, revision) = rt.block_on(all_keys(&mut c));
    assert_eq!(
        revision,
        backup.revision(),
        "the restored store is at the backup's revision"
    );
    assert_eq!(kvs.len(), in_backup.len());
    assert!(
        kvs == in_backup,
        "the restored cluster holds exactly the backup's keys"
    );

    // Its members are its own, and it takes writes.
    let listed = raftctl(&restored.cluster_arg(), &["--json", "member", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let members = json_of(&listed.stdout)["members"]
        .as_array()
        .unwrap()
        .clone();
    let addrs: Vec<String> = restored.addrs().iter().map(|a| a.to_string()).collect();
    assert_eq!(members.len(), 3);
    for m in &members {
        assert_eq!(m["role"], "Voter");
        assert!(
            addrs.contains(&m["addr"].as_str().unwrap().to_string()),
            "{m}"
        );
    }
    rt.block_on(async {
        c.put("k/after-restore", "yes").await.expect("a write");
        let (kvs, rev) = all_keys(&mut c).await;
        assert_eq!(kvs.get("k/after-restore").map(String::as_str), Some("yes"));
        assert_eq!(rev, backup.revision() + 1);
    });
}

#[test]
fn the_snapshot_request_is_answered_by_the_leader_as_a_checked_stream() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let rt = raftd_testkit::runtime();
    let mut c = client(cluster.addrs());
    rt.block_on(async {
        for i in 0..300 {
            c.put(&format!("k/{i:04}"), &"v".repeat(2000))
                .await
                .unwrap();
        }
    });
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .unwrap()
        .addr();
    let mut conn = RawConn::connect(follower).v2();
    let answer = conn.call(&json!({"type": "Snapshot", "id": 1}));
    assert_eq!(answer["code"], "NotLeader", "{answer}");
    assert_eq!(answer["leader_id"], leader);

    let mut conn = RawConn::connect(cluster.nodes[leader as usize - 1].addr()).v2();
    let header = conn.call(&json!({"type": "Snapshot", "id": 9}));
    assert_eq!(header["type"], "SnapshotHeader", "{header}");
    assert_eq!(header["keys"], 300);
    let (mut data, mut chunks) = (Vec::new(), 0);
    let done = loop {
        let m = conn.recv("a backup chunk");
        assert_eq!(m["id"], 9, "{m}");
        match m["type"].as_str() {
            Some("SnapshotChunk") => {
                assert_eq!(m["offset"].as_u64(), Some(data.len() as u64));
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(m["data"].as_str().unwrap())
                    .unwrap();
                data.extend_from_slice(&bytes);
                chunks += 1;
            }
            Some("SnapshotDone") => break m,
            _ => panic!("unexpected {m}"),
        }
    };
    assert!(chunks >= 2, "600 KB of values come in more than one chunk");
    assert_eq!(done["size"].as_u64(), Some(data.len() as u64));
    assert_eq!(
        done["crc32"].as_u64(),
        Some(u64::from(crc32fast::hash(&data)))
    );
    let store = KvStore::from_snapshot_bytes(&data).unwrap();
    assert_eq!(store.applied(), header["index"].as_u64().unwrap());
    assert_eq!(store.len(), 300);
}
