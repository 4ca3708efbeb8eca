//! Messages that no correct member could send, refused before they touch anything.
//!
//! A leader's AppendEntries always carries entries that chain (consecutive indexes from
//! `prev + 1`, terms that never decrease and never pass the message's term), it never
//! contradicts an entry this node knows is committed (Leader Completeness, §5.4), and there is
//! never a second leader in one term (Election Safety, §5.2), whether this node leads that term
//! or follows another leader in it. Nor does any member send a term or index near `u64::MAX`
//! (every `+ 1` would overflow), a snapshot whose last term is 0 or after its own term or that
//! is larger than this node assembles, or a reply claiming what its leader never sent (a match
//! or a rejected entry past the log, a snapshot past it, a ReadIndex round not begun); a
//! snapshot the application cannot load is refused once complete (`SnapshotCheck`). A message
//! that breaks one of
//! these comes from a broken node or from someone who is not a member at all. Acting on it
//! would destroy committed data (or, as this code did before, stop the node on an assertion),
//! so it is refused whole: no term, vote, log or timer changes, and an error is logged the
//! first time a sender does it. Panics stay for the invariants only this node's own code could
//! break (`follow` and `RaftLog::merge` still assert what this check guarantees).

use crate::config::MAX_TERM_OR_INDEX;
use crate::message::{Entry, EntryKind, Envelope, RaftMessage, Role};
use crate::Raft;

