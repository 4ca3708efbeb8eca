//! §5.4 Safety: the election restriction (§5.4.1), committing entries from previous terms
//! (§5.4.2), and the Leader Completeness / Leader Append-Only properties they protect.

use super::*;

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
/// candidate ... If the logs have last entries with different terms, then the log with the
/// later term is more up-to-date. If the logs end with the same term, then whichever log is
/// longer is more up-to-date." The same restriction holds for pre-votes.
#[test]
fn vote_refused_to_a_candidate_with_a_less_up_to_date_log() {
    // The voter's log ends at index 3 with term 2.
    let cases: &[(u64, u64, bool)] = &[
        (3, 2, true),   // identical
        (4, 2, true),   // same last term, longer
        (2, 2, false),  // same last term, shorter
        (0, 0, false),  // empty
        (1, 3, true),   // later last term, even though shorter
        (9, 3, true),   // later last term, longer
        (10, 1, false), // earlier last term, even though longer
        (2, 1, false),  // earlier last term, shorter
    ];
    for (last_index, last_term, granted) in cases {
        for pre in [false, true] {
            let mut v = restored(config(1, 3), 3, 0, &[1, 1, 2]);
            let req = if pre {
                pre_vote_req(2, 1, 4, *last_index, *last_term)
            } else {
                vote_req(2, 1, 4, *last_index, *last_term)
            };
            v.step(req);
            let msgs = drain(&mut v);
            assert_eq!(
                vote_replies(&msgs, 2, pre),
                vec![(4, *granted)],
                "candidate log ends {last_index}@{last_term}, pre_vote={pre}"
            );
            if !pre {
                assert_eq!(v.status().vote, if *granted { 2 } else { 0 });
            }
        }
    }
}

/// §5.4.1 in a cluster: a candidate missing committed entries cannot win, and the node that
/// does win holds every committed entry (Leader Completeness).
#[test]
fn only_a_node_holding_all_committed_entries_can_be_elected() {
    let mut net = Net::new((1..=3).map(|id| follower(id, 3, 1)).collect());
    net.time_out(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    // Node 3 is cut off while three commands are committed by nodes 1 and 2.
    net.isolated.insert(3);
    for i in 0..3 {
        net.node_mut(1).propose(vec![i]).unwrap();
    }
    net.settle();
    let committed = net.node(1).log().committed();
    assert_eq!(committed, 4);
    let committed_entries: Vec<Entry> = entries_of(net.node(1).log());
    assert_eq!(net.node(3).log().last_index(), 1);

    // The leader goes away; node 3 comes back and campaigns first: node 2 refuses it.
    net.isolated = [1].into();
    net.time_out(3);
    assert_eq!(net.node(3).role(), Role::Candidate);
    net.settle();
    assert_ne!(
        net.node(3).role(),
        Role::Leader,
        "elected without the committed entries"
    );
    assert_eq!(
        net.node(2).status().vote,
        0,
        "node 2 voted for a candidate missing entries"
    );

    // Node 2 campaigns and wins (node 3's log is behind, so it grants), and keeps every entry.
    net.time_out(2);
    net.settle();
    assert_eq!(net.node(2).role(), Role::Leader);
    let log = entries_of(net.node(2).log());
    assert_eq!(&log[..committed as usize], &committed_entries[..]);
    assert_eq!(entries_of(net.node(3).log()), log, "node 3 caught up");
}

/// §5.4.2 and Figure 8: "Raft never commits log entries from previous terms by counting
/// replicas. Only log entries from the leader's current term are committed by counting
/// replicas." A leader of term 4 gets its term-2 entry onto a majority (the situation of
/// Figure 8 (c)): it must not commit it until an entry of term 4 is on a majority too.
#[test]
fn leader_never_commits_an_earlier_term_entry_by_counting_replicas() {
    let mut leader_cfg = config(1, 5);
    // One entry per AppendEntries, so index 2 reaches the followers before index 3 does.
    leader_cfg.max_entries_per_message = 1;
    let mut nodes = vec![restored(leader_cfg, 3, 0, &[1, 2])];
    for id in 2..=5 {
        nodes.push(restored(config(id, 5), 3, 0, &[1]));
    }
    let mut net = Net::new(nodes);
    net.isolated = [4, 5].into();
    tick_until(net.node_mut(1), |r| r.role() == Role::Candidate);
    let mut saw_figure_8 = false;
    for _ in 0..100 {
        let produced = net.round();
        let r = net.node(1);
        let holding = |index: u64, term: u64| {
            (1..=5)
                .filter(|id| net.node(*id).log().term(index) == Some(term))
                .count()
        };
        if r.role() == Role::Leader && r.term() == 4 {
            let replicated_2 = 1 + [2, 3]
                .iter()
                .filter(|p| r.progress(**p).unwrap().matched >= 2)
                .count();
            if replicated_2 >= 3 && r.log().committed() < 2 {
                saw_figure_8 = true;
            }
        }
        if r.log().committed() >= 2 {
            assert!(
                holding(3, 4) >= 3,
                "committed {} while the term-4 entry is on {} of 5 nodes",
                r.log().committed(),
                holding(3, 4)
            );
        }
        if produced == 0 {
            break;
        }
    }
    assert!(
        saw_figure_8,
        "the term-2 entry never sat on a majority uncommitted"
    );
    let r = net.node(1);
    assert_eq!((r.role(), r.term()), (Role::Leader, 4));
    assert_eq!(terms_of(r.log()), vec![1, 2, 4]);
    assert_eq!(
        r.log().committed(),
        3,
        "the term-4 entry commits, and the term-2 one with it"
    );
    let applied: Vec<u64> = net.applied[&1].iter().map(|e| e.index).collect();
    assert_eq!(applied, vec![1, 2, 3]);
}

/// The same rule seen from the leader alone: acknowledgements that put only an earlier-term
/// entry on a majority commit nothing; one more acknowledgement of the current term's entry
/// commits everything up to it.
#[test]
fn earlier_term_entry_commits_only_with_a_current_term_entry() {
    let mut r = restored(config(1, 5), 3, 0, &[1, 2]);
    elect(&mut r);
    assert_eq!(terms_of(r.log()), vec![1, 2, 4]);
    for p in [2, 3, 4] {
        r.step(append_reply(p, 1, 4, true, 2, None));
    }
    assert_eq!(
        r.log().committed(),
        0,
        "index 2 (term 2) committed by counting replicas"
    );
    assert!(ready_once(&mut r).committed_entries.is_empty());
    r.step(append_reply(2, 1, 4, true, 3, None));
    assert_eq!(r.log().committed(), 0, "index 3 is on 2 of 5");
    r.step(append_reply(3, 1, 4, true, 3, None));
    assert_eq!(r.log().committed(), 3);
    let applied: Vec<u64> = ready_once(&mut r)
        .committed_entries
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(applied, vec![1, 2, 3]);
}

/// §5.4.2 / §8: "each leader commit a blank no-op entry into the log at the start of its
/// term": the new leader appends a no-op of its own term right after its log, persists it and
/// sends it to every follower.
#[test]
fn new_leader_appends_a_noop_of_its_term() {
    let mut r = restored(config(1, 3), 2, 0, &[1, 1, 2]);
    tick_until(&mut r, |r| r.role() == Role::Candidate);
    drain(&mut r);
    r.step(vote_reply(2, 1, 3, true));
    assert_eq!(r.role(), Role::Leader);
    assert_eq!(r.log().last_index(), 4);
    assert_eq!(r.log().get(4), Some(&Entry::noop(3, 4)));
    let rd = ready_once(&mut r);
    assert_eq!(rd.entries, vec![Entry::noop(3, 4)]);
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
            term: 3,
            prev: (3, 2),
            entries: vec![Entry::noop(3, 4)],
            commit: 0,
        })
        .collect();
    assert_eq!(sent, want);
}

