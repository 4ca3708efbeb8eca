//! The driver's rules, each shown by its whole output (`assert_eq!` on `Output`): nothing else
//! came out but what the test names.

use super::*;
use crate::kv::Command;
use crate::kv::Op;
use crate::rpc::types::{
    ChunkPos, ClientRequest, Entry, HardState, OkResponse, RaftMessage, Role, SnapshotMeta,
};
use raftd_core::Config;

/// A reply token: which request an answer is for.
type Token = u32;

fn config(id: NodeId, voters: &[NodeId]) -> Config {
    let mut cfg = Config::new(id, voters.to_vec());
    cfg.election_ticks_min = 10;
    cfg.election_ticks_max = 11;
    cfg.heartbeat_ticks = 3;
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    // A compaction drops the log up to the snapshot (the core's tests cover what it keeps).
    cfg.log_behind_snapshot = 0;
    cfg
}

fn addrs(voters: &[NodeId]) -> BTreeMap<NodeId, String> {
    voters.iter().map(|v| (*v, format!("node-{v}"))).collect()
}

fn driver(id: NodeId, voters: &[NodeId], cfg: DriverConfig) -> Driver<Token> {
    let raft = Raft::new(config(id, voters), HardState::default(), Vec::new()).unwrap();
    Driver::new(raft, KvStore::default(), addrs(voters), cfg)
}

fn out(messages: Vec<Envelope>, disk: Vec<DiskJob>) -> Output<Token> {
    Output {
        messages,
        disk,
        ..Output::default()
    }
}

fn env(from: NodeId, to: NodeId, msg: RaftMessage) -> Envelope {
    Envelope {
        incarnation: 0,
        from,
        to,
        msg,
    }
}

fn put(id: u64, key: &str, value: &str) -> ClientRequest {
    ClientRequest::Put {
        id,
        key: key.into(),
        value: value.into(),
        lease: 0,
        client_id: None,
        seq: None,
    }
}

fn put_entry(term: u64, index: u64, key: &str, value: &str) -> Entry {
    let cmd = Command {
        at_ms: 0,
        client_id: None,
        seq: 0,
        op: Op::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        },
    };
    Entry::command(term, index, cmd.encode().unwrap())
}

/// Leader 1's AppendEntries of term 1 to node 2 (every entry before of term 1).
fn append_from_1(prev: u64, entries: Vec<Entry>, commit: u64) -> Envelope {
    env(
        1,
        2,
        RaftMessage::AppendEntries {
            term: 1,
            leader_id: 1,
            prev_log_index: prev,
            prev_log_term: if prev == 0 { 0 } else { 1 },
            entries,
            leader_commit: commit,
            read_round: 0,
        },
    )
}

/// The answer to a Put that left the store at `revision`.
fn put_ok(id: u64, revision: u64) -> ClientResponse {
    ClientResponse::Ok(OkResponse {
        revision: Some(revision),
        ..OkResponse::bare(id)
    })
}

/// A single-voter node that has elected itself and made its term, vote and no-op durable.
fn single_leader(cfg: DriverConfig) -> Driver<Token> {
    let mut d = driver(1, &[1], cfg);
    for _ in 0..11 {
        d.tick(0);
    }
    assert_eq!(d.raft().role(), Role::Leader);
    let first = d.drive().unwrap();
    assert_eq!(
        first,
        out(
            vec![],
            vec![DiskJob::Append {
                seq: 1,
                hard_state: Some(HardState { term: 1, vote: 1 }),
                entries: vec![Entry::noop(1, 1)],
            }]
        ),
        "the vote and the no-op go to the disk together; nothing is committed before they are durable"
    );
    d.durable(1);
    let applied = d.drive().unwrap();
    assert_eq!(
        applied,
        Output {
            applied: vec![Applied::Entry(Entry::noop(1, 1))],
            ..Output::default()
        }
    );
    d
}

