//! The leader's clock for leases: when each lease runs out, by this node's monotonic clock,
//! while it leads. Nothing here is replicated: a new leader starts every lease's clock afresh
//! with its full ttl (it cannot know when the last keep-alive reached the old leader), so a
//! lease never expires early because leadership moved. Expiry itself goes through the log.

use super::leases::Leases;
use std::collections::BTreeMap;

/// How long a revocation proposed for an expired lease may stay unapplied before it is
/// proposed again (it may have been lost with a leader change).
const REPROPOSE_AFTER_MS: u64 = 2_000;

#[derive(Debug, Default)]
pub struct LeaseClock {
    /// The term the deadlines were set in (0: not leading).
    term: u64,
    /// Lease -> when it runs out (ms of the node's clock).
    deadlines: BTreeMap<u64, u64>,
    /// Leases whose revocation was proposed, and when.
    revoking: BTreeMap<u64, u64>,
}

impl LeaseClock {
    /// This node does not lead: forget every deadline (the next leader sets its own).
    pub fn not_leading(&mut self) {
        if self.term != 0 {
            self.term = 0;
            self.deadlines.clear();
            self.revoking.clear();
        }
    }

    /// A keep-alive for `lease`, of `ttl` seconds, arrived at `now`.
    pub fn keep_alive(&mut self, lease: u64, ttl: u64, now: u64) {
        if !self.revoking.contains_key(&lease) {
            self.deadlines
                .insert(lease, now.saturating_add(ttl.saturating_mul(1000)));
        }
    }

    /// The leases that ran out by `now`, whose revocation is to be proposed. `leases` is the
    /// applied state; `term` the leader's.
    pub fn due(&mut self, term: u64, now: u64, leases: &Leases) -> Vec<u64> {
        if term != self.term {
            // Newly elected: every lease gets its full ttl from now.
            self.term = term;
            self.deadlines.clear();
            self.revoking.clear();
        }
        let mut due = Vec::new();
        for (id, ttl) in leases.ttls() {
            let ttl_ms = ttl.saturating_mul(1000);
            let deadline = self.deadlines.entry(id).or_insert(now + ttl_ms);
            if now < *deadline {
                continue;
            }
            match self.revoking.get(&id) {
                Some(at) if now < at + REPROPOSE_AFTER_MS => {}
                _ => due.push(id),
            }
        }
        // Leases revoked (applied) are gone from `leases`: forget them.
        self.deadlines.retain(|id, _| leases.contains(*id));
        self.revoking.retain(|id, _| leases.contains(*id));
        due
    }

    pub fn revoking(&mut self, lease: u64, now: u64) {
        self.revoking.insert(lease, now);
    }

    pub fn is_revoking(&self, lease: u64) -> bool {
        self.revoking.contains_key(&lease)
    }

    /// What is left of the lease's ttl at `now`, if its clock runs here.
    pub fn remaining_ms(&self, lease: u64, now: u64) -> Option<u64> {
        Some(self.deadlines.get(&lease)?.saturating_sub(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_after_its_ttl_and_a_keep_alive_restarts_it() {
        let mut leases = Leases::default();
        let (id, _) = leases.grant(5);
        let mut c = LeaseClock::default();
        assert!(c.due(1, 0, &leases).is_empty());
        assert!(c.due(1, 4_000, &leases).is_empty());
        c.keep_alive(id, 5, 4_000);
        assert!(c.due(1, 8_999, &leases).is_empty(), "kept alive at 4 s");
        assert_eq!(c.remaining_ms(id, 8_000), Some(1_000));
        assert_eq!(c.due(1, 9_000, &leases), vec![id]);
        c.revoking(id, 9_000);
        assert!(c.due(1, 9_500, &leases).is_empty(), "proposed once");
        assert_eq!(c.due(1, 11_000, &leases), vec![id], "proposed again later");
    }

    #[test]
    fn a_new_leader_gives_every_lease_its_full_ttl() {
        let mut leases = Leases::default();
        let (id, _) = leases.grant(5);
        let mut c = LeaseClock::default();
        assert!(c.due(1, 0, &leases).is_empty());
        // Deposed at 4 s, elected again in term 3 at 6 s: not due before 11 s.
        c.not_leading();
        assert!(c.due(3, 6_000, &leases).is_empty());
        assert!(c.due(3, 10_999, &leases).is_empty());
        assert_eq!(c.due(3, 11_000, &leases), vec![id]);
    }
}
