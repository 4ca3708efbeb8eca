//! The real key-value service inside the simulation: simulated clients send Put, Get, Delete
//! and Cas over the simulated network, retrying across leader changes with the same
//! `client_id`/`seq`, and every recorded history must be linearizable (sim/src/check).
//!
//! Pitfalls covered (docs/TESTING.md, "Known Raft pitfalls"): stale reads from a deposed leader, reads before
//! the new leader's first commit, a retried write applied twice.

use raftd_sim::scenario as common;

use common::{check_one_leader, heal_all, ELECTION};
use raftd::rpc::types::{ClientResponse, EntryKind, NodeId, Role};
use raftd_sim::check::{check_history, Input, Operation, Output};
use raftd_sim::{
    client_name, AnswerFate, ClientConfig, Cluster, NetConfig, OpRecord, SimConfig, MS, SEC,
};
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::Instant;

/// Checks the cluster's client history; panics with the seed and the offending key's
/// operations if it is not linearizable.
fn assert_linearizable(c: &Cluster, what: &str) {
    let history = c.kv_history();
    if let Err(v) = check_history(&history) {
        panic!("[seed {}] {what}: {v}", c.seed());
    }
}

/// Operations that completed with an answer.
fn completed(c: &Cluster) -> usize {
    c.op_records()
        .iter()
        .filter(|r| r.output != Output::Unknown)
        .count()
}

/// Stops the random clients and lets what is in flight finish.
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

/// Every up node's store holds the same data once all have applied the same prefix.
fn assert_stores_agree(c: &mut Cluster) {
    let seed = c.seed();
    let ok = c.run_until(10 * SEC, |c| {
        let applied: Vec<u64> = c
            .ids()
            .iter()
            .filter_map(|&id| c.node(id).store().map(|s| s.applied()))
            .collect();
        applied.len() == c.ids().len() && applied.windows(2).all(|w| w[0] == w[1])
    });
    assert!(
        ok,
        "[seed {seed}] nodes did not converge on one applied index"
    );
    let first = c.node(1).store().cloned();
    for id in c.ids() {
        assert_eq!(
            c.node(id).store(),
            first.as_ref(),
            "[seed {seed}] node {id}'s store differs from node 1's after applying the same log"
        );
    }
}

// ----- a. reliable network -----

#[test]
fn reliable_network_histories_are_linearizable() {
    for seed in 1001..=1005 {
        let started = Instant::now();
        let mut c = Cluster::new(SimConfig::new(5, seed));
        c.add_clients(ClientConfig::new(6));
        c.run_for(10 * SEC);
        drain(&mut c, 20 * SEC);
        let done = completed(&c);
        assert!(
            done >= 1000,
            "[seed {seed}] only {done} operations completed in 10 s on a reliable network"
        );
        let unknown = c.op_records().len() - done;
        let gets = c
            .op_records()
            .iter()
            .filter(|r| r.input == Input::Get && r.output != Output::Unknown)
            .count();
        assert_eq!(c.client_stats().bad_answers, 0, "[seed {seed}] bad answers");
        let t = Instant::now();
        assert_linearizable(&c, "reliable network");
        eprintln!(
            "seed {seed}: {done} ops completed ({gets} gets), {unknown} unknown; check {:?}, total {:?}",
            t.elapsed(),
            started.elapsed()
        );
        assert_stores_agree(&mut c);
    }
}

// ----- b. unreliable network, partitions, crashes -----