#[test]
fn a_write_is_answered_once_its_entry_is_durable_committed_and_applied() {
    let mut d = single_leader(DriverConfig::default());
    d.request(put(7, "k", "v"), 70);
    let queued = d.drive().unwrap();
    assert_eq!(
        queued,
        out(
            vec![],
            vec![DiskJob::Append {
                seq: 2,
                hard_state: None,
                entries: vec![put_entry(1, 2, "k", "v")],
            }]
        ),
        "no answer before the entry is on the (only) disk"
    );
    d.durable(2);
    assert_eq!(
        d.drive().unwrap(),
        Output {
            answers: vec![(70, put_ok(7, 1))],
            applied: vec![Applied::Entry(put_entry(1, 2, "k", "v"))],
            ..Output::default()
        }
    );
    assert_eq!(d.store().get("k"), Some("v"));
    assert!(d.idle());
}

#[test]
fn status_and_refused_requests_are_answered_at_once() {
    let mut d = driver(2, &[1, 2, 3], DriverConfig::default());
    d.request(ClientRequest::Status { id: 1 }, 10);
    d.request(put(2, "k", "v"), 20);
    let answers = d.drive().unwrap().answers;
    let ClientResponse::Status(status) = &answers[0].1 else {
        panic!("{answers:?}");
    };
    assert_eq!(answers[0].0, 10);
    assert_eq!(
        (
            status.node_id,
            status.role.as_str(),
            status.term,
            status.members.len()
        ),
        (2, "Follower", 0, 3)
    );
    assert_eq!(answers[1].0, 20);
    assert_eq!(answers[1].1, d.service().not_leader(2, 0));
    assert_eq!(answers.len(), 2);
}

#[test]
fn acknowledgements_wait_for_their_write_and_every_write_before_it() {
    let mut d = driver(2, &[1, 2, 3], DriverConfig::default());
    let append = append_from_1;
    let reply = |match_index: u64| {
        env(
            2,
            1,
            RaftMessage::AppendEntriesReply {
                term: 1,
                success: true,
                match_index,
                conflict: None,
                read_round: 0,
            },
        )
    };
    // Entries 1..=2: the term and the entries go to the disk; the acknowledgement waits.
    d.step(append(
        0,
        vec![Entry::noop(1, 1), put_entry(1, 2, "a", "1")],
        0,
    ));
    assert_eq!(
        d.drive().unwrap(),
        out(
            vec![],
            vec![DiskJob::Append {
                seq: 1,
                hard_state: Some(HardState { term: 1, vote: 0 }),
                entries: vec![Entry::noop(1, 1), put_entry(1, 2, "a", "1")],
            }]
        )
    );
    // A heartbeat while they are in flight: answered at once, vouching only for what is
    // durable (nothing yet), so a slow disk does not hold the leader's check-quorum up.
    d.step(append(2, vec![], 0));
    assert_eq!(d.drive().unwrap(), out(vec![reply(0)], vec![]));
    // Entry 3 is a second write behind the first.
    d.step(append(2, vec![put_entry(1, 3, "b", "2")], 0));
    assert_eq!(
        d.drive().unwrap(),
        out(
            vec![],
            vec![DiskJob::Append {
                seq: 2,
                hard_state: None,
                entries: vec![put_entry(1, 3, "b", "2")],
            }]
        )
    );
    // Write 1 durable: the acknowledgement that waited for it; not the second.
    d.durable(1);
    assert_eq!(d.drive().unwrap(), out(vec![reply(2)], vec![]));
    // Write 2 durable: the third.
    d.durable(2);
    assert_eq!(d.drive().unwrap(), out(vec![reply(3)], vec![]));
    // With nothing in flight, a heartbeat's acknowledgement leaves at once, and the commit
    // index it carries applies the entries.
    d.step(append(3, vec![], 3));
    assert_eq!(
        d.drive().unwrap(),
        Output {
            messages: vec![reply(3)],
            applied: vec![
                Applied::Entry(Entry::noop(1, 1)),
                Applied::Entry(put_entry(1, 2, "a", "1")),
                Applied::Entry(put_entry(1, 3, "b", "2")),
            ],
            ..Output::default()
        }
    );
}

