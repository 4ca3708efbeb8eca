//! Crashes and restarts (the spirit of the MIT 6.824 lab's 2C persistence tests): what a node
//! synced survives, what it promised (a vote, an acknowledged entry) was synced before the
//! promise left, and the cluster recovers liveness after losing a majority.

use raftd_sim::scenario as common;

use common::{check_one_leader, cluster, cmd, heal_all, ELECTION};
use raftd::rpc::types::{NodeId, RaftMessage};
use raftd_core::Config;
use raftd_sim::{Cluster, SimConfig, MS, SEC};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const AGREE: u64 = 10 * SEC;

/// Whole-cluster crash, leader crashes, a follower crash (MIT TestPersist12C).
#[test]
fn crash_and_restart_all_and_leaders() {
    let mut c = cluster(3, 301);
    let all = c.ids();
    let first = c.one(b"11", 3, AGREE);

    // Everyone crashes and restarts: the committed command is still there.
    for id in all.clone() {
        c.crash(id);
    }
    for id in all.clone() {
        c.restart(id);
    }
    let ok = c.run_until(ELECTION, |c| c.applied_at(first).0 == 3);
    let seed = c.seed();
    assert!(
        ok,
        "[seed {seed}] command committed before a full restart was not re-applied by all"
    );
    assert_eq!(
        c.applied_at(first).1.as_deref(),
        Some(&b"11"[..]),
        "[seed {seed}] wrong entry at {first}"
    );
    c.one(b"12", 3, AGREE);

    // The leader crashes and restarts.
    let leader1 = check_one_leader(&mut c, &all, ELECTION);
    c.restart(leader1);
    c.one(b"13", 3, AGREE);

    // The leader crashes; the other two go on; it comes back.
    let leader2 = check_one_leader(&mut c, &all, ELECTION);
    c.crash(leader2);
    c.one(b"14", 2, AGREE);
    c.restart(leader2);
    let index = c.one(b"14b", 3, AGREE);

    // A follower crashes, the others go on, it comes back and catches up.
    let leader3 = check_one_leader(&mut c, &all, ELECTION);
    let follower = leader3 % 3 + 1;
    c.crash(follower);
    c.one(b"15", 2, AGREE);
    c.restart(follower);
    c.one(b"16", 3, AGREE);
    assert!(
        c.applied_at(index).0 == 3,
        "[seed {seed}] restarted follower did not catch up"
    );
}

/// MIT TestPersist22C: 5 nodes, repeatedly losing and restarting different majorities.
#[test]
fn crash_majorities_repeatedly() {
    let mut c = cluster(5, 302);
    let all = c.ids();
    let node = |leader: NodeId, k: u64| (leader - 1 + k) % 5 + 1;
    let mut index = 1;
    for _ in 0..5 {
        c.one(&cmd("p2", index), 5, AGREE);
        index += 1;
        let leader1 = check_one_leader(&mut c, &all, ELECTION);

        c.disconnect(node(leader1, 1));
        c.disconnect(node(leader1, 2));
        c.one(&cmd("p2", index), 3, AGREE);
        index += 1;

        // Those three crash; the two that fell behind restart, alone with each other.
        for k in [0, 3, 4] {
            c.disconnect(node(leader1, k));
            c.crash(node(leader1, k));
        }
        for k in [1, 2] {
            c.restart(node(leader1, k));
            c.connect(node(leader1, k));
        }
        c.run_for(300 * MS);
        // One of the three that hold the newest entry comes back: a majority again.
        c.restart(node(leader1, 3));
        c.connect(node(leader1, 3));
        c.one(&cmd("p2", index), 3, AGREE);
        index += 1;

        for k in [4, 0] {
            c.restart(node(leader1, k));
            c.connect(node(leader1, k));
        }
    }
    c.one(b"1000", 5, AGREE);
}

/// MIT TestPersist32C: a partitioned follower and two crashes; the partitioned node must
/// learn the entry it missed from the restarted ones.
#[test]
fn crash_majority_then_partitioned_follower() {
    let mut c = cluster(3, 303);
    let all = c.ids();
    c.one(b"101", 3, AGREE);
    let leader = check_one_leader(&mut c, &all, ELECTION);
    let node = |k: u64| (leader - 1 + k) % 3 + 1;

    c.disconnect(node(2));
    c.one(b"102", 2, AGREE);
    c.crash(node(0));
    c.crash(node(1));
    c.connect(node(2));
    c.restart(node(0));
    c.one(b"103", 2, AGREE);
    c.restart(node(1));
    c.one(b"104", 3, AGREE);
}

