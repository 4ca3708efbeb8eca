//! End to end: the replicated key-value store on three real `raftd` processes on 127.0.0.1,
//! through the library `Client`, through `raftctl`, and through raw frames.

use raftd_testkit::process;
use raftd_testkit::runtime;

use process::{Cluster, RawConn};
use raftd::client::{Client, ClientError, ClientOptions};
use raftd::rpc::types::Consistency;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TEN_S: Duration = Duration::from_secs(10);
const LIN: Consistency = Consistency::Linearizable;

fn opts() -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(15),
        attempt_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    }
}

/// The cluster's addresses with `first` moved to the front (so the client has to find the
/// leader when `first` is a follower).
fn addrs_starting_at(cluster: &Cluster, first: u64) -> Vec<SocketAddr> {
    let mut addrs = cluster.addrs();
    addrs.rotate_left(first as usize - 1);
    addrs
}

fn cluster_arg(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

use raftd_testkit::process::raftctl;

/// Runs raftctl and checks its exit code, returning stdout.
fn raftctl_ok(cluster: &str, args: &[&str], want_code: i32) -> String {
    let r = raftctl(cluster, args);
    assert_eq!(
        r.code, want_code,
        "raftctl {args:?}: exit {} (want {want_code})\nstdout: {}\nstderr: {}",
        r.code, r.stdout, r.stderr
    );
    r.stdout
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text:?}"))
}

fn follower_of(leader: u64) -> u64 {
    if leader == 1 {
        2
    } else {
        1
    }
}

