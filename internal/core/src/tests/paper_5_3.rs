//! §5.3 Log replication.

use super::*;

/// A leader of term 2 for voters 1..=3 whose followers hold its no-op at index 1.
fn leader() -> Raft {
    let mut r = follower(1, 3, 1);
    stable_leader(&mut r);
    assert_eq!((r.term(), r.log().last_index()), (2, 1));
    r
}

/// §5.3: "The leader appends the command to its log as a new entry, then issues AppendEntries
/// RPCs in parallel to each of the other servers to replicate the entry." Only a leader
/// accepts proposals.
#[test]
fn leader_appends_proposal_and_replicates_it() {
    let mut r = leader();
    assert_eq!(r.propose(b"x".to_vec()), Ok((2, 2)));
    assert_eq!(r.log().last_index(), 2);
    let rd = ready_once(&mut r);
    let e = Entry::command(2, 2, b"x".to_vec());
    assert_eq!(
        rd.entries,
        vec![e.clone()],
        "the leader persists its new entry"
    );
    let msgs: Vec<Envelope> = rd
        .messages
        .into_iter()
        .chain(rd.persisted_messages)
        .collect();
    let mut sent = appends(&msgs);
    sent.sort_by_key(|a| a.to);
    let want: Vec<Append> = [2, 3]
        .iter()
        .map(|to| Append {
            to: *to,
            term: 2,
            prev: (1, 2),
            entries: vec![e.clone()],
            commit: 1,
        })
        .collect();
    assert_eq!(sent, want);

    let mut f = follower(2, 3, 2);
    f.step(append(1, 2, 2, (0, 0), vec![], 0));
    assert_eq!(f.propose(b"y".to_vec()), Err(NotLeader { leader: 1 }));
    assert_eq!(f.log().last_index(), 0);
}

/// §5.3 consistency check: a follower refuses an AppendEntries whose previous entry it does not
/// hold, changing nothing, and says why so the leader can skip ahead (end of §5.3): its log
/// length when too short; otherwise the conflicting term and the first index of that term.
#[test]
fn follower_rejects_mismatched_prev_with_conflict_hint() {
    let hint = |xterm, xindex, xlen| ConflictHint {
        xterm,
        xindex,
        xlen,
    };
    let cases: &[(&[u64], (u64, u64), ConflictHint)] = &[
        (&[1, 1, 2], (5, 2), hint(0, 0, 4)),
        (&[1, 1, 2], (4, 3), hint(0, 0, 4)),
        (&[], (1, 1), hint(0, 0, 1)),
        (&[1, 1, 2], (3, 3), hint(2, 3, 4)),
        (&[1, 2, 2, 2], (4, 3), hint(2, 2, 5)),
        (&[1, 2, 2, 2], (3, 1), hint(2, 2, 5)),
        (&[1, 1, 1], (2, 2), hint(1, 1, 4)),
    ];
    for (terms, prev, want) in cases {
        let mut r = restored(config(1, 3), 3, 0, terms);
        r.step(append(2, 1, 3, *prev, vec![entry(3, prev.0 + 1)], 3));
        let rd = ready_once(&mut r);
        let replies = append_replies(&rd.persisted_messages);
        assert_eq!(
            replies,
            vec![(2, 3, false, prev.0, Some(*want))],
            "log {terms:?}, prev {prev:?}"
        );
        assert!(
            rd.entries.is_empty(),
            "log {terms:?}, prev {prev:?}: wrote entries"
        );
        assert_eq!(
            terms_of(r.log()),
            terms.to_vec(),
            "log {terms:?}, prev {prev:?}: log changed"
        );
        assert_eq!(
            r.log().committed(),
            0,
            "log {terms:?}, prev {prev:?}: committed"
        );
    }
}

