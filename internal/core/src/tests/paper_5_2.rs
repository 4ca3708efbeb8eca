//! §5.2 Leader election.

use super::*;

/// §5.2: "When servers start up, they begin as followers."
#[test]
fn nodes_start_as_followers() {
    let r = restored(config(1, 3), 4, 2, &[1, 2, 4]);
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.term(), 4, "the persisted term is kept");
    assert_eq!(r.status().vote, 2, "the persisted vote is kept");
    assert_eq!(r.leader(), 0);
}

/// §5.2: a follower that hears nothing for an election timeout starts an election: it
/// increments its term, votes for itself and asks every peer for its vote. The RequestVotes
/// promise a durable vote, so they are released only after persisting: they are in
/// `persisted_messages`, and the same `Ready` carries the new term and vote.
#[test]
fn follower_starts_election_after_timeout() {
    let mut r = restored(config(1, 5), 2, 0, &[1, 2, 2]);
    for _ in 0..ELECTION - 1 {
        r.tick();
    }
    assert_eq!(r.role(), Role::Follower, "not before the timeout");
    assert!(drain(&mut r).is_empty(), "nothing sent before the timeout");
    r.tick();
    assert_eq!(r.role(), Role::Candidate);
    assert_eq!(r.term(), 3);
    assert_eq!(r.status().vote, 1, "votes for itself");

    let rd = r.ready();
    // The whole output: the new term and vote to persist, the vote requests held back until
    // they are durable, the role change; nothing else.
    assert_eq!(
        rd,
        Ready {
            hard_state: Some(HardState { term: 3, vote: 1 }),
            persisted_messages: (2..=5).map(|p| vote_req(1, p, 3, 3, 2)).collect(),
            soft_state: Some(SoftState {
                role: Role::Candidate,
                leader: 0
            }),
            ..Ready::default()
        }
    );
    assert_eq!(rd.hard_state, Some(HardState { term: 3, vote: 1 }));
    assert!(
        rd.messages
            .iter()
            .all(|m| !matches!(m.msg, RaftMessage::RequestVote { .. })),
        "a RequestVote must not leave before the vote for self is durable: {:?}",
        rd.messages
    );
    assert_eq!(
        vote_requests(&rd.persisted_messages, 3, false),
        (2..=5).collect()
    );
    for m in &rd.persisted_messages {
        assert_eq!(
            m.msg,
            RaftMessage::RequestVote {
                transfer: false,
                term: 3,
                candidate_id: 1,
                last_log_index: 3,
                last_log_term: 2,
                pre_vote: false
            }
        );
    }
}

/// §5.2 with pre-vote (thesis §9.6): on timeout the follower first asks for pre-votes for
/// term+1 without changing its term (nothing to persist, so they go out at once); only with a
/// majority of pre-votes does it start the real election, persisting first.
#[test]
fn follower_starts_pre_vote_then_election_after_timeout() {
    let mut cfg = config(1, 3);
    cfg.pre_vote = true;
    let mut r = restored(cfg, 2, 0, &[1, 2]);
    let ticks = tick_until(&mut r, |r| r.role() != Role::Follower);
    assert_eq!(ticks, ELECTION);
    assert_eq!(r.role(), Role::PreCandidate);
    assert_eq!(r.term(), 2, "pre-vote does not raise the term");
    let rd = ready_once(&mut r);
    assert_eq!(
        rd,
        Ready {
            messages: vec![pre_vote_req(1, 2, 3, 2, 2), pre_vote_req(1, 3, 3, 2, 2)],
            soft_state: Some(SoftState {
                role: Role::PreCandidate,
                leader: 0
            }),
            ..Ready::default()
        },
        "pre-vote requests promise nothing: they leave at once, with nothing to persist"
    );
    assert_eq!(rd.hard_state, None, "nothing to persist for a pre-vote");
    assert_eq!(vote_requests(&rd.messages, 3, true), [2, 3].into());

    r.step(pre_vote_reply(2, 1, 3, true));
    assert_eq!(
        r.role(),
        Role::Candidate,
        "a majority of pre-votes starts the election"
    );
    assert_eq!(r.term(), 3);
    let rd = ready_once(&mut r);
    assert_eq!(
        rd,
        Ready {
            hard_state: Some(HardState { term: 3, vote: 1 }),
            persisted_messages: vec![vote_req(1, 2, 3, 2, 2), vote_req(1, 3, 3, 2, 2)],
            soft_state: Some(SoftState {
                role: Role::Candidate,
                leader: 0
            }),
            ..Ready::default()
        }
    );
    assert_eq!(rd.hard_state, Some(HardState { term: 3, vote: 1 }));
    assert!(vote_requests(&rd.messages, 3, false).is_empty());
    assert_eq!(
        vote_requests(&rd.persisted_messages, 3, false),
        [2, 3].into()
    );
}