/// Random clients on an unreliable network while nodes crash and restart and the network
/// splits; some clients sit on one node's side of every partition, the others reach all nodes.
/// Then everything heals, the clients finish, and the history must be linearizable.
fn chaos(seed: u64, duration: u64) -> (usize, usize, usize) {
    let mut cfg = SimConfig::new(5, seed);
    cfg.net = NetConfig::unreliable();
    let mut c = Cluster::new(cfg);
    let all = c.ids();
    let mut clients_cfg = ClientConfig::new(10);
    // A lost request or answer (10% each way) costs one attempt timeout.
    clients_cfg.attempt_timeout = 300 * MS;
    // Short enough that clients stuck with a cut-off node give up, so the history also holds
    // writes of unknown outcome (which may still take effect later).
    clients_cfg.op_deadline = 2 * SEC;
    let clients = c.add_clients(clients_cfg);
    let homed: Vec<usize> = clients[..3].to_vec();
    for &client in &homed {
        let home = *all.choose(c.rng()).unwrap_or(&1);
        c.client_mut(client).home = Some(home);
    }
    let end = c.now + duration;
    while c.now < end {
        let wait = c.rng().gen_range(100..1000) * MS;
        c.run_for(wait);
        match c.rng().gen_range(0..100) {
            // Crash a random node (at most two down at once).
            0..=19 => {
                c.crash_random(3);
            }
            // Restart a crashed node.
            20..=44 => {
                c.restart_random();
            }
            // A random split; the homed clients move to random nodes.
            45..=64 => {
                c.split_random();
                for &client in &homed {
                    let home = *all.choose(c.rng()).unwrap_or(&1);
                    c.client_mut(client).home = Some(home);
                }
            }
            // One-way cuts.
            65..=72 => {
                for _ in 0..c.rng().gen_range(1..3) {
                    c.cut_random_one_way();
                }
            }
            // Heal.
            _ => c.heal(),
        }
    }
    heal_all(&mut c);
    drain(&mut c, 30 * SEC);
    let done = completed(&c);
    let unknown = c.op_records().len() - done;
    let writes_done = c
        .op_records()
        .iter()
        .filter(|r| r.is_write() && r.output != Output::Unknown)
        .count();
    assert_eq!(c.client_stats().bad_answers, 0, "[seed {seed}] bad answers");
    assert_linearizable(&c, "unreliable network with partitions and crashes");
    assert!(
        done >= 300 && writes_done >= 100,
        "[seed {seed}] only {done} operations ({writes_done} writes) completed: too little progress"
    );
    if std::env::var("SIM_KV_DEBUG").is_ok() {
        let recs = c.op_records();
        let mut attempts = std::collections::BTreeMap::<usize, usize>::new();
        for r in recs {
            *attempts.entry(r.attempts.len()).or_default() += 1;
        }
        let mut errors = std::collections::BTreeMap::<String, usize>::new();
        for r in recs {
            for e in &r.errors {
                *errors.entry(format!("{:?}", e.2)).or_default() += 1;
            }
        }
        let lat: Vec<u64> = recs
            .iter()
            .filter_map(|r| r.ret.map(|t| t - r.call))
            .collect();
        let avg = lat.iter().sum::<u64>() / lat.len().max(1) as u64;
        eprintln!(
            "attempts {attempts:?} errors {errors:?} avg latency {avg} us stats {:?}",
            c.client_stats()
        );
    }
    assert_stores_agree(&mut c);
    (done, writes_done, unknown)
}

#[test]
fn unreliable_network_partitions_and_crashes_histories_are_linearizable() {
    let (mut done, mut writes, mut unknown) = (0, 0, 0);
    let started = Instant::now();
    for seed in 2001..=2020 {
        let t = Instant::now();
        let (d, w, u) = chaos(seed, 30 * SEC);
        eprintln!(
            "seed {seed}: {d} ops completed ({w} writes), {u} unknown, {:?}",
            t.elapsed()
        );
        done += d;
        writes += w;
        unknown += u;
    }
    eprintln!(
        "20 seeds: {done} ops completed ({writes} writes), {unknown} unknown, {:?}",
        started.elapsed()
    );
}

// ----- c. a deposed leader that still believes it leads -----

