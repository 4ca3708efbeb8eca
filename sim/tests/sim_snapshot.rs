//! Snapshots and InstallSnapshot in the simulation: the log stays bounded under load, lagging
//! or restarted followers catch up from a snapshot (on reliable and unreliable networks, with
//! restarts in the middle of a chunked transfer), stale snapshots never cut a matching log,
//! whole-cluster crashes recover from snapshots without any index going backwards, and the KV
//! history stays linearizable with snapshots on.
//!
//! Besides each test's own assertions, the simulation checks at every step that a node's
//! commit, applied and snapshot indexes never move backwards (its snapshot not even across
//! restarts), that every snapshot of one index holds the same state, and that entries applied
//! at one index are the same everywhere (see sim/src/lib.rs).
//!
//! Pitfalls covered (docs/TESTING.md, "Known Raft pitfalls"): "Snapshot racing with append" (c), "Blocking the
//! event loop" (f: no election during a long transfer).

use raftd_sim::scenario as common;

use common::{assert_everything_applied_stays, check_one_leader, ELECTION};
use raftd::rpc::types::{ChunkPos, Entry, Envelope, HardState, NodeId, RaftMessage, SnapshotMeta};
use raftd_core::{Config, Raft};
use raftd_sim::check::{check_history, Input, Output};
use raftd_sim::{ClientConfig, Cluster, NetConfig, SimConfig, MS, SEC};
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::Instant;

// ----- helpers -----

/// Put-heavy clients over many keys, so the store (and so each snapshot) is a few KB.
fn writers(n: usize) -> ClientConfig {
    let mut cfg = ClientConfig::new(n);
    cfg.keys = 40;
    cfg.values = 1000;
    cfg.mix = [10, 70, 5, 15];
    cfg
}

fn snap_config(nodes: usize, seed: u64, every: u64) -> SimConfig {
    let mut cfg = SimConfig::new(nodes, seed);
    cfg.snapshot_entries = Some(every);
    // Small chunks: a snapshot of a few KB travels in dozens of InstallSnapshot messages.
    cfg.tune = |c: &mut Config| c.snapshot_chunk_bytes = 64;
    cfg
}

fn assert_linearizable(c: &Cluster, what: &str) {
    if let Err(v) = check_history(&c.kv_history()) {
        panic!("[seed {}] {what}: {v}", c.seed());
    }
}

/// Stops the random clients and waits for what is in flight.
fn drain(c: &mut Cluster, timeout: u64) {
    c.stop_clients();
    let ok = c.run_until(timeout, |c| c.clients_idle());
    assert!(
        ok,
        "[seed {}] client operations still in flight {} ms after the clients stopped",
        c.seed(),
        timeout / MS
    );
}

/// Waits until every node is up and has applied the same index, then asserts their stores are
/// equal. Returns that index.
fn assert_stores_agree(c: &mut Cluster) -> u64 {
    let seed = c.seed();
    // A node that fell behind again after catching up may need another snapshot, which the
    // unreliable-network tests send in 64-byte chunks (snapshots carry the store's history).
    let ok = c.run_until(90 * SEC, |c| {
        let applied: Vec<u64> = c
            .ids()
            .iter()
            .filter_map(|&id| c.node(id).store().map(|s| s.applied()))
            .collect();
        applied.len() == c.ids().len() && applied.windows(2).all(|w| w[0] == w[1])
    });
    let applied: Vec<(NodeId, Option<u64>)> = c
        .ids()
        .iter()
        .map(|&id| (id, c.node(id).store().map(|s| s.applied())))
        .collect();
    assert!(
        ok,
        "[seed {seed}] nodes did not converge on one applied index: {applied:?}"
    );
    let first = c.node(1).store().cloned();
    for id in c.ids() {
        assert_eq!(
            c.node(id).store(),
            first.as_ref(),
            "[seed {seed}] node {id}'s store differs from node 1's at the same applied index"
        );
    }
    first.map_or(0, |s| s.applied())
}

fn completed(c: &Cluster) -> usize {
    c.op_records()
        .iter()
        .filter(|r| r.output != Output::Unknown)
        .count()
}

