//! Cluster membership (thesis chapter 4): who votes, who only receives the log, and which data
//! dir each member was admitted with.
//!
//! The configuration lives in the log as `EntryKind::Config` entries and in snapshots. A node
//! uses the latest configuration in its log, committed or not, from the moment it is appended,
//! and falls back to the previous one when a conflict truncates it (§4.1). Changes go one voter
//! at a time (single-server changes, thesis §4.1), and a leader starts one only after an entry
//! of its own term is committed and the previous change is committed (the fix Ongaro published
//! in 2015 for the single-server algorithm: without it, two overlapping changes across a leader
//! change can elect two leaders). docs/MEMBERSHIP.md says why single-server over joint
//! consensus.
//!
//! Each member carries the *incarnation* of its data dir (a random number written when the dir
//! is created). A node whose disk was lost comes back with another incarnation, and nothing it
//! says counts as the member it was (no vote, no pre-vote, no acknowledgement) until a committed
//! configuration records the new incarnation: the leader does that once it holds the log.
//! Incarnation 0 in a configuration means "not recorded" (clusters founded before incarnations,
//! or the in-process tests) and matches any.

use crate::message::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a member takes part.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// Votes in elections and counts toward commits.
    Voter,
    /// Receives the log and snapshots; never votes, never counts.
    Learner,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub role: MemberRole,
    /// Where it listens (opaque to the core; the daemon dials it).
    #[serde(default)]
    pub addr: String,
    /// The data dir it was admitted with; 0 when not recorded (matches any).
    #[serde(default)]
    pub incarnation: u64,
    /// A learner the leader promotes to voter on its own once it has caught up (`MemberAdd`
    /// of a voter adds a learner first, so an empty node never counts in a quorum).
    #[serde(default, skip_serializing_if = "is_false")]
    pub promote: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One configuration: every member, voters and learners.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(from = "Wire", into = "Wire")]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

/// On the wire and in the log a configuration is a list of members with their ids: a map with
/// integer keys would not survive the internally tagged peer messages it travels in (serde
/// buffers their fields, and a buffered string key no longer reads as an integer).
#[derive(Serialize, Deserialize)]
struct Wire {
    members: Vec<WireMember>,
}

#[derive(Serialize, Deserialize)]
struct WireMember {
    id: NodeId,
    #[serde(flatten)]
    member: Member,
}

impl From<Wire> for Membership {
    fn from(w: Wire) -> Membership {
        Membership {
            members: w.members.into_iter().map(|m| (m.id, m.member)).collect(),
        }
    }
}

impl From<Membership> for Wire {
    fn from(m: Membership) -> Wire {
        Wire {
            members: m
                .members
                .into_iter()
                .map(|(id, member)| WireMember { id, member })
                .collect(),
        }
    }
}

impl Membership {
    /// Voters `ids` with the given addresses and incarnations (missing ones: empty, 0).
    pub fn of_voters(
        ids: &[NodeId],
        addrs: &BTreeMap<NodeId, String>,
        incarnations: &BTreeMap<NodeId, u64>,
    ) -> Membership {
        Membership {
            members: ids
                .iter()
                .map(|id| {
                    (
                        *id,
                        Member {
                            role: MemberRole::Voter,
                            addr: addrs.get(id).cloned().unwrap_or_default(),
                            incarnation: incarnations.get(id).copied().unwrap_or(0),
                            promote: false,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.role == MemberRole::Voter)
    }

    /// Does a message from `id`, sent by the data dir `incarnation`, speak for a voter of this
    /// configuration? A different incarnation is a node that lost what it acknowledged.
    pub fn counts(&self, id: NodeId, incarnation: u64) -> bool {
        self.members.get(&id).is_some_and(|m| {
            m.role == MemberRole::Voter && (m.incarnation == 0 || m.incarnation == incarnation)
        })
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Voter)
            .map(|(id, _)| *id)
    }

    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Learner)
            .map(|(id, _)| *id)
    }

    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// The bytes of a `Config` entry.
    pub fn encode(&self) -> Vec<u8> {
        // A map of plain fields cannot fail to serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(data: &[u8]) -> Result<Membership, String> {
        let m: Membership =
            serde_json::from_slice(data).map_err(|e| format!("not a configuration: {e}"))?;
        if m.members.contains_key(&0) {
            return Err("a configuration names node 0".into());
        }
        Ok(m)
    }

    /// Whether going from `self` to `next` is a single-server change (thesis §4.1): the voter
    /// sets differ by at most one server. Swapping a voter's incarnation for another is *two*
    /// changes (the old data dir out, the new one in): what the old one voted for or
    /// acknowledged before it was lost still counts in majorities of the old configuration,
    /// and a majority of the new one could avoid every node it shared them with. So a member
    /// that lost its disk is first demoted to learner, then promoted with its new data dir.
    /// Recording an incarnation where none was recorded (0) changes no majority.
    pub fn single_change_to(&self, next: &Membership) -> Result<(), String> {
        let old: Vec<(NodeId, u64)> = self
            .voters()
            .map(|v| (v, self.members[&v].incarnation))
            .collect();
        let new: Vec<(NodeId, u64)> = next
            .voters()
            .map(|v| (v, next.members[&v].incarnation))
            .collect();
        let removed = old
            .iter()
            .filter(|v| !new.iter().any(|n| n.0 == v.0))
            .count();
        let added = new
            .iter()
            .filter(|n| !old.iter().any(|v| v.0 == n.0))
            .count();
        let swapped = new
            .iter()
            .filter(|n| {
                old.iter()
                    .any(|v| v.0 == n.0 && v.1 != n.1 && v.1 != 0 && n.1 != 0)
            })
            .count();
        let changed = removed + added + 2 * swapped;
        if changed > 1 {
            return Err(format!(
                "it changes {changed} voters at once ({added} added, {removed} removed, {swapped} with another data dir); change one at a time"
            ));
        }
        if next.voter_count() == 0 {
            return Err("it leaves no voter".into());
        }
        Ok(())
    }
}

/// A change the leader is asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Adds `id` as a learner; with `promote`, the leader makes it a voter once it caught up.
    AddLearner {
        id: NodeId,
        addr: String,
        promote: bool,
    },
    /// Makes the learner `id` a voter (refused until it has caught up).
    Promote { id: NodeId },
    /// Removes `id`, voter or learner.
    Remove { id: NodeId },
}