/// The leader is cut off with one other node and a client of its own; the majority elects a
/// new leader and acknowledges writes. Gets the minority client sends to the old leader must
/// not be answered Ok while the partition lasts (they could only be stale), and the whole
/// history must be linearizable.
fn deposed_leader(seed: u64, check_quorum: bool) {
    let mut cfg = SimConfig::new(5, seed);
    if !check_quorum {
        // The old leader then never steps down on its own: only ReadIndex protects its reads.
        cfg.tune = |c| c.check_quorum = false;
    }
    let mut c = Cluster::new(cfg);
    let all = c.ids();
    let old = check_one_leader(&mut c, &all, ELECTION);
    let clients = c.add_clients(ClientConfig::scripted(2));
    let (writer, reader) = (clients[0], clients[1]);
    c.client_mut(writer).leader_guess = old;
    c.client_mut(reader).leader_guess = old;
    c.submit(writer, "k", Input::Put("1".into()));
    c.submit(reader, "k", Input::Get);
    let ok = c.run_until(5 * SEC, |c| c.clients_idle());
    assert!(ok, "[seed {seed}] the first Put and Get did not complete");

    // Partition: the old leader and one follower | the other three.
    let buddy = all.iter().copied().find(|&id| id != old).unwrap_or(1);
    let minority = [old, buddy];
    let majority: Vec<NodeId> = all
        .iter()
        .copied()
        .filter(|id| !minority.contains(id))
        .collect();
    c.links.partition(&[&minority, &majority]);
    let cut_at = c.now;
    {
        let r = c.client_mut(reader);
        r.home = Some(old);
        r.pinned = Some(old);
        r.config_mut().op_deadline = 2 * SEC;
        let w = c.client_mut(writer);
        w.home = Some(majority[0]);
        w.leader_guess = majority[0];
    }
    let new = check_one_leader(&mut c, &majority, ELECTION);
    c.submit(writer, "k", Input::Put("2".into()));
    let ok = c.run_until(5 * SEC, |c| c.client(writer).is_idle());
    assert!(ok, "[seed {seed}] the majority did not acknowledge a write");
    let acked_at = c.now;
    assert_ne!(
        new, old,
        "[seed {seed}] the old leader cannot lead the majority"
    );
    if !check_quorum {
        assert_eq!(
            c.raft(old).map(|r| r.role()),
            Some(Role::Leader),
            "[seed {seed}] without check-quorum the cut-off leader should still believe it leads"
        );
    }
    // The minority client keeps reading from the old leader, and the majority keeps writing.
    for i in 0..6 {
        c.submit(reader, "k", Input::Get);
        c.submit(writer, "k", Input::Put(format!("{}", 3 + i)));
    }
    c.run_for(4 * SEC);
    let healed_at = c.now;
    let stale_ok: Vec<&OpRecord> = c
        .op_records()
        .iter()
        .filter(|r| {
            r.client == reader
                && r.input == Input::Get
                && r.answered_by == Some(old)
                && r.ret.is_some_and(|t| t > cut_at && t < healed_at)
        })
        .collect();
    assert!(
        stale_ok.is_empty(),
        "[seed {seed}] the deposed leader {old} answered Gets Ok while cut off (write acknowledged by {new} at {acked_at}): {stale_ok:?}"
    );
    let sent_to_old_as_leader = c
        .op_records()
        .iter()
        .filter(|r| r.client == reader && r.call >= acked_at)
        .flat_map(|r| &r.arrivals)
        .filter(|a| a.node == old && a.role == Role::Leader)
        .count();
    if !check_quorum {
        assert!(
            sent_to_old_as_leader > 0,
            "[seed {seed}] no Get reached the old leader while it believed it led"
        );
    }
    let refused = c
        .op_records()
        .iter()
        .filter(|r| r.client == reader && r.call >= acked_at)
        .flat_map(|r| &r.errors)
        .filter(|e| e.1 == old)
        .count();
    eprintln!(
        "seed {seed} (check_quorum {check_quorum}): {sent_to_old_as_leader} Gets reached the cut-off leader while it led; {refused} refusals from it; no Ok"
    );
    c.heal();
    c.client_mut(reader).pinned = None;
    c.client_mut(reader).home = None;
    c.client_mut(writer).home = None;
    c.submit(reader, "k", Input::Get);
    let ok = c.run_until(20 * SEC, |c| c.clients_idle());
    assert!(ok, "[seed {seed}] clients did not finish after the heal");
    let last = c.op_records().last().cloned();
    assert!(
        last.as_ref().is_some_and(|r| r.output != Output::Unknown),
        "[seed {seed}] the Get after the heal got no answer: {last:?}"
    );
    assert_linearizable(&c, "deposed leader");
}

