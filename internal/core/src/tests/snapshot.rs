//! §7 Log compaction: `compact`, and InstallSnapshot sent in chunks, one at a time.

use super::*;
use crate::message::{ChunkPos, SnapshotMeta};

const CHUNK: usize = 4;
/// Ten bytes: three chunks of `CHUNK`.
const DATA: &[u8] = b"0123456789";

/// The configuration of `config(_, 3)`: voters 1, 2, 3, no incarnations recorded.
fn three() -> Membership {
    Membership::of_voters(&[1, 2, 3], &BTreeMap::new(), &BTreeMap::new())
}

fn snap(index: u64, term: u64, data: &[u8]) -> Snapshot {
    Snapshot {
        membership: three(),
        meta: SnapshotMeta { index, term },
        data: bytes::Bytes::copy_from_slice(data),
    }
}

fn chunked(id: NodeId) -> Config {
    let mut cfg = config(id, 3);
    cfg.snapshot_chunk_bytes = CHUNK;
    cfg
}

fn install(term: u64, meta: (u64, u64), offset: u64, data: &[u8], total: u64) -> Envelope {
    env(
        1,
        2,
        RaftMessage::InstallSnapshot {
            membership: Some(three()),
            term,
            leader_id: 1,
            snapshot: SnapshotMeta {
                index: meta.0,
                term: meta.1,
            },
            pos: ChunkPos { offset, total },
            data: data.to_vec(),
        },
    )
}

fn snapshot_reply(term: u64, meta: (u64, u64), received: u64, done: bool) -> Envelope {
    env(
        2,
        1,
        RaftMessage::InstallSnapshotReply {
            term,
            snapshot: SnapshotMeta {
                index: meta.0,
                term: meta.1,
            },
            received,
            done,
        },
    )
}

/// (to, snapshot index, offset, data) of every InstallSnapshot in `msgs`.
fn chunks(msgs: &[Envelope]) -> Vec<(NodeId, u64, u64, Vec<u8>)> {
    msgs.iter()
        .filter_map(|m| match &m.msg {
            RaftMessage::InstallSnapshot {
                snapshot,
                pos,
                data,
                ..
            } => Some((m.to, snapshot.index, pos.offset, data.clone())),
            _ => None,
        })
        .collect()
}

/// (snapshot index, received, done) of every InstallSnapshotReply in `msgs`.
fn snapshot_replies(msgs: &[Envelope]) -> Vec<(u64, u64, bool)> {
    msgs.iter()
        .filter_map(|m| match m.msg {
            RaftMessage::InstallSnapshotReply {
                snapshot,
                received,
                done,
                ..
            } => Some((snapshot.index, received, done)),
            _ => None,
        })
        .collect()
}

/// The leader's InstallSnapshot to node 2 of the snapshot at 10 (`DATA`), at `offset`.
fn chunk_to_2(offset: u64, data: &[u8]) -> Envelope {
    env(
        1,
        2,
        RaftMessage::InstallSnapshot {
            membership: Some(three()),
            term: 2,
            leader_id: 1,
            snapshot: SnapshotMeta { index: 10, term: 1 },
            pos: ChunkPos {
                offset,
                total: DATA.len() as u64,
            },
            data: data.to_vec(),
        },
    )
}

/// Leader 1 of term 2 over a log of ten term-1 entries plus its no-op (index 11), committed
/// and applied with node 3's help; node 2 has answered nothing. Then it compacts through 10.
fn compacted_leader() -> Raft {
    let mut r = Raft::new(chunked(1), HardState { term: 1, vote: 0 }, log_of(&[1; 10])).unwrap();
    elect(&mut r);
    assert_eq!((r.term(), r.log().last_index()), (2, 11));
    r.step(append_reply(3, 1, 2, true, 11, None));
    drain(&mut r);
    assert_eq!((r.log().committed(), r.log().applied()), (11, 11));
    r.compact(snap(10, 1, DATA)).unwrap();
    r
}