#[test]
fn a_vote_leaves_only_once_it_is_durable() {
    let mut d = driver(2, &[1, 2, 3], DriverConfig::default());
    d.step(env(
        3,
        2,
        RaftMessage::RequestVote {
            transfer: false,
            term: 4,
            candidate_id: 3,
            last_log_index: 0,
            last_log_term: 0,
            pre_vote: false,
        },
    ));
    assert_eq!(
        d.drive().unwrap(),
        out(
            vec![],
            vec![DiskJob::Append {
                seq: 1,
                hard_state: Some(HardState { term: 4, vote: 3 }),
                entries: vec![],
            }]
        )
    );
    d.durable(1);
    assert_eq!(
        d.drive().unwrap(),
        out(
            vec![env(
                2,
                3,
                RaftMessage::RequestVoteReply {
                    term: 4,
                    vote_granted: true,
                    pre_vote: false,
                }
            )],
            vec![]
        )
    );
}

/// A leader's store after `writes`, as a snapshot at index `writes.len()` in term 1.
fn snapshot_of(writes: &[(&str, &str)]) -> Snapshot {
    let mut store = KvStore::default();
    for (i, (k, v)) in writes.iter().enumerate() {
        store.apply(&put_entry(1, i as u64 + 1, k, v));
    }
    store.to_snapshot(1, 0).unwrap()
}

/// The leader's whole snapshot in one InstallSnapshot chunk to node 2.
fn install_msg(meta: SnapshotMeta, data: &[u8]) -> Envelope {
    env(
        1,
        2,
        RaftMessage::InstallSnapshot {
            membership: None,
            term: 1,
            leader_id: 1,
            snapshot: meta,
            pos: ChunkPos {
                offset: 0,
                total: data.len() as u64,
            },
            data: data.to_vec(),
        },
    )
}

/// A single-voter leader whose snapshot policy is "every `entries` entries".
fn snapshotting_leader(entries: u64) -> Driver<Token> {
    single_leader(DriverConfig {
        snapshots: SnapshotPolicy {
            entries,
            bytes: u64::MAX,
            log_percent: 0,
        },
        ..DriverConfig::default()
    })
}

#[test]
fn the_leaders_snapshot_is_a_disk_job_in_order_and_its_acknowledgement_waits_for_it() {
    let mut d = driver(2, &[1, 2, 3], DriverConfig::default());
    let snapshot = snapshot_of(&[("a", "1"), ("b", "2"), ("c", "3")]);
    let meta = snapshot.meta;
    d.step(install_msg(meta, &snapshot.data));
    let installed = d.drive().unwrap();
    assert_eq!(
        installed,
        Output {
            disk: vec![DiskJob::InstallSnapshot {
                seq: 1,
                hard_state: Some(HardState { term: 1, vote: 0 }),
                snapshot: Snapshot {
                    // The leader's chunks name no configuration (an older leader): the one in
                    // effect at the snapshot's index is used.
                    membership: d.raft().membership().clone(),
                    meta,
                    data: snapshot.data.clone(),
                },
                tail: vec![],
            }],
            applied: vec![Applied::Snapshot(meta)],
            ..Output::default()
        },
        "the state machine takes the snapshot at once; the acknowledgement waits for the disk"
    );
    assert_eq!(d.store().get("c"), Some("3"));
    d.durable(1);
    assert_eq!(
        d.drive().unwrap(),
        out(
            vec![env(
                2,
                1,
                RaftMessage::InstallSnapshotReply {
                    term: 1,
                    snapshot: meta,
                    received: snapshot.data.len() as u64,
                    done: true,
                }
            )],
            vec![]
        )
    );
}

