//! End to end: the HTTP port (`--http-listen`, docs/HTTP.md) of real `raftd` processes on
//! 127.0.0.1, with the requests curl would send: health, the store (on the leader and on a
//! follower, which forwards), a transaction, a streamed watch, the errors and their status
//! codes, the metrics parsed as Prometheus reads them and moving as the cluster does, and
//! HTTPS on a TLS cluster.

use raftd_testkit::http::{http, HttpResponse, HttpTarget};
use raftd_testkit::process::{wait_for, Auth, Cluster};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

const TEN_S: Duration = Duration::from_secs(10);

fn req(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    http(addr, method, path, body.map(str::as_bytes))
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// Waits until every node answers `/readyz` with 200.
fn all_ready(cluster: &mut Cluster) {
    for id in 1..=cluster.nodes.len() as u64 {
        let addr = cluster.node(id).http_addr().expect("an HTTP port");
        let ready = wait_for(TEN_S, || {
            let r = http(addr, "GET", "/readyz", None).ok()?;
            (r.status == 200).then_some(())
        });
        assert!(ready.is_some(), "node {id} never ready\n{}", cluster.logs());
    }
}

fn follower_of(leader: u64) -> u64 {
    leader % 3 + 1
}

#[test]
fn the_store_over_http_on_the_leader_and_a_follower() {
    let mut cluster = Cluster::start_http(3, &["--max-frame-bytes", "65536"], Auth::Secret);
    let leader = cluster.leader(TEN_S);
    all_ready(&mut cluster);
    let l = cluster.node(leader).http_addr().expect("http");
    let f = cluster.node(follower_of(leader)).http_addr().expect("http");

    let live = req(f, "GET", "/livez", None);
    assert_eq!((live.status, live.text().as_str()), (200, "ok\n"));

    // A write on a follower is forwarded to the leader.
    let put = req(f, "PUT", "/v1/kv/greeting", Some("hello"));
    assert_eq!(put.status, 200, "{}", put.text());
    let revision = put.json()["revision"].as_u64().expect("revision");
    assert!(revision > 0);
    let get = req(l, "GET", "/v1/kv/greeting", None);
    assert_eq!((get.status, get.text().as_str()), (200, "hello"));
    assert_eq!(
        get.header("x-raftd-mod-revision"),
        Some(revision.to_string().as_str())
    );
    assert_eq!(get.header("x-raftd-version"), Some("1"));
    // A linearizable read on the follower (forwarded), and a stale one it serves itself.
    let get = req(f, "GET", "/v1/kv/greeting", None);
    assert_eq!((get.status, get.text().as_str()), (200, "hello"));
    let stale = wait_for(TEN_S, || {
        let r = http(f, "GET", "/v1/kv/greeting?consistency=stale", None).ok()?;
        (r.status == 200).then_some(r.text())
    });
    assert_eq!(stale.as_deref(), Some("hello"));

    // Absent: 404 with the revision.
    let missing = req(l, "GET", "/v1/kv/nothing-here", None);
    assert_eq!(missing.status, 404);
    assert!(missing.json()["revision"].as_u64().is_some());

    // Keys with spaces and slashes, and a prefix read in key order.
    for (k, v) in [("dir/b", "2"), ("dir/a", "1"), ("dir/with%20space", "3")] {
        let r = req(l, "PUT", &format!("/v1/kv/{k}"), Some(v));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let spaced = req(l, "GET", "/v1/kv/dir/with%20space", None);
    assert_eq!((spaced.status, spaced.text().as_str()), (200, "3"));
    let range = req(l, "GET", "/v1/kv/dir/?prefix=true", None);
    assert_eq!(range.status, 200);
    let v = range.json();
    let keys: Vec<&str> = v["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| kv["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["dir/a", "dir/b", "dir/with space"]);
    assert_eq!(v["count"], 3);
    // A past revision of one key.
    let again = req(l, "PUT", "/v1/kv/greeting", Some("bye"));
    assert_eq!(again.status, 200);
    let past = req(
        l,
        "GET",
        &format!("/v1/kv/greeting?revision={revision}"),
        None,
    );
    assert_eq!((past.status, past.text().as_str()), (200, "hello"));

    // A transaction: compare and swap.
    let txn = json!({
        "compare": [{"key": "greeting", "target": "value", "op": "==", "value": "bye"}],
        "success": [{"type": "Put", "key": "greeting", "value": "swapped"}, {"type": "Get", "key": "dir/a"}],
        "failure": [],
    });
    let t = req(f, "POST", "/v1/txn", Some(&txn.to_string()));
    assert_eq!(t.status, 200, "{}", t.text());
    let t = t.json();
    assert_eq!(t["succeeded"], true);
    assert_eq!(t["responses"].as_array().map(Vec::len), Some(2));
    assert_eq!(req(l, "GET", "/v1/kv/greeting", None).text(), "swapped");

    // Deletes: one key, then a prefix.
    let del = req(f, "DELETE", "/v1/kv/greeting", None);
    assert_eq!((del.status, del.json()["deleted"].clone()), (200, json!(1)));
    assert_eq!(req(l, "GET", "/v1/kv/greeting", None).status, 404);
    let del = req(l, "DELETE", "/v1/kv/dir/?prefix=true", None);
    assert_eq!(del.json()["deleted"], 3);

    // Errors, with their status codes.
    let cases: [(&str, &str, Option<&str>, u16); 7] = [
        ("GET", "/v1/kv/x?consistency=bogus", None, 400),
        ("GET", "/v1/kv/x?prefix=maybe", None, 400),
        ("POST", "/v1/kv/x", Some("v"), 405),
        ("GET", "/v1/nothing", None, 404),
        ("POST", "/v1/txn", Some("{not json"), 400),
        ("PUT", "/v1/kv/", Some("v"), 400),
        ("GET", "/v1/kv/%zz", None, 400),
    ];
    for (method, path, body, status) in cases {
        let r = req(l, method, path, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert!(
            r.json()["error"].is_string(),
            "{method} {path}: {}",
            r.text()
        );
    }
    // A value that is not UTF-8, and one over the frame limit: refused, nothing written.
    let r = http(l, "PUT", "/v1/kv/bin", Some(&[0xff, 0xfe])).expect("put");
    assert_eq!(r.status, 400, "{}", r.text());
    let big = "x".repeat(100_000);
    let r = req(l, "PUT", "/v1/kv/big", Some(&big));
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(req(l, "GET", "/v1/kv/big", None).status, 404);
    // The node still serves.
    assert_eq!(req(l, "PUT", "/v1/kv/after", Some("ok")).status, 200);
}

#[test]
fn a_watch_streams_events_as_lines_and_a_compacted_start_is_gone() {
    let mut cluster = Cluster::start_http(3, &[], Auth::Secret);
    let leader = cluster.leader(TEN_S);
    all_ready(&mut cluster);
    let l = cluster.node(leader).http_addr().expect("http");
    let f = cluster.node(follower_of(leader)).http_addr().expect("http");
    let first = req(l, "PUT", "/v1/kv/w/0", Some("zero"));
    let from = first.json()["revision"].as_u64().expect("revision");

    // Watched on the follower, from the first write on.
    let (status, mut lines) = HttpTarget::plain(f)
        .stream(&format!("/v1/watch/w/?prefix=true&start_revision={from}"))
        .expect("watch");
    assert_eq!(status, 200);
    for (method, key, body) in [
        ("PUT", "w/1", Some("one")),
        ("PUT", "w/2", Some("two")),
        ("DELETE", "w/1", None),
        ("PUT", "other", Some("not watched")),
    ] {
        let r = req(l, method, &format!("/v1/kv/{key}"), body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut events: Vec<Value> = Vec::new();
    while events.len() < 4 {
        let line = lines
            .next_line()
            .expect("read the watch")
            .expect("the watch goes on");
        let v: Value = serde_json::from_str(&line).expect("a JSON line");
        if v["progress"] == true {
            continue;
        }
        events.push(v);
    }
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("Put".to_string(), "w/0".to_string()),
            ("Put".into(), "w/1".into()),
            ("Put".into(), "w/2".into()),
            ("Delete".into(), "w/1".into()),
        ]
    );
    assert_eq!(events[0]["mod_revision"], from);
    drop(lines);

    // History before a compaction is gone: 410 with where it starts now.
    let latest = req(l, "PUT", "/v1/kv/w/3", Some("three")).json()["revision"]
        .as_u64()
        .expect("revision");
    // A follower, whose store may not have the latest revision yet, sends the client to the
    // leader rather than refusing a revision it has not seen.
    let f_client = cluster.node(follower_of(leader)).addr();
    let body = format!(
        r#"{{"type":"Compact","id":1,"revision":{}}}"#,
        latest + 1_000
    );
    let answer = raftd_testkit::process::request(f_client, body.as_bytes()).expect("answer");
    assert_eq!(answer["code"], "NotLeader", "{answer}");
    let rt = raftd_testkit::runtime();
    rt.block_on(async {
        let mut c = raftd::client::Client::new(cluster.addrs(), Default::default());
        c.compact(latest).await.expect("compact");
    });
    // Asked of the leader, which applied the compaction before answering it (a follower may
    // not have yet, and would still stream that history).
    let gone = req(l, "GET", "/v1/watch/w/?prefix=true&start_revision=1", None);
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert_eq!(gone.json()["compact_revision"], latest);
}

/// One sample: its name, its labels (sorted), its value (a histogram: its count).
type Sample = (String, Vec<(String, String)>, f64);

/// The exposition parsed as Prometheus reads it: each sample's value by name and labels.
fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let r = req(addr, "GET", "/metrics", None);
    assert_eq!(r.status, 200);
    let text = r.text();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => 0.0,
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            labels.sort();
            (s.metric, labels, value)
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| {
            panic!(
                "no sample {name} {labels:?} among {} samples",
                samples.len()
            )
        })
}

#[test]
fn metrics_are_prometheus_text_and_move_with_the_cluster() {
    let mut cluster = Cluster::start_http(3, &["--snapshot-entries", "10"], Auth::Secret);
    let leader = cluster.leader(TEN_S);
    all_ready(&mut cluster);
    let l = cluster.node(leader).http_addr().expect("http");
    let before = scrape(l);
    assert!(before.iter().all(|(n, _, _)| n.starts_with("raftd_")));
    assert_eq!(value(&before, "raftd_role", &[("role", "leader")]), 1.0);
    assert_eq!(value(&before, "raftd_role", &[("role", "follower")]), 0.0);
    assert_eq!(value(&before, "raftd_leader_id", &[]), leader as f64);
    assert!(value(&before, "raftd_elections_won_total", &[]) >= 1.0);
    let commits = value(&before, "raftd_committed_entries_total", &[]);
    for i in 0..20 {
        let r = req(l, "PUT", &format!("/v1/kv/m{i}"), Some("v"));
        assert_eq!(r.status, 200);
    }
    // The log writer and the tick-driven gauges catch up within a moment.
    let after = wait_for(TEN_S, || {
        let s = scrape(l);
        (value(&s, "raftd_keys", &[]) >= 20.0).then_some(s)
    })
    .expect("the keys gauge reaches 20");
    assert!(value(&after, "raftd_committed_entries_total", &[]) >= commits + 20.0);
    assert!(value(&after, "raftd_commit_index", &[]) >= 20.0);
    assert!(value(&after, "raftd_revision", &[]) >= 20.0);
    assert!(value(&after, "raftd_wal_bytes", &[]) > 0.0);
    assert!(value(&after, "raftd_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(
        value(
            &after,
            "raftd_client_request_duration_seconds_count",
            &[("type", "Put")]
        ) >= 20.0
    );
    let peer = follower_of(leader).to_string();
    assert_eq!(
        value(&after, "raftd_peer_connected", &[("peer", &peer)]),
        1.0
    );
    assert!(value(&after, "raftd_peer_sent_bytes_total", &[("peer", &peer)]) > 0.0);
    assert!(
        value(
            &after,
            "raftd_peer_received_bytes_total",
            &[("peer", &peer)]
        ) > 0.0
    );
    assert_eq!(value(&after, "raftd_alarm", &[("alarm", "no_space")]), 0.0);
    // The snapshot's index, not where the log starts (it keeps up to
    // --snapshot-catchup-entries entries behind the snapshot: here all of them).
    let snapshot = wait_for(TEN_S, || {
        let v = value(&scrape(l), "raftd_snapshot_index", &[]);
        (v >= 10.0).then_some(v)
    });
    assert!(
        snapshot.is_some(),
        "raftd_snapshot_index never showed the snapshot"
    );
    // Every metric the Grafana dashboard and the alerts of docs/OPERATIONS.md use exists.
    let known: std::collections::BTreeSet<String> = after
        .iter()
        .map(|(n, _, _)| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .fold(n.clone(), |n, s| {
                    n.strip_suffix(s).map_or(n.clone(), str::to_string)
                })
        })
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config/grafana-dashboard.json", "docs/OPERATIONS.md"] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let mut used = 0;
        for (i, _) in text.match_indices("raftd_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name.clone(), |n, s| {
                    n.strip_suffix(s).map_or(n.clone(), str::to_string)
                });
            if base == "raftd_" || name.ends_with('_') {
                continue;
            }
            used += 1;
            assert!(
                known.contains(&base),
                "{file} uses {name}, which /metrics does not have"
            );
        }
        assert!(used > 10, "{file} uses only {used} metrics");
    }

    // Kill the leader: a survivor sees the leader change, and one of them won an election.
    let survivor = follower_of(leader);
    let s_addr = cluster.node(survivor).http_addr().expect("http");
    let changes = value(&scrape(s_addr), "raftd_leader_changes_total", &[]);
    cluster.node(leader).kill();
    let rest: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let (new_leader, _) = cluster
        .wait_for_leader(&rest, TEN_S)
        .unwrap_or_else(|| panic!("no new leader\n{}", cluster.logs()));
    let s = wait_for(TEN_S, || {
        let s = scrape(s_addr);
        (value(&s, "raftd_leader_id", &[]) == new_leader as f64).then_some(s)
    })
    .expect("the survivor knows the new leader");
    assert!(value(&s, "raftd_leader_changes_total", &[]) > changes);
    let gone = leader.to_string();
    let down = wait_for(TEN_S, || {
        let s = scrape(s_addr);
        (value(&s, "raftd_peer_connected", &[("peer", &gone)]) == 0.0).then_some(())
    });
    assert!(down.is_some(), "the killed peer still shows as connected");
    let n_addr = cluster.node(new_leader).http_addr().expect("http");
    assert!(value(&scrape(n_addr), "raftd_elections_won_total", &[]) >= 1.0);
}