#[test]
fn deposed_leader_never_serves_a_stale_read() {
    for seed in 3001..=3006 {
        deposed_leader(seed, false);
        deposed_leader(seed + 100, true);
    }
}

/// The leader acknowledges a write and crashes before any follower learns that it committed.
/// A Get sent to the new leader right after its election, before its no-op commits, must
/// return the acknowledged value (its own commit index still lags behind it).
fn read_before_first_commit(seed: u64) -> usize {
    let mut cfg = SimConfig::new(5, seed);
    // Slow disks: the new leader's no-op needs a few ms to commit, the Get arrives before.
    cfg.fsync_us = (5 * MS, 10 * MS);
    let mut c = Cluster::new(cfg);
    let all = c.ids();
    let old = check_one_leader(&mut c, &all, ELECTION);
    let clients = c.add_clients(ClientConfig::scripted(2));
    let (writer, reader) = (clients[0], clients[1]);
    c.client_mut(writer).leader_guess = old;
    c.submit(writer, "k", Input::Put("1".into()));
    let ok = c.run_until(5 * SEC, |c| c.clients_idle());
    assert!(ok, "[seed {seed}] the first Put did not complete");
    let mut fired = false;
    c.set_answer_hook(Box::new(move |_, client, resp| {
        if !fired && client == writer && matches!(resp, ClientResponse::Ok(_)) {
            fired = true;
            AnswerFate::DeliverAndCrash
        } else {
            AnswerFate::Deliver
        }
    }));
    c.submit(writer, "k", Input::Put("2".into()));
    let ok = c.run_until(5 * SEC, |c| c.clients_idle());
    assert!(ok, "[seed {seed}] the second Put did not complete");
    assert!(
        !c.node(old).is_up(),
        "[seed {seed}] the leader should have crashed after acknowledging"
    );
    let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != old).collect();
    let new = check_one_leader(&mut c, &rest, ELECTION);
    c.client_mut(reader).leader_guess = new;
    c.submit(reader, "k", Input::Get);
    let ok = c.run_until(5 * SEC, |c| c.clients_idle());
    assert!(
        ok,
        "[seed {seed}] the Get at the new leader did not complete"
    );
    let get = c.op_records().last().cloned();
    let early = get.as_ref().map_or(0, |r| {
        r.arrivals
            .iter()
            .filter(|a| a.leader_before_first_commit)
            .count()
    });
    assert_eq!(
        get.as_ref().map(|r| r.output.clone()),
        Some(Output::Value(Some("2".into()))),
        "[seed {seed}] a read right after the election missed the acknowledged write: {get:?}"
    );
    assert_linearizable(&c, "read before the new leader's first commit");
    early
}

#[test]
fn read_right_after_election_sees_acknowledged_writes() {
    let mut early = 0;
    for seed in 3201..=3210 {
        early += read_before_first_commit(seed);
    }
    eprintln!("{early} of 10 Gets reached a new leader before its first commit");
    assert!(
        early >= 5,
        "only {early} of 10 Gets reached a new leader before its first commit: the test no longer provokes the pitfall"
    );
}

// ----- d. retried writes are applied once -----

