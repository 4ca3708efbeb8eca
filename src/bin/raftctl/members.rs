//! `raftctl member list|add|promote|remove` and `raftctl leader transfer`.

use clap::Subcommand;
use raftd::client::{Client, ClientError};
use raftd::rpc::types::{MemberStatus, NodeId};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Every member: id, address, role, how far its log is, who leads.
    List,
    /// Add node ID listening at ADDR. A voter is added as a learner first and promoted by the
    /// leader once it has caught up; start it with `raftd --id ID --listen ADDR --join …`.
    Add {
        id: NodeId,
        addr: String,
        /// Add it as a learner only (it receives the log but never votes).
        #[arg(long)]
        learner: bool,
        /// Skip the safety check (a quorum of live voters must remain).
        #[arg(long)]
        force: bool,
    },
    /// Make learner ID a voter (refused until it has caught up, unless forced).
    Promote {
        id: NodeId,
        #[arg(long)]
        force: bool,
    },
    /// Remove node ID (then stop it).
    Remove {
        id: NodeId,
        /// Remove it even if the voters left alive would not make a quorum.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeaderCmd {
    /// Hand leadership to ID (default: the most up-to-date voter).
    Transfer { id: Option<NodeId> },
}

/// What a command printed: JSON, text, exit status.
pub type Shown = (serde_json::Value, String, u8);

pub async fn member(client: &mut Client, cmd: MemberCmd) -> Result<Shown, ClientError> {
    let (members, what) = match cmd {
        MemberCmd::List => (client.member_list().await?, String::new()),
        MemberCmd::Add {
            id,
            addr,
            learner,
            force,
        } => {
            let m = client.member_add(id, &addr, learner, force).await?;
            let what = if learner {
                format!("added node {id} ({addr}) as a learner")
            } else {
                format!(
                    "added node {id} ({addr}); it is a learner until it has caught up, then the leader makes it a voter"
                )
            };
            (m, what)
        }
        MemberCmd::Promote { id, force } => (
            client.member_promote(id, force).await?,
            format!("node {id} is a voter"),
        ),
        MemberCmd::Remove { id, force } => (
            client.member_remove(id, force).await?,
            format!("removed node {id}; stop its process now"),
        ),
    };
    let mut text = table(&members);
    if !what.is_empty() {
        text = format!("{what}\n{text}");
    }
    Ok((json!({ "members": members }), text, 0))
}

pub async fn leader(client: &mut Client, cmd: LeaderCmd) -> Result<Shown, ClientError> {
    let LeaderCmd::Transfer { id } = cmd;
    let leader = client.transfer_leader(id).await?;
    Ok((
        json!({ "leader_id": leader }),
        format!("node {leader} leads"),
        0,
    ))
}

/// The members as a table, one line each.
pub fn table(members: &[MemberStatus]) -> String {
    let mut out = vec![format!(
        "{:<4} {:<22} {:<8} {:>10}  {}",
        "ID", "ADDRESS", "ROLE", "MATCH", "NOTE"
    )];
    for m in members {
        let mut note = Vec::new();
        if m.is_leader {
            note.push("leader");
        }
        if m.promote {
            note.push("promoted once caught up");
        }
        if m.readmitting {
            note.push("lost its disk; re-admitted once caught up");
        }
        if m.reachable == Some(false) {
            note.push("not answering the leader");
        }
        out.push(format!(
            "{:<4} {:<22} {:<8} {:>10}  {}",
            m.id,
            m.addr,
            m.role,
            m.match_index,
            note.join(", ")
        ));
    }
    out.join("\n")
}
