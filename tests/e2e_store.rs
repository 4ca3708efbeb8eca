//! End to end, protocol v2 on the store: revisions, ranges, transactions, compaction, watches
//! and leases, on three real `raftd` processes on 127.0.0.1, through raw frames, the library
//! `Client`, its `Watcher`, and `raftctl`.

use raftd_testkit::process;
use raftd_testkit::runtime;

use process::{wait_for, Cluster, RawConn};
use raftd::client::store::RangeRequest;
use raftd::client::{Client, ClientError, ClientOptions, WatchEvent, Watcher};
use raftd::kv::mvcc::EventKind;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TEN_S: Duration = Duration::from_secs(10);

fn opts() -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(20),
        attempt_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

/// Sends `req` on a v2 connection to the leader, following one leader change.
fn call(cluster: &Cluster, req: Value) -> Value {
    for _ in 0..3 {
        let leader = cluster.leader(TEN_S);
        let mut c = RawConn::connect(cluster.nodes[leader as usize - 1].addr()).v2();
        let r = c.call(&req);
        if r["code"] != "NotLeader" && r["code"] != "Timeout" {
            return r;
        }
    }
    panic!("no answer to {req} from a leader:\n{}", cluster.logs());
}

#[test]
fn revisions_ranges_transactions_and_compaction_over_the_wire() {
    let cluster = Cluster::start(3);
    let put =
        |id: u64, k: &str, v: &str| call(&cluster, json!({"type":"Put","id":id,"key":k,"value":v}));
    assert_eq!(
        put(1, "app/a", "1"),
        json!({"type":"Ok","id":1,"revision":1})
    );
    assert_eq!(
        put(2, "app/b", "2"),
        json!({"type":"Ok","id":2,"revision":2})
    );
    assert_eq!(
        put(3, "app/a", "3"),
        json!({"type":"Ok","id":3,"revision":3})
    );
    assert_eq!(
        put(4, "other", "x"),
        json!({"type":"Ok","id":4,"revision":4})
    );
    assert_eq!(
        call(&cluster, json!({"type":"Get","id":5,"key":"app/a"})),
        json!({"type":"Ok","id":5,"value":"3","revision":4,"mod_revision":3,"create_revision":1,"version":2})
    );
    assert_eq!(
        call(&cluster, json!({"type":"Get","id":6,"key":"nope"})),
        json!({"type":"Ok","id":6,"value":null,"revision":4})
    );
    // A prefix with a limit, keys only, a count, the past.
    let r = call(
        &cluster,
        json!({"type":"Range","id":7,"key":"app/","prefix":true,"limit":1}),
    );
    assert_eq!(r["count"], 2);
    assert_eq!(r["more"], true);
    assert_eq!(r["revision"], 4);
    assert_eq!(
        r["kvs"],
        json!([{"key":"app/a","value":"3","mod_revision":3,"create_revision":1,"version":2,"lease":0}])
    );
    let r = call(
        &cluster,
        json!({"type":"Range","id":8,"key":"app/","end":"app0","keys_only":true}),
    );
    assert_eq!(r["kvs"].as_array().unwrap().len(), 2);
    assert!(r["kvs"][0].get("value").is_none(), "keys only: {r}");
    let r = call(
        &cluster,
        json!({"type":"Range","id":9,"key":"","prefix":true,"count_only":true}),
    );
    assert_eq!(
        (r["count"].clone(), r["kvs"].clone()),
        (json!(3), json!([]))
    );
    let r = call(
        &cluster,
        json!({"type":"Range","id":10,"key":"app/a","revision":2}),
    );
    assert_eq!(r["kvs"][0]["value"], "1", "the past: {r}");
    let r = call(
        &cluster,
        json!({"type":"Range","id":11,"key":"app/a","revision":99}),
    );
    assert_eq!(r["code"], "BadRequest", "the future: {r}");
    // Any node answers a stale range from its own state.
    let r = RawConn::connect(cluster.nodes[0].addr())
        .v2()
        .call(&json!({"type":"Range","id":12,"key":"app/","prefix":true,"consistency":"stale"}));
    assert_eq!(r["type"], "Ok", "{r}");

    // A transaction: create-if-absent, atomically with a read; then the same again fails.
    let txn = |id: u64| {
        json!({"type":"Txn","id":id,
            "compare":[{"key":"lock","target":"create_revision","op":"==","value":0}],
            "success":[{"type":"Put","key":"lock","value":"me"},{"type":"Range","key":"app/","prefix":true,"count_only":true}],
            "failure":[{"type":"Get","key":"lock"}]})
    };
    let r = call(&cluster, txn(13));
    assert_eq!(r["succeeded"], true, "{r}");
    assert_eq!(r["revision"], 5);
    assert_eq!(r["responses"][0], json!({"type":"Put"}));
    assert_eq!(r["responses"][1]["count"], 2);
    let r = call(&cluster, txn(14));
    assert_eq!(r["succeeded"], false, "{r}");
    assert_eq!(
        r["revision"], 5,
        "a transaction that only reads changes no revision"
    );
    assert_eq!(r["responses"][0]["value"], "me");
    assert_eq!(r["responses"][0]["create_revision"], 5);
    // A retried transaction (the same client_id/seq, after a lost answer) is applied once and
    // answered with its first outcome.
    let once = |id: u64| {
        json!({"type":"Txn","id":id,"client_id":"retrier","seq":1,
            "compare":[{"key":"once","target":"version","op":"==","value":0}],
            "success":[{"type":"Put","key":"once","value":"first"}],
            "failure":[{"type":"Get","key":"once"}]})
    };
    let first = call(&cluster, once(30));
    assert_eq!(first["succeeded"], true, "{first}");
    let again = call(&cluster, once(31));
    assert_eq!(
        (again["succeeded"].clone(), again["revision"].clone()),
        (json!(true), first["revision"].clone()),
        "the retry gets the first outcome: {again}"
    );
    let r = call(&cluster, json!({"type":"Get","id":32,"key":"once"}));
    assert_eq!(r["version"], 1, "applied once: {r}");
    let base = first["revision"].as_u64().unwrap();

    // Refused before the log: too many ops, a key written twice, a mistyped compare.
    let many: Vec<Value> = (0..129)
        .map(|i| json!({"type":"Get","key":format!("k{i}")}))
        .collect();
    let r = call(&cluster, json!({"type":"Txn","id":15,"success":many}));
    assert_eq!(r["code"], "BadRequest", "{r}");
    let r = call(
        &cluster,
        json!({"type":"Txn","id":16,"success":[{"type":"Put","key":"app/a","value":"x"},{"type":"DeleteRange","key":"app/","prefix":true}]}),
    );
    assert_eq!(r["code"], "BadRequest", "{r}");
    let r = call(
        &cluster,
        json!({"type":"Txn","id":17,"compare":[{"key":"a","target":"version","op":"==","value":"1"}]}),
    );
    assert_eq!(r["code"], "BadRequest", "{r}");

    // DeleteRange, then compaction: the past before it is gone.
    let r = call(
        &cluster,
        json!({"type":"DeleteRange","id":18,"key":"app/","prefix":true}),
    );
    assert_eq!(
        (r["deleted"].clone(), r["revision"].clone()),
        (json!(2), json!(base + 1))
    );
    assert_eq!(
        call(&cluster, json!({"type":"Compact","id":19,"revision":5})),
        json!({"type":"Ok","id":19,"revision":base + 1})
    );
    let r = call(
        &cluster,
        json!({"type":"Range","id":20,"key":"app/a","revision":4}),
    );
    assert_eq!(
        (r["code"].clone(), r["compact_revision"].clone()),
        (json!("Compacted"), json!(5)),
        "{r}"
    );
    let r = call(
        &cluster,
        json!({"type":"Range","id":21,"key":"lock","revision":5}),
    );
    assert_eq!(r["kvs"][0]["value"], "me", "revision 5 itself is kept: {r}");
    let r = call(&cluster, json!({"type":"Compact","id":22,"revision":3}));
    assert_eq!(r["code"], "Compacted", "{r}");
    // Every node holds the same revision and the same keys (read stale from each).
    let revs: Vec<Value> = cluster
        .nodes
        .iter()
        .map(|n| {
            wait_for(TEN_S, || {
                let r = RawConn::connect(n.addr()).v2().call(
                    &json!({"type":"Range","id":1,"key":"","prefix":true,"consistency":"stale"}),
                );
                (r["revision"] == base + 1).then_some(r["kvs"].clone())
            })
            .expect("every node reaches the last revision")
        })
        .collect();
    assert!(revs.windows(2).all(|w| w[0] == w[1]), "{revs:?}");
}

