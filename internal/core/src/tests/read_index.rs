//! ReadIndex (Raft thesis §6.4): linearizable reads confirmed by one heartbeat round,
//! without writing to the log.

use super::*;

fn read_round_of(m: &Envelope) -> Option<u64> {
    match &m.msg {
        RaftMessage::AppendEntries {
            read_round,
            entries,
            ..
        } if entries.is_empty() => Some(*read_round),
        _ => None,
    }
}

fn reply_with_round(from: NodeId, to: NodeId, term: u64, matched: u64, round: u64) -> Envelope {
    env(
        from,
        to,
        RaftMessage::AppendEntriesReply {
            term,
            success: true,
            match_index: matched,
            conflict: None,
            read_round: round,
        },
    )
}

/// Many reads between two turns share one heartbeat round, and are released together once a
/// majority (the leader and one follower of three) acknowledges that round.
#[test]
fn reads_share_one_round_and_need_a_majority() {
    let mut r = restored(config(1, 3), 0, 0, &[]);
    stable_leader(&mut r);
    let (term, commit) = (r.term(), r.log().committed());
    r.read_index(10).unwrap();
    r.read_index(11).unwrap();
    r.read_index(12).unwrap();
    let rd = ready_once(&mut r);
    assert!(rd.read_states.is_empty(), "not confirmed yet");
    let rounds: Vec<u64> = rd.messages.iter().filter_map(read_round_of).collect();
    assert_eq!(
        rounds.len(),
        2,
        "one heartbeat per follower for all three reads: {:?}",
        rd.messages
    );
    let round = rounds[0];
    assert!(rounds.iter().all(|x| *x == round) && round > 0);
    // An answer to an older round confirms nothing.
    r.step(reply_with_round(2, 1, term, commit, round - 1));
    assert!(ready_once(&mut r).read_states.is_empty());
    r.step(reply_with_round(2, 1, term, commit, round));
    let rd = ready_once(&mut r);
    let ctxs: Vec<u64> = rd.read_states.iter().map(|s| s.ctx).collect();
    assert_eq!(ctxs, vec![10, 11, 12]);
    assert!(
        rd.read_states.iter().all(|s| s.index == commit),
        "read index is the commit index at request time"
    );
    // Handed out once.
    r.step(reply_with_round(3, 1, term, commit, round));
    assert!(ready_once(&mut r).read_states.is_empty());
}

/// A new leader hands out no read index before an entry of its own term is committed: its
/// commit index may lag what earlier leaders committed.
#[test]
fn new_leader_confirms_reads_only_after_committing_its_noop() {
    let mut r = restored(config(1, 3), 1, 0, &[1, 1]);
    elect(&mut r);
    let term = r.term();
    assert_ne!(r.log().term(r.log().committed()), Some(term));
    r.read_index(7).unwrap();
    let rd = ready_once(&mut r);
    assert!(
        rd.messages.iter().filter_map(read_round_of).all(|x| x == 0),
        "no round before the no-op commits"
    );
    // Followers answer in the current term, but no round was started: nothing is released.
    r.step(reply_with_round(2, 1, term, 0, 0));
    assert!(drain_reads(&mut r).is_empty());
    // The no-op (index 3) reaches follower 2: committed, the read gets its round.
    r.step(append_reply(2, 1, term, true, 3, None));
    let rd = ready_once(&mut r);
    assert_eq!(r.log().committed(), 3);
    let round = rd
        .messages
        .iter()
        .filter_map(read_round_of)
        .max()
        .unwrap_or(0);
    assert!(
        round > 0,
        "a round starts once the no-op commits: {:?}",
        rd.messages
    );
    r.step(reply_with_round(3, 1, term, 3, round));
    let states = drain_reads(&mut r);
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].ctx, states[0].index), (7, 3));
}

fn drain_reads(r: &mut Raft) -> Vec<crate::ReadState> {
    let mut out = Vec::new();
    while r.has_ready() {
        out.extend(ready_once(r).read_states);
    }
    out
}

/// Only a leader takes reads; a leader that steps down forgets the reads it could not confirm,
/// and an answer from its old term cannot release them later.
#[test]
fn followers_refuse_and_deposed_leaders_forget() {
    let mut f = follower(2, 3, 1);
    assert!(f.read_index(1).is_err());

    let mut r = restored(config(1, 3), 0, 0, &[]);
    stable_leader(&mut r);
    let term = r.term();
    r.read_index(5).unwrap();
    let rd = ready_once(&mut r);
    let round = rd
        .messages
        .iter()
        .filter_map(read_round_of)
        .max()
        .unwrap_or(0);
    // A higher term deposes it before any acknowledgement.
    r.step(append(3, 1, term + 1, (0, 0), vec![], 0));
    assert_eq!(r.role(), Role::Follower);
    r.step(reply_with_round(2, 1, term, 1, round));
    assert!(drain_reads(&mut r).is_empty());
    assert!(r.read_index(6).is_err());
}

/// A single-node cluster is its own majority: reads are confirmed at once.
#[test]
fn single_node_confirms_reads_itself() {
    let mut r = restored(config(1, 1), 0, 0, &[]);
    tick_until(&mut r, |r| r.role() == Role::Leader);
    drain(&mut r);
    assert_eq!(r.log().committed(), 1);
    r.read_index(9).unwrap();
    let states = drain_reads(&mut r);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].index, 1);
}