/// Liveness after losing quorum: 2 of 3 crash; once they restart, a leader is back within a
/// few election timeouts and commands commit.
#[test]
fn liveness_after_losing_quorum() {
    for seed in [304, 305, 306] {
        let mut c = cluster(3, seed);
        let all = c.ids();
        c.one(b"before", 3, AGREE);
        let leader = check_one_leader(&mut c, &all, ELECTION);
        // The leader and one follower crash.
        let follower = leader % 3 + 1;
        c.crash(leader);
        c.crash(follower);
        c.run_for(2 * SEC);
        c.restart(leader);
        c.restart(follower);
        check_one_leader(&mut c, &all, 2 * SEC);
        c.one(b"after", 3, 2 * SEC);
    }
}

/// "Term or vote not durable before the reply": every voter that grants a vote is crashed at
/// once, right after the reply leaves, and restarted a moment later, while the election
/// timeouts are narrowed so that candidates of the same term compete often. A node that
/// forgot its vote would grant a second candidate of that term: two leaders in one term, which
/// the simulation catches (checked: sending the vote before its fsync fails this test).
/// Candidates are also crashed now and then right after asking for votes, so elections are
/// interrupted in every phase.
#[test]
fn votes_and_terms_survive_crashes() {
    for seed in 320u64..=349 {
        let mut cfg = SimConfig::new(5, seed);
        cfg.tune = |c: &mut Config| {
            c.election_ticks_min = 15;
            c.election_ticks_max = 17;
        };
        let mut c = Cluster::new(cfg);
        let mut rng = StdRng::seed_from_u64(seed);
        c.crash_on_send = Some(Box::new(move |env| match env.msg {
            RaftMessage::RequestVoteReply {
                vote_granted: true,
                pre_vote: false,
                ..
            } => rng.gen_bool(0.5),
            RaftMessage::RequestVote {
                pre_vote: false, ..
            } => rng.gen_bool(0.2),
            _ => false,
        }));
        let all = c.ids();
        let mut restarts = 0;
        let mut elections = 0;
        let mut last_term = 0;
        let end = c.now + 30 * SEC;
        while c.now < end {
            c.run_for(5 * MS);
            // Bring crashed nodes back quickly, while the election they voted in goes on.
            for id in c.ids() {
                if !c.node(id).is_up() && c.rng().gen_bool(0.5) {
                    c.restart(id);
                    restarts += 1;
                }
            }
            // Once a leader is in place, depose it so elections keep happening.
            if let Some(leader) = c.leader_among(&all) {
                let term = c.raft(leader).map_or(0, |r| r.term());
                if term > last_term {
                    last_term = term;
                    elections += 1;
                    c.propose(leader, &cmd("v", elections));
                    let wait = c.rng().gen_range(0..100) * MS;
                    c.run_for(wait);
                    c.restart(leader);
                }
            }
        }
        assert!(
            c.crashed_on_send.len() >= 50 && elections >= 20,
            "[seed {seed}] the scenario did not exercise enough: {} crashes on send, {restarts} restarts, {elections} elections",
            c.crashed_on_send.len()
        );
        c.crash_on_send = None;
        heal_all(&mut c);
        c.one(b"final", 5, AGREE);
    }
}

/// Nodes crash and restart at random every few tens of milliseconds, mostly during elections,
/// while commands are proposed. Whatever happens, the simulation's safety checks hold, and once
/// the crashes stop everything converges.
#[test]
fn frequent_crashes_during_elections() {
    for seed in 350u64..=369 {
        let mut c = cluster(5, seed);
        let mut proposals = 0;
        let end = c.now + 20 * SEC;
        while c.now < end {
            let wait = c.rng().gen_range(1..60) * MS;
            c.run_for(wait);
            let id = c.rng().gen_range(1..=5);
            if c.node(id).is_up() {
                if c.up_ids().len() > 3 || c.rng().gen_bool(0.3) {
                    c.crash(id);
                }
            } else {
                c.restart(id);
            }
            for leader in c
                .leaders()
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
            {
                proposals += 1;
                c.propose(leader, &cmd("f", proposals));
            }
        }
        heal_all(&mut c);
        c.one(b"final", 5, AGREE);
        common::assert_everything_applied_stays(&c);
    }
}
