//! The replicated key-value store that runs on the Raft log.

mod command;
mod lease_clock;
pub mod leases;
pub mod mvcc;
mod service;
mod sessions;
mod store;
pub mod txn;

pub use command::{Command, Op, Outcome, Refusal};
#[cfg(feature = "bugs")]
pub use service::KvBugs;
pub use service::{Answer, KvService, DEFAULT_REQUEST_TIMEOUT_TICKS};
pub use sessions::{
    Check, SessionLimits, Sessions, DEFAULT_SESSION_TTL_MS, MAX_RESULTS_PER_CLIENT,
};
pub use store::{KvStore, StoreImageError, DEFAULT_MAX_SESSIONS};
