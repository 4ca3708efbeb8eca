//! §5.1 Raft basics: terms act as a logical clock. "If a server's current term is smaller
//! than the other's, then it updates its current term to the larger value. If a candidate or
//! leader discovers that its term is out of date, it immediately reverts to follower state. If
//! a server receives a request with a stale term number, it rejects the request."

use super::*;

/// Node 1 of 3 in `role`, starting from term 2 (pre-candidates stay in 2; candidates and
/// leaders are in 3).
fn in_role(role: Role) -> Raft {
    let mut cfg = config(1, 3);
    cfg.pre_vote = role == Role::PreCandidate;
    let mut r = restored(cfg, 2, 0, &[1, 2]);
    match role {
        Role::Follower => {}
        Role::PreCandidate | Role::Candidate => {
            tick_until(&mut r, |r| r.role() != Role::Follower);
        }
        Role::Leader => elect(&mut r),
    }
    drain(&mut r);
    assert_eq!(r.role(), role);
    r
}

/// §5.1: any message, request or reply, that carries a higher term makes the receiver adopt
/// that term and become a follower, whatever its role, and the new term is persisted.
#[test]
fn higher_term_in_any_message_makes_node_follower_in_that_term() {
    type Msg = fn(u64) -> Envelope;
    let kinds: [(&str, Msg); 4] = [
        ("AppendEntries", |t| append(2, 1, t, (0, 0), vec![], 0)),
        ("AppendEntriesReply", |t| {
            append_reply(2, 1, t, false, 0, None)
        }),
        ("RequestVote", |t| vote_req(2, 1, t, 0, 0)),
        ("RequestVoteReply", |t| vote_reply(2, 1, t, false)),
    ];
    for role in [
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ] {
        for (kind, msg) in kinds {
            let mut r = in_role(role);
            let higher = r.term() + 2;
            r.step(msg(higher));
            assert_eq!(r.term(), higher, "{role} receiving {kind}: term");
            assert_eq!(r.role(), Role::Follower, "{role} receiving {kind}: role");
            let expected_leader = if kind == "AppendEntries" { 2 } else { 0 };
            assert_eq!(
                r.leader(),
                expected_leader,
                "{role} receiving {kind}: leader"
            );
            let rd = r.ready();
            assert_eq!(
                rd.hard_state.map(|hs| hs.term),
                Some(higher),
                "{role} receiving {kind}: the new term is handed to storage"
            );
        }
    }
}

/// §5.1: a node that adopts a higher term has not voted in it yet: it can grant its vote in the
/// new term even though it voted (for itself) in the old one.
#[test]
fn adopting_a_higher_term_clears_the_vote() {
    let mut r = in_role(Role::Candidate);
    assert_eq!(r.status().vote, 1);
    let higher = r.term() + 1;
    r.step(append_reply(3, 1, higher, false, 0, None));
    assert_eq!(r.status().vote, 0);
    r.step(vote_req(2, 1, higher, 2, 2));
    let msgs = drain(&mut r);
    assert_eq!(vote_replies(&msgs, 2, false), vec![(higher, true)]);
}

