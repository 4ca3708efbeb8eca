//! Messages that no correct member could send, refused before they touch anything.
//!
//! A leader's AppendEntries always carries entries that chain (consecutive indexes from
//! `prev + 1`, terms that never decrease and never pass the message's term), it never
//! contradicts an entry this node knows is committed (Leader Completeness, §5.4), and there is
//! never a second leader in one term (Election Safety, §5.2). A message that breaks one of
//! these comes from a broken node or from someone who is not a member at all. Acting on it
//! would destroy committed data (or, as this code did before, stop the node on an assertion),
//! so it is refused whole: no term, vote, log or timer changes, and an error is logged the
//! first time a sender does it. Panics stay for the invariants only this node's own code could
//! break (`follow` and `RaftLog::merge` still assert what this check guarantees).

use crate::message::{Entry, Envelope, RaftMessage, Role};
use crate::Raft;

impl Raft {
    /// Why `env` must be refused, if it must.
    pub(super) fn invalid(&self, env: &Envelope) -> Option<String> {
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
        self.refused_messages += 1;
        self.last_refusal = Some(format!("{env}: {why}"));
        let from = env.from;
        if self.refused_senders.insert(from) {
            ::log::error!(
                "node {}: refusing {} from node {from} in term {}: {why}; no correct member sends this (a broken node, or someone who is not a member). Its messages are dropped; this node keeps its term, log and data",
                self.id,
                env.msg.kind(),
                env.msg.term()
            );
        } else {
            ::log::debug!(
                "node {}: refusing {} from node {from}: {why}",
                self.id,
                env.msg.kind()
            );
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
        index = e.index;
        last_term = e.term;
    }
    None
}
