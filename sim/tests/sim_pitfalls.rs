//! Tests aimed at specific known Raft mistakes (docs/TESTING.md, "Known Raft pitfalls"): stale AppendEntries
//! truncating a log, stale replies moving matchIndex, election timers that one hopeless
//! node keeps resetting, and a rejoining node deposing a healthy leader.
//!
//! Some drive bare Raft cores with hand-made messages, to put a stale message exactly where
//! it hurts; the others run the simulated cluster.

use raftd_sim::scenario as common;

use common::{
    assert_everything_applied_stays, check_one_leader, cluster, cmd, heal_all, leader_seen_by,
    term_of, ELECTION,
};
use raftd::rpc::types::{Entry, Envelope, HardState, NodeId, RaftMessage, Role};
use raftd_core::{Config, ProgressState, Raft};
use raftd_sim::{Cluster, NetConfig, SimConfig, MS, SEC};
use rand::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

// ----- bare cores -----

fn core(id: NodeId) -> Raft {
    Raft::new(
        Config::new(id, vec![1, 2, 3]),
        HardState::default(),
        Vec::new(),
    )
    .expect("valid config")
}

/// Steps `msg` from `from` into `raft`, then plays the shell: everything is "persisted" and
/// applied at once. Returns every message the core sent.
fn deliver(raft: &mut Raft, from: NodeId, msg: RaftMessage) -> Vec<Envelope> {
    raft.step(Envelope {
        incarnation: 0,
        from,
        to: raft.id(),
        msg,
    });
    drain(raft)
}

fn drain(raft: &mut Raft) -> Vec<Envelope> {
    let mut out = Vec::new();
    while raft.has_ready() {
        let mut rd = raft.ready();
        out.append(&mut rd.messages);
        out.append(&mut rd.persisted_messages);
        raft.advance();
    }
    out
}

fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> RaftMessage {
    RaftMessage::AppendEntries {
        term,
        leader_id: 1,
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit: commit,
        read_round: 0,
    }
}

fn commands(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes
        .map(|i| Entry::command(term, i, cmd("e", i)))
        .collect()
}