#[test]
fn a_snapshot_that_does_not_load_is_refused_and_the_node_goes_on() {
    // Bytes that are no store, and a store whose applied index is not the snapshot's (loading
    // it would make the next entry's apply assert, at every restart).
    let wrong_index = KvStore::default().to_snapshot(1, 0).unwrap();
    for data in [b"???".to_vec(), wrong_index.data.to_vec()] {
        let mut d = driver(2, &[1, 2, 3], DriverConfig::default());
        let meta = SnapshotMeta { index: 5, term: 1 };
        d.step(install_msg(meta, &data));
        let out = d.drive().expect("a bad snapshot does not stop the driver");
        assert_eq!(d.raft().refused_messages(), 1);
        assert!(out
            .disk
            .iter()
            .all(|j| !matches!(j, DiskJob::InstallSnapshot { .. })));
        assert!(out.applied.is_empty());
        assert_eq!(d.raft().log().snapshot().index, 0, "nothing installed");
        // The leader is told to start the transfer again.
        assert!(out.messages.iter().any(|m| matches!(
            m.msg,
            RaftMessage::InstallSnapshotReply {
                received: 0,
                done: false,
                ..
            }
        )));
        // A good snapshot afterwards is installed.
        let good = snapshot_of(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")]);
        d.step(install_msg(good.meta, &good.data));
        let out = d.drive().unwrap();
        assert!(out
            .disk
            .iter()
            .any(|j| matches!(j, DiskJob::InstallSnapshot { .. })));
    }
}

#[test]
fn the_own_snapshot_is_encoded_by_the_shell_saved_in_order_then_compacts_the_log() {
    let mut d = snapshotting_leader(2);
    d.request(put(1, "k", "v"), 10);
    d.drive().unwrap();
    d.durable(2);
    let applied = d.drive().unwrap();
    // Two entries applied since the (empty) snapshot: the shell is asked to encode the store.
    let task = applied.prepare_snapshot.clone().expect("a snapshot is due");
    assert_eq!(
        applied,
        Output {
            answers: vec![(10, put_ok(1, 1))],
            applied: vec![Applied::Entry(put_entry(1, 2, "k", "v"))],
            prepare_snapshot: Some(SnapshotTask {
                // The copy records the configuration at its index.
                store: {
                    let mut s = d.store().clone();
                    s.set_membership(d.raft().membership_at(2));
                    s
                },
                term: 1,
                size_hint: 0,
            }),
            ..Output::default()
        }
    );
    // Another write is queued while the snapshot is being encoded.
    d.request(put(2, "k2", "v2"), 20);
    assert_eq!(
        d.drive().unwrap(),
        out(
            vec![],
            vec![DiskJob::Append {
                seq: 3,
                hard_state: None,
                entries: vec![put_entry(1, 3, "k2", "v2")],
            }]
        ),
        "one snapshot at a time: none is asked for while one is in progress"
    );
    let snapshot = task.encode().unwrap();
    assert_eq!(snapshot.meta, SnapshotMeta { index: 2, term: 1 });
    assert!(d.snapshot_prepared(snapshot.clone()));
    // Saved behind write 3, whose entry is the log kept after the snapshot.
    assert_eq!(
        d.drive().unwrap(),
        out(
            vec![],
            vec![DiskJob::SaveSnapshot {
                seq: 4,
                snapshot: snapshot.clone(),
                tail: vec![put_entry(1, 3, "k2", "v2")],
            }]
        )
    );
    assert_eq!(
        d.raft().log().snapshot().index,
        0,
        "not before it is durable"
    );
    d.durable(4);
    assert_eq!(
        d.drive().unwrap(),
        Output {
            answers: vec![(20, put_ok(2, 2))],
            applied: vec![Applied::Entry(put_entry(1, 3, "k2", "v2"))],
            compacted: Some(snapshot.meta),
            // The dropped entries go to the shell to free.
            released: vec![Entry::noop(1, 1), put_entry(1, 2, "k", "v")],
            ..Output::default()
        }
    );
    assert_eq!(d.raft().log().snapshot(), snapshot.meta);
    assert_eq!(d.raft().snapshot(), Some(&snapshot));
}

#[test]
fn a_failed_snapshot_is_not_retried_on_every_turn() {
    let mut d = snapshotting_leader(2);
    d.request(put(1, "k", "v"), 10);
    d.drive().unwrap();
    d.durable(2);
    assert!(d.drive().unwrap().prepare_snapshot.is_some());
    d.snapshot_failed("disk full");
    for _ in 0..3 {
        d.tick(0);
        assert_eq!(d.drive().unwrap().prepare_snapshot, None);
    }
    // Two more entries applied: time for another attempt.
    d.request(put(2, "a", "1"), 20);
    d.request(put(3, "b", "2"), 30);
    d.drive().unwrap();
    d.durable(3);
    assert!(d.drive().unwrap().prepare_snapshot.is_some());
}

#[test]
fn a_prepared_snapshot_older_than_the_leaders_is_dropped() {
    let policy = SnapshotPolicy {
        entries: 1,
        bytes: u64::MAX,
        log_percent: 0,
    };
    let raft = Raft::new(config(2, &[1, 2, 3]), HardState::default(), Vec::new()).unwrap();
    let mut d: Driver<Token> = Driver::new(
        raft,
        KvStore::default(),
        addrs(&[1, 2, 3]),
        DriverConfig {
            snapshots: policy,
            ..DriverConfig::default()
        },
    );
    // One entry committed and applied: a snapshot at 1 is asked for.
    d.step(env(
        1,
        2,
        RaftMessage::AppendEntries {
            term: 1,
            leader_id: 1,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![put_entry(1, 1, "a", "1")],
            leader_commit: 1,
            read_round: 0,
        },
    ));
    let task = d.drive().unwrap().prepare_snapshot.expect("due");
    // Meanwhile the leader's snapshot at 3 arrives and is installed.
    let leaders = snapshot_of(&[("a", "1"), ("b", "2"), ("c", "3")]);
    d.step(install_msg(leaders.meta, &leaders.data));
    d.drive().unwrap();
    assert!(!d.snapshot_prepared(task.encode().unwrap()));
    assert_eq!(d.drive().unwrap().disk, vec![]);
    assert_eq!(d.raft().log().snapshot(), leaders.meta);
    assert_eq!(d.raft().snapshot().map(|s| &s.data), Some(&leaders.data));
}

/// Marks every disk job of `out` durable.
fn sync(d: &mut Driver<Token>, out: &Output<Token>) {
    for job in &out.disk {
        d.durable(job.seq());
    }
}

/// Node 1 of voters {1, 2} (configuration at index 1), elected in term 2 with node 2's vote,
/// its no-op (index 2) acknowledged by node 2, committed and applied.
fn leader_of_two() -> Driver<Token> {
    let m = raftd_core::Membership::of_voters(&[1, 2], &addrs(&[1, 2]), &BTreeMap::new());
    let raft = Raft::new(
        config(1, &[1, 2]),
        HardState { term: 1, vote: 0 },
        vec![Entry::config(1, 1, &m)],
    )
    .unwrap();
    let mut d = Driver::new(
        raft,
        KvStore::default(),
        addrs(&[1, 2]),
        DriverConfig::default(),
    );
    for _ in 0..11 {
        d.tick(0);
    }
    let o = d.drive().unwrap();
    sync(&mut d, &o);
    d.step(env(
        2,
        1,
        RaftMessage::RequestVoteReply {
            term: 2,
            vote_granted: true,
            pre_vote: false,
        },
    ));
    let o = d.drive().unwrap();
    assert_eq!(d.raft().role(), Role::Leader);
    sync(&mut d, &o);
    ack(&mut d, 2);
    assert_eq!(d.raft().log().committed(), 2);
    d
}

/// Node 2 acknowledges the log up to `index` in term 2; the driver runs on it.
fn ack(d: &mut Driver<Token>, index: u64) -> Output<Token> {
    d.step(env(
        2,
        1,
        RaftMessage::AppendEntriesReply {
            term: 2,
            success: true,
            match_index: index,
            conflict: None,
            read_round: 0,
        },
    ));
    let o = d.drive().unwrap();
    sync(d, &o);
    o
}

fn member_add(id: u64, node_id: NodeId, learner: bool) -> ClientRequest {
    ClientRequest::MemberAdd {
        id,
        node_id,
        addr: format!("node-{node_id}"),
        learner,
        force: false,
    }
}

#[test]
fn a_change_is_answered_once_committed_and_another_meanwhile_is_busy() {
    let mut d = single_leader(DriverConfig::default());
    d.request(member_add(1, 2, true), 10);
    let appended = d.drive().unwrap();
    assert!(appended.answers.is_empty(), "{:?}", appended.answers);
    assert_eq!(
        appended.disk.len(),
        1,
        "the configuration entry goes to disk"
    );
    // One change at a time: asked while the first is not committed.
    d.request(member_add(2, 3, true), 20);
    let busy = d.drive().unwrap();
    assert_eq!(busy.answers.len(), 1);
    let (to, ClientResponse::Error(e)) = &busy.answers[0] else {
        panic!("{:?}", busy.answers);
    };
    assert_eq!((*to, e.code, e.id), (20, ErrorCode::Busy, Some(2)));
    // Durable on the only voter: committed, applied, answered with the members.
    d.durable(appended.disk[0].seq());
    let done = d.drive().unwrap();
    let (to, ClientResponse::Ok(ok)) = &done.answers[0] else {
        panic!("{:?}", done.answers);
    };
    assert_eq!(*to, 10);
    let members = ok.members.as_ref().expect("members");
    let roles: Vec<(NodeId, &str)> = members.iter().map(|m| (m.id, m.role.as_str())).collect();
    assert_eq!(roles, vec![(1, "Voter"), (2, "Learner")]);
    assert_eq!(
        members[0].reachable,
        Some(true),
        "the leader reaches itself"
    );
    assert_eq!(members[1].reachable, Some(false), "node 2 never answered");
    // Asked again (a client that timed out retries): answered Ok at once, nothing appended.
    d.request(member_add(3, 2, true), 30);
    let again = d.drive().unwrap();
    assert!(again.disk.is_empty(), "{:?}", again.disk);
    assert!(
        matches!(&again.answers[..], [(30, ClientResponse::Ok(_))]),
        "{:?}",
        again.answers
    );
}

#[test]
fn membership_requests_at_a_follower_name_the_leader() {
    let mut d = driver(2, &[1, 2, 3], DriverConfig::default());
    for req in [
        ClientRequest::MemberList { id: 1 },
        member_add(2, 4, false),
        ClientRequest::TransferLeader {
            id: 3,
            node_id: None,
        },
    ] {
        let id = req.id();
        d.request(req, 0);
        let o = d.drive().unwrap();
        assert_eq!(o.answers, vec![(0, d.service().not_leader(id, 0))]);
    }
}

#[test]
fn a_transfer_in_a_cluster_of_one_voter_is_a_bad_request() {
    let mut d = single_leader(DriverConfig::default());
    d.request(
        ClientRequest::TransferLeader {
            id: 4,
            node_id: None,
        },
        40,
    );
    let o = d.drive().unwrap();
    let [(40, ClientResponse::Error(e))] = &o.answers[..] else {
        panic!("{:?}", o.answers);
    };
    assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
}

/// A leader that removes itself steps down as soon as the removal is committed, in the same
/// turn it applies it: the request is still answered `Ok` (the change took effect), not
/// `Timeout` for the leadership it just gave up.
#[test]
fn a_leader_that_removes_itself_answers_ok() {
    let mut d = leader_of_two();
    d.request(
        ClientRequest::MemberRemove {
            id: 5,
            node_id: 1,
            force: false,
        },
        50,
    );
    let appended = d.drive().unwrap();
    assert!(appended.answers.is_empty(), "{:?}", appended.answers);
    sync(&mut d, &appended);
    let done = ack(&mut d, 3);
    assert_ne!(d.raft().role(), Role::Leader, "removed: it steps down");
    let [(50, ClientResponse::Ok(ok))] = &done.answers[..] else {
        panic!("{:?}", done.answers);
    };
    let ids: Vec<NodeId> = ok
        .members
        .as_ref()
        .expect("members")
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![2]);
}

