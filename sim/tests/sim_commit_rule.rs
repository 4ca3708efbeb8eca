//! Figure 8 of the Raft paper, staged step by step: a leader must not commit an entry of an
//! earlier term by counting replicas (§5.4.2). With that rule broken, the entry it "commits"
//! is later overwritten by a leader of a newer term, and the simulation's state-machine check
//! (two nodes applying different entries at one index) fails. PITFALLS.md, first row.

use raftd::rpc::types::NodeId;
use raftd_sim::{Cluster, NetConfig, SimConfig, MS, SEC};

/// Messages take 2–3 ms, so a step of 1 ms always sees a state change before the messages it
/// caused arrive, and cutting links then stops them (links are checked at delivery too).
fn slow_lan() -> NetConfig {
    NetConfig {
        min_delay_us: 2 * MS,
        max_delay_us: 3 * MS,
        ..NetConfig::reliable()
    }
}

fn only(c: &mut Cluster, group: &[NodeId]) {
    let rest: Vec<NodeId> = c
        .ids()
        .into_iter()
        .filter(|id| !group.contains(id))
        .collect();
    let singles: Vec<Vec<NodeId>> = rest.iter().map(|id| vec![*id]).collect();
    let mut groups: Vec<&[NodeId]> = vec![group];
    groups.extend(singles.iter().map(|g| g.as_slice()));
    c.links.partition(&groups);
}

fn leader_in(c: &mut Cluster, group: &[NodeId]) -> NodeId {
    let g = group.to_vec();
    let ok = c.run_until(5 * SEC, |c| c.leaders_among(&g).len() == 1);
    assert!(ok, "[seed {}] no leader among {group:?}", c.seed());
    c.leaders_among(group)[0]
}

fn figure8(seed: u64) {
    let mut cfg = SimConfig::new(5, seed);
    cfg.net = slow_lan();
    // One entry per AppendEntries, so an old-term entry reaches a majority before the new
    // leader's no-op does.
    cfg.tune = |c| c.max_entries_per_message = 1;
    let mut c = Cluster::new(cfg);
    let all = c.ids();
    c.one(b"base", 5, 5 * SEC);

    // (a) Leader L1 and one follower F take entry x at index i; nobody else hears of it.
    let l1 = c.wait_for_leader(&all, 5 * SEC);
    let f = all.iter().copied().find(|id| *id != l1).unwrap_or(0);
    only(&mut c, &[l1, f]);
    let (i, x_term) = c.propose(l1, b"x").expect("L1 leads");
    let got = c.run_until(SEC, |c| {
        c.raft(f).is_some_and(|r| r.log().last_index() >= i)
    });
    assert!(got, "[seed {seed}] F did not get x");
    c.crash(l1);

    // (b) A leader N of a newer term among the other three writes its no-op at index i,
    // and is cut off before anyone else gets it.
    let others: Vec<NodeId> = all
        .iter()
        .copied()
        .filter(|id| *id != l1 && *id != f)
        .collect();
    only(&mut c, &others);
    let n = leader_in(&mut c, &others);
    c.links.set_node(n, false);
    assert_eq!(
        c.raft(n).map(|r| r.log().last_index()),
        Some(i),
        "[seed {seed}] N's no-op is at i"
    );
    let pq: Vec<NodeId> = others.iter().copied().filter(|id| *id != n).collect();

    // (c) L1 comes back; L1 or F (the only ones holding x) is elected with P and Q, and sends
    // x to P and Q one entry at a time. As soon as each of P and Q holds x, the link from M to
    // it is cut (its answers still reach M), so they never get M's own no-op. A broken leader
    // now commits x by counting replicas: M, the other holder, P and Q.
    c.restart(l1);
    let group = [l1, f, pq[0], pq[1]];
    only(&mut c, &group);
    let m = leader_in(&mut c, &group);
    assert!(
        m == l1 || m == f,
        "[seed {seed}] only L1 or F can win (they hold x)"
    );
    let mut cut = Vec::new();
    for _ in 0..2000 {
        for &p in &pq {
            let has_x = c.raft(p).is_some_and(|r| r.log().term(i) == Some(x_term));
            if has_x && !cut.contains(&p) {
                c.links.set(m, p, false);
                cut.push(p);
            }
        }
        if cut.len() == 2 {
            break;
        }
        c.run_for(MS);
    }
    assert_eq!(cut.len(), 2, "[seed {seed}] P and Q did not both get x");
    let committed_x = c.run_until(300 * MS, |c| {
        c.raft(m).is_some_and(|r| r.log().committed() >= i)
    });
    c.links.set_node(m, false);
    c.crash(m);

    // (d) N returns and wins with P and Q (its last term is newer than theirs), replacing x at
    // index i with its own entry. If M had committed x, a node applied it: the check fails.
    let o = if m == l1 { f } else { l1 };
    let group = [n, pq[0], pq[1], o];
    only(&mut c, &group);
    let winner = leader_in(&mut c, &group);
    c.run_for(2 * SEC);
    assert!(
        !committed_x,
        "[seed {seed}] leader {m} committed index {i} from an earlier term by counting replicas (winner now {winner})"
    );
    // The cluster still works and agrees after healing.
    c.heal();
    for id in all {
        if !c.node(id).is_up() {
            c.restart(id);
        }
    }
    c.one(b"after", 5, 10 * SEC);
}

#[test]
fn figure8_old_term_entry_is_not_committed_by_counting() {
    for seed in 1..=10 {
        figure8(seed);
    }
}