/// The single AppendEntriesReply among `out`: (term, success, match_index).
fn reply(out: &[Envelope]) -> (u64, bool, u64) {
    let replies: Vec<_> = out
        .iter()
        .filter_map(|e| match e.msg {
            RaftMessage::AppendEntriesReply {
                term,
                success,
                match_index,
                ..
            } => Some((term, success, match_index)),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies.len(),
        1,
        "expected one AppendEntriesReply in {out:?}"
    );
    replies[0]
}

fn log_terms(raft: &Raft) -> Vec<(u64, u64)> {
    (1..=raft.log().last_index())
        .map(|i| (i, raft.log().term(i).unwrap_or(0)))
        .collect()
}

/// A late or duplicated AppendEntries that carries nothing new (it matches, and its entries
/// are a prefix of what the follower holds) must not cut the follower's longer log, whose
/// suffix the leader may already count toward a commit.
#[test]
fn stale_append_entries_do_not_truncate() {
    let mut f = core(2);
    let first = append(1, (0, 0), commands(1, 1..=3), 0);
    let second = append(1, (3, 1), commands(1, 4..=5), 3);
    assert_eq!(reply(&deliver(&mut f, 1, first.clone())), (1, true, 3));
    assert_eq!(reply(&deliver(&mut f, 1, second)), (1, true, 5));
    let before = log_terms(&f);
    assert_eq!(before.len(), 5);

    // The first message again (a duplicate, delivered late): accepted, nothing cut.
    assert_eq!(reply(&deliver(&mut f, 1, first)), (1, true, 3));
    assert_eq!(
        log_terms(&f),
        before,
        "a duplicate AppendEntries truncated the log"
    );
    // An older, shorter one from the middle of the log.
    let middle = append(1, (1, 1), commands(1, 2..=2), 1);
    assert_eq!(reply(&deliver(&mut f, 1, middle)), (1, true, 2));
    assert_eq!(
        log_terms(&f),
        before,
        "a stale AppendEntries truncated the log"
    );
    // A stale heartbeat anchored early.
    assert_eq!(
        reply(&deliver(&mut f, 1, append(1, (2, 1), Vec::new(), 3))),
        (1, true, 2)
    );
    assert_eq!(log_terms(&f), before, "a stale heartbeat truncated the log");
    assert_eq!(
        f.log().committed(),
        3,
        "commit index moved backwards or past what was verified"
    );

    // A new leader (node 3, term 2) appends after index 5; then a message of the old term
    // arrives late. It is refused by term and changes nothing.
    let newer = RaftMessage::AppendEntries {
        term: 2,
        leader_id: 3,
        prev_log_index: 5,
        prev_log_term: 1,
        entries: commands(2, 6..=6),
        leader_commit: 5,
        read_round: 0,
    };
    assert_eq!(reply(&deliver(&mut f, 3, newer)), (2, true, 6));
    let before = log_terms(&f);
    let old = append(1, (0, 0), commands(1, 1..=3), 3);
    let (term, success, _) = reply(&deliver(&mut f, 1, old));
    assert!(
        term == 2 && !success,
        "an AppendEntries from an old term was accepted"
    );
    assert_eq!(
        log_terms(&f),
        before,
        "an old-term AppendEntries changed the log"
    );
}

/// Ticks `raft` until it starts a pre-vote campaign; returns the messages it sent.
fn tick_until_campaign(raft: &mut Raft) -> Vec<Envelope> {
    for _ in 0..100 {
        raft.tick();
        let out = drain(raft);
        if raft.role() == Role::PreCandidate {
            return out;
        }
    }
    panic!("node {} did not campaign within 100 ticks", raft.id());
}

/// Makes node `raft` leader of the next term with votes from node 2.
fn win_election(raft: &mut Raft) {
    tick_until_campaign(raft);
    let term = raft.term() + 1;
    let pre = RaftMessage::RequestVoteReply {
        term,
        vote_granted: true,
        pre_vote: true,
    };
    deliver(raft, 2, pre);
    assert_eq!(raft.role(), Role::Candidate);
    let vote = RaftMessage::RequestVoteReply {
        term,
        vote_granted: true,
        pre_vote: false,
    };
    deliver(raft, 2, vote);
    assert_eq!(raft.role(), Role::Leader);
    assert_eq!(raft.term(), term);
}

fn ack(term: u64, success: bool, index: u64) -> RaftMessage {
    RaftMessage::AppendEntriesReply {
        term,
        success,
        match_index: index,
        conflict: None,
        read_round: 0,
    }
}

/// Reordered and duplicated AppendEntriesReply, within a term and across a term change,
/// never move matchIndex backwards, and a reply from an old term counts for nothing.
#[test]
fn stale_replies_do_not_move_match_index_back() {
    let mut l = core(1);
    win_election(&mut l); // term 1, no-op at index 1
    for i in 2..=5 {
        l.propose(cmd("p", i)).expect("leader accepts proposals");
    }
    drain(&mut l);
    let matched = |l: &Raft, peer| l.progress(peer).map(|p| p.matched).unwrap_or(0);

    deliver(&mut l, 2, ack(1, true, 5));
    assert_eq!(matched(&l, 2), 5);
    assert_eq!(l.log().committed(), 5, "leader + node 2 are a majority");
    // Older acks of the same term, reordered or duplicated.
    for stale in [1, 3, 5, 0] {
        deliver(&mut l, 2, ack(1, true, stale));
        assert_eq!(
            matched(&l, 2),
            5,
            "a stale ack for {stale} moved matchIndex"
        );
    }
    // A stale rejection (of a probe at prev 2, long answered) changes nothing.
    deliver(&mut l, 2, ack(1, false, 2));
    let pr = l.progress(2).expect("progress of node 2");
    assert_eq!(
        (pr.matched, pr.state, pr.next),
        (5, ProgressState::Replicate, 6),
        "a stale rejection reset progress"
    );

    // Node 3 leads term 2 (adding nothing), then node 1 wins term 3.
    let heartbeat = RaftMessage::AppendEntries {
        term: 2,
        leader_id: 3,
        prev_log_index: 5,
        prev_log_term: 1,
        entries: Vec::new(),
        leader_commit: 5,
        read_round: 0,
    };
    deliver(&mut l, 3, heartbeat);
    assert_eq!((l.role(), l.term()), (Role::Follower, 2));
    win_election(&mut l);
    assert_eq!(l.term(), 3);
    assert_eq!(
        matched(&l, 2),
        0,
        "a new term starts with nothing known to match"
    );

    // Replies of terms 1 and 2 arrive late: ignored, even though they claim a match.
    deliver(&mut l, 2, ack(1, true, 5));
    deliver(&mut l, 2, ack(2, true, 5));
    assert_eq!(
        matched(&l, 2),
        0,
        "a reply from an old term moved matchIndex"
    );
    assert_eq!(l.log().committed(), 5);
    // The current term's ack counts; an older duplicate after it does not move it back.
    let noop = l.log().last_index();
    deliver(&mut l, 2, ack(3, true, noop));
    assert_eq!(matched(&l, 2), noop);
    deliver(&mut l, 2, ack(3, true, noop - 2));
    assert_eq!(
        matched(&l, 2),
        noop,
        "a reordered ack moved matchIndex back"
    );
    assert_eq!(l.log().committed(), noop);
}

/// Runs bare cores of a larger cluster (the missing members are down): ticks everyone, then
/// hands every message to its addressee until none is left, `ticks` times. Returns the first
/// node that becomes leader, if any.
fn run_cores(cores: &mut [Raft], ticks: u32) -> Option<NodeId> {
    for _ in 0..ticks {
        let mut queue: Vec<Envelope> = Vec::new();
        for r in cores.iter_mut() {
            r.tick();
            queue.extend(drain(r));
        }
        while !queue.is_empty() {
            for env in std::mem::take(&mut queue) {
                if let Some(r) = cores.iter_mut().find(|r| r.id() == env.to) {
                    r.step(env);
                    queue.extend(drain(r));
                }
            }
        }
        if let Some(r) = cores.iter().find(|r| r.role() == Role::Leader) {
            return Some(r.id());
        }
    }
    None
}

/// A liveness trap (found by the unreliable Figure 8 test): of 5 nodes, 2 are down; nodes 2
/// and 3 voted in term 3 but their logs are too short to win; node 1 has the longest log but
/// is still in term 2. Node 1 asks for pre-votes for term 3; if 2 and 3 refused because they
/// already voted in term 3 (their refusal carries term 3, which node 1 takes for the term it
/// asked about), nobody could ever be elected. A pre-vote only asks about the log and the
/// leader, so they grant it, node 1 moves to term 3, then wins term 4.
#[test]
fn pre_vote_is_not_refused_for_a_vote_cast_in_that_term() {
    let voters = vec![1, 2, 3, 4, 5];
    let log = |n: u64| -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry::command(if i == 1 { 1 } else { 2 }, i, cmd("x", i)))
            .collect()
    };
    let start = |id: NodeId, term: u64, vote: NodeId, entries: Vec<Entry>| {
        Raft::new(
            Config::new(id, voters.clone()),
            HardState { term, vote },
            entries,
        )
        .expect("valid config")
    };
    let mut cores = vec![
        start(1, 2, 0, log(5)),
        start(2, 3, 2, log(2)),
        start(3, 3, 3, log(2)),
    ];
    let leader = run_cores(&mut cores, 500);
    assert_eq!(
        leader,
        Some(1),
        "no leader within 500 ticks: the election is stuck"
    );

    // The rule itself: a node that voted in term 3 and knows no leader grants a pre-vote for
    // term 3 to an up-to-date log; once it knows a leader of term 3, it refuses.
    let mut v = start(2, 3, 3, log(2));
    let ask = RaftMessage::RequestVote {
        transfer: false,
        term: 3,
        candidate_id: 1,
        last_log_index: 5,
        last_log_term: 2,
        pre_vote: true,
    };
    let granted = |out: &[Envelope]| {
        out.iter().any(|e| {
            matches!(
                e.msg,
                RaftMessage::RequestVoteReply {
                    vote_granted: true,
                    pre_vote: true,
                    ..
                }
            )
        })
    };
    assert!(
        granted(&deliver(&mut v, 1, ask.clone())),
        "pre-vote refused for a vote cast in its term"
    );
    let heartbeat = RaftMessage::AppendEntries {
        term: 3,
        leader_id: 3,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Vec::new(),
        leader_commit: 0,
        read_round: 0,
    };
    deliver(&mut v, 3, heartbeat);
    assert!(
        !granted(&deliver(&mut v, 1, ask)),
        "pre-vote granted despite a known leader"
    );
}