/// §5.1: a request with a stale term is rejected, and the reply carries the receiver's current
/// term (so the sender learns it is out of date). The request changes nothing else: no log
/// change, no vote, no leader, and no reset of the election timer.
#[test]
fn stale_term_requests_are_rejected_with_current_term() {
    let fresh = || {
        let mut r = restored(config(1, 3), 5, 0, &[1, 1]);
        for _ in 0..ELECTION - 1 {
            r.tick();
        }
        r
    };

    // AppendEntries from a deposed leader of term 4.
    let mut r = fresh();
    r.step(append(2, 1, 4, (2, 1), vec![entry(4, 3)], 3));
    let msgs = drain(&mut r);
    assert_eq!(append_replies(&msgs), vec![(2, 5, false, 0, None)]);
    assert_eq!(terms_of(r.log()), vec![1, 1], "stale entries not appended");
    assert_eq!(r.log().committed(), 0, "stale commit index ignored");
    assert_eq!(r.leader(), 0, "a stale leader is not followed");
    assert_eq!(r.term(), 5);
    r.tick();
    assert_eq!(
        r.role(),
        Role::Candidate,
        "a stale leader does not reset the election timer"
    );

    // RequestVote from a candidate of term 4, whose log is as good as ours.
    let mut r = fresh();
    r.step(vote_req(2, 1, 4, 2, 1));
    let msgs = drain(&mut r);
    assert_eq!(vote_replies(&msgs, 2, false), vec![(5, false)]);
    assert_eq!(r.status().vote, 0, "no vote given");
    assert_eq!(r.term(), 5);
    r.tick();
    assert_eq!(
        r.role(),
        Role::Candidate,
        "a stale vote request does not reset the election timer"
    );

    // Pre-vote for term 4: also refused with our term.
    let mut r = fresh();
    r.step(pre_vote_req(2, 1, 4, 2, 1));
    let msgs = drain(&mut r);
    assert_eq!(vote_replies(&msgs, 2, true), vec![(5, false)]);
    assert_eq!(r.term(), 5);
}

/// §5.1: a leader whose AppendEntries was refused for its stale term learns the newer term from
/// the reply and steps down.
#[test]
fn deposed_leader_steps_down_on_reply_to_its_stale_append() {
    let mut leader = in_role(Role::Leader);
    let old_term = leader.term();
    let mut other = restored(config(2, 3), old_term + 1, 3, &[1, 2]);
    for _ in 0..HEARTBEAT {
        leader.tick();
    }
    let to_other: Vec<Envelope> = drain(&mut leader)
        .into_iter()
        .filter(|m| m.to == 2)
        .collect();
    assert!(!to_other.is_empty());
    for m in to_other {
        other.step(m);
    }
    for m in drain(&mut other) {
        leader.step(m);
    }
    assert_eq!(leader.role(), Role::Follower);
    assert_eq!(leader.term(), old_term + 1);
}

/// §5.1: replies from an earlier term answer nothing the node is waiting for and are ignored:
/// stale votes are not counted, stale acknowledgements do not move a follower's progress or the
/// commit index, stale rejections do not move `next`.
#[test]
fn stale_term_replies_are_ignored() {
    // A candidate of term 3 (3 voters) is granted a vote from term 2: not counted.
    let mut r = in_role(Role::Candidate);
    let term = r.term();
    r.step(vote_reply(2, 1, term - 1, true));
    r.step(vote_reply(3, 1, term - 1, true));
    assert_eq!(r.role(), Role::Candidate, "stale votes do not elect");
    r.step(vote_reply(2, 1, term, true));
    assert_eq!(r.role(), Role::Leader, "a current vote does");

    // A leader of term 3 gets acknowledgements and rejections from term 2.
    let mut r = in_role(Role::Leader);
    let term = r.term();
    let last = r.log().last_index();
    let before: Vec<(u64, u64, ProgressState)> = [2, 3]
        .iter()
        .map(|p| {
            let pr = r.progress(*p).unwrap();
            (pr.matched, pr.next, pr.state)
        })
        .collect();
    for p in [2, 3] {
        r.step(append_reply(p, 1, term - 1, true, last, None));
        let hint = ConflictHint {
            xterm: 0,
            xindex: 0,
            xlen: 1,
        };
        r.step(append_reply(p, 1, term - 1, false, last - 1, Some(hint)));
    }
    let after: Vec<(u64, u64, ProgressState)> = [2, 3]
        .iter()
        .map(|p| {
            let pr = r.progress(*p).unwrap();
            (pr.matched, pr.next, pr.state)
        })
        .collect();
    assert_eq!(before, after, "stale replies moved a progress");
    assert_eq!(
        r.log().committed(),
        0,
        "stale acknowledgements committed an entry"
    );
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(r.term(), term);
}