#[test]
fn basic_operations_through_client_raftctl_and_raw_frames() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let follower = follower_of(leader);
    let rt = runtime();

    // ----- the library client, starting at a follower so it must follow the leader hint -----
    rt.block_on(async {
        let mut c = Client::new(addrs_starting_at(&cluster, follower), opts());
        c.put("alpha", "1").await.expect("put");
        assert_eq!(c.get("alpha", LIN).await.unwrap().as_deref(), Some("1"));
        assert_eq!(c.get("missing", LIN).await.unwrap(), None);
        c.put("alpha", "one").await.expect("overwrite");
        assert_eq!(c.get("alpha", LIN).await.unwrap().as_deref(), Some("one"));

        assert_eq!(
            c.cas("alpha", Some("one"), Some("two")).await.unwrap(),
            (true, Some("two".into()))
        );
        assert_eq!(
            c.cas("alpha", Some("one"), Some("three")).await.unwrap(),
            (false, Some("two".into())),
            "a mismatched cas changes nothing and reports the current value"
        );
        assert_eq!(
            c.cas("fresh", None, Some("x")).await.unwrap(),
            (true, Some("x".into())),
            "expected null = absent"
        );
        assert_eq!(
            c.cas("fresh", None, Some("y")).await.unwrap(),
            (false, Some("x".into()))
        );
        assert_eq!(
            c.cas("fresh", Some("x"), None).await.unwrap(),
            (true, None),
            "value null deletes"
        );
        assert_eq!(c.get("fresh", LIN).await.unwrap(), None);

        c.delete("alpha").await.expect("delete");
        assert_eq!(c.get("alpha", LIN).await.unwrap(), None);
        c.delete("never-existed")
            .await
            .expect("deleting an absent key is fine");

        // Any UTF-8 goes in keys and values.
        let (k, v) = ("ключ 🔑 \"q\"", "line1\nline2\t\u{0}end");
        c.put(k, v).await.unwrap();
        assert_eq!(c.get(k, LIN).await.unwrap().as_deref(), Some(v));

        // A stale read from the client's first node (a follower) may lag, but catches up.
        let deadline = Instant::now() + TEN_S;
        loop {
            let mut stale = Client::new(vec![cluster.nodes[follower as usize - 1].addr()], opts());
            if stale.get(k, Consistency::Stale).await.unwrap().as_deref() == Some(v) {
                break;
            }
            assert!(Instant::now() < deadline, "follower never applied the put");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Refused requests are errors, not retries.
        match c.put("", "v").await {
            Err(ClientError::BadRequest(m)) => assert!(m.contains("key"), "{m}"),
            other => panic!("empty key: {other:?}"),
        }
    });

    // ----- raftctl -----
    let cl = cluster_arg(&addrs_starting_at(&cluster, follower));
    assert_eq!(raftctl_ok(&cl, &["put", "color", "blue"], 0).trim(), "OK");
    assert_eq!(raftctl_ok(&cl, &["get", "color"], 0), "blue\n");
    assert_eq!(
        parse_json(&raftctl_ok(&cl, &["get", "color", "--json"], 0)),
        json!({"key": "color", "value": "blue"})
    );
    assert_eq!(
        parse_json(&raftctl_ok(&cl, &["--json", "put", "shape", "round"], 0)),
        json!({"ok": true, "key": "shape", "value": "round"})
    );
    // --stale answers from the first node that answers; poll until it caught up.
    let got = process::wait_for(TEN_S, || {
        let r = raftctl(&cl, &["get", "color", "--stale"]);
        (r.code == 0 && r.stdout == "blue\n").then_some(())
    });
    assert!(got.is_some(), "raftctl get --stale never saw the value");

    // Absent: exit 1, and --json says null.
    let out = raftctl_ok(&cl, &["get", "nope"], 1);
    assert!(out.contains("not found"), "{out}");
    assert_eq!(
        parse_json(&raftctl_ok(&cl, &["get", "nope", "--json"], 1)),
        json!({"key": "nope", "value": null})
    );

    // cas: match exit 0, mismatch exit 1 with the current value.
    assert!(raftctl_ok(&cl, &["cas", "color", "blue", "green"], 0).contains("green"));
    let out = raftctl_ok(&cl, &["cas", "color", "blue", "red"], 1);
    assert!(
        out.contains("NOT SWAPPED") && out.contains("green"),
        "{out}"
    );
    assert_eq!(
        parse_json(&raftctl_ok(
            &cl,
            &["cas", "color", "blue", "red", "--json"],
            1
        )),
        json!({"key": "color", "succeeded": false, "value": "green"})
    );
    assert_eq!(
        parse_json(&raftctl_ok(
            &cl,
            &["cas", "newkey", "--expect-absent", "v1", "--json"],
            0
        )),
        json!({"key": "newkey", "succeeded": true, "value": "v1"})
    );
    raftctl_ok(&cl, &["cas", "newkey", "v1", "--delete"], 0);
    raftctl_ok(&cl, &["get", "newkey"], 1);
    // Usage errors exit 2.
    raftctl_ok(&cl, &["cas", "color"], 2);

    // del
    assert_eq!(raftctl_ok(&cl, &["del", "color"], 0).trim(), "OK");
    raftctl_ok(&cl, &["get", "color"], 1);
    assert_eq!(
        parse_json(&raftctl_ok(&cl, &["delete", "shape", "--json"], 0)),
        json!({"ok": true, "key": "shape"})
    );

    // status: one line per node; --json lists all three with one leader.
    let out = raftctl_ok(&cl, &["status"], 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(out.matches("Leader").count(), 1, "{out}");
    let st = parse_json(&raftctl_ok(&cl, &["status", "--json"], 0));
    let nodes = st["nodes"].as_array().expect("nodes array");
    assert_eq!(nodes.len(), 3, "{st}");
    assert_eq!(
        nodes.iter().filter(|n| n["role"] == "Leader").count(),
        1,
        "{st}"
    );

    // ----- unreachable cluster: exit 3 with a clear message, in bounded time -----
    let dead: Vec<SocketAddr> = process::free_ports(2)
        .into_iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .collect();
    let dead = cluster_arg(&dead);
    for args in [
        &["--timeout", "1", "get", "k"][..],
        &["--timeout", "1", "put", "k", "v"],
        &["--timeout", "1", "status"],
    ] {
        let t = Instant::now();
        let r = raftctl(&dead, args);
        let took = t.elapsed();
        assert_eq!(r.code, 3, "{args:?}: {} / {}", r.stdout, r.stderr);
        assert!(
            took < Duration::from_secs(8),
            "{args:?} took {took:?} with --timeout 1"
        );
        let line = r.stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line: {line:?}");
        assert!(line.starts_with("raftctl: "), "{line}");
        assert!(
            line.contains("no node of the cluster answered")
                || line.contains("unreachable")
                || line.contains("every node"),
            "unclear message: {line}"
        );
        eprintln!("unreachable {args:?}: exit 3 after {took:?}: {line}");
    }
    let r = raftctl(&dead, &["--timeout", "1", "--json", "get", "k"]);
    assert_eq!(r.code, 3);
    assert!(parse_json(&r.stdout)["error"].is_string(), "{}", r.stdout);

    // ----- a follower refuses with NotLeader and a leader hint (raw frames) -----
    let leader_addr = cluster.node(leader).addr().to_string();
    let mut f = RawConn::connect(cluster.node(follower).addr());
    for (id, req) in [
        (41, json!({"type":"Put","id":41,"key":"x","value":"y"})),
        (42, json!({"type":"Delete","id":42,"key":"x"})),
        (
            43,
            json!({"type":"Cas","id":43,"key":"x","expected":null,"value":"y"}),
        ),
        (44, json!({"type":"Get","id":44,"key":"x"})),
        (
            45,
            json!({"type":"Get","id":45,"key":"x","consistency":"linearizable"}),
        ),
    ] {
        let r = f.call(&req);
        assert_eq!(r["type"], "Error", "{req} -> {r}");
        assert_eq!(r["code"], "NotLeader", "{r}");
        assert_eq!(r["id"], id, "{r}");
        assert_eq!(r["leader_id"], leader, "{r}");
        assert_eq!(r["leader_addr"], leader_addr.as_str(), "{r}");
        assert!(r["message"].is_string(), "{r}");
    }
    // A stale read is served by the follower itself (the key written above is there by now).
    let r = f.call(&json!({"type":"Get","id":46,"key":"ключ 🔑 \"q\"","consistency":"stale"}));
    assert_eq!(
        r,
        json!({"type":"Ok","id":46,"value":"line1\nline2\t\u{0}end"})
    );
    let r = f.call(&json!({"type":"Get","id":47,"key":"absent","consistency":"stale"}));
    assert_eq!(r, json!({"type":"Ok","id":47,"value":null}));

    // ----- Status fields -----
    let s = RawConn::connect(cluster.node(leader).addr()).call(&json!({"type":"Status","id":99}));
    assert_eq!(s["type"], "Status", "{s}");
    assert_eq!(s["id"], 99);
    assert_eq!(s["node_id"], leader);
    assert_eq!(s["role"], "Leader");
    assert_eq!(s["leader_id"], leader);
    assert_eq!(s["leader_addr"], leader_addr.as_str());
    let (commit, applied, last) = (
        s["commit_index"].as_u64().unwrap(),
        s["last_applied"].as_u64().unwrap(),
        s["last_log_index"].as_u64().unwrap(),
    );
    // At least the no-op and the 15 or so writes above.
    assert!(commit >= 15, "{s}");
    assert!(applied <= commit && commit <= last, "{s}");
    assert!(s["term"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["snapshot_index"], 0, "{s}");
    let members: BTreeMap<String, String> =
        serde_json::from_value(s["members"].clone()).expect("members map");
    let want: BTreeMap<String, String> = cluster
        .nodes
        .iter()
        .map(|n| (n.id.to_string(), n.addr().to_string()))
        .collect();
    assert_eq!(members, want);
    let fs = f.call(&json!({"type":"Status","id":100}));
    assert_eq!(fs["role"], "Follower", "{fs}");
    assert_eq!(fs["node_id"], follower);
    assert_eq!(fs["leader_id"], leader);
    assert_eq!(fs["leader_addr"], leader_addr.as_str());
    assert_eq!(fs["term"], s["term"]);
}

/// One frame per request, all written before any answer is read.
fn pipeline_frames(reqs: &[Value]) -> Vec<u8> {
    reqs.iter()
        .flat_map(|r| process::frame(r.to_string().as_bytes()))
        .collect()
}

/// Reads exactly `n` answers, each a distinct id; then checks that nothing more arrives.
fn read_answers(conn: &mut RawConn, n: usize) -> HashMap<u64, Value> {
    let mut answers = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = match conn.read(left.max(Duration::from_millis(1))) {
            process::Got::Frame(v) => v,
            other => panic!("after {} of {n} answers: {other:?}", answers.len()),
        };
        let id = v["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("answer without id: {v}"));
        if let Some(prev) = answers.insert(id, v.clone()) {
            panic!("id {id} answered twice: {prev} and {v}");
        }
    }
    answers
}

#[test]
fn pipelined_requests_are_each_answered_exactly_once() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let addr = cluster.nodes[leader as usize - 1].addr();
    let mut conn = RawConn::connect(addr);

    // 500 requests in one write: a Put and a Get per key, ids spread out and not in order.
    let id_of = |i: u64| 1_000_000 + (i * 7919) % 100_003;
    let mut reqs = Vec::new();
    let mut want = HashMap::new();
    for k in 0..250u64 {
        let (put, get) = (id_of(2 * k), id_of(2 * k + 1));
        reqs.push(json!({"type":"Put","id":put,"key":format!("p{k}"),"value":format!("v{k}")}));
        reqs.push(json!({"type":"Get","id":get,"key":format!("p{k}")}));
        want.insert(put, (k, true));
        want.insert(get, (k, false));
    }
    assert_eq!(want.len(), 500, "ids are distinct");
    let t = Instant::now();
    conn.send_bytes(&pipeline_frames(&reqs))
        .expect("write 500 frames");
    let answers = read_answers(&mut conn, 500);
    eprintln!("500 pipelined requests answered in {:?}", t.elapsed());
    for (id, (k, is_put)) in &want {
        let a = answers
            .get(id)
            .unwrap_or_else(|| panic!("no answer for {id}"));
        assert_eq!(a["type"], "Ok", "{a}");
        if *is_put {
            assert!(a.get("value").is_none(), "{a}");
        } else {
            // The Get raced its Put on the same connection: either outcome is linearizable.
            let v = &a["value"];
            assert!(v.is_null() || *v == json!(format!("v{k}")), "Get p{k}: {a}");
        }
    }
    // Nothing extra arrives.
    match conn.read(Duration::from_millis(300)) {
        process::Got::Silent => {}
        other => panic!("unexpected extra frame: {other:?}"),
    }

    // More than the 1024 a connection may have in flight: written by one thread while this one
    // reads, so TCP backpressure (not the test) paces the sender.
    const N: u64 = 3000;
    let mut writer = conn.stream.try_clone().expect("clone stream");
    let reqs: Vec<Value> = (0..N)
        .map(|i| json!({"type":"Get","id":i,"key":format!("p{}", i % 250)}))
        .collect();
    let bytes = pipeline_frames(&reqs);
    let t = Instant::now();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&bytes)
    });
    let answers = read_answers(&mut conn, N as usize);
    w.join().unwrap().expect("writer");
    eprintln!("{N} pipelined Gets answered in {:?}", t.elapsed());
    for i in 0..N {
        assert_eq!(
            answers[&i],
            json!({"type":"Ok","id":i,"value":format!("v{}", i % 250)})
        );
    }
}