/// A watch that its node drops (SIGKILL) resumes at another node from its last revision + 1:
/// the events it delivers are every acknowledged write of its prefix, once each, in revision
/// order, and nothing else.
#[test]
fn a_watch_resumes_on_another_node_and_misses_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    // Watch through a follower first, so the kill below does not also move the leadership.
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    let mut addrs: Vec<SocketAddr> = cluster.addrs();
    addrs.rotate_left(follower as usize - 1);
    let rt = runtime();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop, addrs) = (seen.clone(), stop.clone(), addrs.clone());
        rt.spawn(async move {
            let mut w = Watcher::new(addrs, opts(), "w/", None, true, Some(1)).unwrap();
            while !stop.load(Ordering::SeqCst) {
                match tokio::time::timeout(Duration::from_secs(1), w.next()).await {
                    Ok(Ok(WatchEvent::Change(e))) => seen.lock().unwrap().push(e),
                    Ok(Ok(WatchEvent::Progress(_))) | Err(_) => {}
                    Ok(Err(e)) => panic!("watch failed: {e}"),
                }
            }
        })
    };
    // Writers: acknowledged writes with their revisions.
    let acked: Arc<Mutex<BTreeMap<u64, (String, String)>>> = Arc::default();
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let (acked, addrs) = (acked.clone(), cluster.addrs());
            rt.spawn(async move {
                let mut c = Client::new(addrs, opts());
                for i in 0..150 {
                    let (k, v) = (format!("w/{t}/{}", i % 7), format!("{t}-{i}"));
                    let rev = c.put_with_lease(&k, &v, 0).await.expect("put");
                    // Unrelated keys the watch must not report.
                    c.put_with_lease(&format!("x/{t}"), &v, 0)
                        .await
                        .expect("put");
                    acked.lock().unwrap().insert(rev, (k, v));
                }
            })
        })
        .collect();
    // Kill the node serving the watch once it has seen some events, then bring it back.
    wait_for(TEN_S, || (seen.lock().unwrap().len() > 50).then_some(()))
        .expect("the watch sees events");
    cluster.node(follower).kill();
    std::thread::sleep(Duration::from_millis(300));
    cluster.node(follower).start();
    for w in writers {
        rt.block_on(w).expect("writer");
    }
    let want = acked.lock().unwrap().clone();
    let last = *want.keys().last().unwrap();
    wait_for(Duration::from_secs(20), || {
        (seen.lock().unwrap().last().map(|e| e.mod_revision) >= Some(last)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the watch caught up to revision {last}:\n{}",
            cluster.logs()
        )
    });
    stop.store(true, Ordering::SeqCst);
    rt.block_on(watcher).expect("watcher");
    let seen = seen.lock().unwrap().clone();
    let got: BTreeMap<u64, (String, String)> = seen
        .iter()
        .map(|e| {
            (
                e.mod_revision,
                (e.key.clone(), e.value.clone().unwrap_or_default()),
            )
        })
        .collect();
    assert_eq!(got.len(), seen.len(), "each revision once");
    assert!(
        seen.windows(2)
            .all(|w| w[0].mod_revision < w[1].mod_revision),
        "in revision order"
    );
    assert!(seen
        .iter()
        .all(|e| e.kind == EventKind::Put && e.key.starts_with("w/")));
    // Every write was acknowledged (the writers retried through the kill), so the events are
    // exactly the acknowledged writes.
    assert_eq!(got, want);
}