/// How many committed log entries carry this client's command with this seq.
fn copies_in_log(c: &Cluster, client: usize, seq: u64) -> usize {
    let name = client_name(client);
    c.applied_anywhere()
        .values()
        .filter(|e| e.kind == EntryKind::Command)
        .filter_map(|e| serde_json::from_slice::<raftd::kv::Command>(&e.data).ok())
        .filter(|cmd| cmd.client_id.as_deref() == Some(name.as_str()) && cmd.seq == seq)
        .count()
}

/// A Cas from "0" to "1" commits but its answer is lost (dropped, or the leader crashes right
/// after committing it). Before the retry, another client sets the key back to "0". The retry
/// (same client_id/seq) must get the first outcome and change nothing: applied twice, it
/// would set "1" again.
fn retried_cas(seed: u64, crash: bool) {
    let mut c = Cluster::new(SimConfig::new(5, seed));
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all, ELECTION);
    let mut cfg = ClientConfig::scripted(2);
    cfg.attempt_timeout = 2 * SEC;
    let clients = c.add_clients(cfg);
    let (a, b) = (clients[0], clients[1]);
    c.client_mut(a).leader_guess = leader;
    c.client_mut(b).leader_guess = leader;
    c.submit(b, "k", Input::Put("0".into()));
    assert!(
        c.run_until(5 * SEC, |c| c.clients_idle()),
        "[seed {seed}] setup"
    );
    let mut fired = false;
    c.set_answer_hook(Box::new(move |_, client, resp| {
        if !fired && client == a && matches!(resp, ClientResponse::Ok(_)) {
            fired = true;
            if crash {
                AnswerFate::DropAndCrash
            } else {
                AnswerFate::Drop
            }
        } else {
            AnswerFate::Deliver
        }
    }));
    let cas = Input::Cas {
        expected: Some("0".into()),
        value: Some("1".into()),
    };
    c.submit(a, "k", cas);
    let cas_op = c.op_records().len() - 1;
    let seq = c.op_records()[cas_op].seq.unwrap_or(0);
    // The first attempt commits; its answer is lost.
    let ok = c.run_until(SEC, |c| copies_in_log(c, a, seq) == 1);
    assert!(ok, "[seed {seed}] the Cas did not commit");
    if crash {
        assert!(
            !c.node(leader).is_up(),
            "[seed {seed}] leader should be down"
        );
        let rest: Vec<NodeId> = all.iter().copied().filter(|&id| id != leader).collect();
        let new = check_one_leader(&mut c, &rest, ELECTION);
        c.client_mut(b).leader_guess = new;
    }
    c.submit(b, "k", Input::Put("0".into()));
    let reset_op = c.op_records().len() - 1;
    let ok = c.run_until(5 * SEC, |c| c.client(b).is_idle());
    assert!(ok, "[seed {seed}] the reset Put did not complete");
    let ok = c.run_until(20 * SEC, |c| c.client(a).is_idle());
    assert!(ok, "[seed {seed}] the retried Cas did not complete");
    let rec = c.op_records()[cas_op].clone();
    let reset_ret = c.op_records()[reset_op].ret.unwrap_or(u64::MAX);
    assert!(
        rec.attempts.len() >= 2 && rec.attempts.last().is_some_and(|t| t.sent > reset_ret),
        "[seed {seed}] the Cas was not retried after the reset Put: {rec:?}"
    );
    assert_eq!(
        rec.output,
        Output::Cas {
            succeeded: true,
            value: Some("1".into())
        },
        "[seed {seed}] the retried Cas must get its first outcome: {rec:?}"
    );
    c.submit(b, "k", Input::Get);
    assert!(
        c.run_until(5 * SEC, |c| c.clients_idle()),
        "[seed {seed}] Get"
    );
    let get = c.op_records().last().map(|r| r.output.clone());
    assert_eq!(
        get,
        Some(Output::Value(Some("0".into()))),
        "[seed {seed}] the retried Cas was applied twice"
    );
    let copies = copies_in_log(&c, a, seq);
    assert!(
        copies >= 2,
        "[seed {seed}] the retry should have reached the log again ({copies} copies), or the test proves nothing"
    );
    heal_all(&mut c);
    assert_stores_agree(&mut c);
    for id in c.ids() {
        assert_eq!(
            c.node(id).store().and_then(|s| s.get("k")),
            Some("0"),
            "[seed {seed}] node {id} applied the retried Cas twice"
        );
    }
    assert_linearizable(&c, "retried Cas");
}

