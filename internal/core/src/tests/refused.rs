//! Messages no correct member could send are refused whole (validate.rs): a node that receives
//! one keeps its term, vote, role, log and commit index, sends nothing, and goes on working.
//! Before, two of them stopped the node on an assertion.

use super::*;

/// Everything a refused message must leave as it was.
fn state(r: &Raft) -> (Status, Vec<Entry>) {
    (r.status(), entries_of(r.log()))
}

/// Node 1, a follower in term 2 with entries 1..=3 committed (and applied) from leader 2.
fn committed_follower() -> Raft {
    let mut r = restored(config(1, 3), 2, 0, &[1, 2, 2]);
    r.step(append(2, 1, 2, (3, 2), vec![], 3));
    drain(&mut r);
    assert_eq!((r.log().committed(), r.log().applied()), (3, 3));
    r
}

fn assert_refused(r: &mut Raft, msg: Envelope) {
    let before = state(r);
    let refused = r.refused_messages();
    r.step(msg.clone());
    assert!(!r.has_ready(), "refused {msg} but produced {:?}", r.ready());
    assert_eq!(state(r), before, "{msg} changed the node");
    assert_eq!(
        r.refused_messages(),
        refused + 1,
        "{msg} was not counted as refused"
    );
}

#[test]
fn a_conflict_at_a_committed_index_is_refused_even_with_a_higher_term() {
    let mut r = committed_follower();
    // A "leader" of term 9 whose log disagrees at index 1 (committed here in term 1).
    assert_refused(&mut r, append(3, 1, 9, (0, 0), vec![entry(9, 1)], 1));
    // ... or at the previous entry it claims to match.
    assert_refused(&mut r, append(3, 1, 9, (2, 5), vec![entry(9, 3)], 3));
    // The node still follows its real leader, which goes on replicating.
    r.step(append(2, 1, 2, (3, 2), vec![entry(2, 4)], 4));
    let rd = ready_once(&mut r);
    assert_eq!(
        rd,
        Ready {
            entries: vec![entry(2, 4)],
            persisted_messages: vec![append_reply(1, 2, 2, true, 4, None)],
            committed_entries: vec![entry(2, 4)],
            ..Ready::default()
        }
    );
}

#[test]
fn a_stale_leaders_divergent_log_is_not_a_refusal_but_a_rejection() {
    // Node 1 committed 1..=3 in term 2; the deposed leader of term 1 still sends its own,
    // different entry 3. Correct members do that: it is answered with our term, not refused.
    let mut r = committed_follower();
    r.step(append(3, 1, 1, (2, 1), vec![entry(1, 3)], 2));
    assert_eq!(r.refused_messages(), 0);
    let rd = ready_once(&mut r);
    assert_eq!(
        rd,
        Ready {
            persisted_messages: vec![append_reply(1, 3, 2, false, 0, None)],
            ..Ready::default()
        }
    );
    // A heartbeat whose previous entry has "term 0" (the leader compacted it away) claims
    // nothing either.
    r.step(append(2, 1, 2, (3, 0), vec![], 3));
    assert_eq!(r.refused_messages(), 0);
}

#[test]
fn entries_that_do_not_chain_are_refused() {
    let mut r = committed_follower();
    // A gap after prev.
    assert_refused(&mut r, append(2, 1, 2, (3, 2), vec![entry(2, 5)], 3));
    // Indexes that go backwards within the message.
    assert_refused(
        &mut r,
        append(2, 1, 2, (3, 2), vec![entry(2, 4), entry(2, 4)], 3),
    );
    // Terms that decrease, or pass the message's own term.
    assert_refused(
        &mut r,
        append(2, 1, 2, (3, 2), vec![entry(2, 4), entry(1, 5)], 3),
    );
    assert_refused(&mut r, append(2, 1, 2, (3, 2), vec![entry(3, 4)], 3));
    assert_refused(&mut r, append(2, 1, 2, (3, 3), vec![], 3));
    // An index at the end of the range (no overflow, no panic).
    assert_refused(
        &mut r,
        append(2, 1, 2, (u64::MAX, 2), vec![entry(2, u64::MAX)], 3),
    );
}

#[test]
fn a_second_leader_in_the_leaders_own_term_is_refused() {
    let mut r = follower(1, 3, 1);
    stable_leader(&mut r);
    let term = r.term();
    let last = r.log().last_index();
    let before = state(&r);
    r.step(append(
        2,
        1,
        term,
        (last, term),
        vec![entry(term, last + 1)],
        last + 1,
    ));
    assert_eq!(r.role(), Role::Leader, "still the leader");
    assert_eq!(state(&r), before);
    assert!(!r.has_ready());
    // It goes on leading: a proposal is replicated as usual.
    r.propose(b"x".to_vec()).unwrap();
    let rd = ready_once(&mut r);
    assert_eq!(rd.entries.len(), 1);
    assert_eq!(appends(&rd.messages).len(), 2);
}