#[test]
fn acknowledged_writes_survive_leader_crashes_and_a_full_restart() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 400;
    const TOTAL: usize = TASKS * PER_TASK;
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3);
    cluster.leader(TEN_S);
    let rt = runtime();
    let addrs = cluster.addrs();
    let done = Arc::new(AtomicUsize::new(0));
    let nonce: u32 = rand::random();

    type Outcome = (Vec<(String, String)>, Vec<(String, String, String)>);
    let writers: Vec<tokio::task::JoinHandle<Outcome>> = (0..TASKS)
        .map(|t| {
            let mut nodes = addrs.clone();
            nodes.rotate_left(t % 3);
            let done = done.clone();
            rt.spawn(async move {
                let mut c = Client::new(
                    nodes,
                    ClientOptions {
                        deadline: Duration::from_secs(10),
                        attempt_timeout: Duration::from_secs(1),
                        ..ClientOptions::default()
                    },
                );
                let (mut acked, mut failed) = (Vec::new(), Vec::new());
                for i in 0..PER_TASK {
                    let key = format!("d/{t}/{i}");
                    let value = format!("{nonce:08x}-{t}-{i}");
                    match c.put(&key, &value).await {
                        Ok(()) => acked.push((key, value)),
                        Err(e) => failed.push((key, value, e.to_string())),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                (acked, failed)
            })
        })
        .collect();

    // Crash the leader twice while the writes run, restarting it from its data dir each time.
    let mut crashes = Vec::new();
    for round in 1..=2 {
        let target = round * TOTAL / 3;
        let reached = process::wait_for(Duration::from_secs(40), || {
            (done.load(Ordering::SeqCst) >= target).then_some(())
        });
        assert!(
            reached.is_some(),
            "writers stalled at {} of {TOTAL}\n{}",
            done.load(Ordering::SeqCst),
            cluster.logs()
        );
        let leader = cluster.leader(TEN_S);
        let at = done.load(Ordering::SeqCst);
        cluster.node(leader).kill();
        let t = Instant::now();
        let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
        let new_leader = cluster.leader_among(&rest, TEN_S);
        let failover = t.elapsed();
        cluster.node(leader).start();
        crashes.push(format!(
            "killed leader {leader} after {at} writes; node {new_leader} led after {failover:?}"
        ));
    }

    let (mut acked, mut failed) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for w in writers {
            let (a, f) = tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("writers finish in time")
                .expect("writer task");
            acked.extend(a);
            failed.extend(f);
        }
    });
    let write_phase = t0.elapsed();
    eprintln!("{}", crashes.join("\n"));
    eprintln!(
        "{} writes acknowledged, {} failed, in {write_phase:?}",
        acked.len(),
        failed.len()
    );
    for (k, _, e) in failed.iter().take(5) {
        eprintln!("failed write {k}: {e}");
    }
    assert_eq!(acked.len() + failed.len(), TOTAL);
    assert!(
        acked.len() >= TOTAL * 9 / 10,
        "too many failed writes ({}); first: {:?}",
        failed.len(),
        failed.first()
    );

    // Crash every node at once, then restart them all from their data dirs.
    for id in 1..=3 {
        cluster.node(id).kill();
    }
    for id in 1..=3 {
        cluster.node(id).start();
    }
    let t = Instant::now();
    cluster.leader(Duration::from_secs(15));
    eprintln!("leader after full restart in {:?}", t.elapsed());

    // Every acknowledged write is there with its value (linearizable Gets, 8 readers).
    let t = Instant::now();
    let acked = Arc::new(acked);
    let failed = Arc::new(failed);
    let readers: Vec<_> = (0..TASKS)
        .map(|r| {
            let (acked, failed, nodes) = (acked.clone(), failed.clone(), addrs.clone());
            rt.spawn(async move {
                let mut c = Client::new(nodes, opts());
                let mut wrong = Vec::new();
                for (k, v) in acked.iter().skip(r).step_by(TASKS) {
                    match c.get(k, LIN).await {
                        Ok(Some(got)) if got == *v => {}
                        other => wrong.push(format!("{k}: want {v:?}, got {other:?}")),
                    }
                }
                // A failed write may or may not have happened, but never with another value.
                let mut present = 0;
                for (k, v, _) in failed.iter().skip(r).step_by(TASKS) {
                    match c.get(k, LIN).await {
                        Ok(None) => {}
                        Ok(Some(got)) if got == *v => present += 1,
                        other => wrong.push(format!("failed write {k}: got {other:?}")),
                    }
                }
                (wrong, present)
            })
        })
        .collect();
    let mut wrong = Vec::new();
    let mut present = 0;
    rt.block_on(async {
        for r in readers {
            let (w, p) = tokio::time::timeout(Duration::from_secs(60), r)
                .await
                .expect("readers finish in time")
                .expect("reader task");
            wrong.extend(w);
            present += p;
        }
    });
    eprintln!(
        "read back {} keys in {:?}; {present} of {} failed writes present; total {:?}",
        acked.len() + failed.len(),
        t.elapsed(),
        failed.len(),
        t0.elapsed()
    );
    assert!(
        wrong.is_empty(),
        "{} acknowledged writes lost or wrong, e.g. {:?}\n{}",
        wrong.len(),
        &wrong[..wrong.len().min(10)],
        cluster.logs()
    );
}