/// §5.2: a candidate that neither wins nor loses (a split vote) times out and starts a new
/// election in the next term.
#[test]
fn candidate_starts_new_election_after_timeout() {
    let mut r = follower(1, 3, 1);
    tick_until(&mut r, |r| r.role() == Role::Candidate);
    assert_eq!(r.term(), 2);
    drain(&mut r);
    let ticks = tick_until(&mut r, |r| r.term() != 2);
    assert_eq!(ticks, ELECTION);
    assert_eq!(r.role(), Role::Candidate);
    assert_eq!(r.term(), 3);
    assert_eq!(r.status().vote, 1);
    let rd = ready_once(&mut r);
    assert_eq!(rd.hard_state, Some(HardState { term: 3, vote: 1 }));
    assert_eq!(
        vote_requests(&rd.persisted_messages, 3, false),
        [2, 3].into()
    );
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of the servers in
/// the full cluster for the same term." Without a majority it does not become leader.
#[test]
fn candidate_wins_only_with_a_majority() {
    #[derive(Debug, PartialEq)]
    enum Want {
        Leader,
        /// Still waiting: neither enough votes nor enough refusals.
        Candidate,
        /// Lost: anything but leader (the paper keeps it candidate; following is fine too).
        NotLeader,
    }
    let cases: &[(u64, &[NodeId], &[NodeId], Want)] = &[
        (3, &[], &[], Want::Candidate),
        (3, &[2], &[], Want::Leader),
        (3, &[3], &[2], Want::Leader),
        (3, &[], &[2], Want::Candidate),
        (3, &[], &[2, 3], Want::NotLeader),
        (5, &[], &[], Want::Candidate),
        (5, &[2], &[], Want::Candidate),
        (5, &[2], &[3, 4], Want::Candidate),
        (5, &[2, 3], &[], Want::Leader),
        (5, &[2, 3, 4, 5], &[], Want::Leader),
        (5, &[4, 5], &[2, 3], Want::Leader),
        (5, &[2], &[3, 4, 5], Want::NotLeader),
    ];
    for (n, granted, refused, want) in cases {
        let mut r = follower(1, *n, 1);
        tick_until(&mut r, |r| r.role() == Role::Candidate);
        let term = r.term();
        for p in *refused {
            r.step(vote_reply(*p, 1, term, false));
        }
        for p in *granted {
            r.step(vote_reply(*p, 1, term, true));
        }
        let what = format!("{n} voters, granted by {granted:?}, refused by {refused:?}");
        match want {
            Want::Leader => {
                assert_eq!(r.role(), Role::Leader, "{what}");
                assert_eq!(r.leader(), 1, "{what}");
            }
            Want::Candidate => assert_eq!(r.role(), Role::Candidate, "{what}"),
            Want::NotLeader => assert_ne!(r.role(), Role::Leader, "{what}"),
        }
        assert_eq!(r.term(), term, "{what}: the term does not change");
    }
}

/// §5.2: each server gives one vote; a peer answering twice (a duplicated reply) is counted once.
#[test]
fn duplicated_vote_counts_once() {
    let mut r = follower(1, 5, 1);
    tick_until(&mut r, |r| r.role() == Role::Candidate);
    for _ in 0..3 {
        r.step(vote_reply(2, 1, 2, true));
    }
    assert_eq!(
        r.role(),
        Role::Candidate,
        "two distinct votes of five are not a majority"
    );
    r.step(vote_reply(3, 1, 2, true));
    assert_eq!(r.role(), Role::Leader);
}

/// §5.2: "If the leader's term is at least as large as the candidate's current term, then the
/// candidate recognizes the leader as legitimate and returns to follower state." The same goes
/// for a pre-candidate, and the AppendEntries is then processed normally.
#[test]
fn candidate_returns_to_follower_on_append_entries_of_its_term() {
    for pre_vote in [false, true] {
        let mut cfg = config(1, 3);
        cfg.pre_vote = pre_vote;
        let mut r = restored(cfg, 1, 0, &[1]);
        tick_until(&mut r, |r| r.role() != Role::Follower);
        drain(&mut r);
        let term = r.term();
        r.step(append(2, 1, term, (1, 1), vec![entry(term, 2)], 1));
        assert_eq!(r.role(), Role::Follower, "pre_vote={pre_vote}");
        assert_eq!(r.term(), term, "pre_vote={pre_vote}");
        assert_eq!(r.leader(), 2, "pre_vote={pre_vote}");
        assert_eq!(
            r.log().last_index(),
            2,
            "pre_vote={pre_vote}: the entry is appended"
        );
        let msgs = drain(&mut r);
        assert_eq!(
            append_replies(&msgs),
            vec![(2, term, true, 2, None)],
            "pre_vote={pre_vote}"
        );
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a first-come-
/// first-served basis." A second candidate in the same term is refused; the candidate already
/// voted for is granted again (its request may have been retried), and the vote survives a
/// restart.
#[test]
fn one_vote_per_term() {
    let mut r = follower(1, 3, 1);
    r.step(vote_req(2, 1, 2, 0, 0));
    let rd = ready_once(&mut r);
    assert_eq!(
        vote_replies(&rd.persisted_messages, 2, false),
        vec![(2, true)]
    );
    let saved = rd.hard_state.expect("the vote is persisted");
    assert_eq!(saved, HardState { term: 2, vote: 2 });

    r.step(vote_req(3, 1, 2, 0, 0));
    let msgs = drain(&mut r);
    assert_eq!(
        vote_replies(&msgs, 3, false),
        vec![(2, false)],
        "second candidate refused"
    );
    assert_eq!(r.status().vote, 2);

    r.step(vote_req(2, 1, 2, 0, 0));
    let msgs = drain(&mut r);
    assert_eq!(
        vote_replies(&msgs, 2, false),
        vec![(2, true)],
        "same candidate granted again"
    );

    // After a crash the node comes back with what it persisted and still refuses node 3.
    let mut r = Raft::new(config(1, 3), saved, vec![]).unwrap();
    r.step(vote_req(3, 1, 2, 0, 0));
    let msgs = drain(&mut r);
    assert_eq!(
        vote_replies(&msgs, 3, false),
        vec![(2, false)],
        "refused after restart"
    );
    // A follower that already follows a leader in this term has no vote to give either.
    let mut r = follower(1, 3, 2);
    r.step(append(2, 1, 2, (0, 0), vec![], 0));
    r.step(vote_req(3, 1, 2, 0, 0));
    let msgs = drain(&mut r);
    assert_eq!(
        vote_replies(&msgs, 3, false),
        vec![(2, false)],
        "refused while following 2"
    );
}

/// Figure 2 ("Persistent state ... updated on stable storage before responding to RPCs"): a
/// granted vote is released only after the vote is durable: the reply is in
/// `persisted_messages`, and the same `Ready` carries the vote.
#[test]
fn vote_is_persisted_before_the_reply() {
    for (term, vote_before) in [(1, 0), (2, 0)] {
        // Vote in a higher term (term and vote change), and in our own term (vote only).
        let mut r = restored(config(1, 3), term, vote_before, &[]);
        r.step(vote_req(3, 1, 2, 0, 0));
        let rd = r.ready();
        assert_eq!(
            rd,
            Ready {
                hard_state: Some(HardState { term: 2, vote: 3 }),
                persisted_messages: vec![vote_reply(1, 3, 2, true)],
                ..Ready::default()
            },
            "from term {term}"
        );
        assert_eq!(
            rd.hard_state,
            Some(HardState { term: 2, vote: 3 }),
            "from term {term}"
        );
        assert!(
            vote_replies(&rd.messages, 3, false).is_empty(),
            "from term {term}: sent before persisting"
        );
        assert_eq!(
            vote_replies(&rd.persisted_messages, 3, false),
            vec![(2, true)],
            "from term {term}"
        );
    }
}

/// §5.2: "election timeouts are chosen randomly from a fixed interval": across seeds, the
/// timeout of a fresh follower lies in `[min, max)` and takes many different values.
#[test]
fn election_timeout_is_randomized_within_range_across_seeds() {
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let mut cfg = config(1, 3);
        cfg.election_ticks_min = 15;
        cfg.election_ticks_max = 30;
        cfg.seed = seed;
        let mut r = Raft::new(cfg, HardState::default(), vec![]).unwrap();
        let ticks = tick_until(&mut r, |r| r.role() != Role::Follower);
        assert!(
            (15..30).contains(&ticks),
            "seed {seed}: timed out after {ticks} ticks"
        );
        seen.insert(ticks);
    }
    assert!(seen.len() >= 10, "timeouts are hardly random: {seen:?}");
}

/// §5.2: the timeout is re-drawn for every new term ("each candidate restarts its randomized
/// election timeout at the start of an election"), so one node's consecutive elections do not
/// all wait the same time.
#[test]
fn election_timeout_is_rerandomized_every_term() {
    let mut cfg = config(1, 3);
    cfg.election_ticks_min = 15;
    cfg.election_ticks_max = 30;
    let mut r = Raft::new(cfg, HardState::default(), vec![]).unwrap();
    let mut seen = BTreeSet::new();
    for term in 1..=30 {
        let ticks = tick_until(&mut r, |r| r.term() == term);
        assert!(
            (15..30).contains(&ticks),
            "term {term}: timed out after {ticks} ticks"
        );
        seen.insert(ticks);
        drain(&mut r);
    }
    assert!(
        seen.len() >= 5,
        "the timeout is not redrawn per term: {seen:?}"
    );
}

/// Figure 2 (Followers): "If election timeout elapses without receiving AppendEntries RPC from
/// current leader or granting vote to candidate: convert to candidate." Granting a vote resets
/// the timer; refusing one does not.
#[test]
fn granting_a_vote_resets_the_election_timer() {
    // Grant in the current term, so no term change muddles the point.
    let mut r = follower(1, 3, 2);
    for _ in 0..ELECTION - 1 {
        r.tick();
    }
    r.step(vote_req(2, 1, 2, 0, 0));
    assert_eq!(r.status().vote, 2);
    for _ in 0..ELECTION - 1 {
        r.tick();
    }
    assert_eq!(r.role(), Role::Follower, "timer was reset by the vote");
    r.tick();
    assert_eq!(r.role(), Role::Candidate);

    // A refused vote (already voted for 3 in this term) does not reset it.
    let mut r = restored(config(1, 3), 2, 3, &[]);
    for _ in 0..ELECTION - 1 {
        r.tick();
    }
    r.step(vote_req(2, 1, 2, 0, 0));
    assert_eq!(r.status().vote, 3);
    r.tick();
    assert_eq!(r.role(), Role::Candidate, "a refused vote reset the timer");
}

/// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to
/// all followers in order to maintain their authority": one to every follower each heartbeat
/// interval, and nothing in between.
#[test]
fn leader_sends_heartbeats_every_interval() {
    let mut r = follower(1, 3, 1);
    stable_leader(&mut r);
    let (term, commit) = (r.term(), r.log().committed());
    let last = r.log().last_index();
    for round in 0..5 {
        for _ in 0..HEARTBEAT - 1 {
            r.tick();
            assert!(
                drain(&mut r).is_empty(),
                "round {round}: sent between heartbeats"
            );
        }
        r.tick();
        let msgs = drain(&mut r);
        let mut beats = appends(&msgs);
        beats.sort_by_key(|a| a.to);
        let want: Vec<Append> = [2, 3]
            .iter()
            .map(|to| Append {
                to: *to,
                term,
                prev: (last, term),
                entries: vec![],
                commit,
            })
            .collect();
        assert_eq!(beats, want, "round {round}");
        assert_eq!(msgs.len(), 2, "round {round}: only heartbeats");
    }
}

/// §5.2: "A server remains in follower state as long as it receives valid RPCs from a leader":
/// a follower that gets a heartbeat within every election timeout never campaigns (with and
/// without pre-vote and check-quorum).
#[test]
fn follower_receiving_heartbeats_never_starts_an_election() {
    for extensions in [false, true] {
        let mut cfg = config(1, 3);
        cfg.pre_vote = extensions;
        cfg.check_quorum = extensions;
        let mut r = restored(cfg, 2, 0, &[1, 2]);
        for round in 0..100 {
            for _ in 0..ELECTION - 1 {
                r.tick();
            }
            r.step(append(2, 1, 2, (2, 2), vec![], 2));
            let msgs = drain(&mut r);
            assert!(
                msgs.iter()
                    .all(|m| !matches!(m.msg, RaftMessage::RequestVote { .. })),
                "round {round}: campaigned: {msgs:?}"
            );
            assert_eq!(r.role(), Role::Follower);
            assert_eq!(r.term(), 2);
            assert_eq!(r.leader(), 2);
        }
    }
}