/// §5.4 / Figure 3 (Leader Append-Only): "a leader never overwrites or deletes entries in its
/// log; it only appends new entries." Whatever a leader receives while it stays leader (stale
/// AppendEntries with conflicting entries, vote requests, odd refusals and acknowledgements),
/// its log only grows, and it never hands storage a rewrite of what it already stored.
#[test]
fn leader_never_overwrites_or_deletes_its_own_entries() {
    let mut r = restored(config(1, 3), 2, 0, &[1, 1, 2]);
    stable_leader(&mut r);
    let term = r.term();
    for i in 0..3 {
        r.propose(vec![i]).unwrap();
    }
    drain(&mut r);
    let hint = |xterm, xindex, xlen| {
        Some(ConflictHint {
            xterm,
            xindex,
            xlen,
        })
    };
    let inputs = vec![
        append(
            2,
            1,
            term - 1,
            (1, 1),
            vec![entry(term - 1, 2), entry(term - 1, 3)],
            3,
        ),
        append(3, 1, term - 1, (0, 0), vec![entry(term - 1, 1)], 1),
        vote_req(2, 1, term, 100, term),
        vote_req(3, 1, term - 1, 100, term - 1),
        pre_vote_req(2, 1, term, 100, term),
        vote_reply(2, 1, term, false),
        append_reply(2, 1, term, false, 6, hint(1, 1, 3)),
        append_reply(3, 1, term, false, 5, hint(0, 0, 1)),
        append_reply(2, 1, term, true, 2, None),
        append_reply(3, 1, term, true, 100, None),
        append_reply(2, 1, term - 1, false, 7, hint(9, 2, 2)),
    ];
    for (i, m) in inputs.into_iter().enumerate() {
        let before = entries_of(r.log());
        let stable = r.log().stable();
        let what = format!("input {i}: {m}");
        r.step(m);
        if i % 2 == 0 {
            r.propose(vec![100 + i as u8]).unwrap();
        }
        for _ in 0..HEARTBEAT {
            r.tick();
        }
        let rd = ready_once(&mut r);
        assert_eq!(r.role(), Role::Leader, "{what}");
        assert_eq!(r.term(), term, "{what}");
        let after = entries_of(r.log());
        assert!(after.len() >= before.len(), "{what}: log shrank");
        assert_eq!(&after[..before.len()], &before[..], "{what}: log rewritten");
        assert!(
            rd.entries.iter().all(|e| e.index > stable),
            "{what}: stored entries rewritten"
        );
    }
}