/// §5.3 / Figure 2 (AppendEntries receiver, steps 3–4): "If an existing entry conflicts with a
/// new one (same index but different terms), delete the existing entry and all that follow
/// it. Append any new entries not already in the log." Entries already present are kept, and
/// only what changed is handed to storage.
#[test]
fn follower_appends_new_entries_and_deletes_only_a_conflicting_suffix() {
    struct Case {
        log: &'static [u64],
        prev: (u64, u64),
        entries: &'static [(u64, u64)],
        want: &'static [u64],
        written_from: Option<u64>,
    }
    let cases = [
        // New entries after the end.
        Case {
            log: &[1, 2],
            prev: (2, 2),
            entries: &[(3, 3)],
            want: &[1, 2, 3],
            written_from: Some(3),
        },
        Case {
            log: &[1, 2],
            prev: (2, 2),
            entries: &[(3, 3), (4, 3)],
            want: &[1, 2, 3, 3],
            written_from: Some(3),
        },
        // A conflict at index 2 cuts 2.. and appends the leader's entries.
        Case {
            log: &[1, 2, 2],
            prev: (1, 1),
            entries: &[(2, 3), (3, 4)],
            want: &[1, 3, 4],
            written_from: Some(2),
        },
        Case {
            log: &[1, 2, 2],
            prev: (0, 0),
            entries: &[(1, 3)],
            want: &[3],
            written_from: Some(1),
        },
        // Matching entries are skipped; the conflict is found after them.
        Case {
            log: &[1, 1, 2, 2],
            prev: (0, 0),
            entries: &[(1, 1), (2, 1), (3, 3)],
            want: &[1, 1, 3],
            written_from: Some(3),
        },
        // Entries already present: nothing changes, nothing is cut.
        Case {
            log: &[1, 2, 2],
            prev: (0, 0),
            entries: &[(1, 1)],
            want: &[1, 2, 2],
            written_from: None,
        },
        Case {
            log: &[1, 2, 2],
            prev: (1, 1),
            entries: &[(2, 2), (3, 2)],
            want: &[1, 2, 2],
            written_from: None,
        },
        Case {
            log: &[1, 2, 2],
            prev: (3, 2),
            entries: &[],
            want: &[1, 2, 2],
            written_from: None,
        },
    ];
    for c in cases {
        let what = format!(
            "log {:?}, prev {:?}, entries {:?}",
            c.log, c.prev, c.entries
        );
        let mut r = restored(config(1, 3), 4, 0, c.log);
        let entries: Vec<Entry> = c.entries.iter().map(|(i, t)| entry(*t, *i)).collect();
        r.step(append(2, 1, 4, c.prev, entries.clone(), 0));
        assert_eq!(terms_of(r.log()), c.want.to_vec(), "{what}");
        for e in &entries {
            assert_eq!(
                r.log().get(e.index),
                Some(e),
                "{what}: entry {} not the leader's",
                e.index
            );
        }
        let rd = ready_once(&mut r);
        let want_written: Vec<Entry> = match c.written_from {
            Some(from) => (from..=c.want.len() as u64)
                .map(|i| r.log().get(i).unwrap().clone())
                .collect(),
            None => vec![],
        };
        assert_eq!(rd.entries, want_written, "{what}: written to storage");
        let matched = c.prev.0 + c.entries.len() as u64;
        // A heartbeat's answer vouches only for what is durable (here: all of it), so it
        // leaves at once; an answer about entries waits for them to be persisted.
        let replies = if c.entries.is_empty() {
            &rd.messages
        } else {
            &rd.persisted_messages
        };
        assert_eq!(
            append_replies(replies),
            vec![(2, 4, true, matched, None)],
            "{what}"
        );
    }
}

/// §5.3: the acknowledgement of an AppendEntries promises the entries are durable, so it is
/// released only after persisting them: the reply is in `persisted_messages`, with the
/// entries in the same `Ready`.
#[test]
fn follower_acknowledges_entries_only_after_persisting_them() {
    let mut r = restored(config(1, 3), 2, 0, &[1]);
    r.step(append(2, 1, 2, (1, 1), vec![entry(2, 2), entry(2, 3)], 1));
    let rd = r.ready();
    assert_eq!(rd.entries, vec![entry(2, 2), entry(2, 3)]);
    assert!(
        append_replies(&rd.messages).is_empty(),
        "acknowledged before persisting"
    );
    assert_eq!(
        append_replies(&rd.persisted_messages),
        vec![(2, 2, true, 3, None)]
    );
}

