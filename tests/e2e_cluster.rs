//! End to end: three real `raftd` processes on loopback, killed with SIGKILL and restarted.

use raftd_testkit::process;

use process::Cluster;
use std::time::{Duration, Instant};

const FIVE_S: Duration = Duration::from_secs(5);

#[test]
fn elect_kill_leader_reelect_and_rejoin() {
    let mut cluster = Cluster::start(3);
    let t0 = Instant::now();
    let (leader, term) = cluster
        .wait_for_leader(&[1, 2, 3], FIVE_S)
        .unwrap_or_else(|| panic!("no single leader within 5 s\n{}", cluster.logs()));
    eprintln!("leader {leader} in term {term} after {:?}", t0.elapsed());

    // The Status answer has every field of the protocol.
    let s = cluster
        .node(leader)
        .status()
        .expect("leader answers Status");
    for field in [
        "node_id",
        "role",
        "term",
        "leader_id",
        "leader_addr",
        "commit_index",
        "last_applied",
        "last_log_index",
        "snapshot_index",
        "members",
    ] {
        assert!(s.get(field).is_some(), "Status lacks {field}: {s}");
    }
    assert_eq!(s["id"], 7);
    assert_eq!(s["members"].as_object().map(|m| m.len()), Some(3));
    assert!(
        s["commit_index"].as_u64() >= Some(1),
        "the leader's no-op commits: {s}"
    );

    // Crash the leader; the other two elect a new one.
    let old_term = cluster
        .node(leader)
        .status()
        .and_then(|s| s["term"].as_u64())
        .unwrap_or(term);
    cluster.node(leader).kill();
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let t1 = Instant::now();
    let (new_leader, new_term) = cluster.wait_for_leader(&rest, FIVE_S).unwrap_or_else(|| {
        panic!(
            "no new leader within 5 s of killing {leader}\n{}",
            cluster.logs()
        )
    });
    eprintln!(
        "new leader {new_leader} in term {new_term} after {:?}",
        t1.elapsed()
    );
    assert_ne!(new_leader, leader);
    assert!(new_term > old_term);

    // Restart the old leader from its data dir: it rejoins as a follower, term not lower.
    cluster.node(leader).start();
    let rejoined = process::wait_for(FIVE_S, || {
        let s = cluster.node(leader).status()?;
        (s["role"] == "Follower" && s["leader_id"].as_u64() == Some(new_leader)).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "node {leader} did not rejoin as a follower\n{}",
            cluster.logs()
        )
    });
    assert!(
        rejoined["term"].as_u64() >= Some(new_term),
        "term went backwards: {rejoined}"
    );
    assert!(
        rejoined["last_log_index"].as_u64() >= s["last_log_index"].as_u64(),
        "restarted node lost log entries: before {s}, after {rejoined}"
    );
    let log = cluster.node(leader).log();
    assert!(
        log.contains("recovered term"),
        "restart replays its data dir:\n{log}"
    );

    // The logs say what happened.
    let all = cluster.logs();
    assert!(all.contains("won the election for term"), "{all}");
    assert!(all.contains(" up (connected to "), "{all}");
    assert!(all.contains("new leader node"), "{all}");
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(&[1, 2, 3], FIVE_S).expect("leader");
    for id in 1..=3 {
        let status = cluster.node(id).terminate().expect("was running");
        assert!(
            status.success(),
            "node {id} exited with {status:?}\n{}",
            cluster.node(id).log()
        );
    }
}