/// Node 2 refuses the leader's probe with an empty log: its next entry is compacted away.
fn refuse_probe(r: &mut Raft) -> Vec<Envelope> {
    let prev = r.progress(2).unwrap().next - 1;
    let hint = ConflictHint {
        xterm: 0,
        xindex: 0,
        xlen: 1,
    };
    r.step(append_reply(2, 1, 2, false, prev, Some(hint)));
    drain(r)
}

#[test]
fn compact_refuses_unapplied_stale_and_wrong_term_snapshots() {
    let mut r = restored(config(1, 3), 2, 0, &[1, 1, 2, 2]);
    r.step(append(2, 1, 2, (4, 2), vec![], 3));
    drain(&mut r);
    assert_eq!(r.log().applied(), 3);
    assert_eq!(
        r.compact(snap(4, 2, b"s")),
        Err(CompactError::NotApplied {
            index: 4,
            applied: 3
        })
    );
    assert_eq!(
        r.compact(snap(3, 1, b"s")),
        Err(CompactError::WrongTerm { index: 3, term: 1 })
    );
    assert_eq!(
        r.log().snapshot().index,
        0,
        "a refused snapshot changed the log"
    );
    r.compact(snap(2, 1, b"s")).unwrap();
    assert_eq!((r.log().snapshot().index, r.log().first_index()), (2, 3));
    assert_eq!(r.log().get(3), Some(&entry(2, 3)));
    for index in [1, 2] {
        assert_eq!(
            r.compact(snap(index, 1, b"s")),
            Err(CompactError::Stale { index, current: 2 })
        );
    }
    r.compact(snap(3, 2, b"t")).unwrap();
    assert_eq!(r.snapshot().map(|s| s.meta.index), Some(3));
    assert_eq!(r.log().len(), 1);
}

#[test]
fn leader_sends_a_compacted_follower_the_snapshot_one_chunk_at_a_time() {
    let mut r = compacted_leader();
    let out = refuse_probe(&mut r);
    assert_eq!(r.progress(2).unwrap().state, ProgressState::Snapshot);
    assert_eq!(
        out,
        vec![chunk_to_2(0, b"0123")],
        "the first chunk and nothing else"
    );
    assert_eq!(chunks(&out), vec![(2, 10, 0, b"0123".to_vec())]);
    // Nothing more while the chunk awaits its answer, however often we ask.
    r.step(append_reply(3, 1, 2, true, 11, None));
    assert!(chunks(&drain(&mut r)).is_empty());
    // Each answer brings the next chunk, from where the follower says it is.
    r.step(snapshot_reply(2, (10, 1), 4, false));
    assert_eq!(
        r.ready(),
        Ready {
            messages: vec![chunk_to_2(4, b"4567")],
            ..Ready::default()
        }
    );
    r.advance();
    r.step(snapshot_reply(2, (10, 1), 2, false));
    assert_eq!(
        chunks(&drain(&mut r)),
        vec![(2, 10, 2, b"2345".to_vec())],
        "resume at `received`"
    );
    // A duplicate of that answer (or an answer to a duplicated chunk) sends nothing more.
    r.step(snapshot_reply(2, (10, 1), 2, false));
    assert!(chunks(&drain(&mut r)).is_empty(), "two chunks in flight");
    r.step(snapshot_reply(2, (10, 1), 6, false));
    assert_eq!(chunks(&drain(&mut r)), vec![(2, 10, 6, b"6789".to_vec())]);
    // An answer about another snapshot is ignored.
    r.step(snapshot_reply(2, (7, 1), 0, false));
    assert!(chunks(&drain(&mut r)).is_empty());
    // Done: the follower holds everything through 10; entries from 11 go as AppendEntries.
    r.step(snapshot_reply(2, (10, 1), 10, true));
    let pr = r.progress(2).unwrap();
    assert_eq!(
        (pr.state, pr.matched, pr.next),
        (ProgressState::Probe, 10, 11)
    );
    let out = drain(&mut r);
    assert!(chunks(&out).is_empty());
    let sent = appends(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].prev, sent[0].entries.len()), ((10, 1), 1));
}

