//! Client sessions: remember each client's recent outcomes so a retried write is applied at
//! most once and answered with its first outcome (Raft thesis §6.3), and say
//! `SessionExpired` to a retry older than what is remembered instead of applying it again.
//!
//! Every decision here depends only on the sequence of applied commands (their log index and
//! the leader's clock stamped into them), so every node keeps and forgets exactly the same
//! sessions. Memory is bounded three ways:
//! * per client, the outcomes of its `MAX_RESULTS_PER_CLIENT` highest seqs; an older seq is
//!   below the client's `floor` and gets `SessionExpired`;
//! * by age: a session idle for longer than `ttl_ms` of log time is expired;
//! * by count: at most `max_sessions` clients. Beyond that one is expired, chosen as a
//!   segmented LRU does: first the least recently used of the clients that wrote only once
//!   (a burst of short-lived clients replaces each other), and only when there are none of
//!   those, the least recently used of the clients that wrote more than once. So a client that
//!   has been idle for an hour keeps its session through a burst of one-shot clients.
//!
//! An expired client leaves a tombstone (a 64-bit hash of its id) behind, and the last
//! `max_tombstones` of them are kept. A write from a client that has no session but a
//! tombstone may be a retry of something applied before the session expired, so it gets
//! `SessionExpired` and changes nothing; a session is opened for it at once, with a floor at
//! that seq, so the client's next seq is served normally. Only a client forgotten twice over
//! (no session and no tombstone) is taken for a new one.

use super::command::Outcome;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

pub const MAX_RESULTS_PER_CLIENT: usize = 256;

/// How long, in log time, an idle session is kept: a day.
pub const DEFAULT_SESSION_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// How many sessions, tombstones and how long they live. Every node of a cluster must use the
/// same limits (they decide what the state machine does), so they are not per-node flags.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub max_sessions: usize,
    pub ttl_ms: u64,
    pub max_tombstones: usize,
}

impl SessionLimits {
    /// `max_sessions` clients, the default ttl, and ten tombstones per session.
    pub fn with_max_sessions(max_sessions: usize) -> SessionLimits {
        let max_sessions = max_sessions.max(1);
        SessionLimits {
            max_sessions,
            ttl_ms: DEFAULT_SESSION_TTL_MS,
            max_tombstones: max_sessions.saturating_mul(10),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
struct Session {
    /// seq -> outcome, for the newest seqs. A persistent map like the others, so the first
    /// write of a client after a snapshot copies a path, not the client's whole history.
    results: OrdMap<u64, Outcome>,
    /// Every seq at or below this was applied (or is older than anything kept).
    floor: u64,
    /// Log index of this client's latest command.
    last_index: u64,
    /// Log time (ms) of this client's latest command.
    #[serde(default)]
    last_ms: u64,
    /// Wrote more than once: in the protected segment of the LRU.
    #[serde(default)]
    protected: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    #[serde(
        default = "default_limits",
        alias = "max_sessions",
        with = "limits_compat"
    )]
    limits: SessionLimits,
    by_client: OrdMap<String, Session>,
    /// (last_index, client) of the clients that wrote once (the probation segment).
    lru: OrdSet<(u64, String)>,
    /// (last_index, client) of the clients that wrote more than once.
    #[serde(default)]
    protected: OrdSet<(u64, String)>,
    /// Tombstones: hash of an expired client's id -> log index at which it expired.
    #[serde(default)]
    tombstones: OrdMap<u64, u64>,
    /// (expired at, hash), oldest first, to drop the oldest tombstone.
    #[serde(default)]
    tombstone_order: OrdSet<(u64, u64)>,
    /// The log's clock: the highest leader timestamp applied so far (ms since the epoch).
    #[serde(default)]
    clock_ms: u64,
    /// The first timestamp applied (sessions older than the clock count their age from it).
    #[serde(default)]
    clock_started_ms: u64,
}

fn default_limits() -> SessionLimits {
    SessionLimits::with_max_sessions(super::store::DEFAULT_MAX_SESSIONS)
}

/// Snapshots written before session limits existed hold a bare `max_sessions` number.
mod limits_compat {
    use super::SessionLimits;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Limits(SessionLimits),
        Count(usize),
    }

