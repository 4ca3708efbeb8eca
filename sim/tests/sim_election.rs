//! Leader election on a simulated cluster (the spirit of the MIT 6.824 lab's 2A tests), plus the
//! message cost of an election and of an idle cluster.

use raftd_sim::scenario as common;

use common::{check_no_leader, check_one_leader, cluster, leader_seen_by, term_of, ELECTION};
use raftd::rpc::types::Role;
use raftd_sim::{MS, SEC};
use rand::seq::SliceRandom;

/// 3 nodes elect one leader; with nothing failing the term does not move for 2 s, and every
/// node follows that leader.
#[test]
fn initial_election() {
    let mut c = cluster(3, 101);
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all, ELECTION);
    let term = term_of(&c, leader);
    assert!(term >= 1, "[seed {}] leader {leader} in term 0", c.seed());

    // Give the followers a heartbeat to learn the leader, then stay quiet for 2 s.
    c.run_for(2 * SEC);
    let seed = c.seed();
    assert_eq!(
        c.max_term(),
        term,
        "[seed {seed}] term changed with no failures"
    );
    assert_eq!(
        check_one_leader(&mut c, &all, 0),
        leader,
        "[seed {seed}] leader changed with no failures"
    );
    for id in all {
        assert_eq!(
            term_of(&c, id),
            term,
            "[seed {seed}] node {id} is in another term"
        );
        assert_eq!(
            leader_seen_by(&c, id),
            leader,
            "[seed {seed}] node {id} follows another leader"
        );
    }
}

/// Leader cut off: the others elect a new one. Old leader back: no disruption, it follows.
/// Two of three cut off: nobody leads (the isolated leader steps down through check-quorum).
/// Quorum back: a leader again.
#[test]
fn re_election() {
    let mut c = cluster(3, 102);
    let seed = c.seed();
    let all = c.ids();
    let leader1 = check_one_leader(&mut c, &all, ELECTION);

    c.disconnect(leader1);
    let rest: Vec<_> = all.iter().copied().filter(|&id| id != leader1).collect();
    let leader2 = check_one_leader(&mut c, &rest, ELECTION);
    assert_ne!(
        leader2, leader1,
        "[seed {seed}] the cut-off leader cannot be re-elected"
    );
    // Cut off, the old leader cannot hear a majority: it steps down within two quorum checks.
    let stepped_down = c.run_until(SEC, |c| {
        c.raft(leader1).is_some_and(|r| r.role() != Role::Leader)
    });
    assert!(
        stepped_down,
        "[seed {seed}] isolated leader {leader1} still leads after 1 s"
    );

    // The old leader rejoins: it must not disrupt the new one.
    let term2 = term_of(&c, leader2);
    c.connect(leader1);
    c.run_for(SEC);
    assert_eq!(
        check_one_leader(&mut c, &all, 0),
        leader2,
        "[seed {seed}] rejoining node disrupted the leader"
    );
    assert_eq!(
        term_of(&c, leader2),
        term2,
        "[seed {seed}] term moved when the old leader rejoined"
    );
    assert_eq!(
        leader_seen_by(&c, leader1),
        leader2,
        "[seed {seed}] old leader does not follow the new one"
    );

    // No quorum: cut the leader and one more node. Nobody may lead among what is left.
    let other = (leader2 % 3) + 1;
    c.disconnect(leader2);
    c.disconnect(other);
    let stepped_down = c.run_until(SEC, |c| c.leaders().is_empty());
    assert!(
        stepped_down,
        "[seed {seed}] some node still leads 1 s after quorum was lost: {:?}",
        c.leaders()
    );
    c.run_for(2 * SEC);
    check_no_leader(&c, &all);

    // Quorum restored.
    c.connect(other);
    check_one_leader(&mut c, &[other, 6 - other - leader2], ELECTION);
    // And the last one back: still one leader.
    c.connect(leader2);
    c.run_for(SEC);
    check_one_leader(&mut c, &all, 0);
}

/// 7 nodes, 10 rounds: cut 3 random nodes, the 4 others (a majority) have exactly one leader.
#[test]
fn many_elections() {
    let mut c = cluster(7, 103);
    let all = c.ids();
    check_one_leader(&mut c, &all, ELECTION);
    for _ in 0..10 {
        let mut ids = all.clone();
        ids.shuffle(c.rng());
        let (cut, connected) = ids.split_at(3);
        for &id in cut {
            c.disconnect(id);
        }
        check_one_leader(&mut c, connected, ELECTION);
        for &id in cut {
            c.connect(id);
        }
    }
    c.run_for(SEC);
    check_one_leader(&mut c, &all, ELECTION);
}

/// From a cold start, electing a leader of 3 costs a handful of messages: a pre-vote round
/// and a vote round (4 requests, 4 replies) plus the new leader's first AppendEntries. 30
/// leaves room for one split vote but not for a storm. Founding (before it) is bounded too.
#[test]
fn election_message_count() {
    for seed in [104, 105, 106] {
        let mut c = cluster(3, seed);
        let all = c.ids();
        check_one_leader(&mut c, &all, ELECTION);
        // Founding first (docs/MEMBERSHIP.md): every member asks every other until the lowest
        // id has heard "empty" from all and the others took its founding entry.
        let founding = c.stats.count("Bootstrap") + c.stats.count("BootstrapReply");
        let total = c.stats.total() - founding;
        assert!(
            total <= 30,
            "[seed {seed}] electing a leader took {total} messages: {:?}",
            c.stats.sent
        );
        assert!(
            founding <= 30,
            "[seed {seed}] founding took {founding} messages: {:?}",
            c.stats.sent
        );
    }
}

/// An idle 3-node cluster: one heartbeat per follower per heartbeat interval (50 ms), i.e. 40
/// AppendEntries per second; at most 60 allowed.
#[test]
fn idle_heartbeat_rate() {
    let mut c = cluster(3, 107);
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all, ELECTION);
    c.run_for(500 * MS); // settle: the no-op committed everywhere
    let term = term_of(&c, leader);
    let before = c.stats.count("AppendEntries");
    c.run_for(SEC);
    let sent = c.stats.count("AppendEntries") - before;
    let seed = c.seed();
    assert_eq!(
        term_of(&c, leader),
        term,
        "[seed {seed}] term changed while idle"
    );
    assert!(
        sent <= 60,
        "[seed {seed}] idle leader sent {sent} AppendEntries in 1 s (max 60)"
    );
    assert!(
        sent >= 20,
        "[seed {seed}] idle leader sent only {sent} AppendEntries in 1 s: heartbeats missing"
    );
}
