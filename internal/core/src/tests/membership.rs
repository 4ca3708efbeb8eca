//! Thesis chapter 4 (cluster membership changes), the single-server fix, incarnations (a lost
//! disk never counts as the member it was), unanimous founding, leadership transfer (§3.10) and
//! `force_new_cluster`. One test per rule; each fails if its rule is broken.

use super::*;
use crate::membership::{ChangeError, MemberRole, MembershipChange};

/// Incarnation of node `id`'s data dir in these tests.
fn inc(id: NodeId) -> u64 {
    100 + id
}

/// Voters `voters` and learners `learners`, with incarnations recorded.
fn members(voters: &[NodeId], learners: &[NodeId]) -> Membership {
    let incs = voters
        .iter()
        .chain(learners)
        .map(|v| (*v, inc(*v)))
        .collect();
    let mut m = Membership::of_voters(voters, &BTreeMap::new(), &incs);
    for l in learners {
        m.members.insert(
            *l,
            Member {
                role: MemberRole::Learner,
                addr: String::new(),
                incarnation: inc(*l),
                promote: false,
            },
        );
    }
    m
}

/// Node `id` whose log holds one entry, the configuration `m` at index 1 (term 1).
fn node_with(id: NodeId, m: &Membership) -> Raft {
    let mut cfg = config(id, 1);
    // Only checked by `Config::validate` and used to found a cluster: the log's configuration
    // is what counts.
    cfg.voters = m.members.keys().copied().collect();
    cfg.incarnation = inc(id);
    Raft::new(
        cfg,
        HardState { term: 1, vote: 0 },
        vec![Entry::config(1, 1, m)],
    )
    .unwrap()
}

