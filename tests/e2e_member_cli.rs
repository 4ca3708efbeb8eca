//! End to end: `raftctl member list|add|promote|remove` and `raftctl leader transfer` against
//! real processes, as README's "Operating a cluster" tells an operator to use them, with the
//! table, `--json`, and `Status`'s voters and learners.
//!
//! `Unsafe` against real processes is in e2e_membership.rs. The leader counts a voter as live
//! for a change if it answered within two heartbeat intervals: a removal asked for in the
//! first ~100 ms after another voter died is still accepted, and then waits for the dead voter
//! as any entry would (a node can die right after any check). `member list` shows a voter the
//! leader no longer hears as "not answering the leader".

use raftd_testkit::process::{wait_for, Cluster, Run};
use serde_json::Value;
use std::time::Duration;

const TEN_S: Duration = Duration::from_secs(10);

fn raftctl(cluster: &str, args: &[&str]) -> Run {
    let all: Vec<&str> = ["--timeout", "10"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    raftd_testkit::process::raftctl(cluster, &all)
}

fn members(cluster: &str) -> Vec<Value> {
    let r = raftctl(cluster, &["--json", "member", "list"]);
    assert_eq!(r.code, 0, "member list: {}", r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    v["members"].as_array().expect("members").clone()
}

fn role_of(members: &[Value], id: u64) -> Option<String> {
    members
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["role"].as_str().unwrap_or_default().to_string())
}

#[test]
fn raftctl_adds_a_learner_promotes_it_transfers_to_it_and_removes_it() {
    let mut cluster = Cluster::start(3);
    cluster.leader(TEN_S);
    let all = cluster.cluster_arg();
    let m = members(&all);
    assert_eq!(m.len(), 3);
    assert_eq!(m.iter().filter(|m| m["is_leader"] == true).count(), 1);
    let table = raftctl(&all, &["member", "list"]);
    assert!(table.stdout.starts_with("ID   ADDRESS"), "{}", table.stdout);
    assert!(table.stdout.contains("leader"), "{}", table.stdout);

    // A learner: it gets the log, never votes.
    let id = cluster.add_node();
    let addr = cluster.node(id).addr().to_string();
    let r = raftctl(
        &all,
        &["member", "add", &id.to_string(), &addr, "--learner"],
    );
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("as a learner"), "{}", r.stdout);
    assert_eq!(role_of(&members(&all), id).as_deref(), Some("Learner"));
    let all = cluster.cluster_arg();
    let status = wait_for(TEN_S, || {
        let r = raftctl(&all, &["--json", "status"]);
        let v: Value = serde_json::from_str(r.stdout.trim()).ok()?;
        let nodes = v["nodes"].as_array()?.clone();
        let leader = nodes.iter().find(|n| n["role"] == "Leader")?.clone();
        (leader["learners"] == serde_json::json!([id])).then_some(leader)
    })
    .unwrap_or_else(|| panic!("Status shows the learner\n{}", cluster.logs()));
    assert_eq!(status["voters"], serde_json::json!([1, 2, 3]));

    // Promoted once caught up (refused as unsafe until then, so retried).
    let promoted = wait_for(TEN_S, || {
        let r = raftctl(&all, &["member", "promote", &id.to_string()]);
        (r.code == 0).then_some(r.stdout)
    })
    .unwrap_or_else(|| panic!("promote node {id}\n{}", cluster.logs()));
    assert!(
        promoted.contains(&format!("node {id} is a voter")),
        "{promoted}"
    );
    assert_eq!(role_of(&members(&all), id).as_deref(), Some("Voter"));

    // Leadership to the new voter.
    let r = raftctl(&all, &["--json", "leader", "transfer", &id.to_string()]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    assert_eq!(v["leader_id"], id);
    assert_eq!(cluster.leader(TEN_S), id);

    // Removing the leader: it hands over, and the others go on without it.
    let r = raftctl(&all, &["member", "remove", &id.to_string()]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!("removed node {id}")),
        "{}",
        r.stdout
    );
    cluster.node(id).kill();
    let rest: Vec<u64> = vec![1, 2, 3];
    cluster.leader_among(&rest, TEN_S);
    assert_eq!(role_of(&members(&all), id), None);

    assert!(raftctl(&all, &["put", "after", "ok"]).code == 0);
}

/// `raftctl endpoint status`: a row per node with its own view, as a table and as JSON; a
/// node that does not answer is a row saying so, and the exit code says some did not.
#[test]
fn endpoint_status_shows_every_node_and_one_that_is_down() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let all = cluster.cluster_arg();
    // The data size comes from the log writer, a moment after the first writes.
    let rows = wait_for(TEN_S, || {
        let r = raftctl(&all, &["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_str(r.stdout.trim()).ok()?;
        let rows = v["endpoints"].as_array()?.clone();
        rows.iter()
            .all(|e| e["data_bytes"].as_u64().is_some_and(|b| b > 0))
            .then_some(rows)
    })
    .expect("every node reports its data size");
    assert_eq!(rows.len(), 3);
    for e in &rows {
        assert_eq!(e["leader"], leader, "{e}");
        assert!(e["term"].as_u64().is_some_and(|t| t >= 1), "{e}");
        assert!(e["commit_index"].as_u64().is_some(), "{e}");
        assert!(e["took_ms"].as_f64().is_some(), "{e}");
    }
    let roles: Vec<&str> = rows
        .iter()
        .map(|e| e["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "Leader").count(),
        1,
        "{roles:?}"
    );

    let down = leader % 3 + 1;
    cluster.node(down).kill();
    let r = raftctl(&all, &["endpoint", "status"]);
    assert_eq!(r.code, 1, "some node did not answer: {}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("ENDPOINT"), "{}", r.stdout);
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert_eq!(
        lines.iter().filter(|l| l.contains("unreachable")).count(),
        1,
        "{}",
        r.stdout
    );
}