#[test]
fn a_backup_is_taken_only_after_the_leader_confirms_it_leads_and_holds_every_committed_write() {
    let mut d = leader_of_two();
    d.request(put(1, "k", "v"), 10);
    let o = d.drive().unwrap();
    sync(&mut d, &o);
    let o = ack(&mut d, 3);
    assert_eq!(o.answers, vec![(10, put_ok(1, 1))]);

    d.request(ClientRequest::Snapshot { id: 2 }, 20);
    let o = d.drive().unwrap();
    assert!(
        o.backups.is_empty() && o.answers.is_empty(),
        "no copy before the ReadIndex round"
    );
    let round = o
        .messages
        .iter()
        .find_map(|m| match m.msg {
            RaftMessage::AppendEntries { read_round, .. } if read_round > 0 => Some(read_round),
            _ => None,
        })
        .expect("a heartbeat that asks node 2 to confirm the leadership");
    d.step(env(
        2,
        1,
        RaftMessage::AppendEntriesReply {
            term: 2,
            success: true,
            match_index: 3,
            conflict: None,
            read_round: round,
        },
    ));
    let o = d.drive().unwrap();
    assert!(
        o.answers.is_empty(),
        "a backup is streamed by the shell, not answered"
    );
    let [task] = o.backups.as_slice() else {
        panic!("one backup: {:?}", o.backups);
    };
    assert_eq!((task.reply, task.id), (20, 2));
    assert_eq!(task.meta(), SnapshotMeta { index: 3, term: 2 });
    assert_eq!(task.store.get("k"), Some("v"));
    assert_eq!(
        task.store
            .membership()
            .members
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![1, 2],
        "the copy carries the configuration at its index"
    );
    assert_eq!(
        task.header(),
        ClientResponse::SnapshotHeader {
            id: 2,
            index: 3,
            term: 2,
            revision: 1,
            keys: 1
        }
    );
}

