//! The membership requests of client protocol v2 (`MemberList`, `MemberAdd`, `MemberPromote`,
//! `MemberRemove`, `TransferLeader`): checked and handed to the core, then answered once the
//! change is committed (or the transfer done), with every member's state.
//!
//! Requests are idempotent, because a client that timed out retries: asking for a state the
//! configuration already has (adding a member that is there with the same address, removing
//! one that is gone, promoting a voter) waits for that configuration to be committed and
//! answers `Ok`, instead of failing the retry of a change that worked.

use crate::rpc::types::{ClientResponse, ErrorCode, MemberStatus, NodeId, OkResponse, Role};
use raftd_core::{ChangeError, MemberRole, Membership, MembershipChange, Raft};

/// A change proposed at `index` in `term`, answered once that entry is applied.
pub(super) struct PendingChange<R> {
    pub reply: R,
    pub id: u64,
    pub index: u64,
    pub term: u64,
    pub since: u64,
}

/// A transfer to `target`, answered once it leads.
pub(super) struct PendingTransfer<R> {
    pub reply: R,
    pub id: u64,
    pub target: NodeId,
    pub since: u64,
}

/// What a membership request asks of the leader.
pub(super) enum Asked {
    Change(MembershipChange, bool),
    Transfer(Option<NodeId>),
}

/// Whether `m` already is what `change` asks for.
fn already(m: &Membership, change: &MembershipChange) -> bool {
    match change {
        MembershipChange::AddLearner { id, addr, promote } => m.get(*id).is_some_and(|x| {
            x.addr == *addr && (x.role == MemberRole::Voter || !*promote || x.promote)
        }),
        MembershipChange::Promote { id } => m.is_voter(*id),
        MembershipChange::Remove { id } => !m.contains(*id),
    }
}

/// Starts a change: the index whose commit completes it, or the answer to give now.
pub(super) fn start_change(
    raft: &mut Raft,
    change: MembershipChange,
    force: bool,
) -> Result<u64, (ErrorCode, String)> {
    if raft.role() == Role::Leader && already(raft.membership(), &change) {
        return Ok(raft.membership_index().max(raft.log().committed()));
    }
    raft.change_membership(change, force).map_err(refusal)
}

/// How a refused change is answered.
pub(super) fn refusal(e: ChangeError) -> (ErrorCode, String) {
    match e {
        ChangeError::NotLeader { .. } => (ErrorCode::NotLeader, e.to_string()),
        ChangeError::Busy(m) => (ErrorCode::Busy, m),
        ChangeError::Unsafe(m) => (ErrorCode::Unsafe, m),
        ChangeError::Invalid(m) => (ErrorCode::BadRequest, m),
    }
}

/// Every member as the leader sees it (on a follower, without match indexes).
pub(super) fn members(
    raft: &Raft,
    addrs: &std::collections::BTreeMap<NodeId, String>,
) -> Vec<MemberStatus> {
    raft.membership()
        .members
        .iter()
        .map(|(id, m)| {
            let progress = raft.progress(*id);
            let match_index = if *id == raft.id() {
                raft.log().last_index()
            } else {
                progress.map_or(0, |p| p.matched)
            };
            let readmitting = m.role == MemberRole::Voter
                && m.incarnation != 0
                && progress.is_some_and(|p| p.incarnation != 0 && p.incarnation != m.incarnation);
            MemberStatus {
                id: *id,
                // The address the configuration records (what every member was told).
                addr: if m.addr.is_empty() {
                    addrs.get(id).cloned().unwrap_or_default()
                } else {
                    m.addr.clone()
                },
                role: match m.role {
                    MemberRole::Voter => "Voter",
                    MemberRole::Learner => "Learner",
                }
                .to_string(),
                match_index,
                is_leader: raft.leader() == *id,
                promote: m.promote,
                readmitting,
                data_dir: (m.incarnation != 0).then(|| format!("{:016x}", m.incarnation)),
                reachable: (raft.role() == Role::Leader).then(|| raft.reachable(*id)),
            }
        })
        .collect()
}

pub(super) fn ok_members(id: u64, members: Vec<MemberStatus>) -> ClientResponse {
    ClientResponse::Ok(OkResponse {
        members: Some(members),
        ..OkResponse::bare(id)
    })
}

pub(super) fn ok_leader(id: u64, leader: NodeId) -> ClientResponse {
    ClientResponse::Ok(OkResponse {
        leader_id: Some(leader),
        ..OkResponse::bare(id)
    })
}
