//! End to end: the leader-election recipe (`raftctl elect`: create-if-absent with a lease,
//! watch the key, take over when it goes) with three real client processes, while the
//! cluster's leader node is killed, then the elected process is killed, then the next one
//! resigns. Never two holders at once by their own reckoning (each stops believing it leads
//! a ttl after the last keep-alive it sent), a new holder after each loss, and fencing tokens
//! that only grow.

use raftd_testkit::process::{sigterm, wait_for, Cluster};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RAFTCTL: &str = env!("CARGO_BIN_EXE_raftctl");
const TEN_S: Duration = Duration::from_secs(10);
const TTL: u64 = 2;

/// Every line each candidate printed, as (candidate, JSON).
type Lines = Arc<Mutex<Vec<(usize, Value)>>>;

fn candidate(cluster: &str, i: usize, lines: &Lines) -> Child {
    let mut child = Command::new(RAFTCTL)
        .args(["--cluster", cluster, "--json", "--timeout", "30"])
        .args([
            "elect",
            "the-job",
            &format!("cand{i}"),
            "--ttl",
            &TTL.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start raftctl elect");
    let out = child.stdout.take().expect("stdout");
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                lines.lock().unwrap().push((i, v));
            }
        }
    });
    child
}

fn events(lines: &Lines, what: &str) -> Vec<(usize, Value)> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["event"] == what)
        .cloned()
        .collect()
}

fn wait_for_leaders(lines: &Lines, n: usize, timeout: Duration) -> Vec<(usize, Value)> {
    wait_for(timeout, || {
        let l = events(lines, "LEADER");
        (l.len() >= n).then_some(l)
    })
    .unwrap_or_else(|| panic!("{n} elections: {:?}", lines.lock().unwrap()))
}

#[test]
fn one_holder_at_a_time_through_node_and_holder_failures() {
    let mut cluster = Cluster::start(3);
    cluster.leader(TEN_S);
    let addrs = cluster.cluster_arg();
    let lines: Lines = Arc::default();
    let mut cands: Vec<Child> = (0..3).map(|i| candidate(&addrs, i, &lines)).collect();
    let first = wait_for_leaders(&lines, 1, TEN_S)[0].0;
    wait_for(TEN_S, || {
        (events(&lines, "WAITING").len() >= 2).then_some(())
    })
    .expect("the other two wait");

    // The cluster's leader node dies: the holder keeps its lease through the failover.
    let leader = cluster.leader(TEN_S);
    cluster.node(leader).kill();
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    cluster.leader_among(&others, TEN_S);
    std::thread::sleep(Duration::from_secs(2 * TTL));
    cluster.node(leader).start();

    // The holder dies: another takes over once its lease expires.
    cands[first].kill().expect("kill the holder");
    let _ = cands[first].wait();
    let second = wait_for_leaders(&lines, 2, Duration::from_secs(TTL + 15))[1].0;
    assert_ne!(second, first);

    // The next holder resigns: the last candidate takes over without waiting for a ttl.
    sigterm(&cands[second]);
    let third = wait_for_leaders(&lines, 3, TEN_S)[2].0;
    assert!(third != first && third != second);
    wait_for(TEN_S, || {
        (!events(&lines, "RESIGNED").is_empty()).then_some(())
    })
    .expect("the second holder says it resigned");
    for c in &mut cands {
        let _ = c.kill();
        let _ = c.wait();
    }

    // Each holder's term, by its own reckoning: from LEADER to LOST / RESIGNED, or to the last
    // time it was sure of (HOLD) when it was killed. No two overlap, and tokens grow.
    let all = lines.lock().unwrap().clone();
    let mut terms: Vec<(u64, u64, u64, usize)> = Vec::new(); // (from, to, token, who)
    for (who, v) in all.iter().filter(|(_, v)| v["event"] == "LEADER") {
        let from = v["at"].as_u64().unwrap();
        let token = v["token"].as_u64().unwrap();
        let after: Vec<&Value> = all
            .iter()
            .filter(|(w, e)| w == who && e["at"].as_u64().unwrap_or(u64::MAX) >= from)
            .map(|(_, e)| e)
            .collect();
        let ended = after
            .iter()
            .find(|e| e["event"] == "LOST" || e["event"] == "RESIGNED")
            .and_then(|e| e["at"].as_u64());
        let held = all
            .iter()
            .filter(|(w, e)| w == who && e["event"] == "HOLD")
            .filter_map(|(_, e)| e["until"].as_u64())
            .max()
            .unwrap_or(from);
        terms.push((from, ended.unwrap_or(held).min(held.max(from)), token, *who));
    }
    terms.sort();
    eprintln!("terms (from, to, token, candidate): {terms:?}");
    assert_eq!(terms.len(), 3, "{all:?}");
    for w in terms.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "candidate {} led from {} while candidate {} still held until {}: {all:?}",
            w[1].3,
            w[1].0,
            w[0].3,
            w[0].1
        );
        assert!(w[1].2 > w[0].2, "fencing tokens grow: {terms:?}");
    }
}