#[test]
fn https_when_the_node_has_tls() {
    let mut cluster = Cluster::start_http(
        3,
        &[],
        Auth::Tls {
            client_cert_auth: true,
        },
    );
    // (The testkit's leader probe speaks plaintext; over HTTPS, readiness says a leader is
    // known.)
    let tls = cluster.pki.as_ref().expect("pki").client_tls();
    let target = |cluster: &mut Cluster, id: u64| HttpTarget {
        addr: cluster.node(id).http_addr().expect("http"),
        tls: Some(tls.clone()),
    };
    let (a, b) = (target(&mut cluster, 2), target(&mut cluster, 3));
    for t in [&a, &b] {
        let ready = wait_for(TEN_S, || {
            let r = t.request("GET", "/readyz", None).ok()?;
            (r.status == 200).then_some(())
        });
        assert!(ready.is_some(), "never ready over TLS\n{}", cluster.logs());
    }
    // Whichever leads, one of them forwards through the node's own TLS client.
    let put = a
        .request("PUT", "/v1/kv/secure", Some(b"yes"))
        .expect("put over TLS");
    assert_eq!(put.status, 200, "{}", put.text());
    let get = b.request("GET", "/v1/kv/secure", None).expect("get");
    assert_eq!(get.text(), "yes");
    let f = a;
    // Plain HTTP on a TLS port gets nowhere.
    assert!(http(f.addr, "GET", "/livez", None).map_or(true, |r| r.status != 200));
}
