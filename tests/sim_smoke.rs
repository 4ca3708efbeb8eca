use raftd::sim::{Cluster, SimConfig, SEC};

#[test]
fn smoke() {
    let mut c = Cluster::new(SimConfig::new(3, 1));
    let l = c.wait_for_leader(&[1, 2, 3], 5 * SEC);
    println!("leader {l} term {}", c.max_term());
    for i in 0..10 {
        c.one(format!("cmd{i}").as_bytes(), 3, 5 * SEC);
    }
    println!("{:?}", c.stats);
}