/// A network of `ids`, all starting with configuration `m`; node 1 is elected and everything
/// settles (its no-op committed).
fn cluster(ids: &[NodeId], m: &Membership) -> Net {
    let mut net = Net::new(ids.iter().map(|id| node_with(*id, m)).collect());
    net.time_out(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.settle();
    net
}

/// A message from `from` speaking from data dir `incarnation`.
fn from_dir(mut e: Envelope, incarnation: u64) -> Envelope {
    e.incarnation = incarnation;
    e
}

/// `n` heartbeat intervals of node 1, each followed by everything they set off.
fn heartbeats(net: &mut Net, n: usize) {
    for _ in 0..n {
        for _ in 0..HEARTBEAT {
            net.node_mut(1).tick();
        }
        net.settle();
    }
}

fn last_config(r: &Raft) -> u64 {
    r.membership_index()
}

/// §4.1: a server uses the latest configuration in its log whether or not it is committed.
#[test]
fn a_configuration_takes_effect_when_appended_not_when_committed() {
    let mut net = cluster(&[1, 2, 3], &members(&[1, 2, 3], &[]));
    net.isolated.insert(3);
    net.isolated.insert(2);
    let at = net
        .node_mut(1)
        .change_membership(MembershipChange::Remove { id: 3 }, true)
        .unwrap();
    assert!(
        net.node(1).log().committed() < at,
        "not committed: the followers are cut off"
    );
    assert!(
        !net.node(1).membership().contains(3),
        "in effect on the leader at once"
    );
    // A follower that receives it uses it before it is committed, too.
    net.isolated.remove(&2);
    net.round();
    net.round();
    let f = net.node(2);
    assert!(f.log().get(at).is_some());
    assert!(!f.membership().contains(3), "in effect on append");
}

/// §4.1: when a conflict truncates a configuration entry, the previous one is in effect again.
#[test]
fn a_truncated_configuration_is_rolled_back() {
    let three = members(&[1, 2, 3], &[]);
    let mut f = node_with(2, &three);
    // Leader 1 of term 2 sends a configuration adding learner 4 at index 2.
    let four = members(&[1, 2, 3], &[4]);
    f.step(append(1, 2, 2, (1, 1), vec![Entry::config(2, 2, &four)], 1));
    assert!(f.membership().contains(4));
    drain(&mut f);
    // Leader 3 of term 3 never had it: its entry 2 replaces it.
    f.step(append(3, 2, 3, (1, 1), vec![entry(3, 2)], 1));
    assert_eq!(f.log().term(2), Some(3));
    assert_eq!(f.membership(), &three, "back to the previous configuration");
    let rd = f.ready();
    assert_eq!(rd.membership, Some(three), "and the shell is told");
}

/// Learners receive the log but never count toward a commit, never vote, never campaign.
#[test]
fn learners_never_count() {
    let m = members(&[1, 2], &[3]);
    let mut net = cluster(&[1, 2, 3], &m);
    net.isolated.insert(2);
    let (index, _) = net.node_mut(1).propose(b"x".to_vec()).unwrap();
    net.settle();
    assert_eq!(
        net.node(3).log().last_index(),
        index,
        "the learner gets the log"
    );
    assert!(
        net.node(1).log().committed() < index,
        "the learner's copy does not commit it"
    );
    // The learner never campaigns, however long it hears nothing.
    net.isolated.insert(1);
    for _ in 0..10 * ELECTION {
        net.node_mut(3).tick();
    }
    assert_eq!(net.node(3).role(), Role::Follower);
    // A learner's vote does not count: node 2 campaigns among voters {1, 2}.
    let mut c = node_with(2, &m);
    tick_until(&mut c, |r| r.role() == Role::Candidate);
    let term = c.term();
    c.step(from_dir(vote_reply(3, 2, term, true), inc(3)));
    assert_eq!(c.role(), Role::Candidate, "a learner's vote elected nobody");
    c.step(from_dir(vote_reply(1, 2, term, true), inc(1)));
    assert_eq!(c.role(), Role::Leader);
}

/// The single-server fix (Ongaro, 2015): a leader changes the configuration only once an
/// entry of its own term is committed, and one change at a time.
#[test]
fn a_change_waits_for_the_leaders_first_commit_and_for_the_previous_change() {
    let m = members(&[1, 2, 3], &[]);
    let mut r = node_with(1, &m);
    tick_until(&mut r, |r| r.role() == Role::Candidate);
    let term = r.term();
    r.step(from_dir(vote_reply(2, 1, term, true), inc(2)));
    assert_eq!(r.role(), Role::Leader);
    drain(&mut r);
    assert!(r.log().committed() < r.log().last_index());
    let add = MembershipChange::AddLearner {
        id: 4,
        addr: "a".into(),
        promote: false,
    };
    assert!(
        matches!(
            r.change_membership(add.clone(), true),
            Err(ChangeError::Busy(_))
        ),
        "no change before the no-op of this term is committed"
    );
    let last = r.log().last_index();
    r.step(from_dir(append_reply(2, 1, term, true, last, None), inc(2)));
    drain(&mut r);
    assert_eq!(r.log().committed(), last);
    let at = r.change_membership(add, true).unwrap();
    let second = MembershipChange::Remove { id: 3 };
    assert!(
        matches!(
            r.change_membership(second.clone(), true),
            Err(ChangeError::Busy(_))
        ),
        "one change at a time"
    );
    drain(&mut r);
    r.step(from_dir(append_reply(2, 1, term, true, at, None), inc(2)));
    drain(&mut r);
    assert_eq!(r.log().committed(), at);
    assert!(r.change_membership(second, true).is_ok());
}

/// Two voters at once is not a single-server change.
#[test]
fn a_change_of_two_voters_at_once_is_refused() {
    let m = members(&[1, 2, 3], &[]);
    let next = members(&[1], &[]);
    assert!(m.single_change_to(&next).is_err());
}

/// A leader that removes itself keeps leading until the removal is committed (without counting
/// itself), then steps down and never campaigns again.
#[test]
fn a_removed_leader_steps_down_once_its_removal_is_committed() {
    let mut net = cluster(&[1, 2, 3], &members(&[1, 2, 3], &[]));
    net.isolated.insert(2);
    net.isolated.insert(3);
    let at = net
        .node_mut(1)
        .change_membership(MembershipChange::Remove { id: 1 }, true)
        .unwrap();
    net.settle();
    assert_eq!(
        net.node(1).role(),
        Role::Leader,
        "leads until the removal commits"
    );
    assert!(net.node(1).log().committed() < at);
    net.isolated.remove(&2);
    heartbeats(&mut net, 4);
    assert!(net.node(2).log().get(at).is_some());
    // Only node 2 acknowledged: a majority of {2, 3} needs both, and the leader does not count.
    assert!(
        net.node(1).log().committed() < at,
        "the leader's own copy does not count"
    );
    assert_eq!(net.node(1).role(), Role::Leader);
    net.isolated.remove(&3);
    heartbeats(&mut net, 4);
    assert!(net.node(1).log().committed() >= at);
    assert_eq!(net.node(1).role(), Role::Follower, "stepped down");
    assert!(
        net.delivered
            .iter()
            .any(|m| m.from == 1 && matches!(m.msg, RaftMessage::TimeoutNow { .. })),
        "and handed over at once"
    );
    assert!(
        [2, 3].iter().any(|id| net.node(*id).role() == Role::Leader),
        "a voter of the new configuration leads without waiting for an election timeout"
    );
    for _ in 0..10 * ELECTION {
        net.node_mut(1).tick();
    }
    assert_eq!(net.node(1).role(), Role::Follower, "never campaigns again");
}

/// A removed node that keeps running (and never learned of its removal) falls behind and then
/// cannot raise anyone's term or win their vote.
#[test]
fn a_removed_node_cannot_disrupt() {
    let two = members(&[1, 2], &[]);
    let mut f = node_with(2, &two);
    let before = f.term();
    // Removed, it stopped receiving the log: its log is behind ours.
    f.step(from_dir(vote_req(3, 2, before + 5, 0, 0), inc(3)));
    f.step(from_dir(pre_vote_req(3, 2, before + 5, 0, 0), inc(3)));
    assert_eq!(f.term(), before, "its term did not move");
    assert!(drain(&mut f).is_empty(), "and it got no answer");
    // A node our configuration does not know but whose log is ahead of ours is heard: it is
    // probably a voter added by a configuration we have not received yet.
    f.step(from_dir(vote_req(3, 2, before + 1, 99, 99), inc(3)));
    assert_eq!(f.term(), before + 1);
}

/// With one of three voters down, a change that leaves too few live voters is refused as
/// unsafe; adding a learner is not, and writes keep committing while it catches up.
#[test]
fn a_change_that_would_lose_the_quorum_is_unsafe_and_learners_come_first() {
    let mut net = cluster(&[1, 2, 3], &members(&[1, 2, 3], &[]));
    net.isolated.insert(3);
    for _ in 0..2 * ELECTION {
        net.node_mut(1).tick();
        net.round();
    }
    let remove_live = net
        .node_mut(1)
        .change_membership(MembershipChange::Remove { id: 2 }, false);
    assert!(
        matches!(remove_live, Err(ChangeError::Unsafe(_))),
        "{remove_live:?}"
    );
    let add = MembershipChange::AddLearner {
        id: 4,
        addr: "a".into(),
        promote: true,
    };
    let at = net.node_mut(1).change_membership(add, false).unwrap();
    net.settle();
    assert!(
        net.node(1).log().committed() >= at,
        "the learner's absence stalls nothing"
    );
    let (index, _) = net.node_mut(1).propose(b"w".to_vec()).unwrap();
    net.settle();
    assert!(
        net.node(1).log().committed() >= index,
        "writes keep committing"
    );
}

/// The `Unsafe` check counts a voter as live only if it answered within two heartbeat
/// intervals, not within an election timeout: a voter that just stopped answering is judged
/// down long before it would be suspected by an election timer, so a removal that would leave
/// the cluster waiting for it is refused.
#[test]
fn a_voter_silent_for_two_heartbeats_no_longer_counts_as_live_for_a_change() {
    let mut net = cluster(&[1, 2, 3], &members(&[1, 2, 3], &[]));
    assert!(net.node(1).reachable(3));
    net.isolated.insert(3);
    for _ in 0..2 * HEARTBEAT + 1 {
        net.node_mut(1).tick();
        net.round();
    }
    let silent = net.node(1).progress(3).map_or(0, |p| p.heard_ticks);
    assert!(
        silent < ELECTION,
        "within an election timeout ({silent} ticks)"
    );
    assert!(!net.node(1).reachable(3));
    assert!(net.node(1).reachable(2), "node 2 answers every heartbeat");
    assert!(net.node(1).reachable(1));
    let remove = net
        .node_mut(1)
        .change_membership(MembershipChange::Remove { id: 2 }, false);
    assert!(matches!(remove, Err(ChangeError::Unsafe(_))), "{remove:?}");
    // Once node 3 answers again, the same removal is safe.
    net.isolated.clear();
    for _ in 0..HEARTBEAT {
        net.node_mut(1).tick();
        net.round();
    }
    net.settle();
    assert!(net.node(1).reachable(3));
    let remove = net
        .node_mut(1)
        .change_membership(MembershipChange::Remove { id: 2 }, false);
    assert!(remove.is_ok(), "{remove:?}");
}

/// A learner far behind is not promoted (unless forced); one that caught up is, on its own if
/// it was added as a future voter, with the data dir it speaks from.
#[test]
fn promotion_waits_for_the_learner_to_catch_up() {
    let m = members(&[1, 2, 3], &[]);
    let mut net = cluster(&[1, 2, 3], &m);
    let at = net
        .node_mut(1)
        .change_membership(
            MembershipChange::AddLearner {
                id: 4,
                addr: "a".into(),
                promote: false,
            },
            false,
        )
        .unwrap();
    net.settle();
    assert!(net.node(1).log().committed() >= at);
    assert!(matches!(
        net.node_mut(1)
            .change_membership(MembershipChange::Promote { id: 4 }, false),
        Err(ChangeError::Unsafe(_))
    ));
    // Node 4 starts empty and is caught up.
    let mut cfg = config(4, 1);
    cfg.founding = Founding::Join;
    cfg.voters = vec![];
    cfg.incarnation = inc(4);
    net.nodes
        .insert(4, Raft::new(cfg, HardState::default(), vec![]).unwrap());
    net.applied.insert(4, Vec::new());
    heartbeats(&mut net, 4);
    assert_eq!(
        net.node(4).log().last_index(),
        net.node(1).log().last_index()
    );
    assert!(!net.node(4).can_vote(), "a learner does not vote");
    let at = net
        .node_mut(1)
        .change_membership(MembershipChange::Promote { id: 4 }, false)
        .unwrap();
    net.settle();
    assert!(net.node(1).log().committed() >= at);
    let member = net.node(1).membership().get(4).cloned().unwrap();
    assert_eq!(member.role, MemberRole::Voter);
    assert_eq!(member.incarnation, inc(4), "admitted with its data dir");
    assert!(
        net.node(4).can_vote(),
        "a voter once the configuration says so"
    );
}

/// A node whose disk was lost speaks with a new incarnation: its votes and acknowledgements do
/// not count, the leader catches it up from scratch, and re-admits it once it has caught up.
#[test]
fn a_lost_disk_never_counts_as_the_member_it_was() {
    let m = members(&[1, 2, 3], &[]);
    // A candidate does not count a vote from node 2's new data dir.
    let mut c = node_with(1, &m);
    tick_until(&mut c, |r| r.role() == Role::Candidate);
    let term = c.term();
    c.step(from_dir(vote_reply(2, 1, term, true), 999));
    assert_eq!(
        c.role(),
        Role::Candidate,
        "the amnesiac's vote elected nobody"
    );
    c.step(from_dir(vote_reply(3, 1, term, true), inc(3)));
    assert_eq!(c.role(), Role::Leader);
    drain(&mut c);
    // Nor does the leader count its acknowledgement.
    let last = c.log().last_index();
    c.step(from_dir(append_reply(2, 1, term, true, last, None), 999));
    drain(&mut c);
    assert!(
        c.log().committed() < last,
        "an amnesiac's acknowledgement commits nothing"
    );

    // End to end: node 2 loses its disk and comes back empty, under a new incarnation.
    let mut net = cluster(&[1, 2, 3], &m);
    let (index, _) = net.node_mut(1).propose(b"acked".to_vec()).unwrap();
    net.settle();
    let mut cfg = config(2, 1);
    cfg.voters = vec![1, 2, 3];
    cfg.founding = Founding::Unanimous;
    cfg.incarnation = 999;
    net.nodes
        .insert(2, Raft::new(cfg, HardState::default(), vec![]).unwrap());
    for _ in 0..ELECTION {
        net.node_mut(2).tick();
        net.settle();
    }
    assert!(!net.node(2).can_vote(), "it does not found a new cluster");
    assert_eq!(net.node(2).role(), Role::Follower);
    heartbeats(&mut net, 6);
    assert!(net.node(2).log().get(index).is_some(), "caught up");
    assert_eq!(
        net.node(1).membership().get(2).map(|m| m.incarnation),
        Some(999),
        "re-admitted with its new data dir once it holds the log"
    );
    assert!(net.node(2).can_vote());
}

/// Unanimous founding: a cluster is founded only when every founding member's data dir is
/// empty; a node that finds one holding the configuration waits and never votes.
#[test]
fn a_cluster_is_founded_only_by_every_member_being_empty() {
    let fresh = |id: NodeId| {
        let mut cfg = config(id, 3);
        cfg.founding = Founding::Unanimous;
        cfg.incarnation = inc(id);
        Raft::new(cfg, HardState::default(), vec![]).unwrap()
    };
    let mut net = Net::new(vec![fresh(1), fresh(2), fresh(3)]);
    // Node 3 is cut off: 1 and 2 see each other, but not every member answered.
    net.isolated.insert(3);
    for _ in 0..3 * ELECTION {
        for id in [1, 2] {
            net.node_mut(id).tick();
        }
        net.settle();
    }
    assert!(
        net.node(1).membership().is_empty(),
        "no founding without node 3"
    );
    assert_eq!(net.node(1).role(), Role::Follower);
    net.isolated.remove(&3);
    for _ in 0..3 * HEARTBEAT {
        for id in [1, 2, 3] {
            net.node_mut(id).tick();
        }
        net.settle();
    }
    for id in [1, 2, 3] {
        assert_eq!(
            net.node(id).membership(),
            &members(&[1, 2, 3], &[]),
            "node {id} founded with every incarnation"
        );
        assert_eq!(net.node(id).log().get(1), net.node(1).log().get(1));
    }
    net.time_out(1);
    assert_eq!(net.node(1).role(), Role::Leader);

    // A wiped node 3 asks again: node 1 holds the configuration, so it waits.
    let mut again = fresh(3);
    again.tick();
    assert!(!drain(&mut again).is_empty(), "it asks");
    again.step(from_dir(
        env(
            1,
            3,
            RaftMessage::BootstrapReply {
                term: 2,
                asker: inc(3),
                initialized: true,
                waiting: false,
                founding: None,
                membership: None,
            },
        ),
        inc(1),
    ));
    again.step(from_dir(
        env(
            2,
            3,
            RaftMessage::BootstrapReply {
                term: 2,
                asker: inc(3),
                initialized: false,
                waiting: false,
                founding: None,
                membership: None,
            },
        ),
        inc(2),
    ));
    for _ in 0..10 * ELECTION {
        again.tick();
    }
    assert!(again.membership().is_empty() && again.role() == Role::Follower);
}

/// §3.10: the leader brings the target up to date, refuses writes meanwhile, sends TimeoutNow;
/// the target wins at once although every voter heard from the leader recently.
#[test]
fn leadership_transfer_hands_over_without_an_election_timeout() {
    let m = members(&[1, 2, 3], &[]);
    let mut net = Net::new(
        [1, 2, 3]
            .iter()
            .map(|id| {
                let mut r = node_with(*id, &m);
                r.cfg.check_quorum = true;
                r.cfg.pre_vote = true;
                r
            })
            .collect(),
    );
    net.time_out(1);
    assert_eq!(net.node(1).role(), Role::Leader);
    net.settle();
    net.isolated.insert(3);
    let (index, _) = net.node_mut(1).propose(b"x".to_vec()).unwrap();
    net.settle();
    net.isolated.remove(&3);
    assert!(net.node(3).log().last_index() < index);
    assert_eq!(net.node_mut(1).transfer_leader(Some(3)), Ok(3));
    assert!(
        net.node_mut(1).propose(b"y".to_vec()).is_err(),
        "no new writes during the transfer"
    );
    heartbeats(&mut net, 4);
    assert_eq!(net.node(3).role(), Role::Leader, "target leads");
    assert!(net.node(3).log().get(index).is_some());
    assert_eq!(net.node(1).role(), Role::Follower);
    assert_eq!(last_config(net.node(3)), 1);
}

/// A transfer whose target never answers is abandoned after an election timeout, and the
/// leader accepts writes again.
#[test]
fn a_stuck_transfer_is_abandoned_after_an_election_timeout() {
    let mut net = cluster(&[1, 2, 3], &members(&[1, 2, 3], &[]));
    net.isolated.insert(3);
    net.node_mut(1).transfer_leader(Some(3)).unwrap();
    assert!(net.node_mut(1).propose(b"y".to_vec()).is_err());
    for _ in 0..ELECTION {
        net.node_mut(1).tick();
        net.round();
    }
    assert_eq!(net.node(1).transferring_to(), None);
    assert!(net.node_mut(1).propose(b"y".to_vec()).is_ok());
}

/// Disaster recovery: one survivor becomes the only voter of a new configuration, keeps its
/// log, and leads alone.
#[test]
fn force_new_cluster_makes_the_survivor_the_only_voter() {
    let mut net = cluster(&[1, 2, 3], &members(&[1, 2, 3], &[]));
    net.isolated.insert(1);
    net.isolated.insert(3);
    let (index, _) = net.node_mut(1).propose(b"unacked".to_vec()).unwrap();
    net.round();
    let mut survivor = net.nodes.remove(&1).unwrap();
    let at = survivor.force_new_cluster();
    assert_eq!(survivor.membership(), &members(&[1], &[]));
    assert!(
        survivor.log().committed() >= index,
        "its whole log counts as committed"
    );
    tick_until(&mut survivor, |r| r.role() == Role::Leader);
    drain(&mut survivor);
    assert!(survivor.log().committed() > at);
}

/// Configurations travel inside internally tagged peer messages: they must decode there too.
#[test]
fn a_configuration_survives_the_wire_inside_a_peer_message() {
    let m = members(&[1, 2], &[3]);
    let e = env(
        1,
        2,
        RaftMessage::InstallSnapshot {
            term: 2,
            leader_id: 1,
            snapshot: crate::message::SnapshotMeta { index: 5, term: 1 },
            pos: crate::message::ChunkPos {
                offset: 0,
                total: 1,
            },
            data: vec![1],
            membership: Some(m.clone()),
        },
    );
    let text = serde_json::to_vec(&e).unwrap();
    let back: Envelope = serde_json::from_slice(&text).unwrap();
    assert_eq!(back, e);
}