// ----- the simulated cluster -----

/// Long delays, heavy duplication and loss, leader crashes: late AppendEntries and late
/// replies everywhere. At every step of every node: a leader's matchIndex for a peer never
/// decreases within its term, and no node's commit index moves backwards. At the end, every
/// entry ever applied is still in every log.
#[test]
fn late_and_duplicated_messages_in_a_cluster() {
    for seed in 610u64..=629 {
        let mut cfg = SimConfig::new(5, seed);
        cfg.net = NetConfig {
            min_delay_us: 500,
            max_delay_us: 20_000,
            drop_rate: 0.05,
            dup_rate: 0.2,
            long_delay_rate: 0.1,
            long_delay_us: 2 * SEC,
        };
        let mut c = Cluster::new(cfg);
        let violations = Rc::new(RefCell::new(Vec::<String>::new()));
        let seen = violations.clone();
        let mut matched: BTreeMap<(NodeId, u64, NodeId), u64> = BTreeMap::new();
        let mut committed: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new(); // node -> (last_applied seen, commit)
        c.set_observer(Box::new(move |now, raft| {
            let id = raft.id();
            if raft.role() == Role::Leader {
                for peer in (1..=5).filter(|&p| p != id) {
                    let m = raft.progress(peer).map_or(0, |p| p.matched);
                    let last = matched.entry((id, raft.term(), peer)).or_insert(m);
                    if m < *last {
                        seen.borrow_mut().push(format!(
                            "at {now} us leader {id} term {}: matchIndex of {peer} went from {} to {m}",
                            raft.term(),
                            *last
                        ));
                    }
                    *last = m;
                }
            }
            // A restarted node starts with commit 0 (it relearns it); within a life the
            // commit index only grows. A restart shows as applied going back to 0.
            let commit = raft.log().committed();
            let applied = raft.log().applied();
            let entry = committed.entry(id).or_insert((applied, commit));
            if applied >= entry.0 && commit < entry.1 {
                seen.borrow_mut().push(format!("at {now} us node {id}: commit went from {} to {commit}", entry.1));
            }
            *entry = (applied, commit);
        }));

        let mut proposals = 0;
        let end = c.now + 20 * SEC;
        while c.now < end {
            let wait = c.rng().gen_range(5..100) * MS;
            c.run_for(wait);
            for (leader, _) in c.leaders() {
                proposals += 1;
                c.propose(leader, &cmd("late", proposals));
            }
            if c.rng().gen_bool(0.05) {
                if let Some((leader, _)) = c.leaders().first().copied() {
                    c.restart(leader);
                }
            }
        }
        heal_all(&mut c);
        c.set_net(NetConfig::reliable());
        c.one(b"final", 5, 30 * SEC);
        assert_everything_applied_stays(&c);
        let v = violations.borrow();
        assert!(
            v.is_empty(),
            "[seed {seed}] {} violations, first: {:?}",
            v.len(),
            v.first()
        );
        assert!(
            c.applied_anywhere().len() > 20,
            "[seed {seed}] too little committed to mean anything"
        );
    }
}