/// The snapshot index of node `id`'s core (its disk's while it is down).
fn snapshot_index(c: &Cluster, id: NodeId) -> u64 {
    c.raft(id)
        .map_or(c.node(id).disk.snapshot_index(), |r| r.snapshot_index())
}

/// Last log index of node `id` (its disk's while it is down).
fn last_index(c: &Cluster, id: NodeId) -> u64 {
    c.raft(id)
        .map_or(c.node(id).disk.last_index(), |r| r.log().last_index())
}

// ----- a. snapshots bound the log under steady load -----

#[test]
fn snapshots_bound_the_log_under_steady_write_load() {
    for seed in 101..=103 {
        let started = Instant::now();
        let every = 50;
        let mut c = Cluster::new(snap_config(3, seed, every));
        c.add_clients(writers(4));
        let (mut max_log, mut max_disk) = (0usize, 0usize);
        for _ in 0..100 {
            c.run_for(100 * MS);
            for id in c.ids() {
                if let Some(r) = c.raft(id) {
                    max_log = max_log.max(r.log().len());
                }
                max_disk = max_disk.max(c.node(id).disk.entries.len());
            }
        }
        drain(&mut c, 20 * SEC);
        let applied = assert_stores_agree(&mut c);
        assert!(
            applied >= 20 * every,
            "[seed {seed}] only {applied} entries applied in 10 s: too little load to test compaction"
        );
        // A node snapshots as soon as it is idle with `every` entries applied since the last
        // snapshot; entries still being replicated or applied come on top.
        let bound = 4 * every as usize;
        assert!(
            max_log <= bound && max_disk <= bound,
            "[seed {seed}] log not trimmed: up to {max_log} entries in memory, {max_disk} on disk (bound {bound}) after {applied} applied"
        );
        for id in c.ids() {
            let node = c.node(id);
            let snap = snapshot_index(&c, id);
            // A follower that fell behind for a moment (a reordered AppendEntries sends the
            // leader back to probing it, and the leader compacts meanwhile) catches up through
            // the leader's snapshots: those count as its own.
            let snapshots = node.snapshots_taken + node.snapshots_installed;
            assert!(
                snapshots >= applied / every / 2 && snap + bound as u64 >= applied,
                "[seed {seed}] node {id} took {} and installed {} snapshots (last at {snap}) for {applied} applied entries",
                node.snapshots_taken,
                node.snapshots_installed
            );
        }
        assert_everything_applied_stays(&c);
        assert_linearizable(&c, "steady load with snapshots");
        eprintln!(
            "seed {seed}: {applied} applied, {} ops, max log {max_log} in memory / {max_disk} on disk, snapshots taken {:?}, {:?}",
            completed(&c),
            c.ids()
                .iter()
                .map(|&id| c.node(id).snapshots_taken)
                .collect::<Vec<_>>(),
            started.elapsed()
        );
    }
}

// ----- b. a lagging follower catches up by InstallSnapshot -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lag {
    /// Cut off, then reconnected, on a reliable network.
    Reliable,
    /// Cut off, then reconnected, on a network that drops, duplicates and reorders.
    Unreliable,
    /// Crashed, then restarted from its disk.
    CrashRestart,
    /// Cut off, reconnected, and restarted in the middle of the snapshot transfer.
    RestartMidTransfer,
    /// Cut off, then reconnected while the clients keep writing (the leader keeps taking new
    /// snapshots during the transfer).
    UnderLoad,
    /// `UnderLoad` on an unreliable network: the transfer takes many snapshots' time.
    UnderLoadUnreliable,
}