impl Raft {
    /// Why `env` must be refused, if it must.
    pub(super) fn invalid(&self, env: &Envelope) -> Option<String> {
        let term = env.msg.term();
        if term > MAX_TERM_OR_INDEX {
            return Some(format!("its term {term} is beyond any a cluster reaches"));
        }
        if let Some(why) = self
            .second_leader(env)
            .or_else(|| self.impossible_reply(env))
        {
            return Some(why);
        }
        match &env.msg {
            RaftMessage::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } => {
                if *term == self.term && self.role == Role::Leader {
                    return Some(format!(
                        "it acts as leader of term {term}, which this node leads"
                    ));
                }
                chain_error(*term, *prev_log_index, *prev_log_term, entries).or_else(|| {
                    // A stale leader's log may differ from what later leaders committed; the
                    // term check rejects its message anyway. A leader of our term or a later
                    // one holds every entry we committed (Leader Completeness).
                    if *term >= self.term {
                        self.contradicts_committed(*prev_log_index, *prev_log_term, entries)
                    } else {
                        None
                    }
                })
            }
            RaftMessage::InstallSnapshot { term, .. }
                if *term == self.term && self.role == Role::Leader =>
            {
                Some(format!(
                    "it sends a snapshot as leader of term {term}, which this node leads"
                ))
            }
            RaftMessage::InstallSnapshot {
                term,
                snapshot,
                pos,
                ..
            } => {
                if snapshot.term > *term || (snapshot.term == 0) != (snapshot.index == 0) {
                    Some(format!(
                        "its snapshot's term {} at index {} cannot come from a leader of term {term}",
                        snapshot.term, snapshot.index
                    ))
                } else if snapshot.index > MAX_TERM_OR_INDEX {
                    Some(format!(
                        "its snapshot index {} is beyond any a log reaches",
                        snapshot.index
                    ))
                } else if pos.total > self.cfg.max_snapshot_bytes {
                    Some(format!(
                        "its snapshot of {} bytes is over this node's limit of {} bytes",
                        pos.total, self.cfg.max_snapshot_bytes
                    ))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// A leader's message in our term from another node than the leader we follow: Election
    /// Safety (§5.2) allows one leader per term.
    fn second_leader(&self, env: &Envelope) -> Option<String> {
        let leads = matches!(
            env.msg,
            RaftMessage::AppendEntries { .. } | RaftMessage::InstallSnapshot { .. }
        );
        let term = env.msg.term();
        (leads
            && term == self.term
            && self.role == Role::Follower
            && self.leader != 0
            && env.from != self.leader)
            .then(|| {
                format!(
                    "it acts as leader of term {term}, in which this node follows node {}",
                    self.leader
                )
            })
    }

    /// A reply to this leader that claims what it was never sent: a match past the log, a
    /// rejected previous entry past the log, a read round not begun.
    fn impossible_reply(&self, env: &Envelope) -> Option<String> {
        if self.role != Role::Leader || env.msg.term() != self.term {
            return None;
        }
        let last = self.log.last_index();
        match &env.msg {
            RaftMessage::AppendEntriesReply {
                match_index,
                read_round,
                ..
            } => {
                if *match_index > last {
                    Some(format!(
                        "it answers about index {match_index}, past this leader's last index {last}"
                    ))
                } else if *read_round > self.read_only.round {
                    Some(format!(
                        "it confirms read round {read_round}, which this leader has not begun (latest {})",
                        self.read_only.round
                    ))
                } else {
                    None
                }
            }
            RaftMessage::InstallSnapshotReply { snapshot, .. } if snapshot.index > last => {
                Some(format!(
                    "it acknowledges a snapshot at index {}, past this leader's last index {last}",
                    snapshot.index
                ))
            }
            _ => None,
        }
    }

    /// An entry (or the previous entry) at or below our commit index whose term differs from
    /// ours: a leader of any later term holds every committed entry, so this is no leader.
    fn contradicts_committed(
        &self,
        prev: u64,
        prev_term: u64,
        entries: &[Entry],
    ) -> Option<String> {
        let committed = self.log.committed();
        let snapshot = self.log.snapshot().index;
        // Term 0 names no entry (a leader sends it for a previous entry it has compacted away),
        // so a previous entry "of term 0" claims nothing.
        let prev_claim = (prev_term != 0).then_some((prev, prev_term));
        let claims = prev_claim
            .into_iter()
            .chain(entries.iter().map(|e| (e.index, e.term)))
            // Index 0 is the empty prefix; entries the snapshot covers are not held to compare.
            .filter(|&(index, _)| index > snapshot && index <= committed);
        for (index, term) in claims {
            match self.log.term(index) {
                Some(ours) if ours != term => {
                    return Some(format!(
                        "it claims term {term} at index {index}, where this node committed an entry of term {ours}"
                    ))
                }
                _ => {}
            }
        }
        None
    }

    /// Records a refused message from `from` and says so (at error level the first time).
    pub(super) fn refuse(&mut self, env: &Envelope, why: &str) {
        self.last_refusal = Some(format!("{env}: {why}"));
        self.note_refusal(env.from, env.msg.kind(), env.msg.term(), why);
    }

    /// Like `refuse`, for a message already taken apart (a snapshot found bad once complete).
    pub(super) fn refuse_from(&mut self, from: u64, kind: &str, term: u64, why: &str) {
        self.last_refusal = Some(format!("{kind} from node {from} in term {term}: {why}"));
        self.note_refusal(from, kind, term, why);
    }

    fn note_refusal(&mut self, from: u64, kind: &str, term: u64, why: &str) {
        self.refused_messages += 1;
        if self.refused_senders.insert(from) {
            ::log::error!(
                "node {}: refusing {kind} from node {from} in term {term}: {why}; no correct member sends this (a broken node, or someone who is not a member). Its messages are dropped and its connection closed; this node keeps its term, log and data",
                self.id,
            );
        } else {
            ::log::debug!("node {}: refusing {kind} from node {from}: {why}", self.id);
        }
    }

    /// Messages this node refused as impossible from a correct member (in a cluster of correct
    /// members this stays 0; the simulation checks that it does).
    pub fn refused_messages(&self) -> u64 {
        self.refused_messages
    }

    /// The last refused message and why it was refused.
    pub fn last_refusal(&self) -> Option<&str> {
        self.last_refusal.as_deref()
    }
}

/// Entries that do not chain after (`prev`, `prev_term`) in a message of `term`.
fn chain_error(term: u64, prev: u64, prev_term: u64, entries: &[Entry]) -> Option<String> {
    if prev_term > term {
        return Some(format!(
            "its previous entry's term {prev_term} is above its own term {term}"
        ));
    }
    let (mut index, mut last_term) = (prev, prev_term);
    for e in entries {
        if index.checked_add(1) != Some(e.index) {
            return Some(format!(
                "its entries do not chain: index {} follows index {index}",
                e.index
            ));
        }
        if e.term < last_term || e.term > term {
            return Some(format!(
                "its entry at index {} has term {}, outside {last_term}..={term}",
                e.index, e.term
            ));
        }
        if e.kind == EntryKind::Config {
            if let Err(why) = crate::Membership::decode(&e.data) {
                return Some(format!("its configuration at index {}: {why}", e.index));
            }
        }
        index = e.index;
        last_term = e.term;
    }
    None
}
