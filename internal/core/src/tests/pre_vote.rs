//! Pre-vote and check-quorum (Ongaro's thesis §9.6, §6.2, §4.2.3): the extensions that keep a
//! node that was cut off from disrupting a working cluster.

use super::*;

fn with_extensions(id: NodeId, n: u64, pre_vote: bool, check_quorum: bool) -> Config {
    let mut cfg = config(id, n);
    cfg.pre_vote = pre_vote;
    cfg.check_quorum = check_quorum;
    cfg
}

/// Thesis §9.6: a pre-vote changes no one's term: not the pre-candidate's (even after many
/// unanswered rounds), and not the term or vote of a node that grants or refuses it.
#[test]
fn pre_vote_changes_no_term() {
    // A cut-off node keeps timing out but stays in its term.
    let mut r = restored(with_extensions(1, 3, true, false), 4, 0, &[1, 4]);
    for _ in 0..20 * ELECTION {
        r.tick();
        let rd = ready_once(&mut r);
        assert_eq!(rd.hard_state, None);
        assert!(vote_requests(&rd.persisted_messages, 5, false).is_empty());
    }
    assert_eq!(r.role(), Role::PreCandidate);
    assert_eq!(r.term(), 4);

    // A voter grants a pre-vote for term 5 (the log is as good) and one refuses it (behind):
    // neither moves to term 5 nor records a vote.
    for (last_index, last_term, granted) in [(2, 4, true), (1, 1, false)] {
        let mut v = restored(with_extensions(2, 3, true, false), 4, 0, &[1, 4]);
        v.step(pre_vote_req(1, 2, 5, last_index, last_term));
        assert_eq!(v.term(), 4);
        assert_eq!(v.status().vote, 0);
        assert_eq!(v.role(), Role::Follower);
        let rd = ready_once(&mut v);
        assert_eq!(
            rd,
            Ready {
                messages: vec![pre_vote_reply(2, 1, 5, granted)],
                ..Ready::default()
            },
            "granted={granted}: the whole output is the answer, sent at once, nothing persisted"
        );
        assert_eq!(
            rd.hard_state, None,
            "granted={granted}: a pre-vote wrote the hard state"
        );
        assert_eq!(vote_replies(&rd.messages, 1, true), vec![(5, granted)]);
    }

    // The pre-candidate, granted pre-votes for term 5, stays in term 4 until a majority.
    let mut r = restored(with_extensions(1, 5, true, false), 4, 0, &[1, 4]);
    tick_until(&mut r, |r| r.role() == Role::PreCandidate);
    r.step(pre_vote_reply(2, 1, 5, true));
    assert_eq!(r.term(), 4);
    assert_eq!(r.role(), Role::PreCandidate);
}

/// Thesis §9.6: the pre-vote applies the same election restriction as the vote (§5.4.1), and a
/// pre-candidate that a majority refuses does not start an election.
#[test]
fn pre_vote_refused_to_a_less_up_to_date_log_and_lost_pre_vote_does_not_raise_term() {
    let mut v = restored(with_extensions(2, 3, true, false), 4, 0, &[1, 4, 4]);
    v.step(pre_vote_req(1, 2, 5, 2, 4));
    let msgs = drain(&mut v);
    assert_eq!(msgs, vec![pre_vote_reply(2, 1, 5, false)]);
    assert_eq!(vote_replies(&msgs, 1, true), vec![(5, false)]);

    let mut r = restored(with_extensions(1, 3, true, false), 4, 0, &[1, 4]);
    tick_until(&mut r, |r| r.role() == Role::PreCandidate);
    r.step(pre_vote_reply(2, 1, 5, false));
    r.step(pre_vote_reply(3, 1, 5, false));
    assert_ne!(r.role(), Role::Candidate);
    assert_ne!(r.role(), Role::Leader);
    assert_eq!(r.term(), 4);
}