/// Returns (chunks of the leader's snapshot, InstallSnapshot messages sent for the catch-up).
fn catch_up(seed: u64, lag: Lag) -> (u64, u64) {
    let mut cfg = snap_config(3, seed, 40);
    if matches!(lag, Lag::Unreliable | Lag::UnderLoadUnreliable) {
        cfg.net = NetConfig::unreliable();
    }
    let mut c = Cluster::new(cfg);
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all, ELECTION);
    let f = *all.iter().find(|&&id| id != leader).unwrap_or(&1);
    if lag == Lag::CrashRestart {
        c.crash(f);
    } else {
        c.disconnect(f);
    }
    let f_last = last_index(&c, f);
    let f_snap = snapshot_index(&c, f);
    c.add_clients(writers(3));
    let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != f).collect();
    // Write until the others compacted well past the follower's log. (On the unreliable
    // network clients lose many attempts, so this takes long: the bound is generous, as the
    // test is about the catch-up, not about speed.)
    let ok = c.run_until(180 * SEC, |c| {
        rest.iter().all(|&id| snapshot_index(c, id) >= f_last + 400)
    });
    assert!(
        ok,
        "[seed {seed}] the nodes other than {f} did not compact past {} within 180 s",
        f_last + 400
    );
    let under_load = matches!(lag, Lag::UnderLoad | Lag::UnderLoadUnreliable);
    if !under_load {
        drain(&mut c, 30 * SEC);
    }
    let leader = check_one_leader(&mut c, &rest, ELECTION);
    let lsnap = c
        .raft(leader)
        .and_then(|r| r.snapshot().cloned())
        .unwrap_or_else(|| panic!("[seed {seed}] leader {leader} has no snapshot"));
    assert!(
        lsnap.meta.index > f_last + 1,
        "[seed {seed}] the leader compacted only to {} while node {f}'s log ends at {f_last}: no snapshot needed",
        lsnap.meta.index
    );
    let chunk = 64;
    let chunks = (lsnap.data.len() as u64).div_ceil(chunk);
    assert!(
        chunks >= 10,
        "[seed {seed}] the snapshot ({} bytes) is only {chunks} chunks: the transfer is not chunked enough",
        lsnap.data.len()
    );
    let sent_before = c.stats.count("InstallSnapshot");
    let installed_before = c.node(f).snapshots_installed;
    match lag {
        Lag::CrashRestart => c.restart(f),
        _ => c.connect(f),
    }
    if lag == Lag::RestartMidTransfer {
        // Wait until part of the snapshot went over, but not all of it.
        let ok = c.run_until(10 * SEC, |c| {
            c.stats.count("InstallSnapshot") >= sent_before + chunks / 2
        });
        assert!(
            ok,
            "[seed {seed}] the snapshot transfer to node {f} did not start"
        );
        assert_eq!(
            c.node(f).snapshots_installed,
            installed_before,
            "[seed {seed}] node {f} installed the snapshot before the restart: the test restarts too late"
        );
        c.restart(f);
    }
    let target = if under_load {
        c.raft(leader).map_or(0, |r| r.log().committed())
    } else {
        lsnap.meta.index
    };
    let ok = c.run_until(30 * SEC, |c| {
        c.raft(f).is_some_and(|r| r.log().applied() >= target)
    });
    assert!(
        ok,
        "[seed {seed}] ({lag:?}) node {f} did not catch up to {target} (applied {:?}, snapshot {}; {} InstallSnapshot sent, leader's snapshot at {})",
        c.raft(f).map(|r| r.log().applied()),
        snapshot_index(&c, f),
        c.stats.count("InstallSnapshot") - sent_before,
        snapshot_index(&c, leader)
    );
    let sent = c.stats.count("InstallSnapshot") - sent_before;
    assert!(
        sent >= chunks,
        "[seed {seed}] ({lag:?}) only {sent} InstallSnapshot messages for a {chunks}-chunk snapshot"
    );
    assert!(
        c.node(f).snapshots_installed > installed_before,
        "[seed {seed}] ({lag:?}) node {f} caught up without installing a snapshot"
    );
    let now_snap = snapshot_index(&c, f);
    assert!(
        now_snap > f_snap && now_snap > f_last,
        "[seed {seed}] ({lag:?}) node {f}'s snapshot index is {now_snap}, was {f_snap} (log ended at {f_last})"
    );
    // Saving it is a disk job like an append: it is durable once its fsync completes.
    let persisted = c.run_until(SEC, |c| c.node(f).disk.snapshot_index() >= now_snap);
    assert!(
        persisted && c.node(f).disk.snapshot_index() == now_snap,
        "[seed {seed}] ({lag:?}) node {f} did not persist the installed snapshot at {now_snap} (its disk holds {})",
        c.node(f).disk.snapshot_index()
    );
    // The cluster keeps serving with the follower back, and every store agrees.
    c.resume_clients();
    c.run_for(2 * SEC);
    drain(&mut c, 30 * SEC);
    assert_stores_agree(&mut c);
    assert_everything_applied_stays(&c);
    assert_linearizable(&c, "catch-up by snapshot");
    (chunks, sent)
}

