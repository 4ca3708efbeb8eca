//! The replicated key-value store that runs on the Raft log.

mod command;
mod service;
mod sessions;
mod store;

pub use command::{Command, Op, Outcome};
pub use service::{Answer, KvService, RequestId};
pub use sessions::{Check, Sessions, MAX_RESULTS_PER_CLIENT};
pub use store::{KvStore, DEFAULT_MAX_SESSIONS};