#[test]
fn lost_chunk_is_resent_and_heartbeats_go_on_during_a_transfer() {
    let mut r = compacted_leader();
    refuse_probe(&mut r);
    let mut resent = Vec::new();
    let mut heartbeats = 0;
    for _ in 0..(3 * HEARTBEAT) {
        r.tick();
        let out = drain(&mut r);
        heartbeats += appends(&out).iter().filter(|a| a.to == 2).count();
        resent.extend(chunks(&out));
    }
    assert_eq!(
        heartbeats, 3,
        "one heartbeat per interval during the transfer"
    );
    assert_eq!(
        resent,
        vec![(2, 10, 0, b"0123".to_vec())],
        "the unanswered chunk goes again after two heartbeats, once"
    );
}

#[test]
fn a_transfer_under_way_goes_on_with_its_snapshot_after_a_new_compaction() {
    let mut r = compacted_leader();
    refuse_probe(&mut r);
    r.step(snapshot_reply(2, (10, 1), 4, false));
    drain(&mut r);
    // A new entry commits and the leader compacts again, through 12.
    r.propose(b"x".to_vec()).unwrap();
    drain(&mut r);
    r.step(append_reply(3, 1, 2, true, 12, None));
    drain(&mut r);
    r.compact(snap(12, 2, b"abcdefgh")).unwrap();
    r.step(snapshot_reply(2, (10, 1), 8, false));
    assert_eq!(
        chunks(&drain(&mut r)),
        vec![(2, 10, 8, b"89".to_vec())],
        "the transfer restarted with the new snapshot"
    );
    // Installed, the follower still misses 11: it gets the new snapshot.
    r.step(snapshot_reply(2, (10, 1), 10, true));
    assert_eq!(chunks(&drain(&mut r)), vec![(2, 12, 0, b"abcd".to_vec())]);
}

#[test]
fn follower_installs_on_the_last_chunk_and_keeps_a_matching_suffix() {
    let mut f = restored(chunked(2), 2, 0, &[1, 1, 2, 2, 2, 2]);
    f.step(append(1, 2, 2, (6, 2), vec![], 2));
    drain(&mut f);
    assert_eq!(f.log().committed(), 2);
    f.step(install(2, (4, 2), 0, b"0123", 10));
    f.step(install(2, (4, 2), 4, b"4567", 10));
    assert_eq!(
        f.log().snapshot().index,
        0,
        "installed before the last chunk"
    );
    let rd = ready_once(&mut f);
    assert_eq!(
        rd,
        Ready {
            messages: vec![
                snapshot_reply(2, (4, 2), 4, false),
                snapshot_reply(2, (4, 2), 8, false)
            ],
            ..Ready::default()
        },
        "chunk receipts promise nothing durable: they leave at once"
    );
    assert!(rd.snapshot.is_none());
    assert_eq!(
        snapshot_replies(&rd.messages),
        vec![(4, 4, false), (4, 8, false)]
    );
    f.step(install(2, (4, 2), 8, b"89", 10));
    assert_eq!(f.log().snapshot(), SnapshotMeta { index: 4, term: 2 });
    assert_eq!(
        (f.log().last_index(), f.log().committed(), f.log().applied()),
        (6, 4, 4),
        "matching entries 5 and 6 are kept"
    );
    assert_eq!(f.log().get(5), Some(&entry(2, 5)));
    let rd = f.ready();
    assert_eq!(
        rd,
        Ready {
            persisted_messages: vec![snapshot_reply(2, (4, 2), 10, true)],
            snapshot: Some(snap(4, 2, DATA)),
            ..Ready::default()
        }
    );
    assert_eq!(
        rd.snapshot,
        Some(snap(4, 2, DATA)),
        "the snapshot is handed out"
    );
    assert!(
        snapshot_replies(&rd.messages).is_empty(),
        "the acknowledgement may only leave once the snapshot is durable"
    );
    assert_eq!(
        snapshot_replies(&rd.persisted_messages),
        vec![(4, 10, true)]
    );
    assert!(
        rd.committed_entries.is_empty(),
        "nothing below the snapshot is applied again"
    );
    f.advance();
    assert!(f.ready().snapshot.is_none(), "handed out twice");
    f.advance();
    assert_eq!(f.snapshot(), Some(&snap(4, 2, DATA)));
}

