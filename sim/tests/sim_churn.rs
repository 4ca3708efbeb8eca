//! Churn: random crashes, restarts, partitions (one-way link cuts too) and proposals for a
//! long while, then everything heals. Committed values stay committed: every entry any node
//! ever applied must, after convergence, be in every node's log at the same index.

use raftd_sim::scenario as common;

use common::{assert_everything_applied_stays, cmd, heal_all};
use raftd_sim::{Cluster, NetConfig, SimConfig, MS, SEC};
use rand::Rng;

fn churn(seed: u64, net: NetConfig, duration: u64) {
    let mut cfg = SimConfig::new(5, seed);
    cfg.net = net;
    let mut c = Cluster::new(cfg);
    let mut proposals = 0u64;
    let end = c.now + duration;
    while c.now < end {
        let wait = c.rng().gen_range(10..200) * MS;
        c.run_for(wait);
        match c.rng().gen_range(0..100) {
            // Crash a random node (at most 3 down at once).
            0..=14 => {
                c.crash_random(2);
            }
            // Restart a random crashed node.
            15..=34 => {
                c.restart_random();
            }
            // A random split into two groups.
            35..=44 => c.split_random(),
            // One-way cuts: a hears nothing from b, b still hears a.
            45..=54 => {
                for _ in 0..c.rng().gen_range(1..4) {
                    c.cut_random_one_way();
                }
            }
            // Heal the network.
            55..=64 => c.heal(),
            // Proposals at whoever believes it leads.
            _ => {
                for (leader, _) in c.leaders() {
                    for _ in 0..c.rng().gen_range(1..4) {
                        proposals += 1;
                        c.propose(leader, &cmd("churn", proposals));
                    }
                }
            }
        }
    }
    let seed = c.seed();
    let applied_during_churn = c.applied_anywhere().len();
    heal_all(&mut c);
    c.one(b"final", 5, 30 * SEC);
    assert_everything_applied_stays(&c);
    assert!(
        applied_during_churn >= 20,
        "[seed {seed}] only {applied_during_churn} entries applied during churn: the scenario barely made progress"
    );
}

#[test]
fn churn_reliable_network() {
    for seed in 501..=520 {
        churn(seed, NetConfig::reliable(), 60 * SEC);
    }
}

#[test]
fn churn_unreliable_network() {
    for seed in 521..=540 {
        churn(seed, NetConfig::unreliable(), 60 * SEC);
    }
}