/// Leases: a key stays while its lease is kept alive through two leader kills; it goes once
/// the keep-alives stop (within ttl plus a leader change), never before the ttl has passed
/// since the last keep-alive was sent; a revoked lease deletes its keys at one revision.
#[test]
fn leases_survive_leader_kills_and_expire_once_left_alone() {
    const TTL: u64 = 3;
    let mut cluster = Cluster::start(3);
    cluster.leader(TEN_S);
    let rt = runtime();
    let mut c = Client::new(cluster.addrs(), opts());
    let (lease, ttl) = rt.block_on(c.lease_grant(TTL)).unwrap();
    assert_eq!(ttl, TTL);
    rt.block_on(c.put_with_lease("svc/a", "up", lease)).unwrap();
    // Keep it alive every second, recording when each successful keep-alive was sent.
    let last_sent = Arc::new(Mutex::new(Instant::now()));
    let stop = Arc::new(AtomicBool::new(false));
    let keeper = {
        let (last_sent, stop, addrs) = (last_sent.clone(), stop.clone(), cluster.addrs());
        rt.spawn(async move {
            let mut c = Client::new(addrs, opts());
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                c.lease_keep_alive(lease).await.expect("keep-alive");
                *last_sent.lock().unwrap() = sent;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    for _ in 0..2 {
        let leader = cluster.leader(TEN_S);
        cluster.node(leader).kill();
        let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
        cluster.leader_among(&others, TEN_S);
        // Longer than the ttl: only the keep-alives keep the key.
        std::thread::sleep(Duration::from_secs(TTL + 1));
        let (kv, _) = rt
            .block_on(c.get_kv("svc/a", raftd::rpc::types::Consistency::Linearizable))
            .unwrap();
        assert!(
            kv.is_some(),
            "the key stays while kept alive:\n{}",
            cluster.logs()
        );
        assert_eq!(kv.unwrap().lease, lease);
        cluster.node(leader).start();
    }
    stop.store(true, Ordering::SeqCst);
    rt.block_on(keeper).unwrap();
    let stopped = *last_sent.lock().unwrap();
    // Not before the ttl from the last keep-alive sent...
    let gone_at = wait_for(Duration::from_secs(TTL + 10), || {
        let (kv, _) = rt
            .block_on(c.get_kv("svc/a", raftd::rpc::types::Consistency::Linearizable))
            .ok()?;
        kv.is_none().then(Instant::now)
    })
    .unwrap_or_else(|| panic!("the key went once the lease expired:\n{}", cluster.logs()));
    assert!(
        gone_at >= stopped + Duration::from_secs(TTL),
        "expired {:?} after the last keep-alive, before its ttl of {TTL} s",
        gone_at - stopped
    );
    assert!(matches!(
        rt.block_on(c.lease_keep_alive(lease)),
        Err(ClientError::LeaseNotFound(_))
    ));

    // Revocation deletes every key of the lease at one revision.
    let (lease2, _) = rt.block_on(c.lease_grant(60)).unwrap();
    for k in ["r/1", "r/2", "r/3"] {
        rt.block_on(c.put_with_lease(k, "v", lease2)).unwrap();
    }
    let info = rt.block_on(c.lease_time_to_live(lease2)).unwrap();
    assert_eq!(info.keys, ["r/1", "r/2", "r/3"]);
    assert!(info.ttl <= 60 && info.ttl > 50, "{info:?}");
    let before = rt
        .block_on(c.range(&RangeRequest::prefix("r/")))
        .unwrap()
        .revision;
    assert_eq!(rt.block_on(c.lease_revoke(lease2)).unwrap(), 3);
    let mut w = Watcher::new(cluster.addrs(), opts(), "r/", None, true, Some(before + 1)).unwrap();
    let mut deletes = Vec::new();
    while deletes.len() < 3 {
        if let WatchEvent::Change(e) = rt.block_on(w.next()).unwrap() {
            assert_eq!(e.kind, EventKind::Delete);
            deletes.push(e.mod_revision);
        }
    }
    assert_eq!(
        deletes,
        [before + 1; 3],
        "one revision for the whole revocation"
    );
    assert!(rt
        .block_on(c.range(&RangeRequest::prefix("r/")))
        .unwrap()
        .kvs
        .is_empty());
}

/// A watcher that never reads is cancelled (`WatchCancelled`) once its connection holds more
/// than the per-connection bound, instead of growing the node's memory; writes go on.
#[test]
fn a_watcher_that_never_reads_is_cancelled_and_writes_go_on() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let addr = cluster.nodes[leader as usize - 1].addr();
    let mut slow = RawConn::connect(addr).v2();
    slow.send_json(&json!({"type":"Watch","id":7,"key":"big/","prefix":true}));
    assert_eq!(slow.recv("Watching")["type"], "Watching");
    // 40 MB of changes, far over what the socket buffers and the 4 MiB bound hold.
    let rt = runtime();
    let mut c = Client::new(vec![addr], opts());
    let value = "x".repeat(200_000);
    let t = Instant::now();
    for i in 0..200 {
        rt.block_on(c.put_with_lease(&format!("big/{}", i % 10), &value, 0))
            .expect("writes go on while a watcher does not read");
    }
    eprintln!("200 writes of 200 KB in {:?}", t.elapsed());
    // Reading now: some events, then the cancellation, then nothing more for that watch.
    let mut events = 0;
    let cancelled = loop {
        match slow.read(Duration::from_secs(10)) {
            process::Got::Frame(v) if v["type"] == "Events" => {
                events += v["events"].as_array().map_or(0, Vec::len)
            }
            process::Got::Frame(v) => break v,
            other => {
                panic!("expected the watch to be cancelled, got {other:?} after {events} events")
            }
        }
    };
    assert_eq!(cancelled["code"], "WatchCancelled", "{cancelled}");
    assert_eq!(cancelled["id"], 7);
    assert!(
        events < 200,
        "it was cancelled before it got everything ({events} events)"
    );
    // The node is fine and the connection still serves requests.
    let r = slow.call(&json!({"type":"Range","id":8,"key":"big/","prefix":true,"count_only":true}));
    assert_eq!(r["count"], 10, "{r}");
}

const RAFTCTL: &str = env!("CARGO_BIN_EXE_raftctl");

/// Runs raftctl with `args` (and `stdin`), returning (exit code, stdout).
fn raftctl(cluster: &str, args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(RAFTCTL)
        .arg("--cluster")
        .arg(cluster)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run raftctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("raftctl output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn raftctl_ranges_transactions_leases_and_watch() {
    let cluster = Cluster::start(3);
    cluster.leader(TEN_S);
    let addrs = cluster.cluster_arg();
    let ctl = |args: &[&str]| raftctl(&addrs, args, "");
    for (k, v) in [
        ("cfg/a", "1"),
        ("cfg/b", "2"),
        ("cfg/c", "3"),
        ("other", "x"),
    ] {
        assert_eq!(ctl(&["put", k, v]).0, 0);
    }
    assert_eq!(
        ctl(&["get", "cfg/", "--prefix"]),
        (0, "cfg/a\n1\ncfg/b\n2\ncfg/c\n3\n".into())
    );
    assert_eq!(
        ctl(&["get", "cfg/", "--prefix", "--keys-only", "--limit", "2"]),
        (0, "cfg/a\ncfg/b\n(… 1 more; raise --limit)\n".into())
    );
    let (code, out) = ctl(&["--json", "get", "cfg/a", "--rev", "1"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["kvs"][0]["value"], "1");
    assert_eq!(v["revision"], 4);
    assert_eq!(
        ctl(&["get", "cfg/", "--prefix", "--count-only"]),
        (0, "3\n".into())
    );

    // A transaction from stdin: the failure branch runs (exit 1), then the success branch.
    let txn = r#"{"compare":[{"key":"cfg/a","target":"value","op":"==","value":"9"}],
                  "success":[{"type":"Put","key":"cfg/a","value":"10"}],
                  "failure":[{"type":"Get","key":"cfg/a"}]}"#;
    assert_eq!(raftctl(&addrs, &["txn"], txn), (1, "FAILURE\n1\n".into()));
    let txn = txn.replace("\"9\"", "\"1\"");
    assert_eq!(raftctl(&addrs, &["txn"], &txn), (0, "SUCCESS\nOK\n".into()));
    let (code, _) = raftctl(&addrs, &["txn"], "not json");
    assert_eq!(code, 3, "a bad transaction is refused");

    // Leases.
    let (code, out) = ctl(&["--json", "lease", "grant", "30"]);
    assert_eq!(code, 0, "{out}");
    let lease = serde_json::from_str::<Value>(out.trim()).unwrap()["lease_id"]
        .as_u64()
        .unwrap();
    let id = lease.to_string();
    assert_eq!(ctl(&["put", "svc/x", "up", "--lease", &id]).0, 0);
    let (code, out) = ctl(&["lease", "ttl", &id]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("lease {id} granted with TTL(30s)")),
        "{out}"
    );
    assert!(out.contains("attached keys(svc/x)"), "{out}");
    assert_eq!(ctl(&["lease", "keepalive", &id, "--once"]).0, 0);
    assert_eq!(
        ctl(&["lease", "revoke", &id]),
        (0, format!("lease {id} revoked (1 keys deleted)\n"))
    );
    assert_eq!(ctl(&["get", "svc/x"]).0, 1, "the key went with its lease");
    assert_eq!(
        ctl(&["lease", "ttl", &id]).0,
        3,
        "a revoked lease is not found"
    );
    assert_eq!(ctl(&["put", "svc/y", "up", "--lease", &id]).0, 3);

    // Delete by prefix, then watch the history from revision 1 (one JSON line per event).
    assert_eq!(ctl(&["del", "cfg/", "--prefix"]), (0, "3\n".into()));
    let mut watch = std::process::Command::new(RAFTCTL)
        .args([
            "--cluster",
            &addrs,
            "--json",
            "watch",
            "cfg/",
            "--prefix",
            "--rev",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("raftctl watch");
    let reader = std::io::BufReader::new(watch.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    use std::io::BufRead;
    for line in reader.lines().map_while(Result::ok) {
        lines.push(serde_json::from_str::<Value>(&line).expect("a JSON event per line"));
        if lines.len() == 7 {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let kinds: Vec<(String, String)> = lines
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("Put", "cfg/a"),
        ("Put", "cfg/b"),
        ("Put", "cfg/c"),
        ("Put", "cfg/a"),
        ("Delete", "cfg/a"),
        ("Delete", "cfg/b"),
        ("Delete", "cfg/c"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(kinds, want);
    // Compaction through raftctl: the past is gone.
    assert_eq!(ctl(&["compact", "5"]).0, 0);
    assert_eq!(ctl(&["get", "cfg/a", "--rev", "2"]).0, 3);
}
