//! End to end: a stranger on the port of a cluster without peer authentication (loopback
//! without --cluster-secret-file or TLS; e2e_auth.rs has the authenticated ones). It opens one connection to each node of a healthy 3-node cluster,
//! says Hello as one of the node's peers, and sends a RequestVote of a much higher term and an
//! AppendEntries of that term whose entry at index 1 contradicts what the cluster committed
//! there. Before, those two frames made every node exit ("conflict at committed index 1").
//! Now each node refuses the AppendEntries (src: internal/core/src/validate.rs) and closes the
//! connection it came on: every node keeps running, keeps its data, and the cluster keeps
//! serving.

use raftd_testkit::process::{self, Auth, Cluster, Got, RawConn};
use serde_json::{json, Value};
use std::time::Duration;

const TEN_S: Duration = Duration::from_secs(10);

/// A stale read of `key` at node `id`.
fn stale_get(c: &Cluster, id: u64, key: &str) -> Value {
    let mut conn = RawConn::connect(c.nodes[id as usize - 1].addr());
    let v = conn.call(&json!({"type":"Get","id":1,"key":key,"consistency":"stale"}));
    v["value"].clone()
}

/// A linearizable Put through the leader, retried across leader changes until `TEN_S`.
fn put(c: &Cluster, key: &str, value: &str) -> bool {
    process::wait_for(TEN_S, || {
        let leader = c.leader(TEN_S);
        let mut conn = RawConn::connect(c.nodes[leader as usize - 1].addr());
        let v = conn.call(&json!({"type":"Put","id":7,"key":key,"value":value}));
        (v["type"] == "Ok").then_some(())
    })
    .is_some()
}

#[test]
fn a_strangers_vote_and_conflicting_append_stop_no_node_and_lose_nothing() {
    let mut c = Cluster::start_auth(3, &[], Auth::Insecure);
    for i in 0..5 {
        assert!(put(&c, &format!("k{i}"), &format!("v{i}")), "{}", c.logs());
    }
    // Every node has applied the writes (so index 1 is committed everywhere).
    let applied = process::wait_for(TEN_S, || {
        (1..=3)
            .all(|id| stale_get(&c, id, "k4") == json!("v4"))
            .then_some(())
    });
    assert!(applied.is_some(), "{}", c.logs());
    let terms: Vec<u64> = (1..=3)
        .map(|id| {
            c.nodes[id - 1].status().expect("status")["term"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let high = terms.iter().max().unwrap() + 100;

    for to in 1..=3u64 {
        let claimed = to % 3 + 1; // one of its real peers
        let mut s = RawConn::connect(c.nodes[to as usize - 1].addr());
        s.send_json(&json!({"type":"Hello","node_id":claimed}));
        s.send_json(&json!({"from":claimed,"to":to,"msg":{
            "type":"RequestVote","term":high,"candidate_id":claimed,
            "last_log_index":1_000_000,"last_log_term":high,"pre_vote":false}}));
        s.send_json(&json!({"from":claimed,"to":to,"msg":{
            "type":"AppendEntries","term":high,"leader_id":claimed,
            "prev_log_index":0,"prev_log_term":0,
            "entries":[{"term":high,"index":1,"kind":"Command","data":"AAAA"}],
            "leader_commit":1}}));
        // The node closes the connection of a peer whose message it refused.
        assert!(
            matches!(s.read(TEN_S), Got::Closed),
            "node {to} kept the stranger's connection open:\n{}",
            c.logs()
        );
    }

    // Every node is still running and, once a leader is (re)elected, the cluster serves: the
    // old data is all there on every node, and a new write goes through.
    assert!(put(&c, "after", "stranger"), "{}", c.logs());
    for id in 1..=3u64 {
        assert!(
            c.node(id).is_running(),
            "node {id} exited:\n{}",
            c.nodes[id as usize - 1].log()
        );
    }
    let intact = process::wait_for(TEN_S, || {
        (1..=3)
            .all(|id| {
                (0..5).all(|i| stale_get(&c, id, &format!("k{i}")) == json!(format!("v{i}")))
                    && stale_get(&c, id, "after") == json!("stranger")
            })
            .then_some(())
    });
    assert!(
        intact.is_some(),
        "data lost or not replicated:\n{}",
        c.logs()
    );
    let logs = c.logs();
    assert!(
        logs.contains("refusing AppendEntries"),
        "the refusal is logged with its sender:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}