/// §5.3 (and Figure 2 step 3: "delete the existing entry ... only if it conflicts"): an
/// AppendEntries that brings nothing new, such as a stale or duplicated one arriving after a
/// later one, must not truncate the entries the follower already has: they may be committed.
#[test]
fn append_with_nothing_new_never_truncates() {
    let mut r = follower(1, 3, 1);
    let batch1 = append(2, 1, 1, (0, 0), log_of(&[1, 1, 1]), 0);
    let batch2 = append(2, 1, 1, (3, 1), vec![entry(1, 4), entry(1, 5)], 5);
    r.step(batch1.clone());
    r.step(batch2);
    drain(&mut r);
    assert_eq!(r.log().committed(), 5);

    // The first batch again (duplicated by the network), and a heartbeat anchored earlier.
    r.step(batch1);
    r.step(append(2, 1, 1, (2, 1), vec![], 5));
    r.step(append(2, 1, 1, (1, 1), vec![entry(1, 2)], 5));
    assert_eq!(terms_of(r.log()), vec![1; 5], "entries 4..5 were cut");
    assert_eq!(r.log().committed(), 5, "the commit index went back");
    let msgs = drain(&mut r);
    let mut matched: Vec<u64> = append_replies(&msgs).iter().map(|r| r.3).collect();
    // (The heartbeat's answer leaves at once, ahead of the others.)
    matched.sort_unstable();
    assert_eq!(
        matched,
        vec![2, 2, 3],
        "each reply names what that request verified"
    );
}

/// Figure 2 (AppendEntries receiver, step 5): "If leaderCommit > commitIndex, set commitIndex =
/// min(leaderCommit, index of last new entry)": never past what this request verified (a
/// follower's unverified suffix may still be replaced), and never backwards.
#[test]
fn follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    // (prev, new entries, leader_commit, want)
    let cases: &[(u64, u64, u64, u64)] = &[
        (1, 0, 3, 1),
        (1, 1, 4, 2),
        (2, 2, 4, 4),
        (4, 0, 3, 3),
        (4, 0, 4, 4),
        (4, 1, 10, 5),
        (4, 2, 5, 5),
        (0, 0, 4, 0),
    ];
    for (prev, new, commit, want) in cases {
        // The follower holds four entries of term 1.
        let mut r = restored(config(1, 3), 1, 0, &[1, 1, 1, 1]);
        let entries: Vec<Entry> = (prev + 1..=prev + new).map(|i| entry(1, i)).collect();
        r.step(append(2, 1, 1, (*prev, 1.min(*prev)), entries, *commit));
        assert_eq!(
            r.log().committed(),
            *want,
            "prev {prev}, {new} new, leader commit {commit}"
        );
        let rd = ready_once(&mut r);
        let applied: Vec<u64> = rd.committed_entries.iter().map(|e| e.index).collect();
        assert_eq!(
            applied,
            (1..=*want).collect::<Vec<u64>>(),
            "prev {prev}: handed to apply"
        );
    }
    // Never backwards.
    let mut r = restored(config(1, 3), 1, 0, &[1, 1, 1, 1]);
    r.step(append(2, 1, 1, (4, 1), vec![], 3));
    r.step(append(2, 1, 1, (4, 1), vec![], 1));
    assert_eq!(r.log().committed(), 3);
}

