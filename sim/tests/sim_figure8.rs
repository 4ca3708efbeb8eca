//! Figure 8 of the Raft paper: leaders that replicate an entry to a few followers and crash,
//! over and over with rotating leaders. A leader that committed an earlier term's entry by
//! counting replicas would later see it overwritten; the simulation checks at every apply
//! that no index ever gets two different entries (the MIT 6.824 lab's TestFigure8 and
//! TestFigure8Unreliable).

use raftd_sim::scenario as common;

use common::{cmd, heal_all};
use raftd::rpc::types::NodeId;
use raftd_sim::{Cluster, NetConfig, SimConfig, MS, SEC};
use rand::Rng;

/// Proposes at every up node that believes it leads; returns the last that accepted.
fn propose_everywhere(c: &mut Cluster, data: &[u8]) -> Option<NodeId> {
    let mut leader = None;
    for id in c.up_ids() {
        if c.propose(id, data).is_some() {
            leader = Some(id);
        }
    }
    leader
}

/// Mostly 0–13 ms, one round in ten 0–500 ms (half the MIT lab's election timeout).
fn random_pause(c: &mut Cluster) -> u64 {
    if c.rng().gen_bool(0.1) {
        c.rng().gen_range(0..500) * MS
    } else {
        c.rng().gen_range(0..13) * MS
    }
}

/// Reliable network, crashes: after each proposal the leader crashes (as in the lab), and a
/// random crashed node restarts whenever fewer than 3 are up.
#[test]
fn figure8_reliable() {
    for seed in 401..=420 {
        figure8_reliable_run(seed);
    }
}

fn figure8_reliable_run(seed: u64) {
    let mut c = Cluster::new(SimConfig::new(5, seed));
    c.one(b"first", 1, 10 * SEC);
    let mut led = 0;
    for round in 0..1000 {
        let leader = propose_everywhere(&mut c, &cmd("f8", round));
        led += u32::from(leader.is_some());
        let pause = random_pause(&mut c);
        c.run_for(pause);
        if let Some(leader) = leader {
            c.crash(leader);
        }
        if c.up_ids().len() < 3 {
            let id = c.rng().gen_range(1..=5);
            if !c.node(id).is_up() {
                c.restart(id);
            }
        }
    }
    heal_all(&mut c);
    c.one(b"last", 5, 10 * SEC);
    // Leaders must keep coming back: without this, a cluster stuck with no leader for the
    // whole run would pass the safety checks vacuously.
    assert!(
        led >= 40,
        "[seed {seed}] a leader took proposals in only {led} of 1000 rounds"
    );
}

/// Unreliable network (10% loss, duplicates, reordering, a few long delays): after each
/// proposal the leader is cut off with probability 1/2, or crashed now and then; nodes come
/// back whenever fewer than 3 are connected and up.
#[test]
fn figure8_unreliable() {
    for seed in [2031, 2078].into_iter().chain(421..=438) {
        figure8_unreliable_run(seed);
    }
}

fn figure8_unreliable_run(seed: u64) {
    let mut cfg = SimConfig::new(5, seed);
    cfg.net = NetConfig::unreliable();
    let mut c = Cluster::new(cfg);
    c.one(b"first", 1, 10 * SEC);
    let mut led = 0;
    for round in 0..1000 {
        let leader = propose_everywhere(&mut c, &cmd("f8u", round));
        led += u32::from(leader.is_some());
        let pause = random_pause(&mut c);
        c.run_for(pause);
        if let Some(leader) = leader {
            if c.rng().gen_bool(0.5) {
                c.disconnect(leader);
            } else if c.rng().gen_bool(0.1) {
                c.crash(leader);
            }
        }
        let working = c
            .ids()
            .into_iter()
            .filter(|&id| c.node(id).is_up() && c.is_connected(id))
            .count();
        if working < 3 {
            let id = c.rng().gen_range(1..=5);
            if !c.node(id).is_up() {
                c.restart(id);
            }
            c.connect(id);
        }
    }
    heal_all(&mut c);
    c.one(b"last", 5, 30 * SEC);
    // Before the pre-vote fix (see sim_pitfalls.rs), seed 2031 had no leader for most of the
    // run: 20 rounds of 1000 with one. With it, every seed tried had more than 250.
    assert!(
        led >= 150,
        "[seed {seed}] a leader took proposals in only {led} of 1000 rounds"
    );
}