#[test]
fn follower_discards_a_conflicting_log_when_installing() {
    // Entries 3..=6 of term 1 never committed; the leader's snapshot at 5 is of term 3.
    let mut f = restored(chunked(2), 3, 0, &[1, 1, 1, 1, 1, 1]);
    f.step(append(1, 2, 3, (2, 1), vec![], 2));
    drain(&mut f);
    f.step(install(3, (5, 3), 0, b"abc", 3));
    let rd = ready_once(&mut f);
    assert_eq!(
        rd,
        Ready {
            persisted_messages: vec![snapshot_reply(3, (5, 3), 3, true)],
            snapshot: Some(snap(5, 3, b"abc")),
            ..Ready::default()
        }
    );
    assert_eq!(
        rd.snapshot.map(|s| s.meta),
        Some(SnapshotMeta { index: 5, term: 3 })
    );
    assert_eq!(
        (f.log().last_index(), f.log().last_term(), f.log().len()),
        (5, 3, 0)
    );
    assert_eq!((f.log().committed(), f.log().stable()), (5, 5));
    // The leader goes on from 6.
    f.step(append(1, 2, 3, (5, 3), vec![entry(3, 6)], 6));
    let rd = ready_once(&mut f);
    assert_eq!(
        rd,
        Ready {
            entries: vec![entry(3, 6)],
            persisted_messages: vec![append_reply(2, 1, 3, true, 6, None)],
            committed_entries: vec![entry(3, 6)],
            ..Ready::default()
        }
    );
    assert_eq!(rd.entries, vec![entry(3, 6)]);
    assert_eq!(rd.committed_entries, vec![entry(3, 6)]);
}

#[test]
fn follower_ignores_a_snapshot_at_or_below_its_commit_index() {
    let mut f = restored(chunked(2), 2, 0, &[1, 1, 2, 2, 2, 2]);
    f.step(append(1, 2, 2, (6, 2), vec![], 5));
    drain(&mut f);
    for index in [3, 5] {
        f.step(install(2, (index, 2), 0, b"0123", 10));
        let rd = ready_once(&mut f);
        assert!(rd.snapshot.is_none());
        assert_eq!(
            snapshot_replies(&rd.persisted_messages),
            vec![(index, 10, true)],
            "answered as done so the leader moves on"
        );
        assert_eq!((f.log().snapshot().index, f.log().last_index()), (0, 6));
        assert_eq!(f.log().committed(), 5, "commit index moved");
    }
    // A partial transfer above the commit index is dropped by a stale one in between.
    f.step(install(2, (6, 2), 0, b"0123", 10));
    f.step(install(2, (4, 2), 0, b"0123", 10));
    f.step(install(2, (6, 2), 4, b"4567", 10));
    let rd = ready_once(&mut f);
    assert_eq!(
        snapshot_replies(&rd.messages),
        vec![(6, 4, false), (6, 0, false)],
        "a chunk of a transfer the follower holds no start of restarts it"
    );
}

