//! End to end, real processes under client load, every history checked for linearizability:
//! growing 3 → 5 and shrinking back, replacing a node whose data dir was wiped (the lost-disk
//! pitfall, with and without load), a joiner caught up by snapshot, removing the leader, a
//! rolling restart with leadership transfer, `Unsafe` for a removal that would need a voter
//! that just died, and `--force-new-cluster`.

use raftd::client::{Client, ClientOptions};
use raftd::rpc::types::{Consistency, MemberStatus};
use raftd_testkit::check::{check_history, Operation};
use raftd_testkit::nemesis::{spawn_clients, ClientReport, WorkloadConfig, WorkloadCtl};
use raftd_testkit::process::{self, Cluster};
use raftd_testkit::runtime;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const TEN_S: Duration = Duration::from_secs(10);

fn admin(addrs: Vec<SocketAddr>) -> Client {
    Client::new(
        addrs,
        ClientOptions {
            deadline: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        },
    )
}

/// Clients writing and reading while the test changes the cluster.
struct Load {
    ctl: Arc<WorkloadCtl>,
    clients: Vec<JoinHandle<ClientReport>>,
}

impl Load {
    fn start(addrs: Vec<SocketAddr>, seed: u64) -> Load {
        let ctl = Arc::new(WorkloadCtl::default());
        let mut cfg = WorkloadConfig::new(4, seed);
        cfg.think_ms = (2, 10);
        let clients = spawn_clients(addrs, &cfg, Instant::now(), ctl.clone());
        Load { ctl, clients }
    }

    fn ok(&self) -> u64 {
        self.ctl.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients and checks their history; returns how many operations succeeded.
    async fn finish(self, what: &str, cluster: &Cluster) -> u64 {
        self.ctl.stop.store(true, Ordering::Relaxed);
        let mut history: Vec<Operation> = Vec::new();
        for c in self.clients {
            let report = c.await.expect("client task");
            assert!(
                report.anomalies.is_empty(),
                "[{what}] unexpected answers: {:?}",
                report.anomalies
            );
            history.extend(report.history);
        }
        let ok = self.ctl.ok.load(Ordering::Relaxed);
        if let Err(e) = check_history(&history) {
            panic!(
                "[{what}] the history is not linearizable: {e}\n{}",
                cluster.logs()
            );
        }
        eprintln!(
            "[{what}] {} operations, {ok} ok, linearizable",
            history.len()
        );
        ok
    }
}

/// Waits until the leader reports exactly `voters` as voters and no learners.
async fn wait_for_voters(
    client: &mut Client,
    voters: &[u64],
    cluster: &Cluster,
) -> Vec<MemberStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        if let Ok(members) = client.member_list().await {
            let mut ids: Vec<u64> = members
                .iter()
                .filter(|m| m.role == "Voter" && !m.readmitting)
                .map(|m| m.id)
                .collect();
            ids.sort_unstable();
            if ids == voters && members.len() == voters.len() {
                return members;
            }
            last = members;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "voters never became {voters:?}; last member list {last:?}\n{}",
        cluster.logs()
    );
}