#[test]
fn retried_write_after_lost_answer_is_applied_once() {
    for seed in 4001..=4005 {
        retried_cas(seed, false);
        retried_cas(seed + 100, true);
    }
}

// ----- e. the checker bites on these histories -----

#[test]
fn checker_catches_a_stale_read_and_a_wrong_value_in_a_real_history() {
    let seed = 5001;
    let mut c = Cluster::new(SimConfig::new(5, seed));
    c.add_clients(ClientConfig::new(4));
    c.run_for(3 * SEC);
    drain(&mut c, 10 * SEC);
    let history = c.kv_history();
    assert!(
        check_history(&history).is_ok(),
        "[seed {seed}] the real history"
    );
    assert!(history.iter().all(|o| o.output != Output::Unknown));
    let end = history.iter().map(|o| o.ret).max().unwrap_or(0);
    assert_stores_agree(&mut c);
    // A stale read: after everything finished, a Get returns a value the key held earlier. The
    // value is one a later write replaced for certain: that write was called after the Put
    // returned (a Put concurrent with the last write could still be ordered last).
    let store = c.node(1).store().cloned().expect("node 1 is up");
    // (Puts and Deletes always take effect; a Cas may not.)
    let is_write = |o: &Operation| matches!(o.input, Input::Put(_) | Input::Delete);
    let (key, stale) = history
        .iter()
        .filter_map(|o| match &o.input {
            Input::Put(v)
                if store.get(&o.key) != Some(v)
                    && history
                        .iter()
                        .any(|w| w.key == o.key && is_write(w) && w.call > o.ret) =>
            {
                Some((o.key.clone(), v.clone()))
            }
            _ => None,
        })
        .next_back()
        .expect("some key was overwritten");
    let mut bad = history.clone();
    bad.push(Operation {
        client: 99,
        key: key.clone(),
        input: Input::Get,
        output: Output::Value(Some(stale.clone())),
        call: end + 1,
        ret: end + 2,
    });
    let err = check_history(&bad).expect_err("a stale read must be caught");
    assert_eq!(err.key, key, "[seed {seed}]");
    // The same read with the current value is fine.
    let mut good = history.clone();
    good.push(Operation {
        client: 99,
        key: key.clone(),
        input: Input::Get,
        output: Output::Value(store.get(&key).map(str::to_string)),
        call: end + 1,
        ret: end + 2,
    });
    assert!(check_history(&good).is_ok(), "[seed {seed}]");
    // A real Get in the middle of the history returning a value never written.
    let mut bad = history.clone();
    let i = bad
        .iter()
        .position(|o| o.input == Input::Get && o.call > end / 2)
        .expect("a Get in the second half");
    bad[i].output = Output::Value(Some("never-written".into()));
    assert!(check_history(&bad).is_err(), "[seed {seed}] a wrong value");
    // A successful Cas answered twice (a retry applied again) when the key no longer holds
    // what it expects.
    let mut bad = history.clone();
    let again = bad
        .iter()
        .find(|o| match (&o.input, &o.output) {
            (
                Input::Cas { expected, .. },
                Output::Cas {
                    succeeded: true, ..
                },
            ) => store.get(&o.key) != expected.as_deref(),
            _ => false,
        })
        .cloned()
        .expect("a successful Cas whose expected value is gone");
    bad.push(Operation {
        client: 98,
        call: end + 1,
        ret: end + 2,
        ..again
    });
    assert!(
        check_history(&bad).is_err(),
        "[seed {seed}] a Cas applied twice"
    );
}