#[test]
fn chunks_of_another_terms_transfer_are_never_mixed() {
    let mut f = restored(chunked(2), 2, 0, &[1, 1]);
    f.step(install(2, (2, 1), 0, b"0123", 10));
    drain(&mut f);
    // A new leader (term 3) sends its own encoding of the same snapshot, of the same size.
    let mut msg = install(3, (2, 1), 4, b"WXYZ", 10);
    msg.from = 3;
    if let RaftMessage::InstallSnapshot { leader_id, .. } = &mut msg.msg {
        *leader_id = 3;
    }
    f.step(msg);
    let out = drain(&mut f);
    assert_eq!(
        snapshot_replies(&out),
        vec![(2, 0, false)],
        "the new leader must start from its own first byte"
    );
}

#[test]
fn append_entries_before_the_snapshot_skips_what_it_covers() {
    let mut f = restored(chunked(2), 2, 0, &[]);
    f.step(install(2, (5, 2), 0, b"s", 1));
    drain(&mut f);
    assert_eq!(f.log().snapshot().index, 5);
    // Entirely covered: success up to what it carried.
    f.step(append(1, 2, 2, (1, 1), vec![entry(1, 2), entry(2, 3)], 5));
    let out = drain(&mut f);
    assert_eq!(append_replies(&out), vec![(1, 2, true, 3, None)]);
    assert_eq!(f.log().last_index(), 5);
    // Overlapping: the entries after the snapshot are appended.
    f.step(append(
        1,
        2,
        2,
        (3, 2),
        vec![entry(2, 4), entry(2, 5), entry(2, 6), entry(2, 7)],
        7,
    ));
    let out = drain(&mut f);
    assert_eq!(append_replies(&out), vec![(1, 2, true, 7, None)]);
    assert_eq!((f.log().last_index(), f.log().committed()), (7, 7));
    assert_eq!(f.log().get(6), Some(&entry(2, 6)));
    // A heartbeat anchored before the snapshot never moves the commit index back.
    f.step(append(1, 2, 2, (2, 1), vec![], 2));
    drain(&mut f);
    assert_eq!(f.log().committed(), 7);
}

#[test]
fn restore_from_a_snapshot_starts_applied_at_it() {
    let cfg = chunked(2);
    let r = Raft::restore(
        cfg,
        HardState { term: 3, vote: 1 },
        Some(snap(5, 2, DATA)),
        vec![entry(2, 6), entry(3, 7)],
    )
    .unwrap();
    assert_eq!(r.log().snapshot(), SnapshotMeta { index: 5, term: 2 });
    assert_eq!(
        (
            r.log().committed(),
            r.log().applied(),
            r.log().stable(),
            r.log().last_index()
        ),
        (5, 5, 7, 7)
    );
    assert_eq!(r.snapshot(), Some(&snap(5, 2, DATA)));
}

#[test]
fn the_snapshot_data_is_replaced_only_by_the_same_snapshots_bytes() {
    let mut r = compacted_leader();
    let meta = SnapshotMeta { index: 10, term: 1 };
    let same = bytes::Bytes::copy_from_slice(DATA);
    assert!(!r.replace_snapshot_data(SnapshotMeta { index: 9, term: 1 }, same.clone()));
    assert!(!r.replace_snapshot_data(meta, bytes::Bytes::from_static(b"short")));
    assert!(r.replace_snapshot_data(meta, same.clone()));
    assert_eq!(r.snapshot().unwrap().data, same);
}

/// Node 2 answers the leader's probe: its log ends at `last`.
fn follower_2_holds(r: &mut Raft, last: u64) {
    let prev = r.progress(2).unwrap().next - 1;
    let hint = ConflictHint {
        xterm: 0,
        xindex: 0,
        xlen: last + 1,
    };
    r.step(append_reply(2, 1, 2, false, prev, Some(hint)));
}