fn catch_up_seeds(lag: Lag, seeds: std::ops::RangeInclusive<u64>) {
    for seed in seeds {
        let t = Instant::now();
        let (chunks, sent) = catch_up(seed, lag);
        eprintln!(
            "{lag:?} seed {seed}: {chunks}-chunk snapshot, {sent} InstallSnapshot sent, {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn disconnected_follower_catches_up_by_snapshot_on_a_reliable_network() {
    catch_up_seeds(Lag::Reliable, 201..=203);
}

#[test]
fn disconnected_follower_catches_up_by_snapshot_on_an_unreliable_network() {
    catch_up_seeds(Lag::Unreliable, 211..=213);
}

#[test]
fn disconnected_follower_catches_up_by_snapshot_while_writes_go_on() {
    catch_up_seeds(Lag::UnderLoad, 241..=243);
    catch_up_seeds(Lag::UnderLoadUnreliable, 251..=253);
}

#[test]
fn crashed_follower_catches_up_by_snapshot_after_restart() {
    catch_up_seeds(Lag::CrashRestart, 221..=223);
}

#[test]
fn follower_restarted_in_the_middle_of_a_transfer_catches_up() {
    catch_up_seeds(Lag::RestartMidTransfer, 231..=233);
}

// ----- c. a stale InstallSnapshot never cuts a longer matching log -----

fn env(from: NodeId, to: NodeId, msg: RaftMessage) -> Envelope {
    Envelope {
        incarnation: 0,
        from,
        to,
        msg,
    }
}

fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Envelope {
    env(
        1,
        2,
        RaftMessage::AppendEntries {
            term,
            leader_id: 1,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: commit,
            read_round: 0,
        },
    )
}

fn install(term: u64, meta: SnapshotMeta, data: &[u8]) -> Envelope {
    env(
        1,
        2,
        RaftMessage::InstallSnapshot {
            membership: None,
            term,
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

/// Takes every `Ready`, as a shell that persists and applies at once; returns the snapshots
/// handed out and every InstallSnapshotReply as (snapshot index, received, done).
fn settle(r: &mut Raft) -> (Vec<SnapshotMeta>, Vec<(u64, u64, bool)>) {
    let (mut snaps, mut replies) = (Vec::new(), Vec::new());
    while r.has_ready() {
        let rd = r.ready();
        snaps.extend(rd.snapshot.as_ref().map(|s| s.meta));
        for m in rd.messages.iter().chain(&rd.persisted_messages) {
            if let RaftMessage::InstallSnapshotReply {
                snapshot,
                received,
                done,
                ..
            } = m.msg
            {
                replies.push((snapshot.index, received, done));
            }
        }
        r.advance();
    }
    (snaps, replies)
}

/// Two cores' worth of hand-made messages: the leader (node 1, term 2) replicates 20 entries
/// to follower 2, and InstallSnapshots it sent earlier arrive late.
#[test]
fn late_install_snapshot_never_truncates_a_longer_matching_log() {
    let entries: Vec<Entry> = (1..=20)
        .map(|i| Entry::command(2, i, format!("e{i}").into_bytes()))
        .collect();
    let mut f = Raft::new(
        Config::new(2, vec![1, 2, 3]),
        HardState { term: 2, vote: 1 },
        Vec::new(),
    )
    .expect("config");
    f.step(append(2, (0, 0), entries.clone(), 5));
    settle(&mut f);
    assert_eq!((f.log().last_index(), f.log().committed()), (20, 5));

    // A snapshot at 10, sent before the entries, arrives after them: installed (it is ahead
    // of the commit index), but the matching entries 11..=20 stay.
    f.step(install(2, SnapshotMeta { index: 10, term: 2 }, b"state@10"));
    let (snaps, replies) = settle(&mut f);
    assert_eq!(snaps, vec![SnapshotMeta { index: 10, term: 2 }]);
    assert_eq!(replies, vec![(10, 8, true)]);
    assert_eq!(f.log().snapshot().index, 10);
    assert_eq!(f.log().last_index(), 20, "the matching suffix was cut");
    for e in &entries[10..] {
        assert_eq!(f.log().get(e.index), Some(e), "entry {} lost", e.index);
    }
    assert_eq!(
        (f.log().committed(), f.log().applied(), f.log().stable()),
        (10, 10, 20)
    );

    // Older and repeated snapshots (at or below the commit index) change nothing and are
    // answered as done, so the leader stops sending them.
    f.step(append(2, (20, 2), Vec::new(), 20));
    settle(&mut f);
    assert_eq!(f.log().committed(), 20);
    for index in [5, 10, 15, 20] {
        f.step(install(2, SnapshotMeta { index, term: 2 }, b"old"));
        let (snaps, replies) = settle(&mut f);
        assert!(
            snaps.is_empty(),
            "a stale snapshot at {index} was handed out"
        );
        assert_eq!(replies, vec![(index, 3, true)]);
        assert_eq!(
            (f.log().snapshot().index, f.log().last_index()),
            (10, 20),
            "a stale snapshot at {index} changed the log"
        );
        assert_eq!(f.log().committed(), 20, "commit index moved back");
    }
    // The chunk of a stale snapshot in the middle of a transfer does not disturb either.
    f.step(env(
        1,
        2,
        RaftMessage::InstallSnapshot {
            membership: None,
            term: 2,
            leader_id: 1,
            snapshot: SnapshotMeta { index: 12, term: 2 },
            pos: ChunkPos {
                offset: 4,
                total: 8,
            },
            data: b"tail".to_vec(),
        },
    ));
    let (snaps, _) = settle(&mut f);
    assert!(snaps.is_empty());
    assert_eq!((f.log().last_index(), f.log().committed()), (20, 20));
}

/// In the simulation: duplicated and long-delayed messages (InstallSnapshot chunks among
/// them) while a follower is cut off and rejoins again and again under writes. Every entry a
/// node's log loses (the last entry disappearing without a snapshot covering it) must be one
/// that never commits: a stale snapshot cutting a matching log would lose an entry that did.
#[test]
fn late_and_duplicated_snapshots_never_cut_committed_entries() {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    let mut installs = 0;
    for seed in 301..=305 {
        let mut cfg = snap_config(3, seed, 20);
        cfg.net = NetConfig {
            min_delay_us: 500,
            max_delay_us: 5_000,
            drop_rate: 0.02,
            dup_rate: 0.2,
            long_delay_rate: 0.1,
            long_delay_us: 400_000,
        };
        let mut c = Cluster::new(cfg);
        let lost: Rc<RefCell<Vec<(NodeId, u64, u64)>>> = Rc::default();
        let seen = Rc::clone(&lost);
        let mut last: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
        c.set_observer(Box::new(move |_, r| {
            let log = r.log();
            if let Some(&(index, term)) = last.get(&r.id()) {
                if index > log.snapshot().index && log.term(index) != Some(term) {
                    seen.borrow_mut().push((r.id(), index, term));
                }
            }
            last.insert(r.id(), (log.last_index(), log.last_term()));
        }));
        c.add_clients(writers(3));
        let all = c.ids();
        for _ in 0..12 {
            let f = *all.choose(c.rng()).unwrap_or(&1);
            c.disconnect(f);
            let away = c.rng().gen_range(300..1500) * MS;
            c.run_for(away);
            c.connect(f);
            let back = c.rng().gen_range(100..800) * MS;
            c.run_for(back);
        }
        drain(&mut c, 30 * SEC);
        assert_stores_agree(&mut c);
        assert_everything_applied_stays(&c);
        assert_linearizable(&c, "late and duplicated snapshots");
        for &(id, index, term) in lost.borrow().iter() {
            let committed = c.applied_anywhere().get(&index).map(|e| e.term);
            assert_ne!(
                committed,
                Some(term),
                "[seed {seed}] node {id} lost its entry {index}@{term} from its log, but that entry committed"
            );
        }
        // One chunk in flight per transfer: duplicated answers must not multiply the chunks.
        let sent = c.stats.count("InstallSnapshot");
        assert!(
            sent <= 20_000,
            "[seed {seed}] {sent} InstallSnapshot messages sent: duplicates multiply the chunks in flight"
        );
        installs += all
            .iter()
            .map(|&id| c.node(id).snapshots_installed)
            .sum::<u64>();
        eprintln!(
            "seed {seed}: {} ops, {} entries dropped from logs (never committed), {} snapshots installed, {} InstallSnapshot sent",
            completed(&c),
            lost.borrow().len(),
            all.iter().map(|&id| c.node(id).snapshots_installed).sum::<u64>(),
            c.stats.count("InstallSnapshot")
        );
    }
    assert!(
        installs >= 5,
        "only {installs} snapshots installed over all seeds: the test does not exercise InstallSnapshot"
    );
}

// ----- d. every node crashes after snapshots -----

fn values(c: &Cluster, id: NodeId, keys: usize) -> Vec<Option<String>> {
    let store = c
        .node(id)
        .store()
        .unwrap_or_else(|| panic!("[seed {}] node {id} is down", c.seed()));
    (0..keys)
        .map(|k| store.get(&format!("k{k}")).map(str::to_string))
        .collect()
}

#[test]
fn whole_cluster_crash_after_snapshots_loses_nothing() {
    for seed in 401..=404 {
        let mut c = Cluster::new(snap_config(5, seed, 30));
        c.add_clients(writers(4));
        c.run_for(3 * SEC);
        drain(&mut c, 20 * SEC);
        let applied = assert_stores_agree(&mut c);
        let before = values(&c, 1, 40);
        let all = c.ids();
        let snaps: Vec<u64> = all.iter().map(|&id| snapshot_index(&c, id)).collect();
        assert!(
            snaps.iter().all(|&s| s > 0),
            "[seed {seed}] some node never took a snapshot: {snaps:?}"
        );
        for &id in &all {
            c.crash(id);
        }
        c.run_for(500 * MS);
        for &id in &all {
            c.restart(id);
        }
        // Restored straight from the snapshots: nothing below them moves back.
        for (&id, &snap) in all.iter().zip(&snaps) {
            let r = c.raft(id).expect("just restarted");
            assert_eq!(
                (r.log().snapshot().index, r.log().applied()),
                (snap, snap),
                "[seed {seed}] node {id} did not restart from its snapshot"
            );
        }
        let leader = check_one_leader(&mut c, &all, ELECTION);
        let ok = c.run_until(10 * SEC, |c| {
            c.ids()
                .iter()
                .all(|&id| c.raft(id).is_some_and(|r| r.log().applied() > applied))
        });
        assert!(
            ok,
            "[seed {seed}] nodes did not apply past {applied} after the restart (leader {leader})"
        );
        for &id in &all {
            assert_eq!(
                values(&c, id, 40),
                before,
                "[seed {seed}] node {id}'s data changed across the crash"
            );
        }
        // The cluster serves again.
        let ops = c.op_records().len();
        c.resume_clients();
        c.run_for(2 * SEC);
        drain(&mut c, 20 * SEC);
        let new_done = c.op_records()[ops..]
            .iter()
            .filter(|r| r.output != Output::Unknown)
            .count();
        assert!(
            new_done >= 50,
            "[seed {seed}] only {new_done} operations after the restart"
        );
        assert_stores_agree(&mut c);
        assert_everything_applied_stays(&c);
        assert_linearizable(&c, "whole-cluster crash after snapshots");
    }
}

// ----- e. restore, then persist again -----

#[test]
fn restore_from_snapshot_then_snapshot_again_loses_nothing() {
    for seed in 501..=503 {
        let mut c = Cluster::new(snap_config(3, seed, 10));
        let all = c.ids();
        check_one_leader(&mut c, &all, ELECTION);
        let client = c.add_clients(ClientConfig::scripted(1))[0];
        let mut written = Vec::new();
        let mut snaps_before = vec![0; all.len()];
        for round in 0..3 {
            for i in 0..40 {
                let key = format!("r{round}-{i}");
                c.submit(client, &key, Input::Put(format!("v{round}-{i}")));
                written.push(key);
            }
            let ok = c.run_until(30 * SEC, |c| c.clients_idle());
            assert!(
                ok,
                "[seed {seed}] round {round}: the writes did not complete"
            );
            assert_stores_agree(&mut c);
            // Everyone snapshotted during this round, past the previous round's snapshot.
            for (i, &id) in all.iter().enumerate() {
                let s = snapshot_index(&c, id);
                assert!(
                    s > snaps_before[i],
                    "[seed {seed}] round {round}: node {id}'s snapshot stayed at {s}"
                );
                snaps_before[i] = s;
            }
            let applied = c.raft(1).map_or(0, |r| r.log().applied());
            for &id in &all {
                c.crash(id);
            }
            for &id in &all {
                c.restart(id);
            }
            check_one_leader(&mut c, &all, ELECTION);
            // The stores come back from the snapshots; the rest of the log is applied again
            // once the new leader commits its first entry.
            let ok = c.run_until(10 * SEC, |c| {
                c.ids()
                    .iter()
                    .all(|&id| c.raft(id).is_some_and(|r| r.log().applied() > applied))
            });
            assert!(
                ok,
                "[seed {seed}] round {round}: nodes did not apply past {applied} after the restart"
            );
            for &id in &all {
                let store = c.node(id).store().cloned().expect("up");
                for (k, key) in written.iter().enumerate() {
                    let want = format!("v{}-{}", k / 40, k % 40);
                    let got = store.get(key);
                    // Right after the restart a store holds the snapshot; the log after it is
                    // re-applied as it commits again.
                    if got.is_none() {
                        assert!(
                            store.applied() < c.raft(id).map_or(0, |r| r.log().last_index()),
                            "[seed {seed}] round {round}: node {id} lost {key} with nothing left to apply"
                        );
                    } else {
                        assert_eq!(got, Some(want.as_str()), "[seed {seed}] node {id}: {key}");
                    }
                }
            }
            assert_stores_agree(&mut c);
            let store = c.node(1).store().cloned().expect("up");
            for (k, key) in written.iter().enumerate() {
                let want = format!("v{}-{}", k / 40, k % 40);
                assert_eq!(
                    store.get(key),
                    Some(want.as_str()),
                    "[seed {seed}] round {round}: {key} lost after restart"
                );
            }
        }
        assert_everything_applied_stays(&c);
        assert_linearizable(&c, "restore then persist again");
    }
}

// ----- f. heartbeats during a long transfer -----

#[test]
fn long_transfer_causes_no_election() {
    for seed in 601..=603 {
        let mut cfg = snap_config(3, seed, 40);
        cfg.tune = |c: &mut Config| c.snapshot_chunk_bytes = 16;
        // Slower links: each of the many chunks costs a round trip of 4 to 8 ms.
        cfg.net.min_delay_us = 2 * MS;
        cfg.net.max_delay_us = 4 * MS;
        let mut c = Cluster::new(cfg);
        let all = c.ids();
        let leader = check_one_leader(&mut c, &all, ELECTION);
        let f = *all.iter().find(|&&id| id != leader).unwrap_or(&1);
        c.disconnect(f);
        c.add_clients(writers(3));
        c.run_for(4 * SEC);
        drain(&mut c, 20 * SEC);
        let terms: Vec<u64> = all.iter().map(|&id| common::term_of(&c, id)).collect();
        let votes = c.stats.count("RequestVote");
        let sent = c.stats.count("InstallSnapshot");
        let size = c
            .raft(leader)
            .and_then(|r| r.snapshot())
            .map_or(0, |s| s.data.len());
        c.connect(f);
        let start = c.now;
        let ok = c.run_until(60 * SEC, |c| c.node(f).snapshots_installed > 0);
        let took = c.now - start;
        assert!(ok, "[seed {seed}] node {f} never installed the snapshot");
        let chunks = c.stats.count("InstallSnapshot") - sent;
        assert!(
            took >= 5 * 300 * MS && chunks >= 200,
            "[seed {seed}] the transfer ({chunks} chunks, {} ms) is not longer than a few election timeouts",
            took / MS
        );
        c.run_for(SEC);
        let after: Vec<u64> = all.iter().map(|&id| common::term_of(&c, id)).collect();
        assert_eq!(
            after,
            terms,
            "[seed {seed}] an election happened during a {} ms snapshot transfer",
            took / MS
        );
        assert_eq!(
            c.stats.count("RequestVote"),
            votes,
            "[seed {seed}] (pre-)votes were requested during the transfer"
        );
        assert_eq!(c.leaders(), vec![(leader, terms[0])], "[seed {seed}]");
        assert_stores_agree(&mut c);
        eprintln!(
            "seed {seed}: {size}-byte snapshot in {chunks} chunks over {} ms, terms {terms:?} unchanged",
            took / MS
        );
    }
}

// ----- g. linearizable KV history under chaos with snapshots -----

fn chaos(seed: u64, duration: u64) -> (usize, u64) {
    let mut cfg = snap_config(5, seed, 25);
    // Chunks of 256 bytes: a transfer of the ~15 KB store is some 60 round trips on a network
    // that loses one message in ten.
    cfg.tune = |c: &mut Config| c.snapshot_chunk_bytes = 256;
    cfg.net = NetConfig::unreliable();
    let mut c = Cluster::new(cfg);
    let all = c.ids();
    let mut clients_cfg = writers(8);
    clients_cfg.keys = 10;
    clients_cfg.mix = [35, 25, 10, 30];
    clients_cfg.attempt_timeout = 300 * MS;
    clients_cfg.op_deadline = 2 * SEC;
    c.add_clients(clients_cfg);
    let end = c.now + duration;
    while c.now < end {
        let wait = c.rng().gen_range(100..1000) * MS;
        c.run_for(wait);
        match c.rng().gen_range(0..100) {
            0..=19 => {
                c.crash_random(3);
            }
            20..=44 => {
                c.restart_random();
            }
            45..=64 => c.split_random(),
            65..=72 => c.cut_random_one_way(),
            _ => c.heal(),
        }
    }
    common::heal_all(&mut c);
    drain(&mut c, 30 * SEC);
    assert_eq!(c.client_stats().bad_answers, 0, "[seed {seed}] bad answers");
    assert_linearizable(&c, "chaos with snapshots");
    let done = completed(&c);
    assert!(
        done >= 300,
        "[seed {seed}] only {done} operations completed: too little progress"
    );
    assert_stores_agree(&mut c);
    assert_everything_applied_stays(&c);
    let installed = all.iter().map(|&id| c.node(id).snapshots_installed).sum();
    (done, installed)
}

#[test]
fn chaos_with_snapshots_histories_are_linearizable() {
    let started = Instant::now();
    let mut installed = 0;
    for seed in 701..=710 {
        let t = Instant::now();
        let (done, inst) = chaos(seed, 30 * SEC);
        installed += inst;
        eprintln!(
            "seed {seed}: {done} ops completed, {inst} snapshots installed, {:?}",
            t.elapsed()
        );
    }
    eprintln!(
        "10 seeds: {installed} snapshots installed, {:?}",
        started.elapsed()
    );
    assert!(
        installed >= 3,
        "only {installed} snapshots installed over all seeds: InstallSnapshot not exercised"
    );
}
