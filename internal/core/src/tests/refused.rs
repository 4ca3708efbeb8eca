//! Messages no correct member could send are refused whole (validate.rs): a node that receives
//! one keeps its term, vote, role, log and commit index, sends nothing, and goes on working.
//! Before, two of them stopped the node on an assertion.

use super::*;
use crate::message::{ChunkPos, SnapshotMeta};

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

#[test]
fn a_second_leader_in_the_term_a_follower_follows_is_refused() {
    // Node 1 follows node 2 in term 2; node 3 claims to lead term 2 as well.
    let mut r = committed_follower();
    assert_refused(&mut r, append(3, 1, 2, (3, 2), vec![entry(2, 4)], 4));
    let snapshot = RaftMessage::InstallSnapshot {
        membership: None,
        term: 2,
        leader_id: 3,
        snapshot: SnapshotMeta { index: 9, term: 2 },
        pos: ChunkPos {
            offset: 0,
            total: 1,
        },
        data: vec![1],
    };
    assert_refused(&mut r, env(3, 1, snapshot));
    // Its real leader goes on.
    r.step(append(2, 1, 2, (3, 2), vec![entry(2, 4)], 4));
    assert_eq!(ready_once(&mut r).entries, vec![entry(2, 4)]);
}

#[test]
fn terms_and_indexes_no_cluster_reaches_are_refused() {
    let mut r = committed_follower();
    // Adopting such a term would make every later `term + 1` overflow.
    assert_refused(&mut r, vote_req(3, 1, u64::MAX, 3, 2));
    assert_refused(&mut r, append(3, 1, u64::MAX, (3, 2), vec![], 3));
    let reply = append_reply(3, 1, MAX_TERM_OR_INDEX + 1, true, 1, None);
    assert_refused(&mut r, reply);
    let huge_snapshot = RaftMessage::InstallSnapshot {
        membership: None,
        term: 3,
        leader_id: 3,
        snapshot: SnapshotMeta {
            index: u64::MAX,
            term: 3,
        },
        pos: ChunkPos {
            offset: 0,
            total: 1,
        },
        data: vec![1],
    };
    assert_refused(&mut r, env(3, 1, huge_snapshot));
}

#[test]
fn snapshots_that_cannot_come_from_a_leader_are_refused() {
    let mut r = committed_follower();
    let install = |snap_term: u64, index: u64, total: u64| {
        env(
            3,
            1,
            RaftMessage::InstallSnapshot {
                membership: None,
                term: 3,
                leader_id: 3,
                snapshot: SnapshotMeta {
                    index,
                    term: snap_term,
                },
                pos: ChunkPos { offset: 0, total },
                data: vec![0; 8],
            },
        )
    };
    // Its last entry's term is after the term of the leader sending it, or 0.
    assert_refused(&mut r, install(4, 9, 8));
    assert_refused(&mut r, install(0, 9, 8));
    // More bytes than this node would ever hold in memory to assemble it.
    assert_refused(&mut r, install(3, 9, u64::MAX));
}

#[test]
fn a_snapshot_the_application_cannot_load_is_refused_and_the_transfer_restarts() {
    let mut r = committed_follower();
    r.set_snapshot_check(SnapshotCheck(std::sync::Arc::new(|_, data: &[u8]| {
        if data == b"good" {
            Ok(())
        } else {
            Err("not good".into())
        }
    })));
    let install = |data: &[u8]| {
        env(
            2,
            1,
            RaftMessage::InstallSnapshot {
                membership: None,
                term: 2,
                leader_id: 2,
                snapshot: SnapshotMeta { index: 9, term: 2 },
                pos: ChunkPos {
                    offset: 0,
                    total: data.len() as u64,
                },
                data: data.to_vec(),
            },
        )
    };
    r.step(install(b"bad!"));
    assert_eq!(r.refused_messages(), 1);
    assert!(r.last_refusal().unwrap().contains("not good"));
    let rd = ready_once(&mut r);
    assert!(rd.snapshot.is_none(), "nothing installed");
    assert_eq!(r.log().committed(), 3);
    let restart = RaftMessage::InstallSnapshotReply {
        term: 2,
        snapshot: SnapshotMeta { index: 9, term: 2 },
        received: 0,
        done: false,
    };
    assert_eq!(rd.messages, vec![env(1, 2, restart)]);
    r.step(install(b"good"));
    let rd = ready_once(&mut r);
    assert_eq!(rd.snapshot.map(|s| s.meta.index), Some(9));
}

#[test]
fn replies_claiming_what_the_leader_never_sent_are_refused() {
    let mut r = follower(1, 3, 1);
    stable_leader(&mut r);
    let (term, last) = (r.term(), r.log().last_index());
    // A match, or a rejected previous entry, past the leader's log (a rejection this far out
    // used to send the leader into a loop hunting for a snapshot it did not have).
    assert_refused(&mut r, append_reply(2, 1, term, true, last + 1, None));
    assert_refused(&mut r, append_reply(2, 1, term, false, 1 << 40, None));
    // A confirmation of a read round the leader never began.
    let forged = RaftMessage::AppendEntriesReply {
        term,
        success: true,
        match_index: last,
        conflict: None,
        read_round: u64::MAX / 4,
    };
    assert_refused(&mut r, env(2, 1, forged));
    let done = RaftMessage::InstallSnapshotReply {
        term,
        snapshot: SnapshotMeta {
            index: last + 5,
            term,
        },
        received: 1,
        done: true,
    };
    assert_refused(&mut r, env(2, 1, done));
    // The leader goes on leading.
    r.propose(b"x".to_vec()).unwrap();
    assert_eq!(ready_once(&mut r).entries.len(), 1);
}
