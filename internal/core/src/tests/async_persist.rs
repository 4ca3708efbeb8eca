//! Asynchronous persistence (`handed_off` / `persisted`): the shell may take the next `Ready`
//! while earlier writes are still being synced. The durability rules of §5 must hold all the
//! same: nothing is acknowledged or counted before it is durable, and an acknowledgement of a
//! write that a conflict superseded counts for nothing.
//!
//! Each test compares whole `Ready`s, so anything else that came out would fail it too.

use super::*;

fn leader() -> Raft {
    let mut r = follower(1, 3, 1);
    stable_leader(&mut r);
    r
}

fn command(term: u64, index: u64, data: &[u8]) -> Entry {
    Entry::command(term, index, data.to_vec())
}

/// Each entry is handed to the writer once, even when the next `Ready` is taken before the
/// first write is durable; `stable` moves only when a write is reported durable.
#[test]
fn entries_are_handed_out_once_while_writes_are_in_flight() {
    let mut r = leader();
    let (term, last, commit) = (r.term(), r.log().last_index(), r.log().committed());
    let a = command(term, last + 1, b"a");
    let b = command(term, last + 2, b"b");
    r.propose(b"a".to_vec()).unwrap();
    assert_eq!(
        r.ready(),
        Ready {
            entries: vec![a.clone()],
            messages: vec![
                append(1, 2, term, (last, term), vec![a.clone()], commit),
                append(1, 3, term, (last, term), vec![a.clone()], commit),
            ],
            ..Ready::default()
        }
    );
    let p1 = r.handed_off();
    r.propose(b"b".to_vec()).unwrap();
    assert_eq!(
        r.ready(),
        Ready {
            entries: vec![b.clone()],
            messages: vec![
                append(1, 2, term, (last + 1, term), vec![b.clone()], commit),
                append(1, 3, term, (last + 1, term), vec![b.clone()], commit),
            ],
            ..Ready::default()
        },
        "the entry of the write in flight was handed out again"
    );
    let p2 = r.handed_off();
    assert_eq!(r.log().stable(), last, "stable before any write is durable");
    r.persisted(p1);
    assert_eq!(r.log().stable(), last + 1);
    r.persisted(p2);
    assert_eq!(r.log().stable(), last + 2);
    assert!(r.log().unstable_entries().is_empty());
    assert!(!r.has_ready());
}

/// §5.3/§5.4: a leader's own copy counts toward a majority only once its write is durable,
/// however many `Ready`s it takes meanwhile.
#[test]
fn leader_commits_only_after_its_own_write_is_durable() {
    let mut r = leader();
    let (term, last, committed) = (r.term(), r.log().last_index(), r.log().committed());
    let x = command(term, last + 1, b"x");
    r.propose(b"x".to_vec()).unwrap();
    let _rd = r.ready();
    let p = r.handed_off();
    // One follower has it: with the leader's unsynced copy that is not yet a majority of
    // durable copies, so there is nothing to do at all.
    r.step(append_reply(2, 1, term, true, last + 1, None));
    assert!(!r.has_ready(), "{:?}", r.ready());
    assert_eq!(
        r.log().committed(),
        committed,
        "committed without the leader's own copy"
    );
    r.persisted(p);
    assert_eq!(
        r.log().committed(),
        last + 1,
        "durable on the leader and node 2"
    );
    assert_eq!(
        r.ready(),
        Ready {
            committed_entries: vec![x],
            ..Ready::default()
        }
    );
}

/// §5.3: a follower acknowledges entries only after they are durable. With writes in flight,
/// the acknowledgement of a later `Ready` that brings nothing new to write (a heartbeat, or a
/// duplicate of the same AppendEntries) must wait too: it vouches for the entries still being
/// written. The core hands it out in `persisted_messages`, which the shell sends only after
/// every earlier write is durable.
#[test]
fn acknowledgements_wait_for_earlier_writes_in_flight() {
    let mut r = restored(config(1, 3), 2, 0, &[1]);
    r.step(append(2, 1, 2, (1, 1), vec![entry(2, 2), entry(2, 3)], 1));
    assert_eq!(
        r.ready(),
        Ready {
            entries: vec![entry(2, 2), entry(2, 3)],
            persisted_messages: vec![append_reply(1, 2, 2, true, 3, None)],
            committed_entries: vec![entry(1, 1)],
            soft_state: Some(SoftState {
                role: Role::Follower,
                leader: 2
            }),
            ..Ready::default()
        }
    );
    let _p1 = r.handed_off();
    // The same AppendEntries again (duplicated by the network): nothing new to write, and the
    // success it earns still may not leave before the first write is durable.
    r.step(append(2, 1, 2, (1, 1), vec![entry(2, 2), entry(2, 3)], 1));
    assert_eq!(
        r.ready(),
        Ready {
            persisted_messages: vec![append_reply(1, 2, 2, true, 3, None)],
            ..Ready::default()
        },
        "acknowledged entries whose write is still in flight"
    );
}

/// A conflict resolved while the conflicting entries were still being written: the old
/// write's report must not mark the replacement entries durable, and the replacements are
/// handed out for writing.
#[test]
fn a_superseded_write_does_not_mark_its_replacements_durable() {
    let mut r = restored(config(1, 3), 2, 0, &[1]);
    // Entries 2..=3 of term 2 from the leader of term 2 go to the writer.
    r.step(append(2, 1, 2, (1, 1), vec![entry(2, 2), entry(2, 3)], 1));
    let _rd = r.ready();
    let old = r.handed_off();
    // Before that write is durable, the leader of term 3 replaces them from index 2.
    r.step(append(3, 1, 3, (1, 1), vec![entry(3, 2), entry(3, 3)], 1));
    assert_eq!(
        r.ready(),
        Ready {
            hard_state: Some(HardState { term: 3, vote: 0 }),
            entries: vec![entry(3, 2), entry(3, 3)],
            persisted_messages: vec![append_reply(1, 3, 3, true, 3, None)],
            soft_state: Some(SoftState {
                role: Role::Follower,
                leader: 3
            }),
            ..Ready::default()
        },
        "the replacement entries must be written"
    );
    let new = r.handed_off();
    r.persisted(old);
    assert_eq!(
        r.log().stable(),
        1,
        "the superseded write marked the new entries durable"
    );
    r.persisted(new);
    assert_eq!(r.log().stable(), 3);
}