#[test]
fn a_retried_write_returns_its_first_outcome_exactly_once() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let mut conn = RawConn::connect(cluster.node(leader).addr());

    let cas = json!({"type":"Cas","id":1,"key":"once","expected":null,"value":"first",
                     "client_id":"e2e-once","seq":1});
    let first = conn.call(&cas);
    assert_eq!(
        first,
        json!({"type":"Ok","id":1,"succeeded":true,"value":"first"})
    );
    // Re-executing the Cas would now fail (the key is no longer absent); the retry must return
    // the first outcome instead.
    let mut retry = cas.clone();
    retry["id"] = json!(2);
    assert_eq!(
        conn.call(&retry),
        json!({"type":"Ok","id":2,"succeeded":true,"value":"first"})
    );
    // A fresh seq of the same client is executed (and fails).
    let mut next = cas.clone();
    next["id"] = json!(3);
    next["seq"] = json!(2);
    assert_eq!(
        conn.call(&next),
        json!({"type":"Ok","id":3,"succeeded":false,"value":"first"})
    );

    // A Put retried after another client overwrote the key is not applied again.
    let put = json!({"type":"Put","id":4,"key":"p","value":"mine","client_id":"e2e-once","seq":3});
    assert_eq!(conn.call(&put), json!({"type":"Ok","id":4}));
    assert_eq!(
        conn.call(&json!({"type":"Put","id":5,"key":"p","value":"theirs"})),
        json!({"type":"Ok","id":5})
    );
    let mut put_retry = put.clone();
    put_retry["id"] = json!(6);
    assert_eq!(conn.call(&put_retry), json!({"type":"Ok","id":6}));
    assert_eq!(
        conn.call(&json!({"type":"Get","id":7,"key":"p"})),
        json!({"type":"Ok","id":7,"value":"theirs"}),
        "the retried Put was applied a second time"
    );

    // The sessions are replicated state: after the leader crashes, the new leader answers the
    // retry with the same first outcome.
    drop(conn);
    cluster.node(leader).kill();
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = cluster.leader_among(&rest, TEN_S);
    let mut conn = RawConn::connect(cluster.node(new_leader).addr());
    retry["id"] = json!(8);
    let deadline = Instant::now() + TEN_S;
    let r = loop {
        let r = conn.call(&retry);
        // A brand-new leader may still be catching up; Timeout is the documented "retry".
        if r["code"] != "Timeout" || Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!(
        r,
        json!({"type":"Ok","id":8,"succeeded":true,"value":"first"})
    );
    assert_eq!(
        conn.call(&json!({"type":"Get","id":9,"key":"once"})),
        json!({"type":"Ok","id":9,"value":"first"})
    );
}