impl MembershipChange {
    pub fn node(&self) -> NodeId {
        match self {
            MembershipChange::AddLearner { id, .. }
            | MembershipChange::Promote { id }
            | MembershipChange::Remove { id } => *id,
        }
    }
}

/// Why a membership change (or a leadership transfer) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("not the leader (leader hint: {leader})")]
    NotLeader { leader: NodeId },
    /// Another change is in progress (or this leader has not committed an entry of its term
    /// yet): try again shortly.
    #[error("{0}")]
    Busy(String),
    /// The change would leave the cluster without a quorum of live voters, or promote a node
    /// that has not caught up: refused unless forced.
    #[error("{0}")]
    Unsafe(String),
    /// The change makes no sense (an unknown node, a node already a member, …).
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[(NodeId, u64)]) -> Membership {
        let incs = ids.iter().copied().collect();
        let only: Vec<NodeId> = ids.iter().map(|v| v.0).collect();
        Membership::of_voters(&only, &BTreeMap::new(), &incs)
    }

    #[test]
    fn one_voter_at_a_time() {
        let three = voters(&[(1, 11), (2, 22), (3, 33)]);
        assert!(three.single_change_to(&voters(&[(1, 11), (2, 22)])).is_ok());
        assert!(three
            .single_change_to(&voters(&[(1, 11), (2, 22), (3, 33), (4, 44)]))
            .is_ok());
        assert!(three.single_change_to(&voters(&[(1, 11)])).is_err());
        assert!(three
            .single_change_to(&voters(&[(1, 11), (2, 22), (4, 44)]))
            .is_err());
        assert!(
            three
                .single_change_to(&voters(&[(1, 11), (2, 23), (3, 33)]))
                .is_err(),
            "another data dir for a voter is a removal and an addition"
        );
        assert!(
            voters(&[(1, 0), (2, 22)])
                .single_change_to(&voters(&[(1, 11), (2, 22)]))
                .is_ok(),
            "recording an unrecorded incarnation"
        );
        assert!(three
            .single_change_to(&voters(&[(1, 11), (2, 23), (3, 34)]))
            .is_err());
        assert!(three.single_change_to(&Membership::default()).is_err());
    }

    #[test]
    fn a_new_incarnation_does_not_count_as_the_member() {
        let m = voters(&[(1, 11), (2, 22)]);
        assert!(m.counts(2, 22));
        assert!(!m.counts(2, 99), "a wiped disk is not the voter admitted");
        assert!(!m.counts(3, 33), "not a member");
        let unrecorded = voters(&[(1, 0)]);
        assert!(unrecorded.counts(1, 5), "0 is not recorded: any matches");
    }

    #[test]
    fn entries_round_trip_and_garbage_is_an_error() {
        let m = voters(&[(1, 11), (2, 22)]);
        assert_eq!(Membership::decode(&m.encode()).unwrap(), m);
        assert!(Membership::decode(b"{").is_err());
        assert!(Membership::decode(br#"{"members":[{"id":0,"role":"Voter"}]}"#).is_err());
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            text.starts_with(r#"{"members":[{"id":1,"role":"Voter""#),
            "{text}"
        );
    }
}
