//! Watches in the simulation: watchers hold streams to random nodes while nodes crash and
//! restart, the network splits, drops and delays, leaders change, snapshots are installed and
//! history is compacted (the simulation keeps 64 revisions). Every watcher must deliver the
//! history of its prefix from where it started, in revision order, with no gap and no
//! duplicate, across every reconnect; and once the faults stop, catch up to the end.

use raftd_sim::scenario as common;

use common::heal_all;
use raftd_sim::{ClientConfig, Cluster, NetConfig, SimConfig, MS, SEC};
use rand::Rng;

fn watch_chaos(seed: u64) -> (usize, usize) {
    let mut cfg = SimConfig::new(5, seed);
    cfg.net = NetConfig::unreliable();
    cfg.snapshot_entries = Some(60);
    let mut c = Cluster::new(cfg);
    let mut clients = ClientConfig::new(6);
    clients.attempt_timeout = 300 * MS;
    clients.op_deadline = 2 * SEC;
    c.add_clients(clients);
    c.add_watchers(4, "k");
    c.add_watchers(2, "k1");
    let end = c.now + 15 * SEC;
    while c.now < end {
        let wait = c.rng().gen_range(100..800) * MS;
        c.run_for(wait);
        match c.rng().gen_range(0..100) {
            0..=24 => {
                c.crash_random(3);
            }
            25..=49 => {
                c.restart_random();
            }
            50..=69 => {
                c.split_random();
            }
            _ => c.heal(),
        }
        if let Err(e) = c.check_watchers() {
            panic!("{e}");
        }
    }
    heal_all(&mut c);
    c.stop_clients();
    let settled = c.run_until(30 * SEC, |c| c.clients_idle());
    assert!(settled, "[seed {seed}] clients still busy");
    // Every watcher that was not compacted away catches up with the last change of its prefix.
    let caught_up = c.run_until(30 * SEC, |c| {
        let Some(store) = c
            .ids()
            .into_iter()
            .find_map(|id| c.node(id).store().cloned())
        else {
            return false;
        };
        c.watchers().iter().all(|w| {
            if w.compacted || w.start.is_none() {
                return true;
            }
            let last = store
                .mvcc()
                .events_since(
                    &raftd::kv::mvcc::KeyRange::Prefix(w.prefix.clone()),
                    w.start.unwrap(),
                    0,
                )
                .ok()
                .and_then(|ev| ev.last().map(|e| e.mod_revision));
            last.is_none_or(|l| w.events.last().is_some_and(|e| e.mod_revision >= l))
        })
    });
    let checked = c.check_watchers().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        caught_up,
        "[seed {seed}] a watcher did not catch up after the faults stopped"
    );
    let streams: usize = c.watchers().iter().map(|w| w.streams_opened).sum();
    (checked, streams)
}

#[test]
fn watches_see_every_change_once_in_order_under_faults() {
    let (mut events, mut streams) = (0, 0);
    for seed in 1..=6 {
        let (e, s) = watch_chaos(seed);
        eprintln!("seed {seed}: {e} events checked over {s} streams");
        events += e;
        streams += s;
    }
    assert!(events > 1000, "too few events to mean anything: {events}");
    assert!(
        streams > 60,
        "too few reconnects to mean anything: {streams}"
    );
}