#[test]
fn a_retry_older_than_the_session_table_gets_session_expired_and_is_not_applied() {
    // The case: a write whose answer was lost, 12,000 other clients, then the retry.
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let mut conn = RawConn::connect(cluster.node(leader).addr());
    let first = json!({"type":"Put","id":1,"key":"k","value":"retried",
                       "client_id":"e2e-lost-answer","seq":1});
    assert_eq!(conn.call(&first), json!({"type":"Ok","id":1}));
    assert_eq!(
        conn.call(&json!({"type":"Put","id":2,"key":"k","value":"newer"})),
        json!({"type":"Ok","id":2})
    );

    // More distinct clients than the cluster keeps sessions for (10,000), pipelined.
    const N: u64 = 12_000;
    let reqs: Vec<Value> = (0..N)
        .map(|i| {
            json!({"type":"Put","id":100 + i,"key":format!("burst{}", i % 100),"value":"x",
                   "client_id":format!("burst-{i}"),"seq":1})
        })
        .collect();
    let bytes = pipeline_frames(&reqs);
    let mut writer = conn.stream.try_clone().expect("clone stream");
    let t = Instant::now();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&bytes)
    });
    let answers = read_answers(&mut conn, N as usize);
    w.join().unwrap().expect("writer");
    eprintln!("{N} one-shot clients written in {:?}", t.elapsed());
    assert!(answers.values().all(|a| a["type"] == "Ok"));

    let mut retry = first.clone();
    retry["id"] = json!(3);
    let r = conn.call(&retry);
    assert_eq!(r["type"], "Error", "{r}");
    assert_eq!(r["code"], "SessionExpired", "{r}");
    assert_eq!(
        conn.call(&json!({"type":"Get","id":4,"key":"k"})),
        json!({"type":"Ok","id":4,"value":"newer"}),
        "the expired retry was applied a second time"
    );
    // The same retry again is still expired; the client's next seq is served.
    retry["id"] = json!(5);
    assert_eq!(conn.call(&retry)["code"], "SessionExpired");
    let mut next = first.clone();
    next["id"] = json!(6);
    next["seq"] = json!(2);
    next["value"] = json!("next");
    assert_eq!(conn.call(&next), json!({"type":"Ok","id":6}));
}
