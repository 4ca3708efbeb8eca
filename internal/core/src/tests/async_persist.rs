//! Asynchronous persistence (`handed_off` / `persisted`): the shell may take the next `Ready`
//! while earlier writes are still being synced. The durability rules of §5 must hold all the
//! same: nothing is acknowledged or counted before it is durable, and an acknowledgement of a
//! write that a conflict superseded counts for nothing.

use super::*;

fn leader() -> Raft {
    let mut r = follower(1, 3, 1);
    stable_leader(&mut r);
    r
}

/// Each entry is handed to the writer once, even when the next `Ready` is taken before the
/// first write is durable; `stable` moves only when a write is reported durable.
#[test]
fn entries_are_handed_out_once_while_writes_are_in_flight() {
    let mut r = leader();
    let last = r.log().last_index();
    r.propose(b"a".to_vec()).unwrap();
    let rd1 = r.ready();
    assert_eq!(rd1.entries.len(), 1);
    let p1 = r.handed_off();
    r.propose(b"b".to_vec()).unwrap();
    let rd2 = r.ready();
    assert_eq!(
        rd2.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![last + 2],
        "the entry of the write in flight was handed out again"
    );
    let p2 = r.handed_off();
    assert_eq!(r.log().stable(), last, "stable before any write is durable");
    r.persisted(p1);
    assert_eq!(r.log().stable(), last + 1);
    r.persisted(p2);
    assert_eq!(r.log().stable(), last + 2);
    assert!(r.log().unstable_entries().is_empty());
}

/// §5.3/§5.4: a leader's own copy counts toward a majority only once its write is durable,
/// however many `Ready`s it takes meanwhile.
#[test]
fn leader_commits_only_after_its_own_write_is_durable() {
    let mut r = leader();
    let last = r.log().last_index();
    let committed = r.log().committed();
    r.propose(b"x".to_vec()).unwrap();
    let _rd = r.ready();
    let p = r.handed_off();
    // One follower has it: with the leader's unsynced copy that is not yet a majority of
    // durable copies.
    r.step(append_reply(2, 1, r.term(), true, last + 1, None));
    while r.has_ready() {
        let rd = r.ready();
        assert!(
            rd.committed_entries.is_empty(),
            "applied before it was committed"
        );
        let q = r.handed_off();
        r.persisted(q);
    }
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
    let rd1 = r.ready();
    assert_eq!(rd1.entries.len(), 2);
    assert!(append_replies(&rd1.messages).is_empty());
    let _p1 = r.handed_off();
    // The same AppendEntries again (duplicated by the network): nothing new to write, and the
    // success it earns still may not leave before the first write is durable.
    r.step(append(2, 1, 2, (1, 1), vec![entry(2, 2), entry(2, 3)], 1));
    let rd2 = r.ready();
    assert!(rd2.entries.is_empty() && rd2.hard_state.is_none());
    assert!(
        append_replies(&rd2.messages).is_empty(),
        "acknowledged entries whose write is still in flight"
    );
    assert_eq!(
        append_replies(&rd2.persisted_messages),
        vec![(2, 2, true, 3, None)]
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
    let rd = r.ready();
    assert_eq!(
        rd.entries,
        vec![entry(3, 2), entry(3, 3)],
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