/// Partial partitions: nodes that hear only some peers. A leader still emerges and commits.
/// (With an election timer reset by any message, or a candidate that can never win but keeps
/// the others from timing out, this would stall.)
#[test]
fn partial_partitions_still_elect() {
    // 3 nodes, 1 and 2 cannot talk; 3 hears both. From a freshly founded cluster (founding
    // needs the lowest id to hear every founding member directly, docs/MEMBERSHIP.md).
    let mut c = cluster(3, 603);
    c.run_until(ELECTION, |c| (1..=3).all(|id| !c.voters_of(id).is_empty()));
    c.links.set(1, 2, false);
    c.links.set(2, 1, false);
    check_one_leader(&mut c, &[1, 2, 3], ELECTION);
    c.one(b"a", 2, 10 * SEC);
    c.run_for(5 * SEC);
    check_one_leader(&mut c, &[1, 2, 3], 0);
    c.one(b"b", 2, 10 * SEC);

    // 5 nodes in a ring: each hears only its two neighbours. (Founded first: founding needs
    // the lowest id to hear from every founding member directly, docs/MEMBERSHIP.md.)
    let mut c = cluster(5, 604);
    c.run_until(ELECTION, |c| (1..=5).all(|id| !c.voters_of(id).is_empty()));
    for a in 1..=5u64 {
        for b in 1..=5u64 {
            let neighbours = (a + 5 - b) % 5 == 1 || (b + 5 - a) % 5 == 1;
            if a != b && !neighbours {
                c.links.set(a, b, false);
            }
        }
    }
    let ids = c.ids();
    check_one_leader(&mut c, &ids, ELECTION);
    c.one(b"ring", 3, 10 * SEC);

    // The leader hears a follower but the follower does not hear the leader (one-way cut).
    // The follower keeps asking for pre-votes; nobody grants them while the leader is alive.
    let mut c = cluster(3, 605);
    let leader = check_one_leader(&mut c, &[1, 2, 3], ELECTION);
    let term = term_of(&c, leader);
    let deaf = leader % 3 + 1;
    c.links.set(leader, deaf, false);
    c.run_for(5 * SEC);
    let seed = c.seed();
    assert_eq!(
        check_one_leader(&mut c, &[1, 2, 3], 0),
        leader,
        "[seed {seed}] leader deposed"
    );
    assert_eq!(term_of(&c, leader), term, "[seed {seed}] term moved");
    c.one(b"one-way", 2, 10 * SEC);
}