/// §5.1 applied to pre-vote replies: a refusal that carries a term above the one asked about
/// comes from a node in that newer term, so the pre-candidate adopts it and follows.
#[test]
fn pre_vote_refusal_from_a_newer_term_updates_the_term() {
    let mut r = restored(with_extensions(1, 3, true, false), 4, 0, &[1, 4]);
    tick_until(&mut r, |r| r.role() == Role::PreCandidate);
    r.step(pre_vote_reply(2, 1, 7, false));
    assert_eq!(r.term(), 7);
    assert_eq!(r.role(), Role::Follower);
}

/// Thesis §4.2.3 (with check-quorum): a follower that heard from its leader less than a minimum
/// election timeout ago ignores vote requests of higher terms: it neither raises its term nor
/// answers. Once the lease is over, it votes as usual.
#[test]
fn follower_in_leader_lease_ignores_vote_requests() {
    for pre_vote in [false, true] {
        let mut r = restored(with_extensions(1, 3, false, true), 2, 0, &[1, 2]);
        r.step(append(2, 1, 2, (2, 2), vec![], 2));
        drain(&mut r);
        // Keep our own timer from firing, to see the lease alone.
        r.randomized_election_ticks = 10 * ELECTION;
        for _ in 0..ELECTION - 1 {
            r.tick();
        }
        let req = if pre_vote {
            pre_vote_req(3, 1, 3, 2, 2)
        } else {
            vote_req(3, 1, 3, 2, 2)
        };
        r.step(req.clone());
        assert_eq!(r.term(), 2, "pre_vote={pre_vote}");
        assert_eq!(r.leader(), 2, "pre_vote={pre_vote}");
        assert_eq!(r.status().vote, 0, "pre_vote={pre_vote}");
        assert!(
            drain(&mut r).is_empty(),
            "pre_vote={pre_vote}: answered in lease"
        );

        r.tick(); // a whole minimum election timeout without the leader
        r.step(req);
        let msgs = drain(&mut r);
        let granted = if pre_vote {
            pre_vote_reply(1, 3, 3, true)
        } else {
            vote_reply(1, 3, 3, true)
        };
        assert_eq!(
            msgs,
            vec![granted],
            "pre_vote={pre_vote}: the answer and nothing else"
        );
        assert_eq!(
            vote_replies(&msgs, 3, pre_vote),
            vec![(3, true)],
            "pre_vote={pre_vote}"
        );
    }
}

/// Thesis §6.2/§4.2.3: a leader with check-quorum is in its own lease and ignores vote requests
/// of higher terms from a node that was cut off.
#[test]
fn leader_in_lease_ignores_vote_requests() {
    let mut r = restored(with_extensions(1, 3, false, true), 1, 0, &[]);
    stable_leader(&mut r);
    let term = r.term();
    r.step(vote_req(3, 1, term + 5, 10, term));
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(r.term(), term);
    assert!(drain(&mut r).is_empty());
}

/// Thesis §6.2 (check-quorum): a leader that does not hear from a majority for an election
/// timeout steps down. It does so at most two minimum election timeouts after the last answer
/// (the check runs once per timeout) and never sooner than one; a leader that keeps hearing
/// from a majority stays.
#[test]
fn check_quorum_leader_steps_down_without_a_majority() {
    let mut r = restored(with_extensions(1, 3, false, true), 1, 0, &[]);
    stable_leader(&mut r);
    let term = r.term();
    // Node 2 answers every heartbeat for a long time: a majority of 3 with the leader.
    for _ in 0..20 * ELECTION {
        r.tick();
        for m in drain(&mut r) {
            if let (2, RaftMessage::AppendEntries { prev_log_index, .. }) = (m.to, &m.msg) {
                r.step(append_reply(2, 1, term, true, *prev_log_index, None));
            }
        }
        assert_eq!(
            r.role(),
            Role::Leader,
            "stepped down while a majority answers"
        );
    }
    // Then silence.
    let mut silent = 0;
    while r.role() == Role::Leader {
        r.tick();
        drain(&mut r);
        silent += 1;
        assert!(
            silent <= 2 * ELECTION,
            "still leader after {silent} silent ticks"
        );
    }
    assert!(
        silent >= ELECTION,
        "stepped down after only {silent} silent ticks"
    );
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.term(), term, "stepping down does not change the term");
    assert_eq!(r.leader(), 0);
}
