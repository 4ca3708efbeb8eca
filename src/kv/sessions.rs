//! Client sessions: remember each client's recent outcomes so a retried write is applied at
//! most once and answered with its first outcome (Raft thesis §6.3).
//!
//! Memory is bounded two ways, both decided only by the sequence of applied commands, so every
//! node keeps and forgets exactly the same sessions:
//! * per client, the outcomes of its `MAX_RESULTS_PER_CLIENT` highest seqs;
//! * at most `max_sessions` clients; beyond that, the client whose last command is oldest in
//!   the log is forgotten.

use super::command::Outcome;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

pub const MAX_RESULTS_PER_CLIENT: usize = 256;

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
struct Session {
    /// seq -> outcome, for the newest seqs. A persistent map like the others, so the first
    /// write of a client after a snapshot copies a path, not the client's whole history.
    results: OrdMap<u64, Outcome>,
    /// Every seq at or below this was applied (or is older than anything kept).
    floor: u64,
    /// Log index of this client's latest command.
    last_index: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    max_sessions: usize,
    by_client: OrdMap<String, Session>,
    /// (last_index, client) for least-recently-used eviction.
    lru: OrdSet<(u64, String)>,
}

/// What the sessions say about a command about to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// New: apply it.
    Fresh,
    /// Applied before: answer with this outcome and change nothing.
    Duplicate(Outcome),
}

impl Sessions {
    pub fn new(max_sessions: usize) -> Sessions {
        Sessions {
            max_sessions: max_sessions.max(1),
            by_client: OrdMap::new(),
            lru: OrdSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    pub fn check(&self, client: &str, seq: u64) -> Check {
        let Some(session) = self.by_client.get(client) else {
            return Check::Fresh;
        };
        if let Some(outcome) = session.results.get(&seq) {
            return Check::Duplicate(outcome.clone());
        }
        if seq <= session.floor {
            return Check::Duplicate(Outcome::Forgotten);
        }
        Check::Fresh
    }

    /// Records the outcome of a fresh command applied at log index `index`.
    pub fn record(&mut self, client: &str, seq: u64, index: u64, outcome: Outcome) {
        // Look up before inserting: the key is allocated only for a new client.
        if !self.by_client.contains_key(client) {
            self.by_client
                .insert(client.to_string(), Session::default());
        }
        let Some(session) = self.by_client.get_mut(client) else {
            return;
        };
        if session.last_index != 0 {
            self.lru.remove(&(session.last_index, client.to_string()));
        }
        session.last_index = index;
        session.results.insert(seq, outcome);
        while session.results.len() > MAX_RESULTS_PER_CLIENT {
            let Some(oldest) = session.results.get_min().map(|(seq, _)| *seq) else {
                break;
            };
            session.results.remove(&oldest);
            session.floor = session.floor.max(oldest);
        }
        self.lru.insert((index, client.to_string()));
        while self.by_client.len() > self.max_sessions {
            let Some((_, evicted)) = self.lru.remove_min() else {
                break;
            };
            self.by_client.remove(&evicted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_gets_the_first_outcome() {
        let mut s = Sessions::new(10);
        assert_eq!(s.check("a", 1), Check::Fresh);
        s.record(
            "a",
            1,
            5,
            Outcome::Cas {
                succeeded: true,
                value: Some("x".into()),
            },
        );
        assert_eq!(
            s.check("a", 1),
            Check::Duplicate(Outcome::Cas {
                succeeded: true,
                value: Some("x".into())
            })
        );
        assert_eq!(s.check("a", 2), Check::Fresh);
        assert_eq!(s.check("b", 1), Check::Fresh);
    }

    #[test]
    fn per_client_memory_is_bounded_and_old_seqs_are_not_reapplied() {
        let mut s = Sessions::new(10);
        for seq in 1..=(MAX_RESULTS_PER_CLIENT as u64 + 10) {
            s.record("a", seq, seq, Outcome::Done);
        }
        assert_eq!(s.check("a", 3), Check::Duplicate(Outcome::Forgotten));
        assert_eq!(
            s.check("a", MAX_RESULTS_PER_CLIENT as u64 + 10),
            Check::Duplicate(Outcome::Done)
        );
    }

    #[test]
    fn least_recently_used_client_is_evicted_deterministically() {
        let mut s = Sessions::new(2);
        s.record("a", 1, 1, Outcome::Done);
        s.record("b", 1, 2, Outcome::Done);
        s.record("a", 2, 3, Outcome::Done);
        s.record("c", 1, 4, Outcome::Done); // b is the oldest now
        assert_eq!(s.len(), 2);
        assert_eq!(s.check("b", 1), Check::Fresh, "b's session was evicted");
        assert_eq!(s.check("a", 2), Check::Duplicate(Outcome::Done));
    }
}