/// A node whose log is behind can never win, and campaigns faster than anyone (its clock runs
/// 4x fast). The up-to-date node must still time out and win: rejected vote requests must not
/// reset its election timer.
#[test]
fn hopeless_candidate_does_not_block_election() {
    let mut c = cluster(3, 606);
    let seed = c.seed();
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all, ELECTION);
    let stale = leader % 3 + 1;
    let good = 6 - leader - stale;
    c.disconnect(stale);
    for i in 0..5 {
        c.one(&cmd("ahead", i), 2, 10 * SEC);
    }
    c.connect(stale);
    c.nodes[stale as usize - 1].tick_us = 10 * MS / 4;
    c.crash(leader);
    let won = check_one_leader(&mut c, &[stale, good], 5 * SEC);
    assert_eq!(
        won, good,
        "[seed {seed}] node {stale}, whose log is behind, was elected"
    );
    c.one(b"after", 2, 10 * SEC);
}

/// Disruptive rejoin: a follower cut off for 10 s (fully, then one-way) comes back. With
/// pre-vote its term did not grow, so the leader and the term stay as they were.
#[test]
fn rejoin_does_not_disrupt_leader() {
    let mut c = cluster(3, 607);
    let seed = c.seed();
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all, ELECTION);
    c.run_for(SEC);
    let term = term_of(&c, leader);
    let follower = leader % 3 + 1;

    c.disconnect(follower);
    for i in 0..3 {
        c.one(&cmd("away", i), 2, 10 * SEC);
    }
    c.run_for(10 * SEC);
    assert_eq!(
        term_of(&c, follower),
        term,
        "[seed {seed}] cut-off node raised its term despite pre-vote"
    );
    c.connect(follower);
    c.run_for(2 * SEC);
    assert_eq!(
        check_one_leader(&mut c, &all, 0),
        leader,
        "[seed {seed}] rejoin deposed the leader"
    );
    assert_eq!(c.max_term(), term, "[seed {seed}] rejoin moved the term");
    assert_eq!(
        leader_seen_by(&c, follower),
        leader,
        "[seed {seed}] rejoined node does not follow"
    );
    c.one(b"back", 3, 10 * SEC);

    // One-way: the follower can send (its pre-votes reach everyone) but hears nothing.
    c.links.set(leader, follower, false);
    let other = 6 - leader - follower;
    c.links.set(other, follower, false);
    c.run_for(10 * SEC);
    c.heal();
    c.run_for(2 * SEC);
    assert_eq!(
        check_one_leader(&mut c, &all, 0),
        leader,
        "[seed {seed}] deaf node deposed the leader"
    );
    assert_eq!(c.max_term(), term, "[seed {seed}] deaf node moved the term");
    c.one(b"back again", 3, 10 * SEC);
}