/// Waits until some client operations succeed after `since` (the cluster serves).
async fn wait_for_progress(load: &Load, since: u64, cluster: &Cluster) {
    let deadline = Instant::now() + TEN_S;
    while Instant::now() < deadline {
        if load.ok() >= since + 20 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no client progress within 10 s\n{}", cluster.logs());
}

#[test]
fn grow_from_three_to_five_and_shrink_back_under_load() {
    let mut cluster = Cluster::start(3);
    cluster.leader(TEN_S);
    let rt = runtime();
    rt.block_on(async {
        let load = Load::start(cluster.addrs(), 1201);
        let mut adm = admin(cluster.addrs());
        wait_for_progress(&load, 0, &cluster).await;
        for _ in 0..2 {
            let id = cluster.add_node();
            let addr = cluster.node(id).addr().to_string();
            let members = adm
                .member_add(id, &addr, false, false)
                .await
                .unwrap_or_else(|e| panic!("add node {id}: {e}\n{}", cluster.logs()));
            assert!(members.iter().any(|m| m.id == id), "{members:?}");
            let before = load.ok();
            wait_for_progress(&load, before, &cluster).await;
        }
        wait_for_voters(&mut adm, &[1, 2, 3, 4, 5], &cluster).await;
        // Every node serves the data, the new ones included.
        let mut probe = admin(cluster.addrs());
        probe
            .put("grown", "yes")
            .await
            .expect("write on five voters");
        for id in [4, 5] {
            let addr = cluster.node(id).addr();
            let seen = process::wait_for(TEN_S, || {
                let s = process::request(
                    addr,
                    br#"{"type":"Get","id":1,"key":"grown","consistency":"stale"}"#,
                )?;
                (s["value"] == "yes").then_some(())
            });
            assert!(
                seen.is_some(),
                "node {id} never applied the write\n{}",
                cluster.logs()
            );
        }
        for id in [5, 4] {
            adm.member_remove(id, false)
                .await
                .unwrap_or_else(|e| panic!("remove node {id}: {e}\n{}", cluster.logs()));
            cluster.node(id).terminate();
            let before = load.ok();
            wait_for_progress(&load, before, &cluster).await;
        }
        wait_for_voters(&mut adm, &[1, 2, 3], &cluster).await;
        load.finish("grow and shrink", &cluster).await;
    });
}

/// The pitfall: follower A acknowledges writes while follower B is down; A's disk is lost and
/// A restarts with its usual command line; the leader dies; B comes back. A must not vote as
/// the member it was (B lacks the writes and would win); once the old leader returns, every
/// acknowledged write is there, and A is caught up and re-admitted on its own.
#[test]
fn a_wiped_node_restarted_as_before_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let a = leader % 3 + 1;
    let b = a % 3 + 1;
    let rt = runtime();
    rt.block_on(async {
        cluster.node(b).kill();
        let mut writer = admin(cluster.addrs());
        for i in 0..50 {
            writer
                .put(&format!("acked{i}"), &i.to_string())
                .await
                .unwrap_or_else(|e| panic!("write {i} with B down: {e}\n{}", cluster.logs()));
        }
        cluster.node(a).kill();
        cluster.wipe(a);
        cluster.node(a).start();
        cluster.node(leader).kill();
        cluster.node(b).start();
        // A (empty) and B (behind) are up: no leader may emerge from them, for A must not
        // vote. Watched for three election timeouts' worth of seconds.
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            for id in [a, b] {
                if let Some(s) = cluster.node(id).status() {
                    assert_ne!(
                        s["role"],
                        "Leader",
                        "node {id} leads with only the wiped node and the stale one up: {s}\n{}",
                        cluster.logs()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.node(leader).start();
        cluster.leader(TEN_S);
        let mut reader = admin(cluster.addrs());
        for i in 0..50 {
            let v = reader
                .get(&format!("acked{i}"), Consistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("read {i}: {e}\n{}", cluster.logs()));
            assert_eq!(
                v,
                Some(i.to_string()),
                "acknowledged write {i} lost\n{}",
                cluster.logs()
            );
        }
        // A comes back as a voter with its new data dir, on its own.
        let members = wait_for_voters(&mut reader, &[1, 2, 3], &cluster).await;
        assert!(members.iter().all(|m| !m.readmitting), "{members:?}");
        let log = cluster.node(a).log();
        assert!(
            log.contains("will not vote until the leader has caught it up"),
            "node {a} knew it had lost its data:\n{log}"
        );
    });
}

#[test]
fn removing_the_leader_hands_over_under_load() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let rt = runtime();
    rt.block_on(async {
        let load = Load::start(cluster.addrs(), 1203);
        wait_for_progress(&load, 0, &cluster).await;
        let mut adm = admin(cluster.addrs());
        adm.member_remove(leader, false)
            .await
            .unwrap_or_else(|e| panic!("remove the leader: {e}\n{}", cluster.logs()));
        let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
        let (next, _) = cluster
            .wait_for_leader(&rest, TEN_S)
            .unwrap_or_else(|| panic!("no leader after removing {leader}\n{}", cluster.logs()));
        assert_ne!(next, leader);
        let before = load.ok();
        wait_for_progress(&load, before, &cluster).await;
        // The removed node keeps running: it must not disturb the others.
        let term = cluster.node(next).status().and_then(|s| s["term"].as_u64());
        let before = load.ok();
        wait_for_progress(&load, before, &cluster).await;
        assert_eq!(
            cluster.node(next).status().and_then(|s| s["term"].as_u64()),
            term,
            "the removed node disturbed the cluster\n{}",
            cluster.logs()
        );
        assert!(
            cluster
                .node(leader)
                .log()
                .contains("the configuration that removes it is committed"),
            "{}",
            cluster.node(leader).log()
        );
        cluster.node(leader).terminate();
        load.finish("remove the leader", &cluster).await;
    });
}

#[test]
fn a_rolling_restart_hands_leadership_over_under_load() {
    let mut cluster = Cluster::start(3);
    cluster.leader(TEN_S);
    let rt = runtime();
    rt.block_on(async {
        let load = Load::start(cluster.addrs(), 1204);
        wait_for_progress(&load, 0, &cluster).await;
        for id in [1, 2, 3] {
            let status = cluster.node(id).terminate();
            assert!(
                status.is_some_and(|s| s.success()),
                "node {id} exit: {status:?}"
            );
            cluster.node(id).start();
            cluster.leader(TEN_S);
            let before = load.ok();
            wait_for_progress(&load, before, &cluster).await;
        }
        let handed = cluster.logs().matches("hands leadership over").count();
        assert!(
            handed >= 1,
            "no leader handed over when stopped\n{}",
            cluster.logs()
        );
        load.finish("rolling restart", &cluster).await;
    });
}

#[test]
fn force_new_cluster_recovers_from_a_lost_majority() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let rt = runtime();
    rt.block_on(async {
        let mut c = admin(cluster.addrs());
        c.put("survives", "1").await.expect("write");
        // Two of three nodes are lost for good.
        let survivor = leader;
        for id in [1, 2, 3] {
            if id != survivor {
                cluster.node(id).kill();
            }
        }
        cluster.node(survivor).terminate();
        cluster
            .node(survivor)
            .extra_args
            .push("--force-new-cluster".into());
        cluster.node(survivor).start();
        let (l, _) = cluster
            .wait_for_leader(&[survivor], TEN_S)
            .unwrap_or_else(|| panic!("the survivor does not lead alone\n{}", cluster.logs()));
        assert_eq!(l, survivor);
        let mut c = admin(vec![cluster.node(survivor).addr()]);
        assert_eq!(
            c.get("survives", Consistency::Linearizable)
                .await
                .expect("read"),
            Some("1".into())
        );
        let members = c.member_list().await.expect("member list");
        assert_eq!(members.len(), 1, "{members:?}");
        assert!(cluster
            .node(survivor)
            .log()
            .contains("FORCING A NEW CLUSTER"));
        // The cluster grows again from there.
        let id = cluster.add_node();
        let addr = cluster.node(id).addr().to_string();
        c.member_add(id, &addr, false, false)
            .await
            .expect("add a fresh node");
        wait_for_voters(&mut c, &[survivor, id], &cluster).await;
        c.put("after", "2").await.expect("write on the new cluster");
    });
}

#[test]
fn a_leader_killed_in_the_middle_of_a_change_leaves_one_configuration_and_the_change_completes() {
    // The change is sent to the leader and the leader is SIGKILLed at once, under load: the
    // entry may or may not have reached the others. After the restart the cluster has one
    // configuration (the old one, or the new one with node 4), and asking again completes it.
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let rt = runtime();
    rt.block_on(async {
        let load = Load::start(cluster.addrs(), 1205);
        wait_for_progress(&load, 0, &cluster).await;
        let id = cluster.add_node();
        let addr = cluster.node(id).addr().to_string();
        let mut raw = process::RawConn::connect(cluster.node(leader).addr());
        raw.send_json(&serde_json::json!({"type":"MemberAdd","id":1,"node_id":id,
                                          "addr":addr,"learner":false}));
        cluster.node(leader).kill();
        let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
        cluster.leader_among(&rest, TEN_S);
        cluster.node(leader).start();
        let mut c = admin(cluster.addrs());
        // Whatever survived the crash, the members agree on one list, with node 4 in it or not.
        let members = c.member_list().await.expect("member list");
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        assert!(
            ids == vec![1, 2, 3] || ids == vec![1, 2, 3, id],
            "{members:?}\n{}",
            cluster.logs()
        );
        c.member_add(id, &addr, false, false)
            .await
            .expect("the change asked again");
        wait_for_voters(&mut c, &[1, 2, 3, id], &cluster).await;
        let before = load.ok();
        wait_for_progress(&load, before, &cluster).await;
        load.finish("crash mid-change", &cluster).await;
    });
}

/// A follower's data dir is wiped while clients write and read; it restarts with its usual
/// command line. It is demoted to a learner, caught up, and re-admitted on its own with its new
/// data dir (the configuration records which), and the clients' history stays linearizable.
#[test]
fn a_wiped_follower_is_readmitted_under_load_with_its_new_data_dir() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let a = leader % 3 + 1;
    let rt = runtime();
    rt.block_on(async {
        let load = Load::start(cluster.addrs(), 1206);
        let mut adm = admin(cluster.addrs());
        wait_for_progress(&load, 0, &cluster).await;
        // The founders' data dirs get recorded once the leader has heard from each.
        let deadline = Instant::now() + Duration::from_secs(20);
        let old_dir = loop {
            let members = adm.member_list().await.expect("member list");
            if let Some(d) = members
                .iter()
                .find(|m| m.id == a)
                .and_then(|m| m.data_dir.clone())
            {
                break d;
            }
            assert!(
                Instant::now() < deadline,
                "node {a}'s data dir never recorded: {members:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        cluster.node(a).kill();
        cluster.wipe(a);
        cluster.node(a).start();
        let before = load.ok();
        wait_for_progress(&load, before, &cluster).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let members = loop {
            let members = adm.member_list().await.expect("member list");
            let back = members.iter().find(|m| m.id == a).is_some_and(|m| {
                m.role == "Voter"
                    && !m.readmitting
                    && m.data_dir.as_ref().is_some_and(|d| *d != old_dir)
            });
            if back {
                break members;
            }
            assert!(
                Instant::now() < deadline,
                "node {a} never re-admitted with a new data dir: {members:?}\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(members.len(), 3, "{members:?}");
        let before = load.ok();
        wait_for_progress(&load, before, &cluster).await;
        let log = cluster.node(leader).log();
        assert!(
            log.contains("came back with a new data dir"),
            "the leader saw the new data dir:\n{log}"
        );
        load.finish("wiped follower under load", &cluster).await;
    });
}

/// A node that joins after every member compacted its log is caught up by a snapshot, which
/// carries the configuration: it learns from it that it is a member, becomes a voter, and
/// serves the data written before it joined.
#[test]
fn a_joiner_is_caught_up_by_a_snapshot_that_carries_the_configuration() {
    // No log kept behind the snapshots: the joiner needs entries the members no longer hold.
    joiner_catches_up("0", true);
}

/// With the log the members keep behind their snapshots (`--snapshot-catchup-entries`, 10,000
/// by default), a node that needs fewer entries than that gets them from the log: no snapshot
/// is sent.
#[test]
fn a_joiner_within_the_log_kept_behind_the_snapshots_gets_entries_not_a_snapshot() {
    joiner_catches_up("10000", false);
}

fn joiner_catches_up(catchup_entries: &str, by_snapshot: bool) {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--snapshot-entries",
            "20",
            "--snapshot-catchup-entries",
            catchup_entries,
        ],
    );
    cluster.leader(TEN_S);
    let rt = runtime();
    rt.block_on(async {
        let mut adm = admin(cluster.addrs());
        for i in 0..100 {
            adm.put(&format!("k{i}"), &i.to_string())
                .await
                .unwrap_or_else(|e| panic!("write {i}: {e}\n{}", cluster.logs()));
        }
        let compacted = process::wait_for(TEN_S, || {
            (1..=3)
                .all(|n| cluster.node(n).log().contains("log compacted"))
                .then_some(())
        });
        assert!(
            compacted.is_some(),
            "no snapshots taken\n{}",
            cluster.logs()
        );
        let id = cluster.add_node();
        let addr = cluster.node(id).addr().to_string();
        adm.member_add(id, &addr, false, false)
            .await
            .unwrap_or_else(|e| panic!("add node {id}: {e}\n{}", cluster.logs()));
        wait_for_voters(&mut adm, &[1, 2, 3, id], &cluster).await;
        let log = cluster.node(id).log();
        assert_eq!(
            log.contains("installed a snapshot at index"),
            by_snapshot,
            "node {id} caught up by a snapshot: {}\n{log}",
            !by_snapshot
        );
        let new = cluster.node(id).addr();
        for i in [0, 57, 99] {
            let body = format!(r#"{{"type":"Get","id":1,"key":"k{i}","consistency":"stale"}}"#);
            let want = i.to_string();
            let v = process::wait_for(TEN_S, || {
                let v = process::request(new, body.as_bytes())?;
                (v["value"] == want.as_str()).then_some(v)
            });
            assert!(v.is_some(), "node {id} lacks k{i}\n{}", cluster.logs());
        }
        let status = cluster.node(id).status().expect("status of the new node");
        assert_eq!(
            status["voters"],
            serde_json::json!([1, 2, 3, id]),
            "the new node's configuration: {status}"
        );
        adm.put("after-join", "1")
            .await
            .expect("write on four voters");
    });
}

/// `Unsafe` against real processes: once the leader reports a killed voter unreachable (two
/// heartbeats after the kill), removing another voter is refused, because the configuration
/// left would need the dead one; nothing changes, and writes go on.
#[test]
fn removing_a_voter_while_another_is_down_is_refused_as_unsafe() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(TEN_S);
    let dead = leader % 3 + 1;
    let other = dead % 3 + 1;
    assert_ne!(other, leader);
    let rt = runtime();
    rt.block_on(async {
        let mut adm = admin(vec![cluster.node(leader).addr()]);
        adm.put("before", "1").await.expect("write");
        cluster.node(dead).kill();
        let deadline = Instant::now() + TEN_S;
        loop {
            let members = adm.member_list().await.expect("member list");
            let m = members
                .iter()
                .find(|m| m.id == dead)
                .expect("the dead node is listed");
            if m.reachable == Some(false) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {dead} still reachable: {members:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused = adm.member_remove(other, false).await;
        match refused {
            Err(raftd::client::ClientError::Unsafe(why)) => {
                assert!(why.contains("quorum"), "{why}");
            }
            other => panic!("expected Unsafe, got {other:?}\n{}", cluster.logs()),
        }
        let members = adm.member_list().await.expect("member list");
        assert_eq!(members.len(), 3, "nothing changed: {members:?}");
        adm.put("after", "2")
            .await
            .expect("writes go on with two of three");
    });
}