#[test]
fn a_backup_asked_of_a_follower_names_the_leader() {
    let mut d = driver(2, &[1, 2, 3], DriverConfig::default());
    d.request(ClientRequest::Snapshot { id: 5 }, 50);
    let o = d.drive().unwrap();
    assert_eq!(o.answers, vec![(50, d.service().not_leader(5, 0))]);
    assert!(o.backups.is_empty());
}

#[test]
fn one_drive_applies_at_most_its_share_and_inputs_are_taken_between() {
    let mut cfg = config(2, &[1, 2, 3]);
    cfg.max_apply_batch = 4;
    let raft = Raft::new(cfg, HardState::default(), Vec::new()).unwrap();
    let mut d: Driver<Token> = Driver::new(
        raft,
        KvStore::default(),
        addrs(&[1, 2, 3]),
        DriverConfig {
            apply_per_drive: 10,
            ..DriverConfig::default()
        },
    );
    let append = |prev: u64, entries: Vec<Entry>| append_from_1(prev, entries, 25);
    let entries: Vec<Entry> = (1..=25)
        .map(|i| put_entry(1, i, &format!("k{i}"), "v"))
        .collect();
    d.step(append(0, entries));
    let first = d.drive().unwrap();
    assert_eq!(first.disk.len(), 1, "{first:?}");
    assert_eq!(
        first.applied.len(),
        12,
        "Readys of 4 entries until 10 are applied"
    );
    assert!(d.wants_drive(), "13 committed entries are left");
    d.durable(1);
    // A heartbeat arrives before the driver goes on: its answer goes out with the next share.
    d.step(append(25, Vec::new()));
    let second = d.drive().unwrap();
    assert_eq!(second.applied.len(), 12);
    let replies: Vec<u64> = second
        .messages
        .iter()
        .filter_map(|e| match e.msg {
            RaftMessage::AppendEntriesReply {
                success: true,
                match_index,
                ..
            } => Some(match_index),
            _ => None,
        })
        .collect();
    assert!(replies.contains(&25), "{:?}", second.messages);
    assert!(d.wants_drive());
    let third = d.drive().unwrap();
    assert_eq!(third.applied.len(), 1);
    assert!(!d.wants_drive());
    assert_eq!(d.store().get("k25"), Some("v"));
    assert_eq!(d.store().len(), 25);
}
