//! End to end, real processes whose disks misbehave (the faultfs shim preloaded into them, or
//! bytes written into their files while they are stopped): a full disk, a failing fsync, a
//! slow fsync, zeros and garbage after the last batch of the log, and a flipped byte in the
//! middle of it.

use raftd_testkit::process::{self, Cluster, RawConn};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TEN_S: Duration = Duration::from_secs(10);

fn status_of(cluster: &mut Cluster, id: u64) -> Option<Value> {
    cluster.node(id).status()
}

fn alarms(status: &Value) -> Vec<String> {
    status["alarms"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Calls `req` (with `id` replaced) until the answer is not `Timeout`, within 10 s.
fn call_until_answered(conn: &mut RawConn, req: &Value) -> Value {
    let deadline = Instant::now() + TEN_S;
    loop {
        let r = conn.call(req);
        if r["code"] != "Timeout" || Instant::now() > deadline {
            return r;
        }
    }
}

#[test]
fn a_full_disk_refuses_writes_with_no_space_serves_reads_and_recovers_by_itself() {
    let mut cluster = Cluster::start_with_disk_faults(1, &[]);
    cluster.leader(TEN_S);
    let mut conn = RawConn::connect(cluster.node(1).addr());
    assert_eq!(
        conn.call(&json!({"type":"Put","id":1,"key":"k","value":"before"})),
        json!({"type":"Ok","id":1})
    );
    let faults = cluster.node(1).faults.take().expect("faults");
    faults.disk_full(true);

    // The first write after the disk filled up is held (it may time out: not acknowledged).
    let first = conn.call(&json!({"type":"Put","id":2,"key":"k","value":"held",
                                  "client_id":"nospace","seq":1}));
    assert!(
        first["code"] == "Timeout" || first["code"] == "NoSpace",
        "{first}"
    );
    // The alarm is up; new writes are refused at once, reads are served.
    let st = process::wait_for(TEN_S, || {
        let s = status_of(&mut cluster, 1)?;
        alarms(&s).contains(&"NoSpace".to_string()).then_some(s)
    })
    .unwrap_or_else(|| panic!("no NoSpace alarm\n{}", cluster.logs()));
    assert_eq!(st["role"], "Leader");
    let refused = conn.call(&json!({"type":"Put","id":3,"key":"k2","value":"x"}));
    assert_eq!(refused["code"], "NoSpace", "{refused}");
    assert_eq!(
        conn.call(&json!({"type":"Get","id":4,"key":"k","consistency":"stale"})),
        json!({"type":"Ok","id":4,"value":"before"})
    );
    let log = cluster.node(1).log();
    assert!(log.contains("the disk is full"), "{log}");
    assert!(log.contains("raft.wal"), "{log}");
    // No snapshot is retried in a loop meanwhile (nothing new is applied).
    assert_eq!(log.matches("cannot prepare a snapshot").count(), 0, "{log}");

    // Space is back: the held write goes through, the alarm clears, writes are accepted.
    faults.disk_full(false);
    process::wait_for(TEN_S, || {
        let s = status_of(&mut cluster, 1)?;
        alarms(&s).is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("the NoSpace alarm never cleared\n{}", cluster.logs()));
    let retry = call_until_answered(
        &mut conn,
        &json!({"type":"Put","id":5,"key":"k","value":"held","client_id":"nospace","seq":1}),
    );
    assert_eq!(retry, json!({"type":"Ok","id":5}));
    assert_eq!(
        conn.call(&json!({"type":"Put","id":6,"key":"k2","value":"after"})),
        json!({"type":"Ok","id":6})
    );
    assert_eq!(
        conn.call(&json!({"type":"Get","id":7,"key":"k"})),
        json!({"type":"Ok","id":7,"value":"held"})
    );
    // Everything acknowledged survives a restart.
    cluster.node(1).faults = Some(faults);
    cluster.node(1).kill();
    cluster.node(1).start();
    cluster.leader(TEN_S);
    let mut conn = RawConn::connect(cluster.node(1).addr());
    let got = call_until_answered(&mut conn, &json!({"type":"Get","id":8,"key":"k2"}));
    assert_eq!(got, json!({"type":"Ok","id":8,"value":"after"}));
}

#[test]
fn a_leader_whose_disk_fills_up_hands_leadership_to_a_healthy_voter() {
    let mut cluster = Cluster::start_with_disk_faults(3, &[]);
    let leader = cluster.leader(TEN_S);
    let mut conn = RawConn::connect(cluster.node(leader).addr());
    assert_eq!(
        conn.call(&json!({"type":"Put","id":1,"key":"k","value":"1"})),
        json!({"type":"Ok","id":1})
    );
    cluster
        .node(leader)
        .faults
        .as_ref()
        .expect("faults")
        .disk_full(true);
    // A write makes the leader find out (its own copy is refused; the followers' count).
    let _ = conn.call(&json!({"type":"Put","id":2,"key":"k","value":"2"}));
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    let new_leader = process::wait_for(TEN_S, || {
        let (l, _) = cluster.wait_for_leader(&others, Duration::from_millis(200))?;
        (l != leader).then_some(l)
    })
    .unwrap_or_else(|| panic!("leadership stayed on the full disk\n{}", cluster.logs()));
    assert!(
        cluster
            .node(leader)
            .log()
            .contains("handing leadership to node"),
        "{}",
        cluster.node(leader).log()
    );
    // The healthy nodes take writes.
    let mut conn = RawConn::connect(cluster.node(new_leader).addr());
    let r = call_until_answered(
        &mut conn,
        &json!({"type":"Put","id":3,"key":"k","value":"3"}),
    );
    assert_eq!(r, json!({"type":"Ok","id":3}));
    let st = status_of(&mut cluster, leader).expect("status of the full node");
    assert_eq!(alarms(&st), vec!["NoSpace".to_string()]);
    // Space back: the node catches up and the alarm clears.
    cluster
        .node(leader)
        .faults
        .as_ref()
        .expect("faults")
        .disk_full(false);
    process::wait_for(TEN_S, || {
        let s = status_of(&mut cluster, leader)?;
        (alarms(&s).is_empty() && s["last_applied"].as_u64()? >= 4).then_some(())
    })
    .unwrap_or_else(|| panic!("the node did not recover\n{}", cluster.logs()));
}

#[test]
fn a_failed_fsync_stops_the_node_with_an_error_naming_the_file_and_it_recovers_on_restart() {
    let mut cluster = Cluster::start_with_disk_faults(3, &[]);
    let leader = cluster.leader(TEN_S);
    let follower = if leader == 1 { 2 } else { 1 };
    cluster
        .node(follower)
        .faults
        .as_ref()
        .expect("faults")
        .fsync_fails(true);
    let mut conn = RawConn::connect(cluster.node(leader).addr());
    assert_eq!(
        conn.call(&json!({"type":"Put","id":1,"key":"k","value":"1"})),
        json!({"type":"Ok","id":1})
    );
    process::wait_for(TEN_S, || {
        (!cluster.node(follower).is_running()).then_some(())
    })
    .unwrap_or_else(|| panic!("the node kept running\n{}", cluster.logs()));
    let log = cluster.node(follower).log();
    assert!(log.contains("fsync of"), "{log}");
    assert!(log.contains("raft.wal"), "{log}");
    assert!(log.contains("can no longer be trusted"), "{log}");
    // Never retried as if it were safe: the node is gone, the others serve.
    assert_eq!(
        conn.call(&json!({"type":"Put","id":2,"key":"k","value":"2"})),
        json!({"type":"Ok","id":2})
    );
    // The disk works again; a restart recovers from what is on disk and catches up.
    cluster
        .node(follower)
        .faults
        .as_ref()
        .expect("faults")
        .fsync_fails(false);
    cluster.node(follower).kill();
    cluster.node(follower).start();
    process::wait_for(TEN_S, || {
        let s = status_of(&mut cluster, follower)?;
        (s["last_applied"].as_u64()? >= 3).then_some(())
    })
    .unwrap_or_else(|| panic!("the restarted node did not catch up\n{}", cluster.logs()));
}

#[test]
fn followers_with_a_stalled_fsync_do_not_cost_the_leader_its_quorum() {
    let mut cluster = Cluster::start_with_disk_faults(3, &[]);
    let leader = cluster.leader(TEN_S);
    let term = status_of(&mut cluster, leader).expect("status")["term"].clone();
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    for f in &followers {
        cluster
            .node(*f)
            .faults
            .as_ref()
            .expect("faults")
            .slow_fsync(1000);
    }
    // Each write waits a second for a follower's fsync, while heartbeats go on; three in a
    // row keep both followers' disks stalled for about three seconds.
    let mut conn = RawConn::connect(cluster.node(leader).addr());
    for i in 0..3u64 {
        let r = conn.call(&json!({"type":"Put","id":10 + i,"key":"k","value":i.to_string()}));
        assert_eq!(r, json!({"type":"Ok","id":10 + i}), "{}", cluster.logs());
    }
    let st = status_of(&mut cluster, leader).expect("status");
    assert_eq!(st["role"], "Leader", "{}", cluster.logs());
    assert_eq!(st["term"], term, "an election happened\n{}", cluster.logs());
    let log = cluster.node(leader).log();
    assert!(!log.contains("leader -> follower"), "{log}");
    for f in &followers {
        let fsyncs = cluster.node(*f).faults.as_ref().expect("faults").fsyncs();
        assert!(fsyncs >= 3, "node {f} made {fsyncs} fsyncs");
    }
}

#[test]
fn zeros_and_garbage_after_the_last_batch_are_dropped_and_damage_mid_log_is_refused_then_repaired()
{
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let mut conn = RawConn::connect(cluster.node(leader).addr());
    for i in 0..20u64 {
        let r = conn.call(&json!({"type":"Put","id":i,"key":format!("k{i}"),"value":"v"}));
        assert_eq!(r["type"], "Ok");
    }
    let follower = if leader == 1 { 2 } else { 1 };
    assert!(cluster.node(follower).terminate().is_some());
    let wal = cluster.node(follower).data_dir.join("raft.wal");
    let good = std::fs::read(&wal).expect("read the log");

    // A power loss mid-write: zeros, then garbage, after the last complete batch.
    let mut torn = good.clone();
    torn.extend_from_slice(&[0u8; 8192]);
    torn.extend((0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(&wal, &torn).expect("write");
    cluster.node(follower).start();
    process::wait_for(TEN_S, || {
        let s = status_of(&mut cluster, follower)?;
        (s["last_applied"].as_u64()? >= 21).then_some(())
    })
    .unwrap_or_else(|| panic!("the node did not start and catch up\n{}", cluster.logs()));
    let log = cluster.node(follower).log();
    assert!(log.contains("dropping 11192 bytes"), "{log}");
    assert!(log.contains("never acknowledged"), "{log}");
    assert!(cluster.node(follower).terminate().is_some());

    // A flipped byte in the middle of the log: damage to synced data. The node refuses to
    // start, with an error naming the file and offset.
    let good = std::fs::read(&wal).expect("read the log");
    let mut bad = good.clone();
    let mid = good.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&wal, &bad).expect("write");
    cluster.node(follower).start();
    process::wait_for(TEN_S, || {
        (!cluster.node(follower).is_running()).then_some(())
    })
    .unwrap_or_else(|| panic!("a damaged node started\n{}", cluster.logs()));
    let log = cluster.node(follower).log();
    assert!(log.contains("damaged at byte offset"), "{log}");
    assert!(log.contains("raft.wal"), "{log}");
    assert_eq!(
        std::fs::read(&wal).expect("read"),
        bad,
        "the damaged log was changed"
    );
    assert!(log.contains("--repair"), "{log}");

    // `--repair`: the damaged dir is moved aside (kept), and the node is repaired from the
    // cluster: caught up, and re-admitted as a voter with its new data dir.
    cluster.node(follower).kill(); // reaps the process that refused to start
    cluster.node(follower).extra_args.push("--repair".into());
    cluster.node(follower).start();
    process::wait_for(TEN_S, || {
        let s = status_of(&mut cluster, follower)?;
        (s["last_applied"].as_u64()? >= 21).then_some(())
    })
    .unwrap_or_else(|| panic!("the repaired node did not catch up\n{}", cluster.logs()));
    let data_dir = cluster.node(follower).data_dir.clone();
    let parent = data_dir.parent().expect("parent").to_path_buf();
    let name = data_dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let aside: Vec<_> = std::fs::read_dir(&parent)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.damaged-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "the damaged dir was not kept aside");
    assert_eq!(
        std::fs::read(aside[0].path().join("raft.wal")).expect("read"),
        bad,
        "the damaged log was changed"
    );
    let leader = cluster.leader(TEN_S);
    let mut conn = RawConn::connect(cluster.node(leader).addr());
    process::wait_for(TEN_S, || {
        let r = conn.call(&json!({"type":"MemberList","id":99}));
        let members = r["members"].as_array()?.clone();
        members
            .iter()
            .any(|m| {
                m["id"].as_u64() == Some(follower)
                    && m["role"] == "Voter"
                    && m["readmitting"] != true
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the repaired node was not re-admitted\n{}", cluster.logs()));
    let w = conn.call(&json!({"type":"Put","id":100,"key":"after","value":"repair"}));
    assert_eq!(w["type"], "Ok", "{w}");
}

#[test]
fn the_fault_shim_passes_its_selftest() {
    // The shim the tests above rely on: its own checks (tests/support/faultfs/selftest.sh).
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/faultfs/selftest.sh"
    );
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("run the faultfs selftest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("faultfs selftest: ok"), "{text}");
}