/// A leader of term 8 with the leader's log of Figure 7 (its no-op at 11), its first probe to
/// node 2 sent (prev 10).
fn figure_7_leader() -> Raft {
    let mut r = restored(config(1, 3), 7, 0, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
    elect(&mut r);
    assert_eq!(r.term(), 8);
    assert_eq!(r.progress(2).unwrap().next, 11);
    r
}

/// §5.3 (end): "the follower can include the term of the conflicting entry and the first index
/// it stores for that term. With this information, the leader can decrement nextIndex to
/// bypass all of the conflicting entries in that term; one AppendEntries RPC will be required
/// for each term with conflicting entries, rather than one RPC per entry."
#[test]
fn leader_backs_up_next_index_a_whole_term_at_a_time() {
    let hint = |xterm, xindex, xlen| {
        Some(ConflictHint {
            xterm,
            xindex,
            xlen,
        })
    };
    // (hint from a follower refusing prev 10, the next index the leader must probe)
    let cases = [
        // Follower (b) of Figure 7: 1 1 1 4 (too short).
        (hint(0, 0, 5), 5),
        // Follower (f): term 3 at index 10, first index of term 3 is 7; the leader has no
        // term 3, so it skips all of it.
        (hint(3, 7, 12), 7),
        // A follower with term 4 at index 10 from index 4 on: the leader has term 4 up to 5,
        // so it goes right after its own last entry of that term.
        (hint(4, 4, 11), 6),
        // A term the leader does not have, whose run starts at 9.
        (hint(7, 9, 13), 9),
        // No hint: one entry back.
        (None, 10),
    ];
    for (conflict, want) in cases {
        let mut r = figure_7_leader();
        r.step(append_reply(2, 1, 8, false, 10, conflict));
        let pr = r.progress(2).unwrap();
        assert_eq!(pr.next, want, "hint {conflict:?}");
        assert_eq!(pr.state, ProgressState::Probe);
        // The next probe goes out from there.
        let msgs = drain(&mut r);
        let probe: Vec<Append> = appends(&msgs).into_iter().filter(|a| a.to == 2).collect();
        assert_eq!(probe.len(), 1, "hint {conflict:?}");
        assert_eq!(
            probe[0].prev,
            (want - 1, r.log().term(want - 1).unwrap()),
            "hint {conflict:?}"
        );
    }
}

/// §5.3 and Figure 7: "the leader handles inconsistencies by forcing the followers' logs to
/// duplicate its own": whatever the follower's log (missing entries, extra uncommitted entries,
/// both), after replication it equals the leader's, with about one round trip per conflicting
/// term.
#[test]
fn leader_brings_every_figure_7_follower_log_in_line() {
    let leader_log: &[u64] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    // (follower's log, most refusals the leader may need)
    let cases: [(&[u64], usize); 6] = [
        (&[1, 1, 1, 4, 4, 5, 5, 6, 6], 1),
        (&[1, 1, 1, 4], 1),
        (&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 0),
        (&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 0),
        (&[1, 1, 1, 4, 4, 4, 4], 2),
        (&[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 2),
    ];
    for (follower_log, max_refusals) in cases {
        let mut net = Net::new(vec![
            restored(config(1, 3), 7, 0, leader_log),
            restored(config(2, 3), 7, 0, follower_log),
            restored(config(3, 3), 7, 0, &[]),
        ]);
        net.time_out(1);
        assert_eq!(
            net.node(1).role(),
            Role::Leader,
            "follower {follower_log:?}"
        );
        let want = entries_of(net.node(1).log());
        assert_eq!(want.len(), 11, "the no-op of term 8 was appended");
        // The followers learn the final commit index from the next heartbeat.
        for _ in 0..HEARTBEAT {
            net.node_mut(1).tick();
        }
        net.settle();
        assert_eq!(
            entries_of(net.node(2).log()),
            want,
            "follower {follower_log:?}"
        );
        assert_eq!(
            entries_of(net.node(3).log()),
            want,
            "follower {follower_log:?}"
        );
        for id in 1..=3 {
            assert_eq!(
                net.node(id).log().committed(),
                11,
                "node {id}, follower {follower_log:?}"
            );
        }
        let refusals = net
            .delivered
            .iter()
            .filter(|m| {
                m.from == 2
                    && matches!(
                        m.msg,
                        RaftMessage::AppendEntriesReply { success: false, .. }
                    )
            })
            .count();
        assert!(
            refusals <= max_refusals,
            "follower {follower_log:?}: {refusals} refusals"
        );
    }
}

/// §5.3: many entries travel in one AppendEntries (Figure 2: "log entries to store (empty for
/// heartbeat; may send more than one for efficiency)"): everything proposed before a `Ready`
/// goes to each follower in a single message.
#[test]
fn leader_sends_many_entries_in_one_append() {
    let mut r = leader();
    for i in 0..5 {
        r.propose(vec![i]).unwrap();
    }
    let msgs = drain(&mut r);
    let sent = appends(&msgs);
    assert_eq!(sent.len(), 2, "one message per follower: {sent:?}");
    for a in sent {
        assert_eq!(a.prev, (1, 2));
        let indexes: Vec<u64> = a.entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, vec![2, 3, 4, 5, 6]);
    }
}

/// §5.3: "Once an entry has been committed ... the leader applies the entry to its state
/// machine"; entries are applied in log order (Figure 2: "increment lastApplied, apply
/// log[lastApplied]"). Across `ready()`/`advance()` calls every node is handed each committed
/// entry exactly once, in index order, and all nodes the same entries.
#[test]
fn committed_entries_are_handed_out_in_order_exactly_once() {
    let nodes = (1..=3)
        .map(|id| {
            let mut cfg = config(id, 3);
            cfg.max_apply_batch = 2;
            Raft::new(cfg, HardState::default(), vec![]).unwrap()
        })
        .collect();
    let mut net = Net::new(nodes);
    net.time_out(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    let mut proposed = 0u8;
    for burst in [1, 5, 2, 7, 3] {
        for _ in 0..burst {
            net.node_mut(1).propose(vec![proposed]).unwrap();
            proposed += 1;
        }
        // Some rounds only, so bursts overlap with replication of the previous ones.
        net.round();
    }
    net.settle();
    // A heartbeat carries the final commit index to the followers.
    for _ in 0..HEARTBEAT {
        net.node_mut(1).tick();
    }
    net.settle();
    let last = net.node(1).log().last_index();
    assert_eq!(last, 1 + proposed as u64);
    for id in 1..=3 {
        let applied = &net.applied[&id];
        let indexes: Vec<u64> = applied.iter().map(|e| e.index).collect();
        assert_eq!(indexes, (1..=last).collect::<Vec<u64>>(), "node {id}");
        assert_eq!(applied, &entries_of(net.node(1).log()), "node {id}");
        assert_eq!(net.node(id).log().applied(), last, "node {id}");
        let r = net.node_mut(id);
        assert!(
            ready_once(r).committed_entries.is_empty(),
            "node {id}: handed out again"
        );
    }
}

/// §5.3 with the leader's own write in parallel (thesis §10.2.1): the leader may send entries
/// before they are durable on its own disk, but its copy counts toward the majority only
/// once `advance()` reports the write done.
#[test]
fn leader_counts_its_own_entry_only_after_advance() {
    let mut r = leader();
    r.propose(b"x".to_vec()).unwrap();
    let rd = r.ready();
    assert_eq!(rd.entries.len(), 1);
    // Node 2 acknowledges before the leader's own write finished: one copy of three.
    r.step(append_reply(2, 1, 2, true, 2, None));
    assert_eq!(
        r.log().committed(),
        1,
        "committed without the leader's own durable copy"
    );
    r.advance();
    assert_eq!(
        r.log().committed(),
        2,
        "durable on the leader and node 2: a majority"
    );
}

/// A leader ignores an AppendEntries refusal that answers a request it has already moved past
/// (duplicated or reordered by the network): `matched` never decreases, and `next` never falls
/// to or below `matched`, whatever a refusal says.
#[test]
fn leader_ignores_stale_rejections_and_never_moves_next_to_or_below_matched() {
    let mut r = leader();
    for i in 0..4 {
        r.propose(vec![i]).unwrap();
    }
    drain(&mut r);
    // Node 2 acknowledges up to 5; then an old refusal (of prev 1) and an old ack arrive.
    r.step(append_reply(2, 1, 2, true, 5, None));
    let before = r.progress(2).unwrap().clone();
    assert_eq!(
        (before.matched, before.state),
        (5, ProgressState::Replicate)
    );
    let short = Some(ConflictHint {
        xterm: 0,
        xindex: 0,
        xlen: 1,
    });
    r.step(append_reply(2, 1, 2, false, 1, short));
    r.step(append_reply(2, 1, 2, true, 3, None));
    let pr = r.progress(2).unwrap();
    assert_eq!(
        (pr.matched, pr.next, pr.state),
        (before.matched, before.next, before.state)
    );

    // Two more batches stream out (prev 5, then prev 8); the first is lost, so node 2 refuses
    // the second. Its hint even claims a log shorter than `matched`: the leader probes again,
    // but from just after `matched`.
    for batch in [3, 2] {
        for i in 0..batch {
            r.propose(vec![i]).unwrap();
        }
        drain(&mut r);
    }
    r.step(append_reply(2, 1, 2, false, 8, short));
    let pr = r.progress(2).unwrap();
    assert_eq!(pr.matched, 5);
    assert_eq!(pr.next, 6, "next at or below matched");
    assert_eq!(pr.state, ProgressState::Probe);

    // While probing, refusals are duplicated and reordered: only the answer to the probe
    // outstanding counts.
    let mut r = figure_7_leader();
    let hint = |xterm, xindex| {
        Some(ConflictHint {
            xterm,
            xindex,
            xlen: 12,
        })
    };
    r.step(append_reply(2, 1, 8, false, 10, hint(3, 7)));
    assert_eq!(r.progress(2).unwrap().next, 7);
    drain(&mut r);
    r.step(append_reply(2, 1, 8, false, 6, hint(2, 4)));
    assert_eq!(r.progress(2).unwrap().next, 4);
    drain(&mut r);
    r.step(append_reply(2, 1, 8, false, 10, hint(3, 7)));
    r.step(append_reply(2, 1, 8, false, 6, hint(2, 4)));
    assert_eq!(r.progress(2).unwrap().next, 4, "a stale refusal moved next");
    assert_eq!(r.progress(2).unwrap().state, ProgressState::Probe);
}

/// §5.3: "If followers crash or run slowly, or if network packets are lost, the leader retries
/// AppendEntries RPCs indefinitely ... until all followers eventually store all log entries."
/// Every message to the followers is lost for a while; the leader keeps resending the entry
/// (not only empty heartbeats) until they acknowledge it.
#[test]
fn leader_retries_lost_appends_until_followers_store_the_entries() {
    let mut r = leader();
    r.propose(b"x".to_vec()).unwrap();
    let first = appends(&drain(&mut r));
    assert_eq!(first.len(), 2, "sent once");
    // Lost. Count how many more times each follower is sent entry 2 over a few heartbeats.
    let mut resent = BTreeMap::new();
    for _ in 0..10 * HEARTBEAT {
        r.tick();
        for a in appends(&drain(&mut r)) {
            if a.entries.iter().any(|e| e.index == 2) {
                *resent.entry(a.to).or_insert(0) += 1;
            }
        }
    }
    for p in [2, 3] {
        assert!(
            resent.get(&p).copied().unwrap_or(0) >= 2,
            "entry 2 not retried to node {p}: {resent:?}"
        );
    }
    assert_eq!(r.log().committed(), 1);
    // The network heals: the next retry arrives and is acknowledged.
    let mut f = restored(config(2, 3), 2, 1, &[2]);
    for _ in 0..4 * HEARTBEAT {
        r.tick();
        for m in drain(&mut r).into_iter().filter(|m| m.to == 2) {
            f.step(m);
        }
        for m in drain(&mut f) {
            r.step(m);
        }
    }
    assert_eq!(f.log().last_index(), 2);
    assert_eq!(r.log().committed(), 2);
}

/// A heartbeat's answer does not wait behind an unrelated write in flight: it vouches only for
/// what is durable (`stable`), so a follower whose disk stalls keeps answering the leader
/// (check-quorum, ReadIndex) while its write is pending.
#[test]
fn a_heartbeat_is_answered_at_once_for_what_is_durable() {
    let mut r = restored(config(1, 3), 2, 0, &[1, 1]);
    // Entries 3..4 arrive and are handed to the disk, which has not finished.
    r.step(append(2, 1, 2, (2, 1), vec![entry(2, 3), entry(2, 4)], 0));
    let rd = r.ready();
    assert_eq!(rd.entries.len(), 2);
    assert!(append_replies(&rd.messages).is_empty());
    let _pending = r.handed_off(); // the write is in flight: `persisted` not called
                                   // A heartbeat anchored at 4 meanwhile: answered now, vouching only for 1..2 on disk.
    r.step(append(2, 1, 2, (4, 2), vec![], 0));
    let rd2 = r.ready();
    assert_eq!(append_replies(&rd2.messages), vec![(2, 2, true, 2, None)]);
    assert!(append_replies(&rd2.persisted_messages).is_empty());
}