    pub fn serialize<S: Serializer>(l: &SessionLimits, s: S) -> Result<S::Ok, S::Error> {
        l.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SessionLimits, D::Error> {
        Ok(match Either::deserialize(d)? {
            Either::Limits(l) => l,
            Either::Count(n) => SessionLimits::with_max_sessions(n),
        })
    }
}

/// What the sessions say about a command about to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// New: apply it.
    Fresh,
    /// Applied before: answer with this outcome and change nothing.
    Duplicate(Outcome),
    /// Maybe applied before, but the cluster no longer remembers: change nothing and answer
    /// `SessionExpired`. Call `mark_expired` so the client's next seq is served.
    Expired,
}

/// A stable 64-bit hash of a client id (FNV-1a): the same on every node and every build, as
/// tombstones are part of the replicated state.
fn client_hash(client: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            limits: SessionLimits {
                max_sessions: limits.max_sessions.max(1),
                ..limits
            },
            by_client: OrdMap::new(),
            lru: OrdSet::new(),
            protected: OrdSet::new(),
            tombstones: OrdMap::new(),
            tombstone_order: OrdSet::new(),
            clock_ms: 0,
            clock_started_ms: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// The log's clock (ms): the highest leader timestamp applied.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    pub fn check(&self, client: &str, seq: u64) -> Check {
        let Some(session) = self.by_client.get(client) else {
            if self.tombstones.contains_key(&client_hash(client)) {
                return Check::Expired;
            }
            return Check::Fresh;
        };
        if let Some(outcome) = session.results.get(&seq) {
            return Check::Duplicate(outcome.clone());
        }
        if seq <= session.floor {
            return Check::Expired;
        }
        Check::Fresh
    }

    /// Advances the log's clock to a command's timestamp (it never goes back, whatever the
    /// leaders' clocks say) and expires the sessions idle for longer than the ttl.
    pub fn advance_clock(&mut self, at_ms: u64, index: u64) {
        if at_ms <= self.clock_ms {
            return;
        }
        if self.clock_started_ms == 0 {
            self.clock_started_ms = at_ms;
        }
        self.clock_ms = at_ms;
        let horizon = self.clock_ms.saturating_sub(self.limits.ttl_ms);
        // The oldest session of either segment (looked at without copying its id: this runs
        // for nearly every command, and usually finds nothing to expire).
        while let Some((_, client)) = [self.lru.get_min(), self.protected.get_min()]
            .into_iter()
            .flatten()
            .min()
        {
            // Sessions from before the log had a clock count from when it started.
            let idle_since = self
                .by_client
                .get(client)
                .map_or(0, |s| s.last_ms)
                .max(self.clock_started_ms);
            if idle_since >= horizon {
                break;
            }
            let client = client.clone();
            self.expire(&client, index);
        }
    }

    /// A write from `client` at `seq` got `SessionExpired`: open a session whose floor is `seq`
    /// (so this seq and older ones stay expired, newer ones are served) and drop the tombstone.
    pub fn mark_expired(&mut self, client: &str, seq: u64, index: u64) {
        let hash = client_hash(client);
        if let Some(at) = self.tombstones.remove(&hash) {
            self.tombstone_order.remove(&(at, hash));
        }
        self.touch(client, index);
        if let Some(session) = self.by_client.get_mut(client) {
            session.floor = session.floor.max(seq);
        }
        self.enforce_count(index);
    }

    /// Records the outcome of a fresh command applied at log index `index`.
    pub fn record(&mut self, client: &str, seq: u64, index: u64, outcome: Outcome) {
        self.touch(client, index);
        if let Some(session) = self.by_client.get_mut(client) {
            session.results.insert(seq, outcome);
            while session.results.len() > MAX_RESULTS_PER_CLIENT {
                let Some(oldest) = session.results.get_min().map(|(seq, _)| *seq) else {
                    break;
                };
                session.results.remove(&oldest);
                session.floor = session.floor.max(oldest);
            }
        }
        self.enforce_count(index);
    }

    /// Makes `client`'s session the most recently used (creating it, or moving it to the
    /// protected segment on its second write).
    fn touch(&mut self, client: &str, index: u64) {
        let clock = self.clock_ms;
        // Look up before inserting: the key is allocated only for a new client.
        let Some(session) = self.by_client.get_mut(client) else {
            self.by_client.insert(
                client.to_string(),
                Session {
                    last_index: index,
                    last_ms: clock,
                    ..Session::default()
                },
            );
            self.lru.insert((index, client.to_string()));
            return;
        };
        let key = (session.last_index, client.to_string());
        if session.protected {
            self.protected.remove(&key);
        } else {
            self.lru.remove(&key);
        }
        session.protected = true;
        session.last_index = index;
        session.last_ms = clock;
        self.protected.insert((index, client.to_string()));
    }

    fn enforce_count(&mut self, index: u64) {
        while self.by_client.len() > self.limits.max_sessions {
            let victim = self
                .lru
                .get_min()
                .or_else(|| self.protected.get_min())
                .map(|(_, c)| c.clone());
            let Some(client) = victim else { break };
            self.expire(&client, index);
        }
    }

    /// Forgets `client`'s session, leaving a tombstone.
    fn expire(&mut self, client: &str, index: u64) {
        let Some(session) = self.by_client.remove(client) else {
            return;
        };
        let key = (session.last_index, client.to_string());
        self.lru.remove(&key);
        self.protected.remove(&key);
        let hash = client_hash(client);
        if let Some(at) = self.tombstones.insert(hash, index) {
            self.tombstone_order.remove(&(at, hash));
        }
        self.tombstone_order.insert((index, hash));
        while self.tombstones.len() > self.limits.max_tombstones {
            let Some((_, oldest)) = self.tombstone_order.remove_min() else {
                break;
            };
            self.tombstones.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_sessions: usize) -> SessionLimits {
        SessionLimits::with_max_sessions(max_sessions)
    }

    #[test]
    fn a_retry_gets_the_first_outcome() {
        let mut s = Sessions::new(limits(10));
        assert_eq!(s.check("a", 1), Check::Fresh);
        s.record(
            "a",
            1,
            5,
            Outcome::Cas {
                succeeded: true,
                value: Some("x".into()),
                revision: 1,
            },
        );
        assert_eq!(
            s.check("a", 1),
            Check::Duplicate(Outcome::Cas {
                succeeded: true,
                value: Some("x".into()),
                revision: 1
            })
        );
        assert_eq!(s.check("a", 2), Check::Fresh);
        assert_eq!(s.check("b", 1), Check::Fresh);
    }

    #[test]
    fn per_client_memory_is_bounded_and_old_seqs_are_expired_not_reapplied() {
        let mut s = Sessions::new(limits(10));
        for seq in 1..=(MAX_RESULTS_PER_CLIENT as u64 + 10) {
            s.record("a", seq, seq, Outcome::Done);
        }
        assert_eq!(s.check("a", 3), Check::Expired);
        assert_eq!(
            s.check("a", MAX_RESULTS_PER_CLIENT as u64 + 10),
            Check::Duplicate(Outcome::Done)
        );
    }

    #[test]
    fn an_evicted_client_retrying_is_expired_not_fresh() {
        // The issue's case: one write, its answer lost, then more clients than the table
        // holds, then the retry.
        let mut s = Sessions::new(limits(100));
        s.record("victim", 1, 1, Outcome::Done);
        for i in 0..120u64 {
            s.record(&format!("c{i}"), 1, 2 + i, Outcome::Done);
        }
        assert_eq!(s.len(), 100);
        assert_eq!(s.check("victim", 1), Check::Expired);
        // Answered SessionExpired once; its next seq is served, the old one stays expired.
        s.mark_expired("victim", 1, 200);
        assert_eq!(s.check("victim", 1), Check::Expired);
        assert_eq!(s.check("victim", 2), Check::Fresh);
    }

    #[test]
    fn a_client_idle_for_an_hour_survives_a_burst_of_one_shot_clients() {
        let mut s = Sessions::new(limits(100));
        s.advance_clock(1_000, 1);
        s.record("steady", 1, 1, Outcome::Done);
        s.record("steady", 2, 2, Outcome::Done);
        // An hour later, a burst of 1,000 clients that write once each.
        s.advance_clock(1_000 + 3_600_000, 3);
        for i in 0..1_000u64 {
            s.record(&format!("burst{i}"), 1, 3 + i, Outcome::Done);
        }
        assert_eq!(s.len(), 100);
        assert_eq!(s.check("steady", 2), Check::Duplicate(Outcome::Done));
        assert_eq!(s.check("steady", 3), Check::Fresh);
        assert_eq!(s.check("burst0", 1), Check::Expired);
    }

    #[test]
    fn sessions_expire_by_log_time_and_leave_a_tombstone() {
        let mut s = Sessions::new(limits(100));
        s.advance_clock(10_000, 1);
        s.record("a", 1, 1, Outcome::Done);
        s.advance_clock(10_000 + DEFAULT_SESSION_TTL_MS - 1, 2);
        assert_eq!(s.check("a", 1), Check::Duplicate(Outcome::Done));
        // A clock that goes back (a new leader's slower clock) changes nothing.
        s.advance_clock(5, 3);
        assert_eq!(s.clock_ms(), 10_000 + DEFAULT_SESSION_TTL_MS - 1);
        s.advance_clock(10_000 + DEFAULT_SESSION_TTL_MS + 1, 4);
        assert_eq!(s.len(), 0);
        assert_eq!(s.check("a", 1), Check::Expired);
        assert_eq!(s.tombstones(), 1);
    }

    #[test]
    fn tombstones_are_bounded_oldest_first() {
        let mut s = Sessions::new(SessionLimits {
            max_sessions: 1,
            ttl_ms: DEFAULT_SESSION_TTL_MS,
            max_tombstones: 3,
        });
        for i in 0..6u64 {
            s.record(&format!("c{i}"), 1, i + 1, Outcome::Done);
        }
        // c5 holds the one session; c2, c3, c4 the tombstones; c0 and c1 are forgotten.
        assert_eq!(s.tombstones(), 3);
        assert_eq!(s.check("c4", 1), Check::Expired);
        assert_eq!(s.check("c2", 1), Check::Expired);
        assert_eq!(s.check("c1", 1), Check::Fresh);
    }

    #[test]
    fn least_recently_used_one_shot_client_is_evicted_first() {
        let mut s = Sessions::new(limits(2));
        s.record("a", 1, 1, Outcome::Done);
        s.record("b", 1, 2, Outcome::Done);
        s.record("a", 2, 3, Outcome::Done);
        s.record("c", 1, 4, Outcome::Done); // b is the oldest one-shot client
        assert_eq!(s.len(), 2);
        assert_eq!(s.check("b", 1), Check::Expired, "b's session was evicted");
        assert_eq!(s.check("a", 2), Check::Duplicate(Outcome::Done));
    }

    #[test]
    fn the_hash_is_stable() {
        // Tombstones are replicated state: the hash must never change between builds.
        assert_eq!(client_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(client_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn old_snapshots_with_a_bare_session_count_still_load() {
        let old = r#"{"max_sessions":7,"by_client":{},"lru":[]}"#;
        let s: Sessions = serde_json::from_str(old).expect("old format");
        assert_eq!(s.limits().max_sessions, 7);
    }
}
