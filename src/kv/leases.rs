//! The leases of the replicated state: which exist, their ttl, and which keys each holds.
//!
//! Only what every node must agree on lives here. When a lease expires is the leader's
//! business (`service.rs`, `LeaseClock`): it proposes the revocation through the log, so every
//! node deletes the lease's keys at the same index and revision.

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

/// The shortest ttl granted, in seconds: a shorter one is raised to it. A lease must outlive a
/// leader change (an election timeout and a keep-alive's round trip) with room to spare.
pub const MIN_TTL_SECS: u64 = 2;

/// The longest ttl granted: a year.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    pub ttl: u64,
    pub keys: OrdSet<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Leases {
    /// The id the next grant gets: ids are never reused.
    next_id: u64,
    leases: OrdMap<u64, Lease>,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            next_id: 1,
            leases: OrdMap::new(),
        }
    }
}

impl Leases {
    /// Grants a lease of `ttl` seconds (clamped to the allowed range). Returns its id and ttl.
    pub fn grant(&mut self, ttl: u64) -> (u64, u64) {
        let ttl = ttl.clamp(MIN_TTL_SECS, MAX_TTL_SECS);
        let id = self.next_id;
        self.next_id += 1;
        self.leases.insert(
            id,
            Lease {
                ttl,
                keys: OrdSet::new(),
            },
        );
        (id, ttl)
    }

    pub fn get(&self, id: u64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Removes the lease; returns the keys it held.
    pub fn remove(&mut self, id: u64) -> Option<Lease> {
        self.leases.remove(&id)
    }

    /// Every lease and its ttl, in id order.
    pub fn ttls(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.leases.iter().map(|(id, l)| (*id, l.ttl))
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// `key` was written with `lease` (0: none) and was attached to `prev` before.
    pub fn attach(&mut self, key: &str, prev: u64, lease: u64) {
        if prev == lease {
            return;
        }
        self.detach(key, prev);
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_string());
        }
    }

    /// `key`, attached to `lease` (0: none), was deleted or moved.
    pub fn detach(&mut self, key: &str, lease: u64) {
        if lease == 0 {
            return;
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_and_ttls_are_clamped() {
        let mut l = Leases::default();
        assert_eq!(l.grant(10), (1, 10));
        assert_eq!(l.grant(0), (2, MIN_TTL_SECS));
        l.remove(2);
        assert_eq!(l.grant(u64::MAX), (3, MAX_TTL_SECS));
    }

    #[test]
    fn a_key_moves_between_leases() {
        let mut l = Leases::default();
        let (a, _) = l.grant(10);
        let (b, _) = l.grant(10);
        l.attach("k", 0, a);
        l.attach("k", a, b);
        assert!(l.get(a).unwrap().keys.is_empty());
        assert!(l.get(b).unwrap().keys.contains("k"));
        l.detach("k", b);
        assert!(l.get(b).unwrap().keys.is_empty());
    }
}