/// Leader 1 of term 2 over ten term-1 entries and its no-op, all committed and applied, that
/// keeps `keep` entries behind its snapshots and compacts through 10.
fn leader_keeping(keep: u64) -> Raft {
    let mut cfg = chunked(1);
    cfg.log_behind_snapshot = keep;
    let mut r = Raft::new(cfg, HardState { term: 1, vote: 0 }, log_of(&[1; 10])).unwrap();
    elect(&mut r);
    r.step(append_reply(3, 1, 2, true, 11, None));
    drain(&mut r);
    assert_eq!(r.log().applied(), 11);
    r.compact(snap(10, 1, DATA)).unwrap();
    r
}

#[test]
fn a_compaction_keeps_entries_behind_the_snapshot_and_a_follower_within_them_gets_entries() {
    let mut r = leader_keeping(4);
    assert_eq!(r.snapshot_index(), 10);
    assert_eq!(
        r.log().snapshot(),
        SnapshotMeta { index: 6, term: 1 },
        "the log starts 4 entries before the snapshot"
    );
    assert_eq!(
        r.log_bytes_since_snapshot(),
        r.log().get(11).unwrap().data.len() as u64,
        "the kept entries do not count toward the next snapshot"
    );
    // Node 2 holds entries up to 8: behind the snapshot, within the kept log.
    follower_2_holds(&mut r, 8);
    let msgs = drain(&mut r);
    assert!(chunks(&msgs).is_empty(), "no snapshot: {msgs:?}");
    let to_2: Vec<Append> = appends(&msgs).into_iter().filter(|a| a.to == 2).collect();
    assert_eq!(to_2.len(), 1, "{msgs:?}");
    assert_eq!(to_2[0].prev, (8, 1));
    assert_eq!(
        to_2[0].entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![9, 10, 11]
    );
}

#[test]
fn a_follower_behind_the_kept_log_gets_the_snapshot() {
    let mut r = leader_keeping(4);
    // Node 2 holds entries up to 5: the log starts after 6.
    follower_2_holds(&mut r, 5);
    let msgs = drain(&mut r);
    let sent = chunks(&msgs);
    assert_eq!(sent, vec![(2, 10, 0, DATA[..CHUNK].to_vec())], "{msgs:?}");
}

#[test]
fn the_kept_log_is_bounded_by_bytes_and_the_next_compaction_drops_it() {
    let mut cfg = chunked(1);
    cfg.log_behind_snapshot = 100;
    let mut r = Raft::new(
        cfg.clone(),
        HardState { term: 1, vote: 0 },
        log_of(&[1; 10]),
    )
    .unwrap();
    cfg.log_behind_snapshot_bytes = (8..=10)
        .map(|i| r.log().get(i).unwrap().data.len() as u64)
        .sum();
    let mut r2 = Raft::new(cfg, HardState { term: 1, vote: 0 }, log_of(&[1; 10])).unwrap();
    for r in [&mut r, &mut r2] {
        elect(r);
        r.step(append_reply(3, 1, 2, true, 11, None));
        drain(r);
    }
    r2.compact(snap(10, 1, DATA)).unwrap();
    assert_eq!(
        r2.log().snapshot().index,
        7,
        "3 entries' worth of bytes kept"
    );
    // With no byte bound that bites, everything the log held stays (fewer than 100 entries).
    r.compact(snap(10, 1, DATA)).unwrap();
    assert_eq!(r.log().snapshot().index, 0);
    // A later snapshot moves the start of the kept log along, and is refused if not newer
    // than the snapshot (not the start of the log).
    assert_eq!(
        r2.compact(snap(9, 1, b"s")),
        Err(CompactError::Stale {
            index: 9,
            current: 10
        })
    );
    r2.propose(b"x".to_vec()).unwrap();
    r2.step(append_reply(3, 1, 2, true, 12, None));
    drain(&mut r2);
    assert_eq!(r2.log().applied(), 12);
    r2.compact(snap(12, 2, b"s")).unwrap();
    // Entries 9..=12 (the one-byte "x", the empty no-op, two commands) fit the bound.
    assert_eq!(r2.log().snapshot().index, 8);
    assert_eq!(r2.snapshot_index(), 12);
}
